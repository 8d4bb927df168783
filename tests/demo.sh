#!/bin/bash
# make demo: a throwaway PKI, a target on loopback, and one backup and
# restore of a 256 MiB ext4 disk image full of real files.
#
#   BUILD=/abs/build sh tests/demo.sh      (KEEP=1 keeps the files)

# make runs us with sh; the rest is bash
if [ -z "${BASH_VERSION:-}" ]; then
	exec bash "$0" "$@"
fi
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/lib.sh"

step() {
	echo
	echo "==> $*"
}

die() {
	echo "demo FAILED: $*" >&2
	[ ! -s "$TARGET_LOG" ] || { echo "--- target log:"; tail -n 20 "$TARGET_LOG"; } >&2
	exit 1
}

for b in source-transporter target-transporter; do
	[ -x "$BUILD/$b" ] || die "$BUILD/$b is not built (run make)"
done
echo "transporter demo in $T"

step "Minting a throwaway CA, target and client certificates"
pki_init
echo "$PKI: $(cd "$PKI" && echo *.crt *.crl)"

step "Making a 256 MiB ext4 disk image with real files"
make_image --fs "$T/disk.img" 256M
echo "$T/disk.img: $(($(stat -c %s "$T/disk.img") >> 20)) MiB," \
    "$(($(allocated_kib "$T/disk.img") >> 10)) MiB allocated"

step "Writing the configurations"
target_conf "$T/target.conf"
source_conf "$T/source.conf" acme
for f in target source; do
	echo "--- $f.conf"
	cat "$T/$f.conf"
done

step "Starting the target on 127.0.0.1:$TARGET_PORT"
target_start "$T/target.conf" || die "the target did not start"
grep 'listening on' "$TARGET_LOG"

step "Backing up the disk as 'demo-vm'"
src backup --disk "$T/disk.img" --name demo-vm || die "backup failed"

step "Listing the restore points"
src list || die "list failed"

step "Restoring the newest point"
src restore --name demo-vm --output "$T/restored.img" || die "restore failed"

step "Comparing the restored image with the original"
cmp "$T/disk.img" "$T/restored.img" || die "the restored image differs"
echo "identical: $(stat -c %s "$T/restored.img") bytes," \
    "$(($(allocated_kib "$T/restored.img") >> 10)) MiB allocated (sparse)"
echo "repository: $(du -sh "$T/repo" | cut -f1) in $T/repo"

step "Changing 4 MiB of the image and backing it up again (incremental)"
dd if=/dev/urandom of="$T/disk.img" bs=1M count=4 seek=64 conv=notrunc 2>/dev/null
src backup --disk "$T/disk.img" --name demo-vm || die "incremental backup failed"

step "A source-side encrypted backup: sealed here, the target never sees a key"
# A password KEK (Argon2id) keeps the demo self-contained; production
# uses a KMS over KMIP (README: Encryption modes).
head -c 24 /dev/urandom | base64 >"$T/backup.pass"
chmod 600 "$T/backup.pass"
source_conf "$T/secret.conf" acme "encryption = source-side" \
    "key_provider = password" "password_file = $T/backup.pass"
SRC_CONF=$T/secret.conf src backup --disk "$T/disk.img" --name demo-secret ||
    die "source-side backup failed"
src list || die "list failed"
SRC_CONF=$T/secret.conf src restore --name demo-secret \
    --output "$T/secret.img" || die "source-side restore failed"
cmp "$T/disk.img" "$T/secret.img" || die "the source-side restore differs"
echo "source-side point restored identical; its key file on the target:"
ls -l "$T/repo/tenants/acme/points/demo-secret/keychain"

step "Stopping the target"
target_stop
echo
echo "demo OK"
