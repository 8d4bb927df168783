#!/bin/bash
# Restore resume: a restore interrupted by a killed source or a killed
# target continues from what is already in the output, never trusting
# it: a changed or truncated partial output and a resume state for
# another point still end byte-identical.  bandwidth_limit slows each
# restore to several seconds so that the kills land mid-restore.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init

MIB=16
head -c "${MIB}M" /dev/urandom >"$T/disk.img"
head -c "${MIB}M" /dev/urandom >"$T/disk2.img"
target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/fast.conf" acme
source_conf "$T/source.conf" acme "bandwidth_limit = 4M" "resume_timeout = 60s"
SRC_CONF=$T/fast.conf check "backup point 1" src backup --disk "$T/disk.img" --name vm --json
p1=$(json_get "$LAST_OUT" point_id)
SRC_CONF=$T/fast.conf check "backup point 2" src backup --disk "$T/disk2.img" --name vm --full --json
p2=$(json_get "$LAST_OUT" point_id)
OUT=$T/out.img
STATE=$OUT.restore-state

# done_blocks: blocks_done in the state file, 0 if none
done_blocks() {
	sed -n 's/^blocks_done //p' "$STATE" 2>/dev/null | grep . || echo 0
}

# kill_mid ARGS...: start a restore to $OUT, SIGKILL it once the state
# file records at least 4 blocks (CONF: another source.conf; BETWEEN: a
# command to run just before the kill)
kill_mid() {
	"$BUILD/source-transporter" -f "${CONF:-$T/source.conf}" restore \
	    --output "$OUT" "$@" >"$T/killed.out" 2>&1 &
	local pid=$!
	track $pid
	for _ in $(seq 300); do
		[ "$(done_blocks)" -ge 4 ] && break
		sleep 0.1
	done
	${BETWEEN:-true}
	kill -KILL $pid
	wait $pid 2>/dev/null
	[ "$(done_blocks)" -ge 4 ] && [ ! -e "$OUT" ]
}

# sent_blocks [NAME]: the blocks the target says it sent in the last
# restore (of vm)
sent_blocks() {
	log_new
	sed -n "s/.*restore of ${1:-vm}\\/[^ ]* sent: \\([0-9]*\\) blocks.*/\\1/p" \
	    "$TARGET_NEW" | tail -n 1
}

# second: the same restore again while the first still runs
second() {
	expect_exit 6 "a second restore to the same output meanwhile is refused" \
	    src restore --name vm --point "$p1" --output "$OUT"
	expect_grep "another restore is writing" "$LAST_ERR" "and says why"
}

# 1. The source killed mid-restore, the same command again: resumes.
BETWEEN=second kill_mid --name vm --point "$p1" && ok "source killed mid-restore ($(done_blocks) blocks recorded)" ||
    not_ok "source killed mid-restore" "$(cat "$T/killed.out")"
log_mark
check "the same command again" src restore --name vm --point "$p1" --output "$OUT" --json
expect_grep "resuming restore of vm/$p1 at block [1-9]" "$LAST_ERR" "it says it resumes"
jsoncheck "it received less than the whole image, nothing twice" \
    "j['resumed_from_block'] >= 4 and j['bytes_received'] < $MIB * 1048576 and j['blocks_fetched_again'] == 0"
n=$(sent_blocks)
[ -n "$n" ] && [ "$n" -lt "$MIB" ] && ok "the target sent $n of $MIB blocks" ||
    not_ok "the target sent fewer blocks than the image has" "sent: '$n'"
same "resumed restore is byte-identical" "$T/disk.img" "$OUT"
[ ! -e "$STATE" ] && [ -z "$(ls "$OUT".partial-* 2>/dev/null)" ] &&
    ok "no state or partial file left" || not_ok "no state or partial file left" "$(ls "$T")"

