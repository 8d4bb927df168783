#!/bin/bash
# Backup and restore round trips, listing, tenants, and refusals.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
make_image "$T/disk.img" 64M+12345 3
make_image "$T/small.img" 2M+100 4

target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme
source_conf "$T/globex.conf" globex

size=$(stat -c %s "$T/disk.img")

# backup, summary, restore
check "backup of a mixed 64 MiB image" src backup --disk "$T/disk.img" --name vm1
expect_grep 'read' "$LAST_OUT" "the summary gives bytes read"
expect_grep 'sent' "$LAST_OUT" "the summary gives bytes sent"
expect_grep 'stored' "$LAST_OUT" "the summary gives bytes stored"
check "restore it" src restore --name vm1 --output "$T/restored.img"
same "restored image is byte-identical" "$T/disk.img" "$T/restored.img"
alloc=$(allocated_kib "$T/restored.img")
if [ "$alloc" -lt $((size * 3 / 4 / 1024)) ]; then
	ok "restored image is sparse ($alloc KiB allocated of $((size / 1024)))"
else
	not_ok "restored image is sparse" "$alloc KiB allocated of $((size / 1024))"
fi

# --json
check "backup --json" src backup --disk "$T/disk.img" --name vm1 --json
jsoncheck "backup --json has every key" \
    'all(k in j for k in ("name", "point_id", "bytes_read", "bytes_sent",
     "bytes_stored", "blocks", "zero_blocks", "seconds", "peak_rss_kib"))'
jsoncheck "backup --json: name vm1, zero blocks found" \
    'j["name"] == "vm1" and j["zero_blocks"] > 0 and j["blocks"] > 0'
jsoncheck "second backup of the same image stores almost nothing (dedup)" \
    'j["bytes_stored"] < 1 << 20'
point1=$(json_get "$LAST_OUT" point_id)

# list
check "list" src list
expect_grep 'vm1' "$LAST_OUT" "list shows vm1"
check "list --json" src list --json
cp "$LAST_OUT" "$T/list.json"
check "list --json is valid JSON" "$PY" -m json.tool "$T/list.json"
jsoncheck "list --json: objects with every key" \
    'isinstance(j, list) and j and all(all(k in p for k in ("name", "point_id",
     "created", "disk_size", "stored_bytes", "encryption")) for p in j)'
jsoncheck "list --json: two points of vm1 of the right size" \
    "len([p for p in j if p['name'] == 'vm1' and p['disk_size'] == $size]) == 2"
check "list --name vm1 --json" src list --name vm1 --json
jsoncheck "list --name shows only that name" \
    'j and all(p["name"] == "vm1" for p in j)'

# status
check "status" src status
expect_grep 'target-transporter' "$LAST_OUT" "status names the target's software"
check "status --json" src status --json
jsoncheck "status --json: the newest point of each name" \
    'j["software"].startswith("target-transporter") and j["tls"] == "TLSv1.3" and any(b["name"] == "vm1" and b["points"] == 2 for b in j["backups"])'

# points: change the image, back it up, restore both points
cp "$T/disk.img" "$T/disk2.img"
printf 'changed' | dd of="$T/disk2.img" bs=1 seek=5000000 conv=notrunc status=none
check "backup of the changed image" src backup --disk "$T/disk2.img" --name vm1 --json
point2=$(json_get "$LAST_OUT" point_id)
if [ -n "$point1" ] && [ -n "$point2" ] && [ "$point1" != "$point2" ]; then
	ok "each backup is a new point"
else
	not_ok "each backup is a new point" "point ids '$point1' '$point2'"
fi
check "restore without --point gives the newest" \
    src restore --name vm1 --output "$T/newest.img"
same "newest point is the changed image" "$T/disk2.img" "$T/newest.img"
check "restore --point of the older point" \
    src restore --name vm1 --point "$point1" --output "$T/older.img"
same "older point is the original image" "$T/disk.img" "$T/older.img"

# newest within one second: three quick backups, the last one wins
make_image "$T/q1.img" 1M+1 7
make_image "$T/q2.img" 1M+2 8
make_image "$T/q3.img" 1M+3 9
for i in 1 2 3; do
	run src backup --disk "$T/q$i.img" --name quick
done
check "restore of the newest of three quick points" \
    src restore --name quick --output "$T/quick.img"
same "newest of three points made within a second is the last" \
    "$T/q3.img" "$T/quick.img"

# tenants
SRC_CONF=$T/globex.conf check "globex lists" src list --json
jsoncheck "globex does not see acme's backups" \
    'not any(p["name"] == "vm1" for p in j)'
SRC_CONF=$T/globex.conf expect_exit 4 "globex cannot restore acme's vm1 (exit 4)" \
    src restore --name vm1 --output "$T/globex.img"
SRC_CONF=$T/globex.conf check "globex backs up its own vm1" \
    src backup --disk "$T/small.img" --name vm1
SRC_CONF=$T/globex.conf check "globex restores its own vm1" \
    src restore --name vm1 --output "$T/globex.img"
same "globex's vm1 is globex's image" "$T/small.img" "$T/globex.img"
check "acme restores its vm1 after globex's backup" \
    src restore --name vm1 --output "$T/acme-again.img"
same "acme's vm1 is still acme's image" "$T/disk2.img" "$T/acme-again.img"

# no such name or point
expect_exit 4 "restore of an unknown name: exit 4" \
    src restore --name nosuchvm --output "$T/x.img"
expect_grep 'vm1' "$LAST" "the error lists the existing names"
# an id of the same form as a real one
case $point1 in
*0) badpoint=${point1%?}1 ;;
*) badpoint=${point1%?}0 ;;
esac
expect_exit 4 "restore of an unknown point: exit 4" \
    src restore --name vm1 --point "$badpoint" --output "$T/y.img"

# unreadable disks
expect_exit 6 "backup of a missing disk image: exit 6" \
    src backup --disk "$T/nonexistent/disk.img" --name missing
if [ "$(grep -c . "$LAST_ERR")" -eq 1 ]; then
	ok "one line of error for a missing disk"
else
	not_ok "one line of error for a missing disk"
	diag "$LAST_ERR"
fi
expect_grep 'nonexistent/disk\.img' "$LAST" "the error names the disk image"
expect_exit 6 "backup of a directory as disk: exit 6" \
    src backup --disk "$T" --name dir

# outputs
expect_fail "restore refuses an existing output without --force" \
    src restore --name vm1 --output "$T/restored.img"
same "the refused output is untouched" "$T/disk.img" "$T/restored.img"
check "restore --force overwrites it" \
    src restore --name vm1 --output "$T/restored.img" --force
same "overwritten output is the newest point" "$T/disk2.img" "$T/restored.img"
expect_exit 6 "restore into a missing directory: exit 6" \
    src restore --name vm1 --output "$T/nonexistent/out.img"

# none of that listed a broken point
check "list after the refusals" src list --json
jsoncheck "no point for missing or directory disks" \
    'not any(p["name"] in ("missing", "dir") for p in j)'

finish
