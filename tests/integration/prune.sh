#!/bin/bash
# target-transporter prune: keeps the newest points of each name, removes
# the older ones and the chunks only they used; the kept points restore
# byte-identical, the chain stays whole (tombstones) for list and both
# verifies, a damaged tenant is left alone, the running daemon's lock is
# respected, and --dry-run changes nothing.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
TT=$BUILD/target-transporter
TENANT=$T/repo/tenants/acme

TARGET_FLAGS=-vv		# its checkpoint lines
target_conf "$T/target.conf"
# tenant globex (the last section) keeps its chunks encrypted at rest
echo "the target's at-rest password" >"$T/pw"
chmod 600 "$T/pw"
printf 'at_rest = password\npassword_file = %s\n' "$T/pw" >>"$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme "block_size = 64K"
password_source_conf "$T/sealed.conf" "block_size = 64K"
source_conf "$T/globex.conf" globex "block_size = 64K"

# version N of the disk: version N-1 with 64 KiB block N rewritten
make_image "$T/v1.img" 4M 11
for n in 2 3 4 5; do
	cp "$T/v$((n - 1)).img" "$T/v$n.img"
	random_image "$T/blk" 1 "prune $n" >/dev/null
	dd if="$T/blk" of="$T/v$n.img" bs=64K count=1 seek="$n" \
	    conv=notrunc status=none
done
make_image "$T/b.img" 2M 12

# backup NAME IMAGE [ARGS]: a backup; its point id in $ID
backup() {
	local name=$1 img=$2
	shift 2
	check "backup of $(basename "$img") as $name" \
	    src backup --disk "$img" --name "$name" --json "$@"
	ID=$(json_get "$LAST_OUT" point_id)
}
backup vm "$T/v1.img"
ID1=$ID
backup vm "$T/v2.img"
backup vm "$T/v3.img"
ID3=$ID
backup vm "$T/v4.img"
ID4=$ID
backup other "$T/b.img"
backup other "$T/b.img"
SRC_CONF=$T/sealed.conf backup sealed "$T/v1.img" --encryption source-side
SRC_CONF=$T/sealed.conf backup sealed "$T/v2.img" --encryption source-side
for n in 1 2 3; do
	SRC_CONF=$T/globex.conf backup gvm "$T/v$n.img"
done
# at rest, another name with gvm #3's blocks: its chunks are those gvm's
# three jobs stored, sealed under their keys, which its point lists
SRC_CONF=$T/globex.conf backup gvm2 "$T/v3.img"

# state: manifests, indexes and chunks of tenant acme, by name
count() { find "$TENANT/$1" -name "${2:-*}" -type f 2>/dev/null | wc -l; }
snapshot() { (cd "$TENANT" && find . -type f | sort | xargs sha256sum); }

# The daemon holds the repository: prune refuses, --dry-run only looks.
expect_exit 1 "prune while the target runs: exit 1" \
    "$TT" prune --repository "$T/repo" --keep-last 2
expect_grep "in use by another process; stop target-transporter first" \
    "$LAST_ERR" "and says to stop the target first"
snapshot >"$T/before"
chunks_before=$(count chunks)
expect_exit 0 "prune --dry-run while the target runs" \
    "$TT" prune --repository "$T/repo" --tenant acme --keep-last 2 --dry-run
expect_grep "^would prune: acme/vm/.* \(#1\)$" "$LAST_OUT" \
    "dry run names the oldest point of vm"
expect_grep "2 restore point\(s\) to prune, 6 kept; [1-9][0-9]* unused chunk" \
    "$LAST_OUT" "dry run sums up: vm #1 and #2 go"
snapshot >"$T/after"
if cmp -s "$T/before" "$T/after"; then
	ok "dry run changed no file"
else
	not_ok "dry run changed no file" "$(diff "$T/before" "$T/after")"
fi

# Usage.
expect_exit 2 "prune without --keep-last: exit 2" \
    "$TT" prune --repository "$T/repo"
expect_grep "say what to keep: --keep-last N .* or --keep-within AGE" \
    "$LAST_ERR" "and says what is missing"
expect_exit 2 "prune --keep-last 0: exit 2" \
    "$TT" prune --repository "$T/repo" --keep-last 0
expect_exit 1 "prune of a directory that is no repository: exit 1" \
    "$TT" prune --repository "$T/typo" --keep-last 1
expect_grep "prune: .*/typo: No such file or directory" "$LAST_ERR" \
    "it names the path"
if [ -e "$T/typo" ]; then
	not_ok "and makes no repository there"
else
	ok "and makes no repository there"