# 2. The output changed between runs: a flipped byte in the restored
# part, then a truncation.  The check reads every block back.
rm -f "$OUT"
kill_mid --name vm --point "$p1" || not_ok "killed again" "$(cat "$T/killed.out")"
part=$(ls "$OUT".partial-* 2>/dev/null | head -n 1)
flip "$part" $((1048576 + 4321))	# XOR: a set byte on random data fails 1 in 256
check "resume after a flipped byte" src restore --name vm --point "$p1" --output "$OUT" --json
expect_grep "differ from the restore point" "$LAST_ERR" "the flipped block is found"
jsoncheck "and fetched again" "j['blocks_fetched_again'] >= 1 and j['resumed_from_block'] >= 4"
same "byte-identical despite the flipped byte" "$T/disk.img" "$OUT"
rm -f "$OUT"
kill_mid --name vm --point "$p1" || not_ok "killed again" "$(cat "$T/killed.out")"
part=$(ls "$OUT".partial-* 2>/dev/null | head -n 1)
truncate -s $((2 * 1048576 + 100)) "$part"
check "resume after a truncation" src restore --name vm --point "$p1" --output "$OUT" --json
jsoncheck "the missing blocks are fetched again" "j['blocks_fetched_again'] >= 1"
same "byte-identical despite the truncation" "$T/disk.img" "$OUT"

# 3. A state for another point: ignored with a message.
rm -f "$OUT"
kill_mid --name vm --point "$p1" || not_ok "killed again" "$(cat "$T/killed.out")"
check "restore of the newest point over a state for point 1" \
    src restore --name vm --output "$OUT" --json
expect_grep "is for restore point vm/$p1, not vm/\(newest\)|is for restore point vm/$p1, not $p2" \
    "$LAST_ERR" "the state for another point is ignored, with a message"
jsoncheck "restored from the start" "j['resumed_from_block'] == 0 and j['point_id'] == '$p2'"
same "the newest point, byte-identical" "$T/disk2.img" "$OUT"
# A forged state: the right point id, but other chunk ids.
rm -f "$OUT"
kill_mid --name vm --point "$p1" || not_ok "killed again" "$(cat "$T/killed.out")"
# (the first hex digit of the digest changed: 0 to 1, anything else to 0)
sed -i -E 's/^index_sha256 0/index_sha256 X/; s/^index_sha256 [1-9a-f]/index_sha256 0/;
    s/^index_sha256 X/index_sha256 1/' "$STATE"
check "restore over a forged state" src restore --name vm --point "$p1" --output "$OUT" --json
expect_grep "does not match restore point" "$LAST_ERR" "the forged state is refused"
jsoncheck "restored from the start" "j['resumed_from_block'] == 0"
same "byte-identical" "$T/disk.img" "$OUT"

# A damaged state file: ignored with a message (the fast configuration).
rm -f "$OUT"
{ echo "transporter restore state 1"; echo "name vm"; echo "point ../../x"
  head -c 300 /dev/urandom; } >"$STATE"
SRC_CONF=$T/fast.conf check "restore over a damaged state file" \
    src restore --name vm --point "$p1" --output "$OUT" --json
expect_grep "resume state .* is damaged" "$LAST_ERR" "the damaged state is ignored, with a message"
same "byte-identical" "$T/disk.img" "$OUT"
[ ! -e "$STATE" ] && ok "and removed" || not_ok "the damaged state removed"

# 3b. Source-side encryption: the written blocks are checked against
# chunk ids keyed by the backup's own key.
export TRANSPORTER_ARGON2_MEMORY_KIB=64
echo "correct horse battery staple" >"$T/pw"
chmod 600 "$T/pw"
source_conf "$T/ss.conf" acme "encryption = source-side" "key_provider = password" \
    "password_file = $T/pw" "bandwidth_limit = 4M"
SRC_CONF=$T/ss.conf check "a source-side backup" src backup --disk "$T/disk.img" --name ss --json
rm -f "$OUT"
CONF=$T/ss.conf kill_mid --name ss || not_ok "source-side restore killed" "$(cat "$T/killed.out")"
SRC_CONF=$T/ss.conf check "source-side: the same command again" \
    src restore --name ss --output "$OUT" --json
jsoncheck "source-side: resumed, every written block checked good" \
    "j['resumed_from_block'] >= 4 and j['blocks_fetched_again'] == 0"
same "source-side: byte-identical" "$T/disk.img" "$OUT"

