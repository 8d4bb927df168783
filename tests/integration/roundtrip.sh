#!/bin/bash
# The round-trip check before a block leaves the source (roundtrip_check):
# with it, full backups restore byte-identical in both encryption modes; a
# block whose compressed form is spoiled (badzstd.so preloaded into the
# source: a compressor that gets one block wrong) is not sent, the backup
# fails with exit 5
# naming the block and nothing is committed.  Without the check the same
# fault commits a source-side point that cannot be restored: the check is
# what keeps it out.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins

# Compressible blocks, one incompressible (stored raw), a partial last one.
IMG=$T/disk.img
seq 1 2000000 | head -c $((6 << 20)) >"$IMG"
head -c $((1 << 20)) /dev/urandom |
    dd of="$IMG" bs=1M seek=4 conv=notrunc status=none
head -c 777 /dev/urandom >>"$IMG"
echo "round-trip password" >"$T/pw"
chmod 600 "$T/pw"
export TRANSPORTER_ARGON2_MEMORY_KIB=8192

target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme "key_provider = password" \
    "password_file = $T/pw"
source_conf "$T/source-yes.conf" acme "roundtrip_check = yes"
source_conf "$T/source-no.conf" acme "roundtrip_check = no" \
    "key_provider = password" "password_file = $T/pw"
source_conf "$T/source-bad.conf" acme "roundtrip_check = sometimes"
points() { [ -d "$T/repo/tenants/acme/points/$1" ] && ls "$T/repo/tenants/acme/points/$1"; }

BADZSTD=$BUILD/tests/tools/badzstd.so
[ -f "$BADZSTD" ] || bail "$BADZSTD not built (make run-tests builds it)"
# spoiled N CMD...: CMD with a compressor that spoils block N of $IMG
# (badzstd.so knows it by its first 32 bytes, a line of seq's output)
spoiled() {
	local n=$1 asan=${ASAN_OPTIONS:-}
	shift
	[ "${TRANSPORTER_ASAN:-0}" = 1 ] &&
	    asan=${asan:+$asan:}verify_asan_link_order=0
	BADZSTD_PREFIX=$(dd if="$IMG" bs=1 skip=$((n << 20)) count=32 \
	    status=none) LD_PRELOAD=$BADZSTD ASAN_OPTIONS=$asan "$@"
}

# --- the normal path: checked, sent, restored identical -------------------
check "source-side full backup with the check (auto)" \
    src backup --disk "$IMG" --name ss --full --encryption source-side --json
jsoncheck "every non-zero block was sent" 'j["blocks_sent"] == 7'
check "restore it" src restore --name ss --output "$T/ss.img"
same "restored byte-identical" "$IMG" "$T/ss.img"
[ -n "$(points ss)" ] && ok "its point is in the repository" ||
    not_ok "its point is in the repository" "no $T/repo/tenants/acme/points/ss"
SRC_CONF=$T/source-yes.conf check "in-flight full backup with roundtrip_check = yes" \
    src backup --disk "$IMG" --name inf --full --json
SRC_CONF=$T/source-yes.conf check "restore it" \
    src restore --name inf --output "$T/inf.img"
same "restored byte-identical" "$IMG" "$T/inf.img"

# --- a spoiled block is not sent ------------------------------------------
expect_exit 5 \
    "source-side: a block failing its check stops the backup (exit 5)" \
    spoiled 2 src backup --disk "$IMG" --name bad --full --encryption source-side
expect_grep "block 2 \(offset 2097152\) of .*failed its round-trip check" \
    "$LAST_ERR" "the message names the block and its offset"
expect_grep "not sent and nothing was committed" "$LAST_ERR" \
    "and says it was not sent"
[ -z "$(points bad)" ] && ok "no restore point was committed" ||
    not_ok "no restore point was committed" "$(points bad)"
SRC_CONF=$T/source-yes.conf expect_exit 5 \
    "in-flight with roundtrip_check = yes: the same (exit 5)" \
    spoiled 1 src backup --disk "$IMG" --name bad2 --full
expect_grep "block 1 \(offset 1048576\).*round-trip check" "$LAST_ERR" \
    "the message names the block"
[ -z "$(points bad2)" ] && ok "no restore point was committed" ||
    not_ok "no restore point was committed" "$(points bad2)"
# auto leaves in-flight blocks to the target, which checks their ids.
SRC_CONF=$T/source-yes.conf check "target still up" src list --json
expect_exit 5 \
    "in-flight, auto: the target refuses the block on receipt (exit 5)" \
    spoiled 1 src backup --disk "$IMG" --name bad3 --full --encryption in-flight
[ -z "$(points bad3)" ] && ok "no restore point was committed" ||
    not_ok "no restore point was committed" "$(points bad3)"

# --- without the check the fault gets through ------------------------------
SRC_CONF=$T/source-no.conf check \
    "roundtrip_check = no: the spoiled source-side block is committed" \
    spoiled 2 src backup --disk "$IMG" --name nocheck --full --encryption source-side
SRC_CONF=$T/source-no.conf expect_exit 5 "and that point cannot be restored" \
    src restore --name nocheck --output "$T/nocheck.img"
expect_grep "block 2" "$LAST_ERR" "the restore names the bad block"

SRC_CONF=$T/source-bad.conf expect_exit 2 "roundtrip_check = sometimes is refused" \
    src list
expect_grep "roundtrip_check must be auto, yes or no" "$LAST_ERR" \
    "with a message naming the key"
finish
