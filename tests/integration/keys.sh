#!/bin/bash
# Key management (common/keys.c, through keytool) against a real PyKMIP
# server: rotation across three KEK versions with one chain, the chain
# read with only the newest version, each point's own version without
# the chain, revoked and destroyed versions, KMS down, an exported key
# file read without the KMS, password KEKs, and no key byte in any file.
#
# A "point" here is a key chain file holding one restore point's wrapped
# DEK; the chain file holds every point's DEK (docs/KEYS.md).
. "$(dirname "$0")/../lib.sh"

# kms_init (lib.sh): pykmip-server on $KMS_PORT, fast Argon2id
# (documented in docs/KEYS.md), kt and kmipt as client acme.
kms_init
ok "pykmip-server starts"
D=$T/keys
mkdir -p "$D"
PORT=$KMS_PORT
KMS=127.0.0.1:$PORT

# --- rotation: three versions, one point wrapped by each ---------------

uids=() ids=() kcvs=()
for v in 1 2 3; do
	run kmipt create acme-kek && u=$(cat "$LAST_OUT") && [ -n "$u" ] &&
	    run kmipt activate "$u" || { diag "$LAST"; bail "cannot create version $v"; }
	uids+=("$u")
	run kt kmip-newest acme-kek
	[ "$RC" -eq 0 ] && [ "$(cut -d' ' -f1 "$LAST_OUT")" = "$u" ]
	verdict "version $v ($u) is the newest Active acme-kek"
	run kt -K kmip:acme-kek new "$D/point$v.kc"
	[ "$RC" -eq 0 ] && [[ $(cat "$LAST_OUT") =~ ^[0-9a-f]{32}\ [0-9a-f]{16}$ ]]
	verdict "point $v: a new DEK wrapped by the newest version, only its id and check value shown"
	ids+=("$(cut -d' ' -f1 "$LAST_OUT")")
	kcvs+=("$(cat "$LAST_OUT")")
	run kt list "$D/point$v.kc"
	grep -q "^${ids[-1]} data KMIP key $u 'acme-kek' version [0-9]* on KMS $KMS$" "$LAST_OUT"
	verdict "point $v records provider, KMS, name, id $u and version"
done
u1=${uids[0]} u2=${uids[1]} u3=${uids[2]}
all_kcvs=$(printf '%s\n' "${kcvs[@]}" | sort)

check "the chain file gets every point's key" \
    kt add "$D/chain.kc" "$D/point1.kc" "$D/point2.kc" "$D/point3.kc"
run kt needs "$D/chain.kc"
sed 's/ version [0-9]*//' "$LAST_OUT" >"$T/needs" && cp "$T/needs" "$LAST_OUT"
expect_out "the chain needs three versions, oldest first, all available" \
    "$(printf '%s\n' "$D/chain.kc: KMIP key $u1 'acme-kek' on KMS $KMS: available" \
    "$D/chain.kc: KMIP key $u2 'acme-kek' on KMS $KMS: available" \
    "$D/chain.kc: KMIP key $u3 'acme-kek' on KMS $KMS: available")"

run kt -K kmip:acme-kek rewrap "$D/chain.kc"
[ "$RC" -eq 0 ] && grep -q "^2 of 3 keys wrapped again under KMIP key $u3 " "$LAST_OUT"
verdict "rewrap: the two older keys wrapped again under the newest ($u3)"
run kt needs "$D/chain.kc"
[ "$RC" -eq 0 ] && [ "$(wc -l <"$LAST_OUT")" -eq 1 ] &&
    grep -q "KMIP key $u3 'acme-kek'" "$LAST_OUT"
verdict "after rewrap the chain needs only the newest version"
run kt -K kmip:acme-kek rewrap "$D/chain.kc"
[ "$RC" -eq 0 ] && grep -q "^0 of 3 keys" "$LAST_OUT"
verdict "rewrap again: nothing to do"

run kt -x -K kmip:acme-kek unwrap "$D/chain.kc"
sort "$LAST_OUT" >"$T/s" && cp "$T/s" "$LAST_OUT"
expect_out "the whole chain unwraps with only the newest version (-x), same keys" \
    "$all_kcvs"
expect_exit 8 "with only the newest (-x), point 1 alone cannot be read" \
    kt -x -K kmip:acme-kek unwrap "$D/point1.kc"
expect_grep "needs KMIP key $u1 'acme-kek'.*not loaded" "$LAST_ERR" \
    "and the error names the version it needs"

# --- without the chain file: each point needs its own version ----------