# 4. The target killed mid-restore and restarted: the source reconnects
# and resumes by itself.
rm -f "$OUT"
src restore --name vm --point "$p1" --output "$OUT" --json >"$T/r4.json" 2>"$T/r4.err" &
rpid=$!
for _ in $(seq 300); do
	[ "$(done_blocks)" -ge 4 ] && break
	sleep 0.1
done
restart_target || bail "target did not restart"
wait_ok $rpid "the restore finished after the target came back" "$T/r4.err"
expect_grep "reconnecting" "$T/r4.err" "the source reconnected"
LAST_OUT=$T/r4.json
jsoncheck "on a later attempt, resumed" "j['attempts'] >= 2 and j['resumed_from_block'] >= 4"
same "byte-identical after the target's restart" "$T/disk.img" "$OUT"

# 5. A block device (written in place): the target killed
# once its first blocks are on the device; the same process resumes.  The
# device starts as 0xff, so zero blocks that are not zeroed show.
head -c "${MIB}M" /dev/urandom >"$T/dev.img"
dd if=/dev/zero of="$T/dev.img" bs=1M seek=5 count=3 conv=notrunc 2>/dev/null
"$PY" -c 'import sys; open(sys.argv[1], "wb").write(b"\xff" * (int(sys.argv[2]) << 20))' \
    "$T/dirty.img" "$MIB"
if ! dev=$(losetup --find --show "$T/dirty.img" 2>/dev/null); then
	skip "a block device resumes" "cannot set up a loop device here (not root?)"
	finish
fi
at_exit "losetup -d $dev"
SRC_CONF=$T/fast.conf check "backup for the device" src backup --disk "$T/dev.img" --name dev
src restore --name dev --output "$dev" --json >"$T/r5.json" 2>"$T/r5.err" &
rpid=$!
for _ in $(seq 300); do
	cmp -s -n $((2 << 20)) "$T/dev.img" "$dev" && break
	sleep 0.1
done
restart_target || bail "target did not restart"
wait_ok $rpid "the device restore finished after the target came back" \
    "$T/r5.err"
LAST_OUT=$T/r5.json
jsoncheck "the device restore resumed on a later attempt" \
    "j['attempts'] >= 2 and j['resumed_from_block'] >= 2"
cmp -s "$T/dev.img" "$dev" && ok "the device holds the image, zero blocks zeroed" ||
    not_ok "the device holds the image" "$(cmp "$T/dev.img" "$dev" 2>&1)"
[ -z "$(ls "$T/state"/restore-dev-* 2>/dev/null)" ] &&
    ok "a finished device restore leaves no resume state behind" ||
    not_ok "a finished device restore leaves no resume state" "$(ls "$T/state")"

# 6. The source killed mid-restore onto the device: its state is in the
# state directory, by device number, and the same command resumes.
dd if=/dev/zero bs=1M count="$MIB" 2>/dev/null | tr '\0' '\377' >"$dev"
STATE=$(printf '%s/restore-dev-%d-%d.restore-state' "$T/state" \
    $((0x$(stat -c %t "$dev"))) $((0x$(stat -c %T "$dev"))))
OUT=$dev kill_mid --name dev || true
[ "$(done_blocks)" -ge 4 ] && ok "source killed mid-restore onto the device ($(done_blocks) blocks recorded)" ||
    not_ok "source killed mid-restore onto the device" "$(cat "$T/killed.out")"
log_mark
check "the same command resumes onto the device" \
    src restore --name dev --output "$dev" --json
expect_grep "resuming restore of dev/[^ ]* at block [1-9]" "$LAST_ERR" "it says it resumes"
sent=$(sent_blocks dev)
[ "${sent:-$MIB}" -lt "$MIB" ] && ok "the target sent only the rest ($sent of $MIB blocks)" ||
    not_ok "the target sent only the rest" "sent ${sent:-nothing logged}"
cmp -s "$T/dev.img" "$dev" && ok "the device holds the image after the resumed run" ||
    not_ok "the device holds the image" "$(cmp "$T/dev.img" "$dev" 2>&1)"
[ ! -e "$STATE" ] && ok "and its resume state is gone" || not_ok "resume state left" "$STATE"
finish
