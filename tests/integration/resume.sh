#!/bin/bash
# Resume: a backup cut off by a killed target, a killed source or a lost
# connection continues from what the target made durable, and the final
# restore point is byte-identical.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init

# Incompressible data and the slowest zstd level on one worker keep the
# backup running for several seconds, long enough to interrupt it.
head -c 64M /dev/urandom >"$T/disk.img"
TARGET_FLAGS=-vv
target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme "compression_level = 19" "workers = 1" \
    "window = 64M" "resume_timeout = 120s"

# wait_checkpoint N: until the target log has N checkpoint lines
wait_checkpoint() {
	for _ in $(seq 300); do
		[ "$(grep -c 'checkpoint of' "$TARGET_LOG")" -ge "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

tmp_jobs() {
	find "$T/repo/tenants/acme/tmp" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l
}

# 1. The target is killed twice during one backup.
src backup --disk "$T/disk.img" --name vm --json >"$T/b1.json" 2>"$T/b1.err" &
bpid=$!
track $bpid
if wait_checkpoint 1; then
	restart_target && ok "target killed after a checkpoint and restarted" ||
	    not_ok "target restarted"
	n=$(grep -c 'checkpoint of' "$TARGET_LOG")
	wait_checkpoint $((n + 1)) && restart_target &&
	    ok "target killed a second time and restarted" ||
	    not_ok "second interruption" "$(tail -3 "$TARGET_LOG")"
else
	not_ok "a checkpoint within 30 s" "$(tail -3 "$TARGET_LOG")"
fi
wait_ok $bpid "the backup finished (exit 0)" "$T/b1.err"
LAST_OUT=$T/b1.json
jsoncheck "it resumed: reconnected and reused durable blocks" \
    'j["resumed"] and j["attempts"] >= 2 and j["blocks_unchanged"] > 0'
jsoncheck "durable blocks were not sent again" \
    'j["blocks_sent"] + j["blocks_unchanged"] == j["blocks"]'
check "restore the resumed point" src restore --name vm --output "$T/r1.img"
same "resumed point is byte-identical" "$T/disk.img" "$T/r1.img"
[ "$(tmp_jobs)" -eq 0 ] && ok "no interrupted job left behind" ||
    not_ok "no interrupted job left behind" "$(ls "$T/repo/tenants/acme/tmp")"

# 2. The source is killed; the same command run again resumes.  The
# disk changes in between: the resumed base is checked by hashing, never
# trusted.
n=$(grep -c 'checkpoint of' "$TARGET_LOG")
head -c 64M /dev/urandom >"$T/disk2.img"
# The program itself, not the src wrapper, so that the kill reaches it.
"$BUILD/source-transporter" -f "$T/source.conf" backup --disk "$T/disk2.img" \
    --name vm2 --json >/dev/null 2>&1 &
bpid=$!
track $bpid
if wait_checkpoint $((n + 1)); then
	kill -KILL $bpid
	wait $bpid 2>/dev/null
	ok "source killed after a checkpoint"
else
	not_ok "a checkpoint for the source to be killed after"
fi
for _ in $(seq 50); do
	grep -q "suspended" "$TARGET_LOG" && break
	sleep 0.1
done
expect_grep "suspended" "$TARGET_LOG" "the target keeps the interrupted job"
# Overwrite the first 8 MiB: blocks the interrupted job already stored.
dd if=/dev/urandom of="$T/disk2.img" bs=1M count=8 conv=notrunc 2>/dev/null
check "the same command again" src backup --disk "$T/disk2.img" --name vm2 --json
jsoncheck "it resumed the interrupted job" 'j["resumed"] and j["blocks_unchanged"] > 0'
jsoncheck "the changed blocks were sent although the job had them" \
    'j["blocks_sent"] >= 8'
check "restore it" src restore --name vm2 --output "$T/r2.img"
same "the restore holds the changed disk, not the stale blocks" "$T/disk2.img" "$T/r2.img"

# 3. No target comes back: the source gives up after resume_timeout.
source_conf "$T/short.conf" acme "compression_level = 19" "workers = 1" \
    "window = 64M" "resume_timeout = 3s"
n=$(grep -c 'checkpoint of' "$TARGET_LOG")
SRC_CONF=$T/short.conf src backup --disk "$T/disk.img" --name vm3 >"$T/b3.out" 2>"$T/b3.err" &
bpid=$!
wait_checkpoint $((n + 1))
target_stop
wait $bpid
rc=$?
[ $rc -ne 0 ] && ok "without a target the source gives up (exit $rc)" ||
    not_ok "the source gives up"
expect_grep "again to resume" "$T/b3.err" "and says how to resume"
target_start "$T/target.conf" || bail "target did not restart"
check "run again once the target is back" src backup --disk "$T/disk.img" --name vm3 --json
jsoncheck "it resumed" 'j["resumed"]'
check "restore vm3" src restore --name vm3 --output "$T/r3.img"
same "vm3 is byte-identical" "$T/disk.img" "$T/r3.img"

# 4. An incremental is cut off: the resumed job's base is the previous
# point's chunk ids (read from its index) with the interrupted job's
# durable blocks over them.
cp "$T/disk.img" "$T/disk4.img"
head -c 32M /dev/urandom | dd of="$T/disk4.img" bs=1M seek=32 conv=notrunc \
    status=none
n=$(grep -c 'checkpoint of' "$TARGET_LOG")
src backup --disk "$T/disk4.img" --name vm --json >"$T/b4.json" 2>"$T/b4.err" &
bpid=$!
track $bpid
if wait_checkpoint $((n + 1)); then
	restart_target && ok "target killed during an incremental and restarted" ||
	    not_ok "target restarted during an incremental"
else
	not_ok "a checkpoint of the incremental" "$(tail -3 "$TARGET_LOG")"
fi
wait_ok $bpid "the incremental finished (exit 0)" "$T/b4.err"
LAST_OUT=$T/b4.json
jsoncheck "it resumed, and the first half came from the base" \
    'j["resumed"] and j["blocks_unchanged"] >= 32'
check "restore the resumed incremental" src restore --name vm --output "$T/r4.img"
same "it is byte-identical" "$T/disk4.img" "$T/r4.img"

# 4b. An interrupted job whose journal names a chunk that is gone (a prune
# by a target too old to read its journal, say): the resumed backup fails
# (INTEGRITY, exit 5, nothing committed) and drops the journal, so the
# next run starts over and completes.
n=$(grep -c 'checkpoint of' "$TARGET_LOG")
src backup --disk "$T/disk.img" --name vm6 >"$T/b6.out" 2>"$T/b6.err" &
bpid=$!
track $bpid
if wait_checkpoint $((n + 1)); then
	target_kill
	gone=$("$PY" - "$T/repo/tenants/acme" <<'EOF2'
import glob, os, struct, sys
for path in glob.glob(os.path.join(sys.argv[1], "tmp", "*", "journal")):
	b = open(path, "rb").read()
	namelen, = struct.unpack(">H", b[6:8])
	blocks, = struct.unpack(">Q", b[24:32])
	if b[32:32 + namelen] != b"vm6":
		continue
	for i in range(blocks):
		cid = b[32 + namelen + 32 * i:32 + namelen + 32 * (i + 1)]
		if any(cid):
			h = cid.hex()
			os.remove(os.path.join(sys.argv[1], "chunks", h[:2], h))
			print(h)
			sys.exit(0)
sys.exit(1)
EOF2
)
	[ -n "$gone" ] && ok "a chunk the interrupted job's journal names removed" ||
	    not_ok "a chunk the interrupted job's journal names removed"
	target_start "$T/target.conf" || bail "target did not restart"
	wait $bpid
	rc=$?
	[ $rc -eq 5 ] && ok "the resumed backup fails (exit 5), nothing committed" ||
	    not_ok "the resumed backup fails (exit 5)" "exit $rc: $(tail -3 "$T/b6.err")"
	expect_grep "The next backup of it starts over" "$T/b6.err" \
	    "and says the next backup starts over"
	check "the next run starts over and completes" \
	    src backup --disk "$T/disk.img" --name vm6 --json
	jsoncheck "it did not resume" 'not j["resumed"]'
	check "restore vm6" src restore --name vm6 --output "$T/r6.img"
	same "vm6 is byte-identical" "$T/disk.img" "$T/r6.img"
else
	not_ok "a checkpoint of vm6 within 30 s" "$(tail -3 "$TARGET_LOG")"
fi

# 5. At rest (tenant nobody, at_rest = password): the target killed after
# a checkpoint, and a prune before it starts again.  The new job resumes from the durable blocks, sealed under
# the interrupted job's key, which its point then lists: it restores from
# the keys the point lists alone (the tenant's key file moved away).
target_stop
echo "the target's at-rest password" >"$T/pw"
chmod 600 "$T/pw"
export TRANSPORTER_ARGON2_MEMORY_KIB=8192
target_conf "$T/atrest.conf" "[tenant nobody]" "identity = nobody-source" \
    "at_rest = password" "password_file = $T/pw"
target_start "$T/atrest.conf" || bail "the at-rest target did not start"
source_conf "$T/nobody.conf" unknown "compression_level = 19" "workers = 1" \
    "window = 64M" "resume_timeout = 120s"
n=$(grep -c 'checkpoint of' "$TARGET_LOG")
SRC_CONF=$T/nobody.conf src backup --disk "$T/disk.img" --name vm5 --json \
    >"$T/b5.json" 2>"$T/b5.err" &
bpid=$!
track $bpid
if wait_checkpoint $((n + 1)); then
	target_kill
	# As the daily prune unit does while the daemon is stopped: the
	# interrupted job's chunks and their keys stay.
	check "at rest: prune while the backup is interrupted" \
	    "$BUILD/target-transporter" prune -f "$T/atrest.conf" --keep-last 1
	target_start "$T/atrest.conf" &&
	    ok "at rest: target killed after a checkpoint and restarted" ||
	    not_ok "at rest: target restarted"
else
	not_ok "at rest: a checkpoint within 30 s" "$(tail -3 "$TARGET_LOG")"
fi
wait_ok $bpid "at rest: the backup finished (exit 0)" "$T/b5.err"
LAST_OUT=$T/b5.json
jsoncheck "at rest: it resumed from the durable blocks, not sent again" \
    'j["resumed"] and j["blocks_unchanged"] > 0 and j["blocks_sent"] + j["blocks_unchanged"] == j["blocks"]'
target_stop
check "at rest: the offline verify finds the repository intact" \
    "$BUILD/target-transporter" verify -f "$T/atrest.conf"
mv "$T/repo/tenants/nobody/at-rest.keychain" "$T/keychain.away"
target_start "$T/atrest.conf" || bail "the at-rest target did not restart"
SRC_CONF=$T/nobody.conf check "at rest: it restores with the keys the point lists alone" \
    src restore --name vm5 --output "$T/r5.img"
same "at rest: byte-identical" "$T/disk.img" "$T/r5.img"
[ "$(find "$T/repo/tenants/nobody/tmp" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)" -eq 0 ] &&
    ok "at rest: no interrupted job left behind" ||
    not_ok "at rest: no interrupted job left behind" "$(ls "$T/repo/tenants/nobody/tmp")"
finish
