#!/bin/bash
# The target as a service: sd_notify READY/STATUS/WATCHDOG/RELOADING/
# STOPPING on a notify socket, SIGHUP reload (good and bad files),
# Prometheus /metrics scraped and parsed, JSON log lines parsed.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
make_image "$T/disk.img" 16M 51

# A notify socket, as systemd provides one: a python listener records
# every datagram.
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

MPORT=$(free_port)
target_conf "$T/target.conf" "metrics = 127.0.0.1:$MPORT" "crl = $PKI/ca.crl"
export NOTIFY_SOCKET=$T/notify.sock WATCHDOG_USEC=400000
TARGET_FLAGS="--log-format json"
target_start "$T/target.conf" || bail "target did not start"
unset NOTIFY_SOCKET WATCHDOG_USEC
source_conf "$T/source.conf" acme

sleep 0.5
expect_grep '^READY=1' "$T/notify.log" "READY=1 sent when listening"
expect_grep '^STATUS=serving' "$T/notify.log" "a STATUS line"
[ "$(grep -c '^WATCHDOG=1' "$T/notify.log")" -ge 2 ] &&
    ok "WATCHDOG=1 at half the watchdog interval" ||
    not_ok "watchdog pings" "$(cat "$T/notify.log")"

check "a backup" src backup --disk "$T/disk.img" --name vm
source_conf "$T/unknown.conf" unknown
SRC_CONF=$T/unknown.conf expect_exit 3 "an unknown identity is refused" \
    src list

# A restore, then one that fails on a chunk gone from the repository.
# What the target sent for the first is what the source counts received
# (its blocks and the frames around them) plus, uncounted there, the
# welcome and the point's index (32 bytes a block, 16 blocks): < 4 KiB.
scrape "$MPORT" >"$T/before.txt" || bail "no /metrics"
check "a restore" src restore --name vm --output "$T/r.img" --json
cp "$LAST_OUT" "$T/restore.json"
same "the restore is byte-identical" "$T/disk.img" "$T/r.img"
scrape "$MPORT" >"$T/after.txt" || bail "no /metrics"
sent=$(($(metric "$T/after.txt" transporter_bytes_sent_total) -
    $(metric "$T/before.txt" transporter_bytes_sent_total)))
got=$(json_get "$T/restore.json" bytes_received)
[ "$got" -gt 0 ] && [ "$sent" -ge "$got" ] && [ "$sent" -lt $((got + 4096)) ] &&
    ok "bytes sent counted: a restore's are what its source received" ||
    not_ok "bytes sent by a restore" "target $sent, source $got"
victim=$(find "$T/repo/tenants/acme/chunks" -type f | sort | head -n 1)
[ -n "$victim" ] || bail "no chunk file in $T/repo/tenants/acme/chunks"
rm -f "$victim"
expect_exit 5 "a restore missing a chunk fails" src restore --name vm \
    --output "$T/r2.img"

# /metrics
check "GET /metrics" scrape "$MPORT"
cp "$LAST_OUT" "$T/metrics.txt"
check "the exposition parses: every sample line is NAME{LABELS} VALUE" "$PY" -c '
import re, sys
ok = 0
for line in open(sys.argv[1]):
	line = line.rstrip("\n")
	if not line or line.startswith("#"):
		continue
	if not re.match(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEInfa]+$", line):
		print("bad line:", line); sys.exit(1)
	ok += 1
sys.exit(0 if ok else 1)' "$T/metrics.txt"
end=$(date -u -d "$(openssl x509 -enddate -noout -in "$PKI/target.crt" | cut -d= -f2)" +%s)
[ "$(metric "$T/metrics.txt" 'transporter_tls_expiry_timestamp_seconds{kind="certificate"}')" = "$end" ] &&
    ok "the end of the target's certificate published" ||
    not_ok "the end of the target's certificate published" "want $end"