fi
expect_exit 2 "prune --keep-within 3x: exit 2" \
    "$TT" prune --repository "$T/repo" --keep-within 3x
# By age: every point is younger than a day; with --keep-within 1s (two
# seconds on, as creation times are whole seconds) every name keeps only
# its newest point.
expect_exit 0 "dry run, --keep-within 1d" \
    "$TT" prune --repository "$T/repo" --keep-within 1d --dry-run
expect_grep "0 restore point\(s\) to prune, 12 kept" "$LAST_OUT" \
    "every point is kept for its age"
sleep 2
expect_exit 0 "dry run, --keep-within 1s" \
    "$TT" prune --repository "$T/repo" --keep-within 1s --dry-run
expect_grep "7 restore point\(s\) to prune, 5 kept" "$LAST_OUT" \
    "only the newest point of each name is kept"

target_stop
expect_exit 4 "prune of a name with no points: exit 4" \
    "$TT" prune --repository "$T/repo" --tenant acme --name nosuch \
    --keep-last 1

# damage_stops FILE OFFSET WHAT PATTERN: with a byte of FILE (of a point
# that stays) flipped, prune exits 5, says PATTERN and changes nothing else
damage_stops() {
	flip "$1" "$2"
	expect_exit 5 "prune with $3: exit 5" "$TT" prune \
	    --repository "$T/repo" --tenant acme --name vm --keep-last 2
	expect_grep "$4" "$LAST_ERR" "it says so ($3)"
	snapshot >"$T/after"
	if cmp -s <(grep -v "$(basename "$1")" "$T/before") \
	    <(grep -v "$(basename "$1")" "$T/after"); then
		ok "and changed nothing else ($3)"
	else
		not_ok "and changed nothing else ($3)" \
		    "$(diff "$T/before" "$T/after")"
	fi
	flip "$1" "$2"
}
damage_stops "$(find "$TENANT/points/other" -name '*.index' | sort | tail -n 1)" \
    40 "a damaged index in the tenant" \
    "cannot read the index of other/.*damaged; nothing of the tenant pruned"
damage_stops "$(find "$TENANT/points/other" -name '*.manifest' | sort | head -n 1)" \
    50 "a manifest that does not verify" \
    "tenant acme: 1 manifest\(s\) do not verify; nothing of the tenant pruned"

# The real prune: vm keeps its two newest points.
expect_exit 0 "prune of vm, keeping 2" \
    "$TT" prune --repository "$T/repo" --tenant acme --name vm --keep-last 2
expect_grep "^pruned: acme/vm/.* \(#2\)$" "$LAST_OUT" "it names what it pruned"
expect_grep "2 restore point\(s\) pruned, 2 kept; [1-9][0-9]* unused chunk\(s\), .* removed" \
    "$LAST_OUT" "and sums up"
if [ "$(count points/vm '*.manifest')" -eq 2 ] &&
    [ "$(count points/vm '*.index')" -eq 2 ] &&
    [ "$(count points/vm '*.pruned')" -eq 2 ] &&
    [ "$(count chunks)" -lt "$chunks_before" ]; then
	ok "two manifests and indexes left, two tombstones, fewer chunks"
else
	not_ok "two manifests and indexes left, two tombstones, fewer chunks" \
	    "$(ls "$TENANT/points/vm"; count chunks) chunks, $chunks_before before"
fi
check "target verify after the prune: intact" \
    "$TT" verify --repository "$T/repo"
expect_grep "intact" "$LAST_OUT" "it says intact"

# list_whole WHAT: `list --name vm` works and calls no point missing
list_whole() {
	check "list after $1" src list --name vm
	if grep -qi missing "$LAST"; then
		not_ok "list calls no point missing ($1)" "$(cat "$LAST")"
	else
		ok "list calls no point missing ($1)"
	fi
}
target_start "$T/target.conf" || bail "target did not start again"
list_whole "the prune"
if [ "$(grep -c "$ID3" "$LAST_OUT")" -ge 1 ]; then
	ok "list shows the kept point #3"
else
	not_ok "list shows the kept point #3"
	diag "$LAST"
fi
check "list --json after the prune" src list --name vm --json
jsoncheck "the oldest point left names a pruned predecessor, not a missing one" \
    'j[0]["sequence"] == 3 and j[0]["previous_pruned"] and not j[0]["previous_missing"] and not j[1]["previous_pruned"]'
check "restore of vm's newest after the prune" \
    src restore --name vm --output "$T/r4.img"
same "it is version 4, byte-identical" "$T/v4.img" "$T/r4.img"
expect_exit 4 "restore of a pruned point: exit 4" \
    src restore --name vm --point "$ID1" --output "$T/r1.img"
