#!/bin/bash
# TLS 1.3 key updates on long sessions: with the threshold lowered, both
# the backing-up source and the restoring target rotate their traffic
# keys several times in one session (an update waits for a moment with
# no half-written record), and the data arrives intact.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
head -c 24M /dev/urandom >"$T/disk.img"
export TRANSPORTER_TLS_KEY_UPDATE_BYTES=1M
TARGET_FLAGS=-vv
target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme

check "backup with a key update every 1 MiB" \
    "$BUILD/source-transporter" -v -f "$T/source.conf" backup --disk "$T/disk.img" --name vm
n=$(grep -c 'TLS key update after' "$LAST_ERR")
[ "$n" -ge 1 ] && ok "the source updated its keys $n times" ||
    not_ok "source key updates" "$n"
check "restore with a key update every 1 MiB" src restore --name vm --output "$T/r.img"
same "byte-identical" "$T/disk.img" "$T/r.img"
n=$(grep -c 'TLS key update after' "$TARGET_LOG")
[ "$n" -ge 1 ] && ok "the target updated its keys $n times" ||
    not_ok "target key updates" "$n"
finish
