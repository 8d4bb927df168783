#!/bin/bash
# Source-side encryption end to end, with a real KMS (pykmip-server):
# fail closed without a key, rotation across three KEK versions in one
# chain, the chain read with only the newest version through its key
# file, each point's own version without it, KMS down, a destroyed key,
# a password KEK, and a target that never holds a key.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
kms_init

make_image "$T/disk.img" 24M+777 31
target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme "encryption = source-side" \
    "key_provider = kmip" "kms = 127.0.0.1:$KMS_PORT" "kek_name = acme-kek"
REPO=$T/repo/tenants/acme
list_points() { src list --name vm --json; }

# --- fail closed ----------------------------------------------------------
expect_exit 8 "no KEK in the KMS yet: the backup stops (exit 8)" \
    src backup --disk "$T/disk.img" --name vm
expect_grep "acme-kek" "$LAST_ERR" "the message names the key"
expect_grep "before reading any data" "$LAST_ERR" "and says no data was read"
[ ! -d "$REPO/points/vm" ] && ok "nothing was stored" || not_ok "nothing was stored"

# --- three KEK versions, one chain ----------------------------------------
u1=$(new_kek) || bail "cannot create a KEK"
check "backup 1 under KEK version 1" src backup --disk "$T/disk.img" --name vm --json
jsoncheck "it is source-side" 'j["encryption"] == "source-side"'
p1=$(json_get "$LAST_OUT" point_id)
cp "$T/disk.img" "$T/disk2.img"
dd if=/dev/urandom of="$T/disk2.img" bs=1M count=2 seek=3 conv=notrunc 2>/dev/null
u2=$(new_kek)
check "backup 2 (incremental) under version 2" src backup --disk "$T/disk2.img" --name vm --json
jsoncheck "incremental: unchanged blocks not sent" 'j["blocks_unchanged"] > 0 and j["blocks_sent"] <= 3'
p2=$(json_get "$LAST_OUT" point_id)
cp "$T/disk2.img" "$T/disk3.img"
dd if=/dev/urandom of="$T/disk3.img" bs=1M count=1 seek=10 conv=notrunc 2>/dev/null
u3=$(new_kek)
check "backup 3 under version 3" src backup --disk "$T/disk3.img" --name vm --json
p3=$(json_get "$LAST_OUT" point_id)

check "list --check-keys: every key available" src list --name vm --check-keys
expect_grep "needs KMIP key .*: available$" "$LAST_OUT" "and says so"
check "list --json" list_points
jsoncheck "list shows three source-side points" \
    'len(j) == 3 and all(p["encryption"] == "source-side" for p in j)'
jsoncheck "each point names the KEK version its own keys are under" \
    "[[k['kek_id'] for k in p['keks']] for p in j] == [['$u1'], ['$u2'], ['$u3']] and 'keys' not in j[0]"
# Each backup wraps the chain's keys again under the newest version, so
# each point's own copies are under the version current at its backup.
expect_exit 2 "list --keys without --json: exit 2" src list --name vm --keys
expect_grep "\-\-keys goes with \-\-json" "$LAST" "and says so"
check "list --json --keys" src list --name vm --json --keys
jsoncheck "each point lists its keys and the KEK version that wraps them" \
    "[sorted(set(k['kek_id'] for k in p['keys'])) for p in j] == [['$u1'], ['$u2'], ['$u3']]"
jsoncheck "and the keys it needs: the chunk-id key and every data key so far" \
    "[len(p['keys']) for p in j] == [2, 3, 4]"

for v in 1 2 3; do
	eval "p=\$p$v"
	img=$T/disk.img
	[ $v -gt 1 ] && img=$T/disk$v.img
	check "restore point $v" src restore --name vm --point "$p" --output "$T/r$v.img"
	same "point $v is byte-identical" "$img" "$T/r$v.img"
done

# --- without the key file, each point needs its own versions --------------
mv "$REPO/points/vm/keychain" "$T/keychain.saved"
check "without the key file point 1 restores with version 1" \
    src restore --name vm --point "$p1" --output "$T/n1.img"
same "and is byte-identical" "$T/disk.img" "$T/n1.img"
check "revoke version 1 (superseded) and destroy it" \
    sh -c "'$KMIPT' ${KMS_OPTS[*]} revoke $u1 && '$KMIPT' ${KMS_OPTS[*]} destroy $u1"
expect_exit 8 "point 1 cannot be read without version 1 and the key file" \
    src restore --name vm --point "$p1" --output "$T/n1b.img"
expect_grep "key .*$u1|$u1" "$LAST_ERR" "the message names the missing version"
[ ! -e "$T/n1b.img" ] && ok "and nothing was written" || not_ok "nothing written"
check "point 3 still restores: its keys are under version 3" \
    src restore --name vm --point "$p3" --output "$T/n3.img"
