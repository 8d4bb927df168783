#!/bin/bash
# integrity: the points of a name form a chain (sequence numbers, each
# naming the one before it), so a deleted middle point is named by
# list, verify and the target's own verify; a repository put back to an
# older copy is refused by the source (exit 9, a restore of the newest
# point too) until --accept-rollback;
# `source-transporter verify --all` reads every point; and the offline,
# key-less `target-transporter verify` passes an intact repository (in
# flight, source-side, at rest), runs beside the daemon, and names each
# damage of a corruption table with its point, block and offset.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
export TRANSPORTER_ARGON2_MEMORY_KIB=64
make_image "$T/disk.img" 24M 81
make_image "$T/disk2.img" 24M 82
echo "the target's at-rest password" >"$T/tpw"
chmod 600 "$T/tpw"
target_conf "$T/target.conf" "[tenant nobody]" "identity = nobody-source" \
    "at_rest = password" "password_file = $T/tpw"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme
echo "a password" >"$T/pw"
chmod 600 "$T/pw"
source_conf "$T/ss.conf" acme "encryption = source-side" \
    "key_provider = password" "password_file = $T/pw"
source_conf "$T/globex.conf" globex
source_conf "$T/gss.conf" globex "encryption = source-side" \
    "key_provider = password" "password_file = $T/pw"
source_conf "$T/nobody.conf" unknown
REPO=$T/repo/tenants/acme
tv() { "$BUILD/target-transporter" verify "$@"; }

for i in 1 2 3; do
	check "in flight: backup $i of vm" src backup --disk "$T/disk.img" --name vm
done
SRC_CONF=$T/ss.conf check "source-side: backup of sec" \
    src backup --disk "$T/disk.img" --name sec
SRC_CONF=$T/gss.conf check "source-side: globex's backup of sec" \
    src backup --disk "$T/disk2.img" --name sec
SRC_CONF=$T/globex.conf check "in flight: globex's backup of vm" \
    src backup --disk "$T/disk2.img" --name vm
SRC_CONF=$T/nobody.conf check "at rest: backup of ar" \
    src backup --disk "$T/disk.img" --name ar

# --- the chain ---------------------------------------------------------------
check "list --json" src list --name vm --json
expect_grep '"sequence":3,"previous_id":"[0-9T]+Z-[0-9a-f]{8}","previous_missing":false' \
    "$LAST_OUT" "the third point is #3 and names the second"
expect_grep '"sequence":1,"previous_id":""' "$LAST_OUT" "the first point is #1"
mapfile -t ids < <(ls "$REPO/points/vm/" | sed -n 's/\.manifest$//p' | sort)
[ "${#ids[@]}" -eq 3 ] || bail "expected 3 points of vm, found ${#ids[@]}"

expect_exit 0 "target verify: an intact repository (in flight, source-side, at rest)" \
    tv --repository "$T/repo"
expect_grep 'intact$' "$LAST_OUT" "target verify says intact"
expect_grep '7 point\(s\) read in 5 backup name\(s\) of 3 tenant\(s\)' "$LAST_OUT" \
    "it read every point of every tenant"
check "the daemon still serves beside it (verify takes no lock)" src list

# A deleted middle point.
mkdir -p "$T/saved"
mv "$REPO/points/vm/${ids[1]}".* "$T/saved/"
check "list with a middle point deleted still lists (exit 0)" src list --name vm
expect_grep "vm +${ids[1]} +MISSING \(#2\)" "$LAST_OUT" "list shows the missing point"
expect_grep "restore point vm/${ids[1]} \(#2\) is missing; referenced by vm/${ids[2]} \(#3\)" \
    "$LAST_ERR" "list warns, naming it and its successor"
expect_exit 5 "verify --name vm: exit 5 when a middle point is missing" src verify --name vm
expect_grep "vm/${ids[1]} \(#2\) is missing; referenced by vm/${ids[2]} \(#3\)" \
    "$LAST_ERR" "verify names the missing point"
