#!/bin/bash
# The target keeps serving, and stops promptly on SIGTERM, after sources
# vanish mid-stream: a restore abandoned while its blocks are in flight,
# a source killed during a backup and during a restore.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
head -c 96M /dev/urandom >"$T/disk.img"
target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme
check "a backup to restore later" src backup --disk "$T/disk.img" --name vm

# A restore whose source disappears while the target is streaming.
for i in 1 2 3; do
	"$BUILD/source-transporter" -f "$T/source.conf" restore --name vm \
	    --output "$T/r$i.img" >/dev/null 2>&1 &
	pid=$!
	sleep 0.$((i * 2))
	kill -KILL $pid 2>/dev/null
	wait $pid 2>/dev/null
done
# A backup whose source is killed mid-way.
"$BUILD/source-transporter" -f "$T/source.conf" backup --disk "$T/disk.img" \
    --name vm2 --full >/dev/null 2>&1 &
pid=$!
sleep 0.3
kill -KILL $pid 2>/dev/null
wait $pid 2>/dev/null

check "the target still serves afterwards" src list
check "and restores" src restore --name vm --output "$T/ok.img"
same "byte-identical" "$T/disk.img" "$T/ok.img"
sleep 1
# A backup under way when the target stops is told so, and gives up
# (resume_timeout = 0) with exit 3 rather than a TLS error.
source_conf "$T/slow.conf" acme "bandwidth_limit = 8M" "resume_timeout = 0"
SRC_CONF=$T/slow.conf src backup --disk "$T/disk.img" --name vm3 --full \
    >"$T/slow.out" 2>"$T/slow.err" &
slow=$!
for _ in $(seq 50); do grep -q "backup of 'vm3' started" "$TARGET_LOG" && break; sleep 0.1; done
t0=$(date +%s%N)
kill -TERM "$TARGET_PID"
wait "$slow"
rc=$?
[ $rc -eq 3 ] && grep -q "target: the target is shutting down" "$T/slow.err" &&
    ok "a backup under way is told the target is shutting down (exit 3)" ||
    not_ok "a backup under way is told the target is shutting down (exit 3)" \
    "exit $rc: $(cat "$T/slow.err")"
for _ in $(seq 100); do kill -0 "$TARGET_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$TARGET_PID" 2>/dev/null; then
	not_ok "SIGTERM stops the target within 10 s" "still running"
else
	wait "$TARGET_PID"
	rc=$?
	TARGET_PID=
	ms=$((($(date +%s%N) - t0) / 1000000))
	[ $rc -eq 0 ] && ok "SIGTERM stops the target (exit 0, $ms ms)" ||
	    not_ok "SIGTERM stops the target" "exit $rc"
fi
# A target stopped twice during one backup, the stops further apart than
# resume_timeout: each stop's BUSY comes after the job made progress, so
# each starts resume_timeout afresh (a BUSY before the job's first frame,
# another backup of the name running, does not), and the backup completes.
head -c 64M /dev/urandom >"$T/disk4.img"
source_conf "$T/stops.conf" acme "bandwidth_limit = 8M" "resume_timeout = 4s"
target_start "$T/target.conf" || bail "target did not start again"
SRC_CONF=$T/stops.conf src backup --disk "$T/disk4.img" --name vm4 \
    >"$T/stops.out" 2>"$T/stops.err" &
stops=$!
for _ in $(seq 50); do grep -q "backup of 'vm4' started" "$TARGET_LOG" && break; sleep 0.1; done
sleep 1
t0=$(date +%s)
target_stop
target_start "$T/target.conf" || bail "target did not start again"
for _ in $(seq 100); do
	[ "$(grep -c "backup of 'vm4' started" "$TARGET_LOG")" -ge 2 ] && break
	sleep 0.1
done
while [ "$(date +%s)" -lt $((t0 + 6)) ]; do sleep 0.2; done
if kill -0 "$stops" 2>/dev/null; then
	target_stop
	target_start "$T/target.conf" || bail "target did not start again"
	wait "$stops"
	rc=$?
	[ $rc -eq 0 ] &&
	    ok "two stops 6 s apart, resume_timeout 4 s: the backup completes" ||
	    not_ok "two stops 6 s apart, resume_timeout 4 s: the backup completes" \
	    "exit $rc: $(cat "$T/stops.err")"
	expect_grep "interrupted \(attempt 2\)" "$T/stops.err" \
	    "and the source said it resumed twice"
	check "it restores" src restore --name vm4 --output "$T/vm4.out"
	same "byte-identical" "$T/disk4.img" "$T/vm4.out"
else
	wait "$stops"
	not_ok "the backup was still running 6 s after the first stop" \
	    "exit $?: $(cat "$T/stops.err")"
fi
finish
