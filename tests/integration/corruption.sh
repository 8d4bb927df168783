#!/bin/bash
# Tampered repository files: restore refuses them, writes nothing wrong,
# and every other point still restores.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
make_image "$T/a.img" 16M+777 5
make_image "$T/b.img" 8M+333 6

target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme
TENANT=$T/repo/tenants/acme

# chunk_files: every chunk file of tenant acme, sorted
chunk_files() {
	find "$TENANT/chunks" -type f 2>/dev/null | sort
}

# flip FILE: invert one byte in the middle of FILE's payload (after the
# 48-byte header of chunk files)
flip() {
	"$PY" -c 'import os, sys
n = os.path.getsize(sys.argv[1])
pos = 48 + (n - 48) // 2 if n > 48 else n // 2
with open(sys.argv[1], "r+b") as f:
	f.seek(pos)
	b = f.read(1)
	f.seek(pos)
	f.write(bytes([b[0] ^ 0xff]))' "$1"
}

# b first, then a: the chunk files new after a are a's alone
check "backup of image b" src backup --disk "$T/b.img" --name other
chunk_files >"$T/chunks.b"
check "backup of image a" src backup --disk "$T/a.img" --name vm
chunk_files >"$T/chunks.ab"
check "second backup of image b, as idx" src backup --disk "$T/b.img" --name idx
victim=$(comm -13 "$T/chunks.b" "$T/chunks.ab" | sed -n 3p)
[ -n "$victim" ] || bail "no chunk file of image a in $TENANT/chunks"

check "untampered point restores" src restore --name vm --output "$T/good.img"

# a flipped byte in a chunk
flip "$victim"
echo "# flipped a byte of $victim"
expect_exit 5 "restore of a point with a tampered chunk: exit 5" \
    src restore --name vm --output "$T/bad.img"
expect_grep 'block|chunk' "$LAST" "the error names the block"
if [ -e "$T/bad.img" ]; then
	not_ok "no output file left behind" "$(ls -l "$T/bad.img")"
else
	ok "no output file left behind"
fi
check "another point still restores" src restore --name other --output "$T/other.img"
if files_identical "$T/b.img" "$T/other.img"; then
	ok "and it is byte-identical"
else
	not_ok "and it is byte-identical"
fi

# a flipped byte in a point's index
index=$(find "$TENANT/points/idx" -name '*.index' 2>/dev/null | head -n 1)
if [ -n "$index" ]; then
	flip "$index"
	expect_exit 5 "restore of a point with a tampered index: exit 5" \
	    src restore --name idx --output "$T/idx.img"
	if [ -e "$T/idx.img" ]; then
		not_ok "no output file left behind (index)"
	else
		ok "no output file left behind (index)"
	fi
	# an incremental backup on that point as its base
	expect_exit 5 "incremental backup on a tampered base: exit 5" \
	    src backup --disk "$T/b.img" --name idx
	expect_grep "previous restore point of 'idx': it is damaged; run 'target-transporter verify'.*--full" \
	    "$LAST_ERR" "the error says the base is damaged, and what to do"
	check "a --full backup needs no base" \
	    src backup --disk "$T/b.img" --name idx --full
	check "the new point restores" \
	    src restore --name idx --output "$T/idx2.img"
	same "and it is byte-identical (idx)" "$T/b.img" "$T/idx2.img"
else
	not_ok "point idx has an index file under $TENANT/points/idx"
fi

# a chunk file cut short
truncate -s 20 "$victim"
expect_exit 5 "restore of a point with a truncated chunk: exit 5" \
    src restore --name vm --output "$T/short.img"

# a chunk file gone
rm -f "$victim"
expect_exit 5 "restore of a point with a missing chunk: exit 5" \
    src restore --name vm --output "$T/gone.img"
# an incremental backup on that point as its base: the unchanged block
# whose chunk is gone is found at the commit
expect_exit 5 "incremental backup on a base missing a chunk: exit 5" \
    src backup --disk "$T/a.img" --name vm
expect_grep "a chunk the new point needs is missing from the repository .*Back it up with --full" \
    "$LAST_ERR" "the error says a chunk is missing, and what to do"