SRC_CONF=$T/ss.conf expect_exit 5 "verify --all: exit 5" src verify --all
expect_grep "is missing; referenced by vm/${ids[2]}" "$LAST_ERR" "verify --all names it"
expect_grep "^verify: 3 restore point\(s\) of 2 name\(s\): 0 damaged, 0 could not be checked, a point is missing" \
    "$LAST_OUT" "verify --all reads the other points and sums up"
expect_grep "^verified vm/${ids[2]}: " "$LAST_OUT" "verify --all verified the points that are there"
expect_exit 5 "target verify: exit 5 for a missing middle point" tv --repository "$T/repo"
expect_grep "^missing: restore point acme/vm/${ids[1]} \(#2\) is missing; referenced by acme/vm/${ids[2]} \(#3\)$" \
    "$LAST_OUT" "target verify names the missing point and its successor"
mv "$T/saved/${ids[1]}".* "$REPO/points/vm/"
SRC_CONF=$T/ss.conf check "verify --all passes once the point is back" src verify --all
expect_grep "^verify: 4 restore point\(s\) of 2 name\(s\): 0 damaged, 0 could not be checked, every chain whole" \
    "$LAST_OUT" "verify --all: every point of every name, every chain whole"
expect_grep "^verified sec/" "$LAST_OUT" "verify --all read the source-side point too"

# --- a rolled-back repository ------------------------------------------------
SRC_CONF=$T/globex.conf check "globex: backup 2 of vm" src backup --disk "$T/disk.img" --name vm
cp -a "$T/repo/tenants/globex" "$T/globex.snapshot"
SRC_CONF=$T/globex.conf check "globex: backup 3 of vm" src backup --disk "$T/disk2.img" --name vm
g3=$(ls "$T/repo/tenants/globex/points/vm/" | sed -n 's/\.manifest$//p' | sort | tail -1)
rm -rf "$T/repo/tenants/globex"
cp -a "$T/globex.snapshot" "$T/repo/tenants/globex"
SRC_CONF=$T/globex.conf expect_exit 9 "a rolled-back repository: backup refuses (exit 9)" \
    src backup --disk "$T/disk.img" --name vm
expect_grep "the target went back: this source committed vm/$g3 \(#3\), its newest is [0-9T]+Z-[0-9a-f]{8} \(#2\)" \
    "$LAST_ERR" "names the point that went and what the target has"
n=$(ls "$T/repo/tenants/globex/points/vm/" | grep -c '\.manifest$')
[ "$n" -eq 2 ] && ok "nothing was backed up on the old state" || not_ok "$n points of globex/vm"
g2=$(ls "$T/repo/tenants/globex/points/vm/" | sed -n 's/\.manifest$//p' | sort | tail -1)
SRC_CONF=$T/globex.conf expect_exit 9 "list refuses too (exit 9)" src list
expect_grep "went back: this source committed vm/$g3" "$LAST_ERR" "list says what went back"
expect_grep "$g2" "$LAST_OUT" "and shows what the target has, to choose from"
if grep -q "$g3" "$LAST_OUT"; then
	not_ok "but not the point that went" "$(cat "$LAST_OUT")"
else
	ok "but not the point that went"
fi
SRC_CONF=$T/globex.conf expect_exit 9 "verify refuses too (exit 9)" src verify --name vm
SRC_CONF=$T/globex.conf expect_exit 9 "a restore of the newest refuses too (exit 9)" \
    src restore --name vm --output "$T/rolled.img"
expect_grep "the target went back: this source committed vm/$g3 \(#3\), its newest is $g2 \(#2\); restore that one with --point $g2" \
    "$LAST_ERR" "restore says what went back and how to restore the older point"
[ -z "$(ls "$T"/rolled.img* 2>/dev/null)" ] && ok "nothing was written" ||
    not_ok "nothing was written" "$(ls "$T"/rolled.img*)"
SRC_CONF=$T/globex.conf check "restore --point of the older point goes on" \
    src restore --name vm --point "$g2" --output "$T/rolled.img"