run kt needs "$D/point1.kc" "$D/point2.kc" "$D/point3.kc"
sed 's/ version [0-9]*//' "$LAST_OUT" >"$T/needs" && cp "$T/needs" "$LAST_OUT"
expect_out "without the chain, each point lists the key id it needs, all available" \
    "$(printf '%s\n' "$D/point1.kc: KMIP key $u1 'acme-kek' on KMS $KMS: available" \
    "$D/point2.kc: KMIP key $u2 'acme-kek' on KMS $KMS: available" \
    "$D/point3.kc: KMIP key $u3 'acme-kek' on KMS $KMS: available")"
for v in 1 2 3; do
	run kt unwrap "$D/point$v.kc"
	expect_out "point $v unwraps with its own version, fetched by id" "${kcvs[v - 1]}"
done

# --- no key byte in any file -------------------------------------------

run kt --reveal-for-test unwrap "$D/chain.kc"
cut -d' ' -f2 "$LAST_OUT" >"$T/dek.hex"
run kmipt get "$u3"
cat "$LAST_OUT" >>"$T/dek.hex"
[ "$(wc -l <"$T/dek.hex")" -eq 4 ]
verdict "(test only) the three DEKs and the newest KEK revealed"
# --- revoked and destroyed versions ------------------------------------

check "revoke version 2 as superseded (Deactivated)" kmipt revoke "$u2"
run kt unwrap "$D/point2.kc"
expect_out "a superseded version still unwraps its old point" "${kcvs[1]}"
check "revoke version 1 as compromised" kmipt revoke "$u1" compromise
expect_exit 8 "a compromised version: its point's unwrap fails" \
    kt unwrap "$D/point1.kc"
expect_grep "key $u1 'acme-kek' on KMS $KMS is not available: it is Compromised in the KMS; restore it in the KMS or use an exported key file" \
    "$LAST_ERR" "naming the key id, the KMS and what to do"
check "destroy version 2" kmipt destroy "$u2"
expect_exit 8 "a destroyed version: its point's unwrap fails" \
    kt unwrap "$D/point2.kc"
expect_grep "key $u2 'acme-kek' on KMS $KMS is not available: .*$u2.*; restore it in the KMS" \
    "$LAST_ERR" "naming the key id, the KMS and what to do"
run kt needs "$D/point1.kc" "$D/point2.kc" "$D/point3.kc"
[ "$RC" -eq 8 ] && grep -q "point1.kc: KMIP key $u1 .*NOT AVAILABLE" "$LAST_OUT" &&
    grep -q "point2.kc: KMIP key $u2 .*NOT AVAILABLE" "$LAST_OUT" &&
    grep -q "point3.kc: KMIP key $u3 .*: available$" "$LAST_OUT"
verdict "the DR listing says which ids are missing and which are there"
run kt -x -K kmip:acme-kek unwrap "$D/chain.kc"
sort "$LAST_OUT" >"$T/s" && cp "$T/s" "$LAST_OUT"
expect_out "the chain file still reads every point with only the newest" "$all_kcvs"

# --- export, then the KMS goes away ------------------------------------

export XP='correct horse battery staple' BADXP='wrong horse'
run kt -K kmip:acme-kek -P env:XP export "$D/chain.kc" "$D/keys.tkx"
[ "$RC" -eq 0 ] && grep -q "^3 keys exported" "$LAST_OUT"
verdict "export the chain's keys under a passphrase"
[ "$(stat -c %a "$D/keys.tkx")" = 600 ]
verdict "the key file is mode 0600"
mkdir -p "$T/plant"
"$PY" -c 'import sys; open(sys.argv[1], "wb").write(b"abcde" + bytes.fromhex(sys.argv[2]))' \
    "$T/plant/x" "$(sed -n 2p "$T/dek.hex")"
! no_key_bytes "$T/plant" >/dev/null
verdict "(the search finds a planted key)"
no_key_bytes "$D" "$LAST_OUT" "$LAST_ERR"
verdict "no DEK or KEK byte (raw or hex) in chains, points, key file or output"

kms_stop
t0=$(date +%s%N)
expect_exit 8 "KMS down: looking up the newest KEK fails" kt kmip-newest acme-kek
ms=$((($(date +%s%N) - t0) / 1000000))
expect_grep "KEK 'acme-kek': cannot use KMS $KMS" "$LAST_ERR" \
    "with a message naming the KEK and the KMS"
expect_grep "KMS $KMS: cannot connect: Connection refused" "$LAST_ERR" \
    "and the reason"
