#!/bin/bash
# At-rest encryption on the target, with a real KMS (pykmip-server): a
# tenant with at_rest = kmip gets its in-flight backups sealed by the
# target (list says at-rest, no plaintext in its chunks, byte-identical
# restores), KEK rotation with the oldest version destroyed, prune
# dropping the keys no chunk needs, KMS down at backup and at restore (fail closed, nothing stored or written), a
# password tenant (and a wrong password), a plaintext tenant beside them
# unaffected, no key byte on disk or in the log, namespaces that never
# mix plaintext and at-rest chunks, and configuration errors.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
kms_init
# PyKMIP gives a key to the CN that made it: the target's KMS client
# certificate (kms_certificate) is the one that creates the KEK here.

# target_atrest FILE ACME GLOBEX NOBODY: a target config whose tenants
# acme, globex and nobody (certificate "unknown") get the at_rest lines
# ACME, GLOBEX and NOBODY ("" for none)
target_atrest() {
	local file=$1
	cat >"$file" <<EOF
listen = 127.0.0.1:$TARGET_PORT
certificate = $PKI/target.crt
key = $PKI/target.key
ca = $PKI/ca.crt
repository = $T/repo
[tenant acme]
identity = acme-source
$2
[tenant globex]
identity = globex-source
$3
[tenant nobody]
identity = nobody-source
$4
EOF
}
KMIP_LINES="at_rest = kmip
kms = 127.0.0.1:$KMS_PORT
kms_certificate = $PKI/acme.crt
kms_key = $PKI/acme.key
kek_name = acme-kek"
PW_LINES="at_rest = password
password_file = $T/pw"
echo "the target's at-rest password" >"$T/pw"
chmod 600 "$T/pw"