same "it is backup 2, byte-identical" "$T/disk.img" "$T/rolled.img"
SRC_CONF=$T/globex.conf check "backup --accept-rollback goes on" \
    src backup --disk "$T/disk.img" --name vm --accept-rollback
expect_grep "accepted: vm/$g3 \(#3\) is gone from the target" "$LAST_ERR" "says what it accepted"
SRC_CONF=$T/globex.conf check "and later commands pass without it" src verify --all --name vm
# The newest point deleted (no successor names it): the source's state
# still tells.
g4=$(ls "$T/repo/tenants/globex/points/vm/" | sed -n 's/\.manifest$//p' | sort | tail -1)
mv "$T/repo/tenants/globex/points/vm/$g4".* "$T/saved/"
SRC_CONF=$T/globex.conf expect_exit 9 "the newest point deleted: the source refuses (exit 9)" src list --name vm
expect_grep "committed vm/$g4 \(#3\)" "$LAST_ERR" "and names it"
mv "$T/saved/$g4".* "$T/repo/tenants/globex/points/vm/"
SRC_CONF=$T/globex.conf check "back in place: list passes" src list --name vm
# A backup checks on its own connection: the target sends the chain with
# the base index, and Committed tells the new point to remember.
mapfile -t gids < <(ls "$T/repo/tenants/globex/points/vm/" | sed -n 's/\.manifest$//p' | sort)
mv "$T/repo/tenants/globex/points/vm/${gids[1]}".* "$T/saved/"
before=$(grep -c "authenticated as" "$TARGET_LOG")
SRC_CONF=$T/globex.conf check "a backup with a middle point missing goes on" \
    src backup --disk "$T/disk.img" --name vm --json
after=$(grep -c "authenticated as" "$TARGET_LOG")
[ $((after - before)) -eq 1 ] && ok "the backup and its rollback check took one connection" ||
    not_ok "the backup took $((after - before)) connections"
expect_grep "1 restore point\(s\) of vm miss the point before them" "$LAST_ERR" \
    "the backup warns of the gap"
g5=$(json_get "$LAST_OUT" point_id)
mv "$T/saved/${gids[1]}".* "$T/repo/tenants/globex/points/vm/"
mv "$T/repo/tenants/globex/points/vm/$g5".* "$T/saved/"
SRC_CONF=$T/globex.conf expect_exit 9 "its point deleted: the next backup refuses (exit 9)" \
    src backup --disk "$T/disk.img" --name vm
expect_grep "committed vm/$g5 \(#4\), its newest is ${gids[2]} \(#3\)" "$LAST_ERR" \
    "the backup remembered the point it made (#4)"
mv "$T/saved/$g5".* "$T/repo/tenants/globex/points/vm/"
SRC_CONF=$T/globex.conf check "back in place: backup passes" src backup --disk "$T/disk.img" --name vm

# --- target verify: a corruption table ----------------------------------------
# damaged WHAT REGEX: target verify exits 5 and prints REGEX
damaged() {
	expect_exit 5 "target verify: $1: exit 5" tv --repository "$T/repo"
	expect_grep "$2" "$LAST_OUT" "target verify: $1: named"
}
v3=${ids[2]}

read -r b1 c1 <<<"$(chunk_of "$T/repo/tenants/acme" vm 1)"
cp "$c1" "$T/c.saved"
flip "$c1" 60
damaged "a flipped payload byte" \
    "^damaged: acme/vm/$v3 \(#3\) block $b1 \(offset $((b1 << 20))\): chunk .* stored payload \(bytes 48-[0-9]+\) does not match the XXH3-128 in its header$"
cp "$T/c.saved" "$c1"

flip "$c1" 13
damaged "a flipped chunk header byte (stored length)" \
    "^damaged: acme/vm/$v3 \(#3\) block $b1 \(offset $((b1 << 20))\): .*header lengths damaged"
cp "$T/c.saved" "$c1"
flip "$c1" 1
damaged "a flipped chunk header byte (magic)" "block $b1 .*header damaged \(magic, version or flags"
cp "$T/c.saved" "$c1"