expect_grep "has no restore point '$ID1' \(it was pruned\)" "$LAST_ERR" \
    "the error says it was pruned"
check "restore of vm #3 after the prune" \
    src restore --name vm --point "$ID3" --output "$T/r3.img"
same "it is version 3, byte-identical" "$T/v3.img" "$T/r3.img"
SRC_CONF=$T/sealed.conf check "source verify --all after the prune" \
    src verify --all
check "incremental backup after the prune" \
    src backup --disk "$T/v5.img" --name vm
if grep -qi "miss the point before" "$LAST"; then
	not_ok "it warns of no missing point" "$(cat "$LAST")"
else
	ok "it warns of no missing point"
fi
check "restore of the new point" src restore --name vm --output "$T/r5.img"
same "it is version 5, byte-identical" "$T/v5.img" "$T/r5.img"
target_stop

# One point alone, in the middle of the chain: vm #4 of #3-#5.
expect_exit 2 "prune --point without --name: exit 2" \
    "$TT" prune --repository "$T/repo" --point "$ID4"
newest=$(find "$TENANT/points/vm" -name '*.manifest' | sort | tail -n 1)
newest=$(basename "$newest" .manifest)
expect_exit 1 "prune --point of the newest point: exit 1" \
    "$TT" prune --repository "$T/repo" --name vm --point "$newest"
expect_grep "is the newest point of 'vm' and stays; back 'vm' up again first" \
    "$LAST_ERR" "it says why"
expect_exit 4 "prune --point of a point that is not there: exit 4" \
    "$TT" prune --repository "$T/repo" --name vm --point "$ID1"
expect_exit 0 "prune --point of vm #4" \
    "$TT" prune --repository "$T/repo" --name vm --point "$ID4"
expect_grep "^pruned: acme/vm/$ID4 \(#4\)$" "$LAST_OUT" "it prunes #4 alone"
# v4's new block is in v5 too, and the block v5 rewrote is v3's.
expect_grep "1 restore point\(s\) pruned, 2 kept; 0 unused chunk" \
    "$LAST_OUT" "and frees nothing: #3 and #5 hold every block of #4"
check "target verify after a middle point was pruned: intact" \
    "$TT" verify --repository "$T/repo" --tenant acme --name vm
target_start "$T/target.conf" || bail "target did not start again"
list_whole "a middle point was pruned"
check "restore of vm #3 after #4 went" \
    src restore --name vm --point "$ID3" --output "$T/r3b.img"
same "it is version 3, byte-identical" "$T/v3.img" "$T/r3b.img"
SRC_CONF=$T/sealed.conf check "source verify --all after #4 went" \
    src verify --all
target_stop

# A tombstone is the manifest the successor was chained to, not a name.
tomb=$(find "$TENANT/points/vm" -name '*.pruned' | sort | tail -n 1)
flip "$tomb" 60
expect_exit 5 "a changed tombstone: target verify exit 5" \
    "$TT" verify --repository "$T/repo" --tenant acme --name vm
expect_grep "^missing: restore point acme/vm/.* \(#[0-9]+\) is missing; referenced by acme/vm/" \
    "$LAST_OUT" "it names the pruned point as missing"
flip "$tomb" 60
check "the tombstone put back: intact" \
    "$TT" verify --repository "$T/repo" --tenant acme --name vm

# A damaged at-rest key file: which keys the chunks need is not known.
KC=$T/repo/tenants/globex/at-rest.keychain
cp "$KC" "$T/globex.good"
flip "$KC" 40
n=$(find "$T/repo/tenants/globex/points" -name '*.manifest' | wc -l)
expect_exit 5 "a damaged at-rest key file: prune exit 5" \
    "$TT" prune --repository "$T/repo" --tenant globex --keep-last 1
expect_grep "prune: tenant globex: the at-rest key file is damaged: .*; nothing of the tenant pruned. Restore .*/globex/at-rest.keychain from a copy" \
    "$LAST_ERR" "it says so, and what to do"
[ "$(find "$T/repo/tenants/globex/points" -name '*.manifest' | wc -l)" -eq "$n" ] &&
    ok "no point of the tenant pruned" || not_ok "no point of the tenant pruned"
cp "$T/globex.good" "$KC"

# Every name of every tenant down to its newest point.
gchunks=$(find "$T/repo/tenants/globex/chunks" -type f | wc -l)
cp "$T/repo/tenants/globex/at-rest.keychain" "$T/globex.keychain"
expect_exit 0 "prune of everything, keeping 1" \
    "$TT" prune --repository "$T/repo" --keep-last 1