check "a --full backup stores it again" src backup --disk "$T/a.img" --name vm --full
check "and the point restores" src restore --name vm --output "$T/full.img"
same "byte-identical" "$T/a.img" "$T/full.img"

check "the other point still restores after all that" \
    src restore --name other --output "$T/other2.img"
if files_identical "$T/b.img" "$T/other2.img"; then
	ok "and it is still byte-identical"
else
	not_ok "and it is still byte-identical"
fi
# An index changed on disk while its point is being restored.  The target
# checks the index whole when it opens the point and reads it again a
# window of 32768 chunk ids at a time; a window that no longer matches is
# refused.  64 KiB blocks: a disk of 2 GiB and 128 KiB is two windows,
# with 24 MiB of data at its start, which the restore's bandwidth limit
# makes last, and 128 KiB (blocks 32768-32769) in the second.  The byte
# is flipped once the blocks have started, 3-4 s before the target
# gets to the second window.
random_image "$T/win.img" 24 7
truncate -s $(((2 << 30) + (128 << 10))) "$T/win.img"
dd if="$T/a.img" of="$T/win.img" bs=64K seek=32768 count=2 conv=notrunc \
    status=none
source_conf "$T/win.conf" acme "block_size = 64K"
source_conf "$T/winslow.conf" acme "block_size = 64K" "bandwidth_limit = 4M"
SRC_CONF=$T/win.conf check "backup of a two-window disk" \
    src backup --disk "$T/win.img" --name win
winindex=$(find "$TENANT/points/win" -name '*.index' 2>/dev/null | head -n 1)
[ -n "$winindex" ] || bail "point win has no index under $TENANT/points/win"
# flip_at FILE OFFSET: invert the byte at OFFSET in place
flip_at() {
	"$PY" -c 'import sys
with open(sys.argv[1], "r+b") as f:
	f.seek(int(sys.argv[2]))
	b = f.read(1)
	f.seek(int(sys.argv[2]))
	f.write(bytes([b[0] ^ 0xff]))' "$1" "$2"
}
winbyte=$((20 + 32769 * 32 + 3))	# in block 32769's chunk id
SRC_CONF=$T/winslow.conf src restore --name win --output "$T/win.out" \
    >"$T/win.log" 2>&1 &
winpid=$!
if wait_grep 'restore of win/.* started' "$TARGET_LOG"; then
	flip_at "$winindex" "$winbyte"
	ok "the slowed restore started"
else
	not_ok "the slowed restore started"
fi
wait "$winpid"
rc=$?
if [ "$rc" -eq 5 ]; then
	ok "index changed during the restore: exit 5"
else
	not_ok "index changed during the restore: exit 5" "exit $rc"
	diag "$T/win.log"
fi
expect_grep 'changed on disk after it was verified' "$T/win.log" \
    "the error says the index changed after it was checked"
expect_grep "run 'target-transporter verify'" "$T/win.log" \
    "and says what to run"
if [ -e "$T/win.out" ]; then
	not_ok "no output file left behind (index changed)"
else
	ok "no output file left behind (index changed)"
fi
flip_at "$winindex" "$winbyte"
SRC_CONF=$T/win.conf check "with the byte put back it restores" \
    src restore --name win --output "$T/win.out"
# Its size, both data ranges, and holes between (nothing else written).
if [ "$(stat -c %s "$T/win.out" 2>/dev/null)" = "$(stat -c %s "$T/win.img")" ] &&
    cmp -s -n $((24 << 20)) "$T/win.img" "$T/win.out" &&
    cmp -s <(tail -c $((128 << 10)) "$T/win.img") \
    <(tail -c $((128 << 10)) "$T/win.out") &&
    [ "$(allocated_kib "$T/win.out")" -lt $((25 << 10)) ]; then
	ok "and it is byte-identical"
else
	not_ok "and it is byte-identical" "$(ls -ls "$T/win.out" 2>&1)"
fi

if target_alive; then
	ok "target still running"
else
	not_ok "target still running"
	diag "$TARGET_LOG"
fi

finish
