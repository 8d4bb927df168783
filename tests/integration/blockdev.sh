#!/bin/bash
# Block devices as source and as restore output (loop devices).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init

make_image "$T/disk.img" 48M 21
# The output device starts full of 0xff, so a zero block that is not
# written as zeros shows.
"$PY" -c 'import sys; open(sys.argv[1], "wb").write(b"\xff" * (48 << 20))' "$T/dirty.img"
if ! src_dev=$(losetup --find --show --read-only "$T/disk.img" 2>/dev/null) ||
    ! out_dev=$(losetup --find --show "$T/dirty.img" 2>/dev/null); then
	[ -n "${src_dev:-}" ] && losetup -d "$src_dev"
	skip "block devices" "cannot set up loop devices here (not root?)"
	finish
fi
at_exit "losetup -d $src_dev"
at_exit "losetup -d $out_dev"

target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme

check "backup from a block device" src backup --disk "$src_dev" --name dev --json
jsoncheck "the whole device was seen" "j['disk_size'] == 48 << 20"
check "restore onto a block device holding other data" \
    src restore --name dev --output "$out_dev"
cmp "$T/disk.img" "$out_dev" >/dev/null 2>&1 &&
    ok "the device now holds the image, zero blocks zeroed" ||
    not_ok "the device now holds the image" "$(cmp "$T/disk.img" "$out_dev" 2>&1)"
finish