expect_grep "5 restore point\(s\) pruned, 5 kept" "$LAST_OUT" \
    "vm #3, other #1, sealed #1, gvm #1 and #2 (at rest)"
# gvm #3 holds blocks that gvm #1 and #2 stored: their keys stay.
if grep -q "dropped" "$LAST_OUT" || ! cmp -s "$T/globex.keychain" \
    "$T/repo/tenants/globex/at-rest.keychain"; then
	not_ok "every at-rest key still seals a chunk: none dropped" "$(cat "$LAST_OUT")"
else
	ok "every at-rest key still seals a chunk: none dropped"
fi
check "target verify: intact" "$TT" verify --repository "$T/repo"
if [ "$(find "$T/repo/tenants/globex/chunks" -type f | wc -l)" -lt "$gchunks" ]; then
	ok "the at-rest tenant has fewer chunks"
else
	not_ok "the at-rest tenant has fewer chunks" "still $gchunks"
fi
target_start "$T/target.conf" || bail "target did not start again"
SRC_CONF=$T/sealed.conf check "source verify --all" src verify --all
SRC_CONF=$T/globex.conf check "restore of gvm (at rest)" \
    src restore --name gvm --output "$T/last-gvm.img"
same "gvm is byte-identical" "$T/v3.img" "$T/last-gvm.img"
SRC_CONF=$T/globex.conf check "restore of gvm2 (at rest, gvm's chunks)" \
    src restore --name gvm2 --output "$T/last-gvm2.img"
same "gvm2 is byte-identical" "$T/v3.img" "$T/last-gvm2.img"
for pair in vm:v5 other:b sealed:v2; do
	SRC_CONF=$T/sealed.conf check "restore of ${pair%%:*}" \
	    src restore --name "${pair%%:*}" --output "$T/last-${pair%%:*}.img"
	same "${pair%%:*} is byte-identical" "$T/${pair#*:}.img" \
	    "$T/last-${pair%%:*}.img"
done
target_stop
# A prune cut off after a tombstone left that point's index behind.
tomb=$(find "$TENANT/points/vm" -name '*.pruned' | sort | head -n 1)
cp "$(find "$TENANT/points/vm" -name '*.index' | head -n 1)" "${tomb%.pruned}.index"
expect_exit 0 "a second prune finds nothing to do" \
    "$TT" prune --repository "$T/repo" --keep-last 1
expect_grep "0 restore point\(s\) pruned, 5 kept; 0 unused chunk" \
    "$LAST_OUT" "and removes nothing"
if [ -e "${tomb%.pruned}.index" ]; then
	not_ok "but the index a cut-off prune left is gone"
else
	ok "but the index a cut-off prune left is gone"
fi

# An interrupted job's durable chunks stay, and the next backup resumes
# from them (slow: incompressible, the slowest level, one worker).
source_conf "$T/slow.conf" acme "compression_level = 19" "workers = 1" \
    "window = 64M" "resume_timeout = 120s"
head -c 24M /dev/urandom >"$T/cut.img"
target_start "$T/target.conf" || bail "target did not start again"
n=$(grep -c 'checkpoint of' "$TARGET_LOG")
"$BUILD/source-transporter" -f "$T/slow.conf" backup --disk "$T/cut.img" \
    --name cut >/dev/null 2>&1 &
bpid=$!
track $bpid
for _ in $(seq 300); do
	[ "$(grep -c 'checkpoint of' "$TARGET_LOG")" -gt "$n" ] && break
	sleep 0.1
done
kill -KILL $bpid
wait $bpid 2>/dev/null
wait_grep "suspended" "$TARGET_LOG"
target_stop
journal=$(find "$TENANT/tmp" -name journal | head -n 1)
if [ -n "$journal" ]; then
	ok "a backup cut off after a checkpoint left its journal"
else
	not_ok "a backup cut off after a checkpoint left its journal"
	diag "$TARGET_LOG"
fi
expect_exit 0 "prune with an interrupted job" \
    "$TT" prune --repository "$T/repo" --keep-last 1
# journal: 32-byte header (name length at 6, blocks at 24), name, ids
"$PY" - "$journal" "$TENANT/chunks" >"$T/journal.check" 2>&1 <<'PYEOF'
import os, struct, sys
b = open(sys.argv[1], "rb").read()
namelen = struct.unpack(">H", b[6:8])[0]
blocks = struct.unpack(">Q", b[24:32])[0]
ids = [b[32 + namelen + 32 * i:32 + namelen + 32 * (i + 1)] for i in range(blocks)]
named = [i.hex() for i in ids if i != bytes(32)]
gone = [h for h in named if not os.path.exists(os.path.join(sys.argv[2], h[:2], h))]
print(len(named), "named,", len(gone), "gone")
sys.exit(1 if gone or not named else 0)
PYEOF
verdict "every chunk the journal names is still there"
diag "$T/journal.check"
target_start "$T/target.conf" || bail "target did not start again"
SRC_CONF=$T/slow.conf check "the backup again" \
    src backup --disk "$T/cut.img" --name cut --json
