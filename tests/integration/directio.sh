#!/bin/bash
# direct_io = yes: the source reads a disk image's aligned blocks with
# O_DIRECT (past the page cache) and its short last block through the
# cache; the backup restores byte-identical.  (A file system without
# O_DIRECT gets a warning and cached reads; this kernel's tmpfs has it, so
# that path is not tested here.)
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
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
finish