# The image: mixed blocks and one MiB of random bytes, whose 64-byte
# slice $T/needle shows up verbatim in a chunk stored raw (incompressible).
make_image "$T/disk.img" 12M+333 7
head -c 1M /dev/urandom >"$T/rand.bin"
dd if="$T/rand.bin" of="$T/disk.img" bs=1M seek=4 conv=notrunc 2>/dev/null
dd if="$T/rand.bin" of="$T/needle" bs=64 skip=100 count=1 2>/dev/null
# all_sealed TENANT: every chunk of TENANT has the encrypted flag
all_sealed() {
	"$PY" - "$T/repo/tenants/$1/chunks" <<'EOF'
import os, sys
n = 0
for d, _, files in os.walk(sys.argv[1]):
	for f in files:
		hdr = open(os.path.join(d, f), "rb").read(48)
		if hdr[:4] != b"TRCK" or not hdr[5] & 2:
			sys.exit(1)
		n += 1
sys.exit(0 if n else 1)
EOF
}
manifests() { ls "$T/repo/tenants/$1/points/"*/*.manifest 2>/dev/null | wc -l; }

# --- configuration errors ------------------------------------------------
TARGET_PORT=$(free_port) || bail "no free port"
target_atrest "$T/bad.conf" "at_rest = kmip
kms = 127.0.0.1:$KMS_PORT" "at_rest = sometimes" "password_file = $T/pw"
expect_exit 2 "target -n refuses bad at-rest settings" \
    "$BUILD/target-transporter" -n -f "$T/bad.conf"
expect_grep "bad.conf:8: tenant 'acme': at_rest = kmip needs .*kek_name" "$LAST" \
    "a provider without its settings: file:line and what to add"
expect_grep "bad.conf:[0-9]+: at_rest must be kmip, password or none" "$LAST" \
    "an unknown provider: file:line"
expect_grep "'password_file' is not used with at_rest = none" "$LAST" \
    "a setting the provider does not use"
cp "$T/pw" "$T/pw644"
chmod 644 "$T/pw644"
target_atrest "$T/bad2.conf" "" "" "at_rest = password
password_file = $T/pw644"
expect_exit 2 "target -n refuses a password file others can read" \
    "$BUILD/target-transporter" -n -f "$T/bad2.conf"
expect_grep "bad2.conf:15: tenant 'nobody': password_file: key file $T/pw644 is readable by group or others" \
    "$LAST" "at the line of password_file, with the fix"

# --- at rest under a KMS, beside a plaintext tenant ------------------------
u1=$(new_kek) || bail "cannot create a KEK"
target_atrest "$T/target.conf" "$KMIP_LINES" "" "$PW_LINES"
MPORT=$(free_port)
sed -i "/^repository = /a metrics = 127.0.0.1:$MPORT" "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme
source_conf "$T/globex.conf" globex
source_conf "$T/nobody.conf" unknown
REPO=$T/repo/tenants/acme

check "at-rest tenant: backup" src backup --disk "$T/disk.img" --name vm --json
jsoncheck "the backup says at-rest, as stored" 'j["encryption"] == "at-rest"'
p1=$(json_get "$LAST_OUT" point_id)
check "list" src list --name vm --json
jsoncheck "list says at-rest, and shows the source no target key" \
    'len(j) == 1 and j[0]["encryption"] == "at-rest" and "keks" not in j[0] and "keys" not in j[0]'
SRC_CONF=$T/globex.conf check "plaintext tenant: backup of the same disk" \
    src backup --disk "$T/disk.img" --name vm
SRC_CONF=$T/globex.conf check "plaintext tenant: list" src list --json
jsoncheck "it says in-flight" 'j[0]["encryption"] == "in-flight"'
in_chunks globex && ok "the random block is in the plaintext tenant's chunks" ||
    not_ok "the random block is in the plaintext tenant's chunks"
in_chunks acme && not_ok "the at-rest tenant's chunks do not hold it" ||
    ok "the at-rest tenant's chunks do not hold it"
all_sealed acme && ok "every at-rest chunk is marked encrypted" ||
    not_ok "every at-rest chunk is marked encrypted"
[ -s "$REPO/at-rest.keychain" ] && [ "$(stat -c %a "$REPO/at-rest.keychain")" = 600 ] &&
    ok "the tenant's key file, mode 600" || not_ok "the tenant's key file"
check "restore the at-rest point" src restore --name vm --output "$T/r1.img"
same "byte-identical" "$T/disk.img" "$T/r1.img"
SRC_CONF=$T/globex.conf check "restore the plaintext point" \
    src restore --name vm --output "$T/g1.img"
same "byte-identical" "$T/disk.img" "$T/g1.img"

# --- rotation: a new KEK version, then the old one destroyed ---------------
u2=$(new_kek) || bail "cannot create a second KEK version"
cp "$T/disk.img" "$T/disk2.img"
dd if=/dev/urandom of="$T/disk2.img" bs=1M count=1 seek=8 conv=notrunc 2>/dev/null
check "backup 2 after rotation (incremental)" src backup --disk "$T/disk2.img" --name vm --json
jsoncheck "unchanged blocks are not sent" 'j["blocks_unchanged"] > 0 and j["blocks_sent"] <= 2'
p2=$(json_get "$LAST_OUT" point_id)
run kt needs "$REPO/at-rest.keychain"
[ "$(grep -c . "$LAST_OUT")" -eq 1 ] && grep -q "key $u2 " "$LAST_OUT" &&
    ok "the key file is all under the new version" ||
    not_ok "the key file is all under the new version" "$(cat "$LAST")"
check "revoke and destroy version 1" \
    sh -c "'$KMIPT' ${KMS_OPTS[*]} revoke $u1 && '$KMIPT' ${KMS_OPTS[*]} destroy $u1"
check "point 1 restores with version 2 alone" \
    src restore --name vm --point "$p1" --output "$T/r1b.img"
same "byte-identical" "$T/disk.img" "$T/r1b.img"
check "point 2 restores" src restore --name vm --point "$p2" --output "$T/r2.img"
same "byte-identical" "$T/disk2.img" "$T/r2.img"

# --- the key file lost: rebuilt from the points' own copies ----------------
mv "$REPO/at-rest.keychain" "$T/at-rest.keychain.lost"
log_mark
check "without the key file, backup 3 goes on" src backup --disk "$T/disk2.img" --name vm
log_new
expect_grep "at-rest key file .* is missing; rebuilt" "$TARGET_NEW" "the target says it rebuilt it"
run kt needs "$REPO/at-rest.keychain"
[ "$(grep -c . "$LAST_OUT")" -eq 1 ] && grep -q "key $u2 " "$LAST_OUT" &&
    ok "from the newest copies: only version 2 needed" ||
    not_ok "from the newest copies: only version 2 needed" "$(cat "$LAST")"
check "point 1 restores through the rebuilt file" \
    src restore --name vm --point "$p1" --output "$T/r1c.img"
same "byte-identical" "$T/disk.img" "$T/r1c.img"

# --- prune drops the keys no remaining chunk is sealed under ---------------
# Every block changes under KEK version 3, then a backup under version 4,
# then version 3 is destroyed: point 4 lists the keys of points 1-3 (its
# base's), and its own copies of them are under version 3.
TT=$BUILD/target-transporter
cp "$REPO/at-rest.keychain" "$T/keychain.v2"
u3=$(new_kek) || bail "cannot create a third KEK version"
head -c "$(stat -c %s "$T/disk.img")" /dev/urandom >"$T/disk4.img"
check "backup 4: every block changed" \
    src backup --disk "$T/disk4.img" --name vm --json
jsoncheck "no block unchanged" 'j["blocks_unchanged"] == 0'
p4=$(json_get "$LAST_OUT" point_id)
u4=$(new_kek) || bail "cannot create a fourth KEK version"
check "backup 5 under version 4" src backup --disk "$T/disk4.img" --name vm
check "revoke and destroy version 3" \
    sh -c "'$KMIPT' ${KMS_OPTS[*]} revoke $u3 && '$KMIPT' ${KMS_OPTS[*]} destroy $u3"
target_stop
run kt list "$REPO/at-rest.keychain"
cut -d' ' -f1 "$LAST_OUT" >"$T/keys.before"
[ "$(grep -c . "$T/keys.before")" -eq 5 ] && ok "the key file holds 5 data keys" ||
    not_ok "the key file holds 5 data keys" "$(cat "$LAST_OUT")"
chown 65534:65534 "$REPO/at-rest.keychain"
cp "$REPO/at-rest.keychain" "$T/keychain.before"
check "prune --dry-run" "$TT" prune --repository "$T/repo" --tenant acme \
    --keep-last 2 --dry-run
expect_grep "^would drop: tenant acme: 3 of 5 at-rest data key\(s\): no remaining chunk is sealed under them$" \
    "$LAST_OUT" "it would drop the keys of points 1-3"
cmp -s "$REPO/at-rest.keychain" "$T/keychain.before" &&
    ok "--dry-run leaves the key file as it was" ||
    not_ok "--dry-run leaves the key file as it was"
check "prune keeps points 4 and 5" "$TT" prune --repository "$T/repo" \
    --tenant acme --keep-last 2
expect_grep "^dropped: tenant acme: 3 of 5 at-rest data key\(s\): no remaining chunk is sealed under them$" \
    "$LAST_OUT" "and says it dropped 3 keys"
run kt list "$REPO/at-rest.keychain"
if cut -d' ' -f1 "$LAST_OUT" | cmp -s - <(tail -n 2 "$T/keys.before"); then
	ok "the key file holds the keys of points 4 and 5 alone"
else
	not_ok "the key file holds the keys of points 4 and 5 alone" "$(cat "$LAST_OUT")"
fi
[ "$(stat -c %u:%g:%a "$REPO/at-rest.keychain")" = 65534:65534:600 ] &&
    ok "the rewritten file keeps its owner and mode 600" ||
    not_ok "the rewritten file keeps its owner and mode 600" \
    "$(stat -c %u:%g:%a "$REPO/at-rest.keychain")"
chown 0:0 "$REPO/at-rest.keychain"
check "target verify of the tenant" "$TT" verify --repository "$T/repo" --tenant acme
target_start "$T/target.conf" || bail "target did not start again"
check "point 4 restores without the keys it lists but no chunk needs" \
    src restore --name vm --point "$p4" --output "$T/r4.img"
same "byte-identical" "$T/disk4.img" "$T/r4.img"
cp "$REPO/at-rest.keychain" "$T/keychain.after"
cp "$T/keychain.v2" "$REPO/at-rest.keychain"
expect_fail "an older key file, without the key point 4's chunks need: restore fails" \
    src restore --name vm --point "$p4" --output "$T/r4bad.img"
expect_grep "at-rest key of tenant acme unavailable: key [0-9]+ 'acme-kek' on KMS 127.0.0.1:$KMS_PORT .*data key $(sed -n 4p "$T/keys.before" | cut -c1-16)" \
    "$LAST_ERR" "before any block: it names the key, its KEK and the KMS"
[ -z "$(ls "$T"/r4bad.img* 2>/dev/null)" ] && ok "nothing was written" ||
    not_ok "nothing was written"
cp "$T/keychain.after" "$REPO/at-rest.keychain"
check "backup 6 after the prune" src backup --disk "$T/disk2.img" --name vm
check "restore" src restore --name vm --output "$T/r6.img"
same "byte-identical" "$T/disk2.img" "$T/r6.img"
# Then the key file is lost after version 4 was destroyed: the newest
# copies of the dropped keys are in point 5, under version 4.  The
# rebuilt file leaves them out, and backups go on.
u5=$(new_kek) || bail "cannot create a fifth KEK version"
check "backup 7 under version 5" src backup --disk "$T/disk2.img" --name vm
check "revoke and destroy version 4" \
    sh -c "'$KMIPT' ${KMS_OPTS[*]} revoke $u4 && '$KMIPT' ${KMS_OPTS[*]} destroy $u4"
mv "$REPO/at-rest.keychain" "$T/keychain.lost2"
log_mark
check "the key file lost again: backup 8 goes on" \
    src backup --disk "$T/disk2.img" --name vm
log_new
expect_grep "rebuilding the at-rest key file: 3 key\(s\) left out: key $u4 " \
    "$TARGET_NEW" "the keys under the destroyed version are left out"
# Point 4 lists the keys left out, whose copies are all under destroyed
# versions, and has no chunk sealed under them: the rebuilt file records
# them as dropped, as prune did.
check "point 4 restores through the rebuilt file" \
    src restore --name vm --point "$p4" --output "$T/r4b.img"
same "byte-identical" "$T/disk4.img" "$T/r4b.img"
# The metrics below start here: the rebuild asked for version 4.
target_start "$T/target.conf" || bail "target did not start again"
check "restore of backup 8" src restore --name vm --output "$T/r8.img"
same "byte-identical" "$T/disk2.img" "$T/r8.img"

# --- no key on disk or in the log ------------------------------------------
run kt --reveal-for-test unwrap "$REPO/at-rest.keychain"
cut -d' ' -f2 "$LAST_OUT" >"$T/dek.hex"
run kmipt get "$u2"
cat "$LAST_OUT" >>"$T/dek.hex"
[ "$(grep -c . "$T/dek.hex")" -ge 3 ] && ok "(test only) the DEKs and the KEK revealed" ||
    not_ok "keys revealed" "$(cat "$T/dek.hex")"
if no_key_bytes "$T/repo" "$TARGET_LOG" "$T/target.conf"; then
	ok "no key byte in the repository, the log or the configuration"
else
	not_ok "no key byte in the repository, the log or the configuration"
fi

# --- KMS down: fail closed -------------------------------------------------
scrape "$MPORT" >"$T/m-up.txt" || bail "no /metrics"
kms_stop
n=$(manifests acme)
expect_fail "KMS down at backup: the backup fails" \
    src backup --disk "$T/disk2.img" --name vm
expect_grep "at-rest key of tenant acme unavailable.*127.0.0.1:$KMS_PORT" "$LAST_ERR" \
    "the message names the tenant and the KMS"
[ "$(manifests acme)" -eq "$n" ] && ok "no restore point appeared" ||
    not_ok "no restore point appeared"
[ -z "$(ls -A "$REPO/tmp")" ] && ok "no job left behind" ||
    not_ok "no job left behind" "$(ls "$REPO/tmp")"
expect_fail "KMS down at restore: the restore fails" \
    src restore --name vm --output "$T/down.img"
expect_grep "at-rest key of tenant acme unavailable: key [0-9]+ 'acme-kek' on KMS 127.0.0.1:$KMS_PORT" \
    "$LAST_ERR" "and says why, naming the KMS, before any block"
[ -z "$(ls "$T"/down.img* 2>/dev/null)" ] && ok "nothing was written" ||
    not_ok "nothing was written"
SRC_CONF=$T/globex.conf check "the plaintext tenant does not need the KMS" \
    src backup --disk "$T/disk2.img" --name vm
target_alive && ok "the target still runs" || not_ok "the target still runs"
# The KMS in the target's metrics: each request's latency, then the
# failures to reach it.
scrape "$MPORT" >"$T/m-down.txt" || bail "no /metrics"
gets=$(metric "$T/m-up.txt" 'transporter_kms_request_seconds_count{op="Get"}')
[ "${gets:-0}" -ge 1 ] && ok "KMS requests timed by operation ($gets Get)" ||
    not_ok "KMS requests timed" "$(grep kms_request "$T/m-up.txt")"
[ "$(metric "$T/m-up.txt" 'transporter_errors_total{kind="kms"}')" = 0 ] &&
    [ "$(metric "$T/m-down.txt" 'transporter_errors_total{kind="kms"}')" -ge 2 ] &&
    ok "KMS failures counted as errors of kind kms" ||
    not_ok "KMS failures counted" "$(grep 'kind="kms"' "$T"/m-*.txt)"

# --- a password tenant -----------------------------------------------------
SRC_CONF=$T/nobody.conf check "password tenant: backup" src backup --disk "$T/disk.img" --name pw
SRC_CONF=$T/nobody.conf check "password tenant: second backup" src backup --disk "$T/disk2.img" --name pw
SRC_CONF=$T/nobody.conf check "list" src list --json
jsoncheck "both at-rest" 'len(j) == 2 and all(p["encryption"] == "at-rest" for p in j)'
in_chunks nobody && not_ok "its chunks do not hold the random block" ||
    ok "its chunks do not hold the random block"
SRC_CONF=$T/nobody.conf check "restore" src restore --name pw --output "$T/pw.img"
same "byte-identical" "$T/disk2.img" "$T/pw.img"
cp "$T/pw" "$T/pw.good"
echo "not the password" >"$T/pw"
SRC_CONF=$T/nobody.conf expect_fail "a wrong password: the backup fails" \
    src backup --disk "$T/disk.img" --name pw
expect_grep "wrong password" "$LAST_ERR" "and says so"
SRC_CONF=$T/nobody.conf expect_fail "a wrong password: the restore fails" \
    src restore --name pw --output "$T/pwbad.img"
expect_grep "at-rest key of tenant nobody unavailable: .*wrong password" "$LAST_ERR" \
    "and says so"
[ ! -e "$T/pwbad.img" ] && ok "nothing was written" || not_ok "nothing was written"
cp "$T/pw.good" "$T/pw"

# --- namespaces never mix --------------------------------------------------
target_atrest "$T/swap.conf" "" "$PW_LINES" ""
target_start "$T/swap.conf" || bail "target did not restart"
expect_fail "at_rest removed: plaintext backups are refused" \
    src backup --disk "$T/disk.img" --name vm
expect_grep "holds backups encrypted at rest" "$LAST_ERR" "and says why"
expect_fail "at_rest removed: its at-rest points cannot be read" \
    src restore --name vm --output "$T/nokey.img"
expect_grep "no 'at_rest' key provider" "$LAST_ERR" "and says why"
SRC_CONF=$T/globex.conf expect_fail "at_rest added over plaintext points: refused" \
    src backup --disk "$T/disk.img" --name vm2
expect_grep "at-rest encryption refused for tenant globex: .*already holds .* stored without at-rest encryption" "$LAST_ERR" "and says why"
[ ! -e "$T/repo/tenants/globex/at-rest.keychain" ] && ok "the namespace stays plaintext" ||
    not_ok "the namespace stays plaintext"
finish