[ "$ms" -lt 3000 ]
verdict "KMS down: fails within 3 s ($ms ms)"
expect_exit 8 "KMS down: the chain cannot be unwrapped from the KMS" \
    kt -K kmip:acme-kek unwrap "$D/chain.kc"
expect_exit 8 "KMS down: a point's own version cannot be fetched" \
    kt unwrap "$D/point3.kc"
expect_grep "key $u3 'acme-kek' on KMS $KMS is not available: no connection" \
    "$LAST_ERR" "naming the key id and the KMS"

run "$KT" -P env:XP import "$D/keys.tkx"
sort "$LAST_OUT" >"$T/s" && cp "$T/s" "$LAST_OUT"
expect_out "without the KMS, the exported key file gives every key back" "$all_kcvs"
expect_exit 8 "a wrong passphrase is refused" "$KT" -P env:BADXP import "$D/keys.tkx"
expect_grep "wrong passphrase .*exported key file" "$LAST_ERR" "saying so"
cp "$D/keys.tkx" "$T/damaged.tkx"
flip "$T/damaged.tkx" 100	# XOR: a set byte on random bytes fails 1 in 256
expect_exit 5 "a damaged key file is refused" "$KT" -P env:XP import "$T/damaged.tkx"
expect_grep "checksum mismatch" "$LAST_ERR" "saying so"

# A KMS that accepts the connection and never answers: bounded.
EPORT=$(free_port) || bail "no free port"
/usr/bin/python3 "$TOP/tests/kmip/evil-kms.py" "$EPORT" "$PKI/target.crt" \
    "$PKI/target.key" "$PKI/ca.crt" silent "$T/evil.ready" >"$T/evil.log" 2>&1 &
track $!
for _ in $(seq 100); do
	[ -f "$T/evil.ready" ] && break
	sleep 0.1
done
t0=$(date +%s%N)
expect_exit 8 "a silent KMS: the lookup fails" \
    "$KT" -t 1 -H 127.0.0.1 -p "$EPORT" -c "$PKI/acme.crt" -k "$PKI/acme.key" \
    -C "$PKI/ca.crt" kmip-newest acme-kek
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$ms" -lt 3000 ]
verdict "within the timeout ($ms ms for -t 1)"
expect_grep "no answer within 1000 ms" "$LAST_ERR" "saying why"

# --- password KEKs -------------------------------------------------------

export PW='old password' PW2='new password' BADPW='guess'
run "$KT" -K password:env:PW new "$D/pw.kc"
pk1=$(cat "$LAST_OUT")
run "$KT" -K password:env:PW new chunk-id "$D/pw.kc"
pk2=$(cat "$LAST_OUT")
[ -n "$pk1" ] && [ -n "$pk2" ]
verdict "password chain: a data key and a chunk-id key"
pw_kcvs=$(printf '%s\n' "$pk1" "$pk2" | sort)
run "$KT" list "$D/pw.kc"
[ "$(grep -c "password key pw-[0-9a-f]* ('pw')" "$LAST_OUT")" -eq 2 ]
verdict "both under one password KEK"
expect_exit 8 "a wrong password is refused" "$KT" -K password:env:BADPW new "$D/pw.kc"
expect_grep "wrong password for password key pw-" "$LAST_ERR" "saying so"
run "$KT" list "$D/pw.kc"
[ "$(wc -l <"$LAST_OUT")" -eq 2 ]
verdict "and nothing was added"
check "change the password" "$KT" -K password:env:PW -N password:env:PW2 passwd "$D/pw.kc"
run "$KT" -K password:env:PW2 unwrap "$D/pw.kc"
sort "$LAST_OUT" >"$T/s" && cp "$T/s" "$LAST_OUT"
expect_out "the new password reads the same keys" "$pw_kcvs"
expect_exit 8 "the old password no longer does" "$KT" -K password:env:PW unwrap "$D/pw.kc"
echo data >"$T/block"
run "$KT" -K password:env:PW2 chunk-id "$D/pw.kc" "$T/block"
id1=$(cat "$LAST_OUT")
run "$KT" -K password:env:PW2 chunk-id "$D/pw.kc" "$T/block"
[ "$RC" -eq 0 ] && [ "$(cat "$LAST_OUT")" = "$id1" ] &&
    [ "$id1" != "$(sha256sum "$T/block" | cut -d' ' -f1)" ]
verdict "keyed chunk id: stable under the chain's key, not the plain SHA-256"

finish
