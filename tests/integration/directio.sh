#!/bin/bash
# O_DIRECT at both ends.
#
# Source, direct_io = yes: it reads a disk image's aligned blocks with
# O_DIRECT (past the page cache) and its short last block through the
# cache; the backup restores byte-identical.  (A file system without
# O_DIRECT gets a warning and cached reads; this kernel's tmpfs has it, so
# that path is not tested here.)
#
# Target, direct_io = yes (its default): new chunks are staged with
# O_DIRECT, padded to 4 KiB and cut to their size; with direct_io = no
# through the page cache; a file system that refuses O_DIRECT (EINVAL,
# injected by tests/tools/faultinject.so) gets one log line and cached
# writes, and the backup goes on.  Each restores byte-identical, and the
# chunks' stored checksum checks out (target-transporter verify).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/tools/faultinject/shim.sh
. "$TOP/tests/tools/faultinject/shim.sh"
need_bins

make_image "$T/disk.img" 12M+777 5
target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme "direct_io = yes"

check "backup with direct_io = yes" \
    src -v backup --disk "$T/disk.img" --name vm --full --json
expect_grep "reading with O_DIRECT" "$LAST_ERR" "it reads with O_DIRECT"
check "restore it" src restore --name vm --output "$T/r.img"
same "restored byte-identical (the short last block too)" "$T/disk.img" "$T/r.img"

source_conf "$T/bad.conf" acme "direct_io = maybe"
SRC_CONF=$T/bad.conf expect_exit 2 "direct_io = maybe is refused" src list
expect_grep "direct_io must be yes or no" "$LAST_ERR" "naming the key"
target_stop

# target_backup WHAT CONF DISK [VAR=VALUE...]: a target with CONF and the
# shim logging every create in the repository (plus the FAULT_ variables
# given), a full backup of DISK, its restore, and an offline verify
target_backup() {
	local what=$1 conf=$2 disk=$3 name
	shift 3
	name=vm$((++TB))
	rm -f "$T/creates"
	shim_start "$conf" FAULT_CLASS=create FAULT_LOG="$T/creates" "$@" ||
	    bail "target with the shim did not start"
	check "$what: backup" src backup --disk "$disk" --name "$name" --full
	rm -f "$T/r.img"
	check "$what: restore" src restore --name "$name" --output "$T/r.img"
	same "$what: restored byte-identical" "$disk" "$T/r.img"
	target_stop
	check "$what: the stored chunks verify" "$BUILD/target-transporter" verify \
	    --repository "$T/repo"
	# the job's staged chunks: tmp/<job>/c<seq>
	grep -E '/tmp/[^/]+/c[0-9]+' "$T/creates" >"$T/staged" || true
}
TB=0

# staged_verdict WHAT STATUS: ok WHAT if STATUS is 0, else not ok with the
# first staged creates
staged_verdict() {
	if [ "$2" -eq 0 ]; then
		ok "$1"
	else
		not_ok "$1" "$(head -n 3 "$T/staged")"
	fi
}

make_image "$T/big.img" 9M+4097 6

target_backup "target default" "$T/target.conf" "$T/big.img"
# Only where the repository's file system takes O_DIRECT (TMPDIR may be
# an older tmpfs); elsewhere the fallback below is what runs.
if dd if=/dev/zero of="$T/direct.probe" bs=4096 count=1 oflag=direct \
    status=none 2>/dev/null; then
	[ -s "$T/staged" ] && ! grep -qv 'O_DIRECT' "$T/staged"
	staged_verdict "target default: every new chunk was staged with O_DIRECT" $?
else
	skip "target default: every new chunk was staged with O_DIRECT" \
	    "the file system of $T refuses O_DIRECT"
fi
rm -f "$T/direct.probe"

sed '1i direct_io = no' "$T/target.conf" >"$T/buffered.conf"
make_image "$T/cached.img" 7M 8
target_backup "target direct_io = no" "$T/buffered.conf" "$T/cached.img"
[ -s "$T/staged" ] && ! grep -q 'O_DIRECT' "$T/staged"
staged_verdict "target direct_io = no: chunks staged through the page cache" $?

make_image "$T/other.img" 5M+1 7
target_backup "a file system without O_DIRECT" "$T/target.conf" \
    "$T/other.img" "FAULT_MATCH=*/tmp/*/c*" FAULT_AT=1 FAULT_ACTION=einval
expect_grep "refuses O_DIRECT; chunks go through the page cache" \
    "$TARGET_LOG" "without O_DIRECT: the target says so"
[ "$(grep -c 'refuses O_DIRECT' "$TARGET_LOG")" -eq 1 ] &&
    [ "$(grep -c 'O_DIRECT.* einval$' "$T/staged")" -eq 1 ] &&
    [ "$(grep -vc 'O_DIRECT' "$T/staged")" -ge 3 ]
staged_verdict "without O_DIRECT: said once, later chunks staged through the cache" $?

sed '1i direct_io = sometimes' "$T/target.conf" >"$T/badtgt.conf"
expect_exit 2 "target direct_io = sometimes is refused" \
    "$BUILD/target-transporter" -n -f "$T/badtgt.conf"
expect_grep "direct_io must be yes or no" "$LAST_ERR" "naming the key"
finish