mv "$c1" "$T/c.saved"
damaged "a deleted chunk" "^damaged: acme/vm/$v3 \(#3\) block $b1 \(offset $((b1 << 20))\): chunk tenants/acme/chunks/.* is missing$"
mv "$T/c.saved" "$c1"

read -r b2 c2 <<<"$(chunk_of "$T/repo/tenants/acme" vm 2)"
cp "$c2" "$T/c2.saved"
cp "$c1" "$c2"
damaged "a valid chunk under another chunk's id" \
    "block $b2 .*does not hold the block its id names"
cp "$T/c2.saved" "$c2"

read -r _ gc <<<"$(chunk_of "$T/repo/tenants/globex" vm 1)"
cp "$gc" "$c2"
damaged "in flight: a valid chunk of another tenant" "block $b2 .*does not hold the block its id names"
cp "$T/c2.saved" "$c2"

read -r sb ssc <<<"$(chunk_of "$T/repo/tenants/acme" sec 1)"
read -r _ gsc <<<"$(chunk_of "$T/repo/tenants/globex" sec 1)"
cp "$ssc" "$T/s.saved"
cp "$gsc" "$ssc"
damaged "source-side, no key: a valid chunk of another tenant" \
    "^damaged: acme/sec/.* block $sb .*is sealed under key [0-9a-f]{32}, which this point does not record"
cp "$T/s.saved" "$ssc"
flip "$ssc" 100
damaged "source-side, no key: a flipped ciphertext byte" "acme/sec/.* block $sb .*does not match the XXH3-128"
cp "$T/s.saved" "$ssc"

idx="$REPO/points/vm/$v3.index"
cp "$idx" "$T/idx.saved"
flip "$idx" 40
damaged "a flipped index byte" "^damaged: acme/vm/$v3: index does not match the digest its manifest records$"
expect_grep "^damaged: acme/vm/$v3 \(#3\) block 0 \(offset 0\): chunk .* is missing: the index entry \(bytes 20-51 of $v3.index\) is damaged$" \
    "$LAST_OUT" "target verify: a flipped index byte: the block of that entry is named"
cp "$T/idx.saved" "$idx"

man="$REPO/points/vm/${ids[1]}.manifest"
cp "$man" "$T/man.saved"
flip "$man" 20
damaged "a flipped manifest byte" "^damaged: acme/vm/${ids[1]}: manifest checksum mismatch"
cp "$T/man.saved" "$man"

# A middle point's manifest rebuilt with a valid checksum (its creation
# time changed): only the chain, its successor's digest of it, can tell.
"$PY" - "$man" "${ids[1]}" <<'PYEOF'
import hashlib, struct, sys
p, pid = sys.argv[1], sys.argv[2].encode()
b = bytearray(open(p, "rb").read())
n = struct.unpack(">I", b[4:8])[0]
at = bytes(b).find(b"\x12\x19" + pid + b"\x18")
assert 0 < at < 8 + n
b[at + 2 + len(pid) + 1] ^= 0x01   # the created varint, same length
b[8 + n:] = hashlib.sha256(bytes(b[:8 + n])).digest()
open(p, "wb").write(bytes(b))
PYEOF
damaged "a middle manifest replaced by a self-consistent one" \
    "^damaged: the manifest of acme/vm/${ids[1]} \(#2\) is not the one acme/vm/$v3 \(#3\) was chained to"
cp "$T/man.saved" "$man"

expect_exit 0 "target verify --tenant --name --point: one intact point" \
    tv --repository "$T/repo" --tenant acme --name vm --point "$v3"
expect_grep "1 point\(s\) read in 1 backup name\(s\) of 1 tenant\(s\)" "$LAST_OUT" "reads only that point"
expect_exit 4 "target verify of a name that is not there: exit 4" \
    tv --repository "$T/repo" --tenant acme --name nosuch
expect_exit 0 "target verify -f CONF: intact again after every repair" \
    tv -f "$T/target.conf"
check "the daemon served throughout" src verify --all --name vm
finish
