#!/bin/bash
# dr: the disaster-recovery drill of docs/OPERATIONS.md.  The repository
# is copied while a backup runs (points first, then chunks), the target
# host is lost, and a brand-new target on the copy, configured by hand,
# serves a brand-new source host with no state: every point of every
# mode (in flight, source-side, at rest) lists and restores
# byte-identically.  A misnamed tenant section is warned of; the old
# source, which committed a point the copy lacks, is stopped (exit 9)
# until it accepts the copy.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
export TRANSPORTER_ARGON2_MEMORY_KIB=64

echo "the sources' password" >"$T/pw"
echo "the target's at-rest password" >"$T/tpw"
chmod 600 "$T/pw" "$T/tpw"

# dr_target_conf FILE REPO ACME-SECTION [PORT]: a target with tenants acme
# (in flight and source-side) and globex (at rest, password), on PORT or a
# free port
dr_target_conf() {
	TARGET_PORT=${4:-$(free_port)} || bail "no free port"
	cat >"$1" <<EOF
listen = 127.0.0.1:$TARGET_PORT
certificate = $PKI/target.crt
key = $PKI/target.key
ca = $PKI/ca.crt
repository = $2
[tenant $3]
identity = acme-source
[tenant globex]
identity = globex-source
at_rest = password
password_file = $T/tpw
EOF
}

# point NAME: the newest point id of NAME in the last --json backup
backup_json() {
	check "$1" src backup --disk "$2" --name "$3" --json
	json_get "$LAST_OUT" point_id >>"$T/points.$3"
	cp "$2" "$T/image.$(json_get "$LAST_OUT" point_id)"
}

# --- the site that will be lost ----------------------------------------------
dr_target_conf "$T/target.conf" "$T/repo" acme
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme
source_conf "$T/ss.conf" acme "encryption = source-side" \
    "key_provider = password" "password_file = $T/pw"
source_conf "$T/globex.conf" globex
make_image "$T/disk1.img" 16M 31
make_image "$T/disk2.img" 16M 32
make_image "$T/big.img" 96M 33
backup_json "in flight, 1" "$T/disk1.img" vm
backup_json "in flight, 2" "$T/disk2.img" vm
SRC_CONF=$T/ss.conf backup_json "source-side, 1" "$T/disk1.img" sec
SRC_CONF=$T/ss.conf backup_json "source-side, 2" "$T/disk2.img" sec
SRC_CONF=$T/globex.conf backup_json "at rest, 1" "$T/disk1.img" g
SRC_CONF=$T/globex.conf backup_json "at rest, 2" "$T/disk2.img" g

# The copy, live, in the documented order, while a backup writes chunks.
src backup --disk "$T/big.img" --name big --json >"$T/big.json" 2>"$T/big.err" &
bigpid=$!
mkdir "$T/copy"
for _ in $(seq 50); do
	[ -n "$(ls "$T/repo/tenants/acme/tmp" 2>/dev/null)" ] && break
	sleep 0.1
done
(cd "$T/repo" &&
    tar -cf - --exclude='./tenants/*/chunks' --exclude='./tenants/*/tmp' . |
    tar -xf - -C "$T/copy" &&
    tar -cf - ./tenants/*/chunks | tar -xf - -C "$T/copy")
verdict "the repository copied while a backup runs: points, then chunks"
wait "$bigpid"
[ $? -eq 0 ] && ok "that backup committed" || not_ok "that backup committed" "$(cat "$T/big.err")"
# A point the copy cannot have: made after it.
backup_json "in flight, 3, after the copy" "$T/disk1.img" vm
target_stop

# --- the new site: the copy, a target configured by hand ----------------------
# It answers at the old address (the DNS name moved to it), so that the old
# source's state applies to it.
TT=$BUILD/target-transporter
port=$TARGET_PORT
check "target verify of the copy" "$TT" verify --repository "$T/copy"
dr_target_conf "$T/dr.conf" "$T/copy" acme-corp "$port"
check "target -n accepts a misnamed section" "$TT" -n -f "$T/dr.conf"
expect_grep "the repository holds tenant 'acme', which no section names: its sources see none of its backups; add '\[tenant acme\]'" \
    "$LAST" "but says the tenant directory 'acme' has no section"
check "target verify -f with that file" "$TT" verify -f "$T/dr.conf"
if grep -q "no section names" "$LAST"; then
	not_ok "offline, where every tenant is seen, sections are not warned of" "$(cat "$LAST")"
else
	ok "offline, where every tenant is seen, sections are not warned of"
fi
dr_target_conf "$T/dr.conf" "$T/copy" acme "$port"
check "target -n of the mended file" "$TT" -n -f "$T/dr.conf"
if grep -q "no section names" "$LAST"; then
	not_ok "and no warning once every tenant has its section" "$(cat "$LAST")"
else
	ok "and no warning once every tenant has its section"
fi
target_start "$T/dr.conf" || bail "the new target did not start"

# A brand-new source host: its certificate, the CA, the password; no state.
for c in source ss globex; do
	sed "s|^state_directory = .*|state_directory = $T/newstate|" \
	    "$T/$c.conf" >"$T/new-$c.conf"
done
SRC_CONF=$T/new-source.conf check "the new source lists the copy" src list --json
jsoncheck "every point made before the copy is there" \
    'len([p for p in j if p["name"] == "vm"]) == 2 and len([p for p in j if p["name"] == "sec"]) == 2'
for name in vm sec g; do
	conf=$T/new-source.conf
	[ "$name" = sec ] && conf=$T/new-ss.conf
	[ "$name" = g ] && conf=$T/new-globex.conf
	for p in $(head -n 2 "$T/points.$name"); do
		SRC_CONF=$conf check "restore $name/$p from the copy" \
		    src restore --name "$name" --point "$p" --output "$T/out.$p"
		same "byte-identical" "$T/image.$p" "$T/out.$p"
	done
done
if [ -s "$T/big.json" ] && SRC_CONF=$T/new-source.conf src list --name big >/dev/null 2>&1; then
	SRC_CONF=$T/new-source.conf check "the point committed during the copy restores too" \
	    src restore --name big --output "$T/out.big"
	same "byte-identical" "$T/big.img" "$T/out.big"
fi
SRC_CONF=$T/new-source.conf check "backups go on from the new host" \
    src backup --disk "$T/disk2.img" --name vm --json
jsoncheck "incrementally: the copy's newest point is the base" \
    'j["blocks_unchanged"] > 0'

# --- the old source host: it committed a point the copy lacks ------------------
expect_exit 9 "the old source sees the copy went back: exit 9" src list --name vm
expect_grep "$(tail -n 1 "$T/points.vm")" "$LAST" "naming the point it committed"
check "--accept-rollback takes the copy as the truth" \
    src list --name vm --accept-rollback
check "and then the old source backs up again" \
    src backup --disk "$T/disk1.img" --name vm
finish
