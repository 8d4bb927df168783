#!/bin/bash
# A tenant's quota (target.conf `quota` in its [tenant] section): what
# the tenant stores (chunks, indexes, manifests, key files) is counted,
# from its files the first time, then kept up by each backup.  A backup
# that would pass the quota fails with STORAGE_FULL (the source exits 7),
# commits nothing, and everything already committed still restores; a
# backup whose index alone does not fit is refused before any block; the
# other tenant is not held to it; a raised quota takes effect on reload.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init

# --- configuration ------------------------------------------------------------

for bad in 10 lots 0; do
	target_conf "$T/bad.conf"
	sed -i "/^identity = acme-source/a quota = $bad" "$T/bad.conf"
	expect_exit 2 "quota = $bad is refused (exit 2)" \
	    "$BUILD/target-transporter" -n -f "$T/bad.conf"
	expect_grep "bad.conf:[0-9]+: tenant 'acme': quota must be a size" \
	    "$LAST" "and the error names the file, line and tenant"
done

# --- a backup over the quota --------------------------------------------------

# 24 MiB of quota; each image is 8 MiB of incompressible data.
MPORT=$(free_port) || bail "no free port"
target_conf "$T/target.conf" "metrics = 127.0.0.1:$MPORT"
sed -i '/^identity = acme-source/a quota = 24M' "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme
source_conf "$T/globex.conf" globex
for i in 1 2 3 4; do
	head -c 8M /dev/urandom >"$T/vm$i.img"
done

check "a first backup within the quota" \
    src backup --disk "$T/vm1.img" --name vm1
check "a second one" src backup --disk "$T/vm2.img" --name vm2
# counted NAME: ok if tenant acme's stored bytes in the metrics are what
# its files hold (scraped into $T/metrics.txt)
counted() {
	local files stored
	files=$(find "$T/repo/tenants/acme" -type f -printf '%s\n' |
	    awk '{ n += $1 } END { print n }')
	scrape "$MPORT" >"$T/metrics.txt" || bail "no /metrics"
	stored=$(metric "$T/metrics.txt" 'transporter_tenant_stored_bytes{tenant="acme"}')
	echo "# tenant acme: $files bytes in its files, $stored counted"
	if [ -n "$stored" ] && [ "$(printf '%.0f' "$stored")" = "$files" ]; then
		ok "$1"
	else
		not_ok "$1" "$files in files, $stored counted"
	fi
}
# The count kept up by the backups is what the tenant's files hold.
counted "the tenant's stored bytes in the metrics are what its files hold"
[ "$(metric "$T/metrics.txt" 'transporter_tenant_quota_bytes{tenant="acme"}')" = $((24 << 20)) ] &&
    ok "and its quota" || not_ok "and its quota" \
    "$(grep tenant_quota "$T/metrics.txt")"
log_mark
expect_exit 7 "a third 8 MiB backup passes the 24 MiB quota: exit 7" \
    src backup --disk "$T/vm3.img" --name vm3
expect_grep "tenant acme is at its quota of 24.0 MiB; nothing was committed. Raise 'quota'" \
    "$LAST" "the error names the tenant, its quota and what to do"
not_listed vm3 "the failed backup is not listed"
check "an unchanged incremental still fits (its chunks are stored already)" \
    src backup --disk "$T/vm1.img" --name vm1
for i in 1 2; do
	check "vm$i restores" src restore --name "vm$i" --output "$T/vm$i.out"
	same "vm$i byte-identical" "$T/vm$i.img" "$T/vm$i.out"
done
SRC_CONF=$T/globex.conf check "tenant globex, without a quota, stores the same" \
    src backup --disk "$T/vm3.img" --name vm3

# A disk whose index alone (32 bytes a block) passes what is left: 1 TiB
# in 64 KiB blocks, a 512 MiB index, refused before any block is read.
truncate -s 1T "$T/sparse.img"
source_conf "$T/sparse.conf" acme "block_size = 64K"
SRC_CONF=$T/sparse.conf expect_exit 7 "a 1 TiB disk in 64 KiB blocks is refused: its index does not fit" \
    src backup --disk "$T/sparse.img" --name sparse
expect_grep "tenant acme stores [0-9.]+ MiB of its quota of 24.0 MiB, and the backup of 'sparse' needs 512.0 MiB more" \
    "$LAST" "the error says what is stored, the quota and what the backup needs"

# --- counted from the files at start, raised on reload -----------------------

restart_target
expect_exit 7 "after a restart the count starts from the files: still over" \
    src backup --disk "$T/vm3.img" --name vm3
sed -i 's/^quota = 24M/quota = 64M/' "$T/target.conf"
kill -HUP "$TARGET_PID"
wait_grep "reloaded" "$TARGET_LOG"
check "with the quota raised and the target reloaded, it fits" \
    src backup --disk "$T/vm3.img" --name vm3
check "vm3 restores" src restore --name vm3 --output "$T/vm3.out"
same "vm3 byte-identical" "$T/vm3.img" "$T/vm3.out"
used=$(du -sb "$T/repo/tenants/acme" | cut -f1)
echo "# tenant acme stores $used bytes of its 64 MiB"
under_quota=$([ "$used" -le $((64 << 20)) ] && echo 1 || echo 0)
if [ "$under_quota" = 1 ]; then
	ok "what the tenant stores on disk is within its quota"
else
	not_ok "what the tenant stores on disk is within its quota" "$used bytes"
fi

# Without a quota the tenant's backups are still counted once its count
# has started, so that a quota brought back by a reload sees them.
reload_target() {
	local n
	n=$(grep -c "reloaded" "$TARGET_LOG")
	kill -HUP "$TARGET_PID"
	for _ in $(seq 100); do
		[ "$(grep -c "reloaded" "$TARGET_LOG")" -gt "$n" ] && return 0
		sleep 0.1
	done
	bail "the target did not reload"
}
sed -i '/^quota = /d' "$T/target.conf"
reload_target
check "with the quota taken away, an 8 MiB backup" \
    src backup --disk "$T/vm4.img" --name vm4
sed -i '/^identity = acme-source/a quota = 64M' "$T/target.conf"
reload_target
check "with it back, another backup" src backup --disk "$T/vm1.img" --name vm1
counted "the count kept up while the tenant had no quota"

# --- a prune makes room -------------------------------------------------------

head -c 8M /dev/urandom >"$T/vm2b.img"
check "vm2 changed whole, backed up again" \
    src backup --disk "$T/vm2b.img" --name vm2
scrape "$MPORT" >"$T/metrics.txt" || bail "no /metrics"
before=$(metric "$T/metrics.txt" 'transporter_tenant_stored_bytes{tenant="acme"}')
target_stop
check "prune of vm2's older point" "$BUILD/target-transporter" prune \
    --repository "$T/repo" --tenant acme --name vm2 --keep-last 1
target_start "$T/target.conf" || bail "target did not start again"
check "a backup after the prune" src backup --disk "$T/vm1.img" --name vm1
counted "after the prune and a restart the count is what the files hold"
after=$(metric "$T/metrics.txt" 'transporter_tenant_stored_bytes{tenant="acme"}')
if awk -v a="$after" -v b="$before" 'BEGIN { exit !(a < b - 8 * 1048576) }'; then
	ok "it counts 8 MiB less: the old point's chunks went"
else
	not_ok "it counts 8 MiB less: the old point's chunks went" "$before before, $after after"
fi

finish