end=$(date -u -d "$(openssl crl -nextupdate -noout -in "$PKI/ca.crl" | cut -d= -f2)" +%s)
[ "$(metric "$T/metrics.txt" 'transporter_tls_expiry_timestamp_seconds{kind="crl"}')" = "$end" ] &&
    ok "and the CRL's next update" ||
    not_ok "and the CRL's next update" "want $end"
expect_grep '^transporter_sessions_total [1-9]' "$T/metrics.txt" "sessions counted"
expect_grep '^transporter_bytes_received_total [1-9]' "$T/metrics.txt" "bytes received counted"
expect_grep '^transporter_bytes_stored_total\{tenant="acme"\} [1-9]' "$T/metrics.txt" \
    "bytes stored counted per tenant"
expect_grep '^transporter_chunks_total\{state="new"\} [1-9]' "$T/metrics.txt" \
    "new chunks counted"
expect_grep '^transporter_jobs_total\{kind="backup",result="ok"\} 1' "$T/metrics.txt" \
    "the committed backup counted"
expect_grep '^transporter_jobs_total\{kind="restore",result="ok"\} 1' "$T/metrics.txt" \
    "the restore counted"
expect_grep '^transporter_jobs_total\{kind="restore",result="failed"\} 1' \
    "$T/metrics.txt" "the failed restore counted"
expect_grep '^transporter_job_duration_seconds_count\{kind="restore"\} 1' \
    "$T/metrics.txt" "the restore's duration observed, the failed one's not"
for m in 'transporter_jobs{kind="backup"}' 'transporter_jobs{kind="restore"}' \
    transporter_worker_jobs; do
	[ "$(metric "$T/metrics.txt" "$m")" = 0 ] && ok "$m back to 0" ||
	    not_ok "$m back to 0" "$(metric "$T/metrics.txt" "$m")"
done
expect_grep '^transporter_last_point_timestamp_seconds\{tenant="acme",name="vm"\} [1-9]' \
    "$T/metrics.txt" "the newest point's time per backup"
expect_grep '^transporter_errors_total\{kind="UNAUTHORISED"\} 1' "$T/metrics.txt" \
    "the refused identity counted as an error by kind"

# JSON logs
check "every log line is one JSON object" "$PY" -c '
import json, sys
n = 0
for line in open(sys.argv[1]):
	if line.startswith("---"):
		continue
	o = json.loads(line)
	assert "msg" in o and "level" in o, o
	n += 1
sys.exit(0 if n else 1)' "$TARGET_LOG"

# SIGHUP: a broken file changes nothing; a good one is taken.
cp "$T/target.conf" "$T/target.conf.good"
echo "bogus_key = 1" >>"$T/target.conf"
kill -HUP "$TARGET_PID"
sleep 0.5
expect_grep 'keeping the running configuration' "$TARGET_LOG" "a bad file is refused on reload"
check "the target still serves after a bad reload" src list
cp "$T/target.conf.good" "$T/target.conf"
# Remove tenant acme: after the reload its source is refused.
sed -i '/^\[tenant acme\]/,/^identity/d' "$T/target.conf"
kill -HUP "$TARGET_PID"
sleep 0.5
expect_grep 'reloaded' "$TARGET_LOG" "a good file is taken on SIGHUP"
expect_grep '^RELOADING=1' "$T/notify.log" "RELOADING=1 sent"
expect_exit 3 "a tenant removed by the reload is refused" src list
target_stop
sleep 0.3
expect_grep '^STOPPING=1' "$T/notify.log" "STOPPING=1 on SIGTERM"

# A log format neither daemon knows: a usage error naming the choices.
bad_log_format() {
	expect_exit 2 "$1 refuses --log-format xml (exit 2)" "$BUILD/$1" \
	    --log-format xml "${@:2}"
	expect_grep "^$1: --log-format must be text or json$" "$LAST_ERR" \
	    "... and says what it takes"
}
bad_log_format source-transporter -f "$T/source.conf" list
bad_log_format target-transporter -f "$T/target.conf" -n
finish
