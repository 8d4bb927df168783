#!/bin/bash
# verify: every block of a restore point read back and checked, nothing
# written, each damage named with its block and offset.  A corruption
# table: a flipped payload byte, a bad header, a missing chunk, a valid
# chunk under another chunk's name, a source-side chunk re-digested so
# only its AES-GCM tag can tell, a damaged index, a damaged manifest.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
export TRANSPORTER_ARGON2_MEMORY_KIB=64
make_image "$T/disk.img" 24M 81
target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme
echo "a password" >"$T/pw"
chmod 600 "$T/pw"
source_conf "$T/ss.conf" acme "encryption = source-side" \
    "key_provider = password" "password_file = $T/pw"
REPO=$T/repo/tenants/acme

check "backup (in flight)" src backup --disk "$T/disk.img" --name vm
check "backup (source-side)" env SRC_CONF="$T/ss.conf" bash -c \
    "'$BUILD/source-transporter' -f '$T/ss.conf' backup --disk '$T/disk.img' --name sec"
check "verify an intact point" src verify --name vm
expect_grep 'every one intact' "$LAST_OUT" "says every block is intact"
SRC_CONF=$T/ss.conf check "verify an intact source-side point" src verify --name sec


read -r b1 c1 <<<"$(chunk_of "$REPO" vm 1)"
cp "$c1" "$T/c1.saved"
flip "$c1" 50
expect_exit 5 "a flipped payload byte: exit 5" src verify --name vm
expect_grep "block $b1 \(offset $((b1 << 20))\)" "$LAST_OUT" "names the block and its offset"
cp "$T/c1.saved" "$c1"

read -r b2 c2 <<<"$(chunk_of "$REPO" vm 2)"
cp "$c2" "$T/c2.saved"
flip "$c2" 13
expect_exit 5 "a damaged chunk header (length): exit 5" src verify --name vm
expect_grep "block $b2 " "$LAST_OUT" "names that block"
cp "$T/c2.saved" "$c2"

read -r b3 c3 <<<"$(chunk_of "$REPO" vm 3)"
mv "$c3" "$T/c3.saved"
expect_exit 5 "a missing chunk: exit 5" src verify --name vm
expect_grep "block $b3 .*missing" "$LAST_OUT" "says it is missing"
mv "$T/c3.saved" "$c3"

# Two damaged blocks at once: both are named, verify goes on.
read -r b4 c4 <<<"$(chunk_of "$REPO" vm 4)"
cp "$c1" "$T/c1.saved"; cp "$c4" "$T/c4.saved"
# A valid chunk of another block under c4's name: only the chunk id
# (checked by the source) can tell.
cp "$c1" "$c4"
flip "$c1" 50
expect_exit 5 "a moved chunk and a flipped one: exit 5" src verify --name vm
expect_grep "block $b1 " "$LAST_OUT" "the flipped one is named"
expect_grep "block $b4 .*checksum|block $b4 .*match" "$LAST_OUT" \
    "the moved one is named (its chunk id does not match)"
cp "$T/c1.saved" "$c1"; cp "$T/c4.saved" "$c4"
check "verify passes again once repaired" src verify --name vm

# Source-side: ciphertext flipped and the digest rewritten, so only the
# AES-GCM tag under the point's data key catches it.
read -r s1 sc1 <<<"$(chunk_of "$REPO" sec 1)"
cp "$sc1" "$T/s1.saved"
flip "$sc1" 90 fix
SRC_CONF=$T/ss.conf expect_exit 5 "source-side: a re-digested ciphertext fails its tag" \
    src verify --name sec
expect_grep "block $s1 .*authentication" "$LAST_OUT" "names the block and the tag"
cp "$T/s1.saved" "$sc1"
# The same for its nonce and its tag (a sealed chunk is the 48-byte
# header, then key id (16) | nonce (12) | ciphertext | tag (16)).
for part in "nonce 67" "tag $(($(stat -c %s "$sc1") - 1))"; do
	set -- $part
	flip "$sc1" "$2" fix
	SRC_CONF=$T/ss.conf expect_exit 5 "source-side: a re-digested chunk with its $1 flipped fails" \
	    src verify --name sec
	expect_grep "block $s1 .*authentication" "$LAST_OUT" "names the block ($1)"
	cp "$T/s1.saved" "$sc1"
done
SRC_CONF=$T/ss.conf check "source-side verify passes again once repaired" src verify --name sec

# Index and manifest.
idx=$(ls "$REPO/points/vm/"*.index | tail -1)
cp "$idx" "$T/idx.saved"
flip "$idx" 40
expect_exit 5 "a damaged index: exit 5" src verify --name vm
cp "$T/idx.saved" "$idx"
man=$(ls "$REPO/points/vm/"*.manifest | tail -1)
flip "$man" 20
# The point is not listed any more; this source committed it, so it
# says the target went back (exit 9), pointing at the target's verify.
expect_exit 9 "a damaged manifest: the point is gone (exit 9: not what was committed)" \
    src verify --name vm
expect_grep "committed vm/.* \(#1\), it has no restore point of vm .*target-transporter verify" \
    "$LAST_ERR" "names the point and where to look"
expect_exit 4 "with the target's state accepted: no such point (exit 4)" \
    src verify --name vm --accept-rollback
finish
