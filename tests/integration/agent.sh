#!/bin/bash
# source-transporter agent: scheduled [job NAME] backups run as children,
# one at a time; sd_notify (READY, STATUS, WATCHDOG, RELOADING,
# STOPPING); /metrics; a failing job does not stop the others; SIGHUP
# adds jobs; SIGTERM stops.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
make_image "$T/a.img" 12M 71
make_image "$T/b.img" 9M 72
target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
MPORT=$(free_port)
source_conf "$T/source.conf" acme "metrics = 127.0.0.1:$MPORT" \
    "[job vm-a]" "disk = $T/a.img" "every = 1h" \
    "[job vm-b]" "disk = $T/b.img" "every = 1h" "connections = 2" \
    "[job broken]" "disk = $T/missing.img" "every = 1h"

source_conf "$T/nojobs.conf" acme
expect_exit 2 "an agent without jobs refuses to start" \
    "$BUILD/source-transporter" -f "$T/nojobs.conf" agent
expect_grep 'no \[job NAME\]' "$LAST_ERR" "and says why"

"$PY" - "$T/notify.sock" "$T/notify.log" <<'PYEOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as log:
	while True:
		log.write(s.recv(4096).decode() + "\n")
PYEOF
track $!
for _ in $(seq 50); do [ -S "$T/notify.sock" ] && break; sleep 0.1; done

NOTIFY_SOCKET=$T/notify.sock WATCHDOG_USEC=500000 \
    "$BUILD/source-transporter" -f "$T/source.conf" agent >"$T/agent.log" 2>&1 &
AGENT=$!
track $AGENT

# points: how many restore points the target lists
points() {
	src list --json 2>/dev/null |
	    "$PY" -c 'import json, sys; print(len(json.load(sys.stdin)))' 2>/dev/null ||
	    echo 0
}
for _ in $(seq 150); do
	[ "$(points)" -ge 2 ] && grep -q "job 'broken': backup failed" "$T/agent.log" && break
	sleep 0.2
done
[ "$(points)" -eq 2 ] && ok "both jobs ran at start and committed" ||
    not_ok "both jobs committed" "$(tail -5 "$T/agent.log")"
expect_grep "backup of 'vm-b' started: .*, on up to 2 connections" "$TARGET_LOG" \
    "a job's own 'connections' reaches the backup"
expect_grep "job 'broken': backup failed with exit code 6" "$T/agent.log" \
    "a job whose disk is missing fails with its exit code"
kill -0 $AGENT 2>/dev/null && ok "the agent keeps running" || not_ok "agent alive"
expect_grep '^READY=1' "$T/notify.log" "READY=1"
expect_grep "^STATUS=backing up 'vm-" "$T/notify.log" "STATUS names the running job"
for _ in $(seq 50); do
	[ "$(grep -c '^WATCHDOG=1' "$T/notify.log")" -ge 2 ] && break
	sleep 0.1
done
[ "$(grep -c '^WATCHDOG=1' "$T/notify.log")" -ge 2 ] && ok "watchdog pings" ||
    not_ok "watchdog pings"

check "GET /metrics" scrape "$MPORT"
cp "$LAST_OUT" "$T/metrics.txt"
expect_grep '^transporter_jobs_total\{kind="backup",result="ok"\} 2' "$T/metrics.txt" \
    "metrics count two good backups"
end=$(date -u -d "$(openssl x509 -enddate -noout -in "$PKI/acme.crt" | cut -d= -f2)" +%s)
[ "$(metric "$T/metrics.txt" 'transporter_tls_expiry_timestamp_seconds{kind="certificate"}')" = "$end" ] &&
    ok "the end of the source's certificate published" ||
    not_ok "the end of the source's certificate published" "want $end"
[ "$(metric "$T/metrics.txt" 'transporter_tls_expiry_timestamp_seconds{kind="crl"}')" = NaN ] &&
    ok "no crl set: its end is NaN" || not_ok "no crl set: its end is NaN"
expect_grep '^transporter_jobs_total\{kind="backup",result="failed"\} 1' "$T/metrics.txt" \
    "and one failed"
# What the children counted, handed back as each exited.
zin=$(metric "$T/metrics.txt" transporter_compress_input_bytes_total)
zout=$(metric "$T/metrics.txt" transporter_compress_output_bytes_total)
[ "${zout:-0}" -gt 0 ] && [ "$zout" -lt "$zin" ] &&
    [ "$zin" -le "$(metric "$T/metrics.txt" transporter_bytes_read_total)" ] &&
    ok "the children's compression counted (in $zin, out $zout bytes)" ||
    not_ok "compression counted" "in '$zin', out '$zout'"
[ "$(metric "$T/metrics.txt" transporter_bytes_sent_total)" -gt "$zout" ] &&
    ok "the children's bytes sent counted" ||
    not_ok "bytes sent counted" \
	"$(metric "$T/metrics.txt" transporter_bytes_sent_total)"

check "restore what the agent backed up" src restore --name vm-a --output "$T/ra.img"
same "byte-identical" "$T/a.img" "$T/ra.img"

# SIGHUP: a new job is taken and runs.
make_image "$T/c.img" 5M 73
cat >>"$T/source.conf" <<EOF2
[job vm-c]
disk = $T/c.img
every = 1h
EOF2
kill -HUP $AGENT
for _ in $(seq 100); do [ "$(points)" -ge 3 ] && break; sleep 0.2; done
[ "$(points)" -ge 3 ] && ok "a job added by SIGHUP runs" || not_ok "reload adds a job"
expect_grep '^RELOADING=1' "$T/notify.log" "RELOADING=1"

kill -TERM $AGENT
wait $AGENT
rc=$?
[ $rc -eq 0 ] && ok "SIGTERM stops the agent (exit 0)" || not_ok "agent exit" "exit $rc"
expect_grep '^STOPPING=1' "$T/notify.log" "STOPPING=1"

# The agent's bytes read are its two good backups', as the same backups
# run by hand count them (the failed one read nothing).
check "vm-a again by hand" src backup --disk "$T/a.img" --name vm-a --json
read_a=$(json_get "$LAST_OUT" bytes_read)
check "vm-b again by hand" src backup --disk "$T/b.img" --name vm-b --json
read_b=$(json_get "$LAST_OUT" bytes_read)
[ "$(metric "$T/metrics.txt" transporter_bytes_read_total)" = $((read_a + read_b)) ] &&
    ok "bytes read counted: the sum of the jobs' ($((read_a + read_b)))" ||
    not_ok "bytes read counted" "agent $(metric "$T/metrics.txt" \
	transporter_bytes_read_total), by hand $read_a + $read_b"
finish
