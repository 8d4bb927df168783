#!/bin/bash
# Incremental backups: only changed blocks travel, every point restores
# as a full image, and the target accepts references only to its base.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
make_image "$T/disk.img" 200M+4097 11

target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme

check "full backup" src backup --disk "$T/disk.img" --name vm --json
cp "$LAST_OUT" "$T/full.json"
jsoncheck "the first backup has no base" 'j["base_point_id"] == "" and j["blocks_sent"] > 0'
full_sent=$(json_get "$T/full.json" bytes_sent)

# Change 2 MiB of random data in two places (about 1% of the image).
cp "$T/disk.img" "$T/disk2.img"
dd if=/dev/urandom of="$T/disk2.img" bs=1M count=1 seek=20 conv=notrunc 2>/dev/null
dd if=/dev/urandom of="$T/disk2.img" bs=64K count=16 seek=1600 conv=notrunc 2>/dev/null
changed=$((2 << 20))

check "incremental backup of the changed image" src backup --disk "$T/disk2.img" --name vm --json
cp "$LAST_OUT" "$T/incr.json"
jsoncheck "it names the first point as its base" \
    "j['base_point_id'] == '$(json_get "$T/full.json" point_id)'"
jsoncheck "only the two changed blocks are sent" 'j["blocks_sent"] == 2'
# Random data does not compress: the changed blocks' compressed size is
# their size.  Within 5% of that, plus the frames naming unchanged blocks.
jsoncheck "bytes on the wire within 5% of the changed data" \
    "abs(j['bytes_sent'] - $changed) < $changed * 0.05"
jsoncheck "and far below the full backup's" "j['bytes_sent'] * 10 < $full_sent"

check "backup with nothing changed" src backup --disk "$T/disk2.img" --name vm --json
jsoncheck "nothing changed: no block sent, nothing stored" \
    'j["blocks_sent"] == 0 and j["bytes_stored"] == 0 and j["blocks_unchanged"] > 0'

check "--full sends every block again" src backup --disk "$T/disk2.img" --name vm --full --json
jsoncheck "--full has no base" 'j["base_point_id"] == "" and j["blocks_sent"] > 2'

# Every point restores as a full image.
first=$(json_get "$T/full.json" point_id)
second=$(json_get "$T/incr.json" point_id)
check "restore the first point" src restore --name vm --point "$first" --output "$T/r1.img"
same "first point is the original image" "$T/disk.img" "$T/r1.img"
check "restore the incremental point" src restore --name vm --point "$second" --output "$T/r2.img"
same "incremental point is the changed image" "$T/disk2.img" "$T/r2.img"
check "restore the newest point" src restore --name vm --output "$T/r3.img"
same "newest point is the changed image" "$T/disk2.img" "$T/r3.img"

# A point whose data is zeroed where the base had data.
cp "$T/disk2.img" "$T/disk3.img"
dd if=/dev/zero of="$T/disk3.img" bs=1M count=3 seek=0 conv=notrunc 2>/dev/null
check "backup after zeroing blocks" src backup --disk "$T/disk3.img" --name vm --json
check "restore it" src restore --name vm --output "$T/r4.img"
same "zeroed blocks restore as zeros" "$T/disk3.img" "$T/r4.img"

# A grown disk: blocks past the base's end are new.
cp "$T/disk3.img" "$T/disk4.img"
truncate -s +3M "$T/disk4.img"
dd if=/dev/urandom of="$T/disk4.img" bs=1M count=1 seek=201 conv=notrunc 2>/dev/null
check "backup of a grown disk" src backup --disk "$T/disk4.img" --name vm --json
check "restore the grown disk" src restore --name vm --output "$T/r5.img"
same "grown disk restores identical" "$T/disk4.img" "$T/r5.img"

# Another block size cannot use the base: a full backup.
source_conf "$T/bs.conf" acme "block_size = 4M"
SRC_CONF=$T/bs.conf check "backup with 4 MiB blocks" src backup --disk "$T/disk4.img" --name vm --json
jsoncheck "a different block size means a full backup" 'j["base_point_id"] == ""'
SRC_CONF=$T/bs.conf check "restore the 4 MiB-block point" src restore --name vm --output "$T/r6.img"
same "4 MiB-block point restores identical" "$T/disk4.img" "$T/r6.img"

target_alive && ok "target still running" || not_ok "target still running"
finish