jsoncheck "it resumed from the journal" \
    'j["resumed"] and j["blocks_unchanged"] > 0'
check "restore of it" src restore --name cut --output "$T/rcut.img"
same "it is byte-identical" "$T/cut.img" "$T/rcut.img"

# Purging one point: a block of random bytes backed up once, then gone
# from the disk, is in no chunk file once that point is pruned.
cp "$T/v1.img" "$T/secret.img"
head -c 64K /dev/urandom >"$T/secret.blk"
dd if="$T/secret.blk" of="$T/secret.img" bs=64K seek=9 conv=notrunc status=none
dd if="$T/secret.blk" of="$T/needle" bs=64 skip=100 count=1 status=none
backup secret "$T/secret.img"
SECRET=$ID
backup secret "$T/v1.img"
in_chunks acme && ok "the random block is in a chunk file" ||
    not_ok "the random block is in a chunk file"
target_stop
expect_exit 0 "prune --point of the point that had it" \
    "$TT" prune --repository "$T/repo" --name secret --point "$SECRET"
expect_grep "1 restore point\(s\) pruned, 1 kept; 1 unused chunk" \
    "$LAST_OUT" "one chunk went"
in_chunks acme && not_ok "the random block is in no chunk file any more" ||
    ok "the random block is in no chunk file any more"
check "target verify: intact" "$TT" verify --repository "$T/repo"

# A full at-rest key file (65536 keys: one per at-rest backup; here all
# but the tenant's own are made up) refuses backups until prune drops the
# keys no chunk is sealed under.
target_start "$T/target.conf" || bail "target did not start again"
SRC_CONF=$T/globex.conf backup gvm "$T/v4.img"
target_stop
"$PY" "$(dirname "$0")/../tools/fillkeys.py" "$KC" 65536
run "$BUILD/tests/tools/keytool" list "$KC"
[ "$(grep -c . "$LAST_OUT")" -eq 65536 ] && ok "the key file holds 65536 keys" ||
    not_ok "the key file holds 65536 keys" "$(grep -c . "$LAST_OUT")"
target_start "$T/target.conf" || bail "target did not start again"
SRC_CONF=$T/globex.conf expect_fail "a backup with the key file full: refused" \
    src backup --disk "$T/v5.img" --name gvm
expect_grep "at-rest key of tenant globex unavailable: its key file .*/at-rest.keychain holds 65536 keys, the most it can; prune old restore points \('target-transporter prune'\)" \
    "$LAST_ERR" "it says why and what to do"
target_stop
# A chunk that stays with a header that does not read: its key is not
# known, so no key goes.
read -r _ CHUNK < <(chunk_of "$T/repo/tenants/globex" gvm2 0)
cp "$CHUNK" "$T/chunk.good"
truncate -s 40 "$CHUNK"
cp "$KC" "$T/globex.full"
check "prune with a damaged chunk that stays" \
    "$TT" prune --repository "$T/repo" --tenant globex --keep-last 1
expect_grep "tenant globex: 1 chunk\(s\) that stay have a header that does not read; every at-rest key stays" \
    "$LAST_ERR" "it says why it keeps every key"
cmp -s "$KC" "$T/globex.full" && ok "and the key file is as it was" ||
    not_ok "and the key file is as it was"
cp "$T/chunk.good" "$CHUNK"
check "prune of the tenant, the chunk mended" \
    "$TT" prune --repository "$T/repo" --tenant globex --keep-last 1
expect_grep "^dropped: tenant globex: 655[0-9][0-9] of 65536 at-rest data key\(s\): no remaining chunk is sealed under them$" \
    "$LAST_OUT" "it drops the made-up keys (with nothing to prune)"
target_start "$T/target.conf" || bail "target did not start again"
SRC_CONF=$T/globex.conf check "the backup goes on again" \
    src backup --disk "$T/v5.img" --name gvm
SRC_CONF=$T/globex.conf check "restore of it" \
    src restore --name gvm --output "$T/gvm5.img"
same "byte-identical" "$T/v5.img" "$T/gvm5.img"
SRC_CONF=$T/globex.conf check "restore of gvm2, made before the prune" \
    src restore --name gvm2 --output "$T/gvm2b.img"
same "byte-identical" "$T/v3.img" "$T/gvm2b.img"
finish
