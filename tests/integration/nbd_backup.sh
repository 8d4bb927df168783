#!/bin/bash
# Backups from NBD exports end to end: a qcow2 image served by qemu-nbd,
# restored and compared with `qemu-img convert -O raw`; changed-block
# tracking with a persistent QEMU dirty bitmap (only dirty blocks read),
# and every reason not to trust a bitmap: none recorded by the previous
# point, a bitmap of another chain, a bitmap that misses a change.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
for bin in qemu-nbd qemu-img qemu-io; do
	command -v "$bin" >/dev/null || bail "$bin not installed (tests/deps.sh)"
done
pki_init
MiB=$((1 << 20))
target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme

make_image "$T/raw.img" 64M 61
qemu-img convert -q -f raw -O qcow2 "$T/raw.img" "$T/vm.qcow2"
# The bitmap starts with the chain: it tracks changes from the first backup.
qemu-img bitmap --add "$T/vm.qcow2" b0

SOCK=$T/nbd.sock
NBD_PID=
# export [qemu-nbd options]: serve vm.qcow2 read-only on $SOCK
export_img() {
	unexport
	rm -f "$SOCK"
	qemu-nbd -r -f qcow2 -k "$SOCK" "$@" "$T/vm.qcow2" >"$T/qemu-nbd.log" 2>&1 &
	NBD_PID=$!
	track "$NBD_PID"
	for _ in $(seq 100); do [ -S "$SOCK" ] && return 0; sleep 0.1; done
	return 1
}
unexport() {
	[ -n "$NBD_PID" ] && stop_pid "$NBD_PID"
	NBD_PID=
}
# truth OUT: what the image holds now, as raw
truth() { qemu-img convert -q -f qcow2 -O raw "$T/vm.qcow2" "$1"; }
URI="nbd+unix:///?socket=$SOCK"

export_img -B b0 || bail "qemu-nbd does not start"
check "backup of a qcow2 exported by qemu-nbd" \
    src backup --disk "$URI" --name vm --dirty-bitmap b0 --json
cp "$LAST_OUT" "$T/b1.json"
LAST_OUT=$T/b1.json
jsoncheck "read over NBD" 'j["transport"] == "nbd"'
jsoncheck "first backup: no base, so the bitmap is not used" 'j["blocks_not_read"] == 0'
check "restore it" src restore --name vm --output "$T/r1.img"
truth "$T/t1.raw"
same "restore equals qemu-img convert -O raw" "$T/t1.raw" "$T/r1.img"

# Change two blocks through QEMU, which records them in b0.
unexport
qemu-io -f qcow2 -c "write -P 0x5a $((5 * MiB)) 64k" \
    -c "write -P 0xa5 $((40 * MiB + 4096)) 8k" "$T/vm.qcow2" >/dev/null
export_img -B b0 || bail "qemu-nbd does not restart"
check "incremental backup with the dirty bitmap" \
    src backup --disk "$URI" --name vm --dirty-bitmap b0 --json
cp "$LAST_OUT" "$T/b2.json"
cp "$LAST_ERR" "$T/b2.err"
LAST_OUT=$T/b2.json
jsoncheck "only the two dirty blocks were read" \
    'j["blocks_not_read"] > 0 and j["bytes_read"] == 2 * 1048576'
jsoncheck "and only they were sent" 'j["blocks_sent"] == 2'
expect_grep "reading only the blocks it marks changed" "$T/b2.err" \
    "the source says it trusts the bitmap"
check "restore the incremental point" src restore --name vm --output "$T/r2.img"
truth "$T/t2.raw"
same "incremental point equals the changed image" "$T/t2.raw" "$T/r2.img"

# A bitmap of another chain: the previous point recorded b0, not b1.
unexport
qemu-img bitmap --add "$T/vm.qcow2" b1
export_img -B b1 || bail "qemu-nbd does not restart"
check "backup naming another chain's bitmap" \
    src backup --disk "$URI" --name vm --dirty-bitmap b1 --json
expect_grep "does not belong to the previous restore point" "$LAST_ERR" \
    "falls back to a full read with a warning that says why"
jsoncheck "every block was read" 'j["blocks_not_read"] == 0'

# A bitmap that misses a change: written while it was disabled.  The
# first block is in the spot check.
unexport
qemu-img bitmap --disable "$T/vm.qcow2" b1
qemu-io -f qcow2 -c "write -P 0x77 0 4k" "$T/vm.qcow2" >/dev/null
export_img -B b1 || bail "qemu-nbd does not restart"
check "backup with a bitmap that missed a change" \
    src backup --disk "$URI" --name vm --dirty-bitmap b1 --json
expect_grep "cannot be trusted" "$LAST_ERR" "the spot check catches it"
check "restore it" src restore --name vm --output "$T/r4.img"
truth "$T/t4.raw"
same "the missed change is in the restore" "$T/t4.raw" "$T/r4.img"

# The bitmap is missing on the server.
export_img || bail "qemu-nbd does not restart"
check "backup naming a bitmap the export lacks" \
    src backup --disk "$URI" --name vm --dirty-bitmap b1 --json
expect_grep "dirty bitmap 'b1'" "$LAST_ERR" "a warning names the bitmap"
jsoncheck "and the whole disk was read" 'j["blocks_not_read"] == 0'
unexport

# Plain NBD across the network is refused before connecting.
expect_exit 6 "plain nbd:// to a remote host is refused" \
    src backup --disk nbd://192.0.2.10/vm --name remote
expect_grep "nbds://" "$LAST_ERR" "and the message points to nbds://"
expect_exit 6 "--transport direct refuses an NBD URI" \
    src backup --disk "$URI" --name vm --transport direct
finish