same "point 3 byte-identical" "$T/disk3.img" "$T/n3.img"

# --- with the key file, the newest version reads the whole chain ----------
mv "$T/keychain.saved" "$REPO/points/vm/keychain"
check "with the key file point 1 restores without version 1" \
    src restore --name vm --point "$p1" --output "$T/k1.img"
same "point 1 byte-identical" "$T/disk.img" "$T/k1.img"

# --- the target holds no key ------------------------------------------------
run kt --reveal-for-test unwrap "$REPO/points/vm/keychain"
cut -d' ' -f2 "$LAST_OUT" >"$T/dek.hex"
run kmipt get "$u3"
cat "$LAST_OUT" >>"$T/dek.hex"
[ "$(wc -l <"$T/dek.hex")" -ge 5 ] && ok "(test only) the chain's keys and the KEK revealed" ||
    not_ok "keys revealed" "$(cat "$T/dek.hex")"
if no_key_bytes "$T/repo" "$TARGET_LOG" "$T/target.conf"; then
	ok "no key byte in the target's repository, log or configuration"
else
	not_ok "no key byte on the target"
fi

# --- disaster recovery: an exported key file, no KMS -------------------------
echo "export passphrase for the vault" >"$T/pass"
echo "not the passphrase" >"$T/badpass"
check "keys export" src keys export --name vm --output "$T/vm.keys" --passphrase-file "$T/pass"
[ -s "$T/vm.keys" ] && [ "$(stat -c %a "$T/vm.keys")" = 600 ] &&
    ok "the key file is written, mode 600" || not_ok "key file mode 600"
expect_exit 2 "keys export without --output: exit 2" \
    src keys export --name vm --passphrase-file "$T/pass"
expect_grep "keys export: say where to write the keys: --output FILE" "$LAST" \
    "and says what is missing"
check "keys change-password --help" src keys change-password --help
grep -q "change-password --name NAME" "$LAST_OUT" && ! grep -q "keys export" "$LAST_OUT"
verdict "change-password's help is its own"
# A point lists the keys its chunks need: one whose every block an older
# point stored needs only keys the export has; one with new data does not.
check "a backup after the export, of point 1's disk" \
    src backup --disk "$T/disk.img" --name vm --json
p1again=$(json_get "$LAST_OUT" point_id)
cp "$T/disk3.img" "$T/disk4.img"
dd if=/dev/urandom of="$T/disk4.img" bs=1M count=1 seek=12 conv=notrunc 2>/dev/null
check "a backup after the export, with new data" \
    src backup --disk "$T/disk4.img" --name vm --json
p4=$(json_get "$LAST_OUT" point_id)

# --- KMS down ---------------------------------------------------------------
kms_stop
npoints=$(ls "$REPO/points/vm/"*.manifest | wc -l)
expect_exit 8 "KMS down at backup time: exit 8" \
    src backup --disk "$T/disk3.img" --name vm
[ "$(ls "$REPO/points/vm/"*.manifest | wc -l)" -eq "$npoints" ] &&
    ok "no partial restore point" || not_ok "no partial restore point"
expect_exit 8 "KMS down at restore time: exit 8" \
    src restore --name vm --output "$T/down.img"
[ ! -e "$T/down.img" ] && ok "nothing written" || not_ok "nothing written"
expect_exit 8 "list --check-keys with the KMS down: exit 8" \
    src list --name vm --check-keys
expect_grep "needs KMIP key .*: not available: " "$LAST" "and says which key is not"
# A new site: no KMS in its configuration at all.
source_conf "$T/dr.conf" acme
SRC_CONF=$T/dr.conf expect_exit 8 "a wrong passphrase fails before anything is written" \
    src restore --name vm --point "$p1" --output "$T/dr0.img" \
    --key-file "$T/vm.keys" --passphrase-file "$T/badpass"
for v in 1 3; do
	eval "p=\$p$v"
	img=$T/disk.img
	[ $v -gt 1 ] && img=$T/disk$v.img
	SRC_CONF=$T/dr.conf check "KMS down: point $v restores from the key file" \
	    src restore --name vm --point "$p" --output "$T/dr$v.img" \
	    --key-file "$T/vm.keys" --passphrase-file "$T/pass"
	same "point $v from the key file is byte-identical" "$img" "$T/dr$v.img"
done
SRC_CONF=$T/dr.conf check "a point made after the export of older data restores from it" \
    src restore --name vm --point "$p1again" --output "$T/dr1again.img" \
    --key-file "$T/vm.keys" --passphrase-file "$T/pass"
same "byte-identical" "$T/disk.img" "$T/dr1again.img"
SRC_CONF=$T/dr.conf expect_exit 8 "a point with data made after the export does not restore from it (exit 8)" \
    src restore --name vm --point "$p4" --output "$T/dr4.img" \
    --key-file "$T/vm.keys" --passphrase-file "$T/pass"
expect_grep "not in the key file $T/vm.keys \(exported before point $p4 was made, or from another backup\); export the keys again" \
    "$LAST" "and says to export the keys again"
kms_start || bail "pykmip-server does not restart"

# --- a password KEK ---------------------------------------------------------
echo "correct horse battery staple" >"$T/pw"
echo "wrong password" >"$T/badpw"
chmod 600 "$T/pw" "$T/badpw"
source_conf "$T/pw.conf" acme "encryption = source-side" \
    "key_provider = password" "password_file = $T/pw"
source_conf "$T/badpw.conf" acme "encryption = source-side" \
    "key_provider = password" "password_file = $T/badpw"
SRC_CONF=$T/pw.conf check "backup under a password" src backup --disk "$T/disk.img" --name pw
SRC_CONF=$T/badpw.conf expect_exit 8 "a wrong password fails at once" \
    src backup --disk "$T/disk.img" --name pw
expect_grep "wrong password" "$LAST_ERR" "and says so"
# A new name has no key file yet: the source remembers which password its
# other backups to this target use, and a wrong password_file does not
# start a backup that only the wrong password restores.
SRC_CONF=$T/badpw.conf expect_exit 8 "a new name under another password than the others': exit 8" \
    src backup --disk "$T/disk.img" --name pwnew
expect_grep "'pwnew' is a new backup and the password in $T/badpw is not the one this source's other backups to this target use \(.*wrong password.*\): put theirs in it; if it changed on purpose \(keys change-password\), remove $T/state/points-[0-9a-f]{16}\.password" \
    "$LAST_ERR" "and says which password, and what to do"
SRC_CONF=$T/badpw.conf expect_exit 4 "nothing of it was stored" src list --name pwnew
SRC_CONF=$T/pw.conf check "under the right password the new name backs up" \
    src backup --disk "$T/disk2.img" --name pwnew
SRC_CONF=$T/pw.conf check "and restores" src restore --name pwnew --output "$T/pwnew.img"
same "byte-identical" "$T/disk2.img" "$T/pwnew.img"
SRC_CONF=$T/badpw.conf expect_exit 8 "restore with a wrong password: exit 8" \
    src restore --name pw --output "$T/pwbad.img"
SRC_CONF=$T/pw.conf check "restore with the password" src restore --name pw --output "$T/pw.img"
same "password point byte-identical" "$T/disk.img" "$T/pw.img"

# Changing the password re-wraps the key file; no data moves.
echo "a brand new passphrase" >"$T/newpw"
chmod 600 "$T/newpw"
source_conf "$T/newpw.conf" acme "encryption = source-side" \
    "key_provider = password" "password_file = $T/newpw"
chunks_before=$(find "$REPO/chunks" -type f | sort | xargs md5sum | md5sum)
SRC_CONF=$T/badpw.conf expect_exit 8 "change-password with a wrong current password fails" \
    src keys change-password --name pw --new-password-file "$T/newpw"
cp "$T/newpw" "$T/newpw644"
chmod 644 "$T/newpw644"
SRC_CONF=$T/pw.conf expect_exit 2 "change-password to a file others can read: exit 2, nothing changed" \
    src keys change-password --name pw --new-password-file "$T/newpw644"
expect_grep "key file $T/newpw644 is readable by group or others.*chmod" "$LAST" \
    "and says the chmod to run"
SRC_CONF=$T/pw.conf check "keys change-password" \
    src keys change-password --name pw --new-password-file "$T/newpw"
[ "$(find "$REPO/chunks" -type f | sort | xargs md5sum | md5sum)" = "$chunks_before" ] &&
    ok "no chunk was rewritten" || not_ok "no chunk was rewritten"
SRC_CONF=$T/newpw.conf check "the old point restores with the new password" \
    src restore --name pw --output "$T/pw2.img"
same "and is byte-identical" "$T/disk.img" "$T/pw2.img"
SRC_CONF=$T/pw.conf expect_exit 8 "the old password no longer opens the key file" \
    src restore --name pw --output "$T/pw3.img"
SRC_CONF=$T/newpw.conf check "a new backup under the new password" \
    src backup --disk "$T/disk2.img" --name pw
SRC_CONF=$T/newpw.conf check "restores" src restore --name pw --output "$T/pw4.img"
same "byte-identical" "$T/disk2.img" "$T/pw4.img"
SRC_CONF=$T/pw.conf check "a name still under the old password backs up with it" \
    src backup --disk "$T/disk2.img" --name pwnew
SRC_CONF=$T/newpw.conf check "after the change a new name goes under the new password (that backup did not undo it)" \
    src backup --disk "$T/disk.img" --name pwnext
SRC_CONF=$T/pw.conf expect_exit 8 "and the old password no longer starts one" \
    src backup --disk "$T/disk.img" --name pwlast
finish
