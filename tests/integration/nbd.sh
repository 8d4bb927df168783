#!/bin/bash
# NBD sources against real servers (qemu-nbd, nbdkit) on Unix sockets and
# loopback TCP, through tests/tools/disk-read, which drives the source's
# disk interface (disk.c, nbd.c) the way a backup does: every data extent
# read by 4 threads into a sparse raw copy, compared with what
# `qemu-img convert -O raw` makes of the same image.  Then holes, dirty
# bitmaps, TLS (certificates and PSK), and what is refused.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"

DR=$BUILD/tests/tools/disk-read
[ -x "$DR" ] || bail "$DR not built (make run-tests builds it)"
for bin in qemu-nbd qemu-img qemu-io nbdkit; do
	command -v "$bin" >/dev/null || bail "$bin not installed (tests/deps.sh)"
done
MiB=$((1 << 20))
# The tool's temporary files (TLS certificate links) go here, to be checked.
export TMPDIR=$T/tmp
mkdir -p "$TMPDIR"

# wait_sock PATH PID: until the Unix socket exists (10 s) or PID died
wait_sock() {
	for _ in $(seq 100); do
		[ -S "$1" ] && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# wait_port PORT PID: until something listens on 127.0.0.1:PORT
wait_port() {
	for _ in $(seq 100); do
		ss -Hltn "( sport = :$1 )" 2>/dev/null | grep -q . && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# serve NAME WAIT ARG CMD...: start server CMD in the background, logging
# to $T/NAME.log; WAIT is sock or port, ARG its path or number.  SRV_PID.
serve() {
	local name=$1 how=$2 arg=$3
	shift 3
	"$@" >"$T/$name.log" 2>&1 &
	SRV_PID=$!
	track "$SRV_PID"
	if ! "wait_$how" "$arg" "$SRV_PID"; then
		not_ok "$name starts" "$*"
		diag "$T/$name.log"
		return 1
	fi
}

# copy NAME SPEC OUT [OPTIONS...]: disk-read SPEC into OUT, JSON in $LAST_OUT
copy() {
	local name=$1 spec=$2 out=$3
	shift 3
	check "$name" timeout 60 "$DR" "$@" "$spec" "$out"
}

# --- images --------------------------------------------------------------

# A mixed image (text, binaries, random data, holes) as qcow2, and the
# raw image qemu-img makes of it: what every copy must equal.
make_image "$T/src.raw" 48M+4096 5
qemu-img convert -f raw -O qcow2 "$T/src.raw" "$T/disk.qcow2" ||
    bail "qemu-img convert to qcow2"
qemu-img convert -f qcow2 -O raw "$T/disk.qcow2" "$T/ref.raw" ||
    bail "qemu-img convert to raw"
size=$(stat -c %s "$T/ref.raw")

# --- qemu-nbd: Unix socket, its path, TCP, a single-connection server ----

serve qemu-nbd-unix sock "$T/q.sock" \
    qemu-nbd -r -t -e 4 -f qcow2 -k "$T/q.sock" "$T/disk.qcow2" ||
    bail "qemu-nbd did not start"
copy "qcow2 over qemu-nbd, nbd+unix://" "nbd+unix:///?socket=$T/q.sock" "$T/u.raw"
same "the copy is qemu-img's raw image" "$T/ref.raw" "$T/u.raw"
jsoncheck "transport nbd, the virtual size" \
    "j['transport'] == 'nbd' and j['size'] == $size"
jsoncheck "holes skipped: bytes read are the data extents, less than the size" \
    "j['bytes_read'] == j['data'] and j['data'] < j['size']"
copy "the server's socket path, auto" "$T/q.sock" "$T/s.raw"
same "socket-path copy identical" "$T/ref.raw" "$T/s.raw"
expect_exit 1 "the socket with --transport direct is refused" \
    "$DR" --transport direct "$T/q.sock" "$T/x.raw"
expect_grep "Unix socket" "$LAST_ERR" "it says why"

port=$(free_port) || bail "no free port"
serve qemu-nbd-tcp port "$port" \
    qemu-nbd -r -t -e 4 -f qcow2 -b 127.0.0.1 -p "$port" -x vda \
    "$T/disk.qcow2" || bail "qemu-nbd (TCP) did not start"
copy "qcow2 over qemu-nbd, nbd://127.0.0.1 (loopback: allowed)" \
    "nbd://127.0.0.1:$port/vda" "$T/t.raw"
same "TCP copy identical" "$T/ref.raw" "$T/t.raw"
expect_exit 1 "an export the server does not have" \
    "$DR" "nbd://127.0.0.1:$port/nope" "$T/x.raw"
expect_grep "cannot connect to NBD disk nbd://127.0.0.1:$port/nope" \
    "$LAST_ERR" "it names the disk"

# qemu-nbd's defaults: one client, no multi-conn, exits after it.
serve qemu-nbd-single sock "$T/one.sock" \
    qemu-nbd -r -f qcow2 -k "$T/one.sock" "$T/disk.qcow2" ||
    bail "qemu-nbd (single) did not start"
copy "a one-connection server (no multi-conn)" "nbd+unix:///?socket=$T/one.sock" "$T/one.raw"
same "one-connection copy identical" "$T/ref.raw" "$T/one.raw"

# --- nbdkit ----------------------------------------------------------------

serve nbdkit-file sock "$T/k.sock" \
    nbdkit -f -U "$T/k.sock" file file="$T/ref.raw" ||
    bail "nbdkit did not start"
copy "raw file over nbdkit" "nbd+unix:///?socket=$T/k.sock" "$T/k.raw"
same "nbdkit copy identical" "$T/ref.raw" "$T/k.raw"

# A server that wants 4 KiB-aligned requests, read in unaligned pieces.
serve nbdkit-align sock "$T/a.sock" \
    nbdkit -f -U "$T/a.sock" --filter=blocksize-policy file \
    file="$T/ref.raw" blocksize-minimum=4096 blocksize-error-policy=error ||
    bail "nbdkit (blocksize-policy) did not start"
copy "unaligned reads from a server with a 4 KiB minimum block" \
    "nbd+unix:///?socket=$T/a.sock" "$T/a.raw" --block-size 100001
same "aligned-server copy identical" "$T/ref.raw" "$T/a.raw"

# Without block status everything is data, and still copied right.
serve nbdkit-noext sock "$T/n.sock" \
    nbdkit -f -U "$T/n.sock" --filter=noextents file file="$T/ref.raw" ||
    bail "nbdkit (noextents) did not start"
copy "a server without base:allocation" "nbd+unix:///?socket=$T/n.sock" "$T/n.raw"
same "no-extents copy identical" "$T/ref.raw" "$T/n.raw"
jsoncheck "it reads the whole disk" "j['bytes_read'] == $size"

# Errors reach the reader as errors, not as data or a hang.
serve nbdkit-eio sock "$T/e.sock" \
    nbdkit -f -U "$T/e.sock" --filter=error file file="$T/ref.raw" \
    error=EIO error-pread-rate=100% ||
    bail "nbdkit (error) did not start"
expect_exit 4 "a server that fails every read: the read fails" \
    timeout 30 "$DR" "nbd+unix:///?socket=$T/e.sock" "$T/x.raw"
expect_grep "Input/output error" "$LAST_ERR" "with EIO"
serve nbdkit-slow sock "$T/d.sock" \
    nbdkit -f -U "$T/d.sock" --filter=delay file file="$T/ref.raw" \
    rdelay=200ms || bail "nbdkit (delay) did not start"
"$DR" "nbd+unix:///?socket=$T/d.sock" "$T/x.raw" >"$T/lost.out" 2>"$T/lost.err" &
dr=$!
sleep 0.5
stop_pid "$SRV_PID"
for _ in $(seq 100); do
	kill -0 "$dr" 2>/dev/null || break
	sleep 0.1
done
if kill -0 "$dr" 2>/dev/null; then
	kill -KILL "$dr"
	not_ok "the server killed during a copy: the reader fails, no hang"
else
	wait "$dr"
	rc=$?
	[ "$rc" -eq 4 ] && ok "the server killed during a copy: the reader fails, no hang" ||
	    not_ok "the server killed during a copy: the reader fails, no hang" "exit $rc"
fi

# --- a sparse 64 GiB image: time follows the data, not the size -----------

qemu-img create -q -f qcow2 "$T/big.qcow2" 64G || bail "qemu-img create 64G"
qemu-io -f qcow2 -c 'write -P 0x41 0 1M' -c 'write -P 0x42 30G 2M' \
    -c "write -P 0x43 $(((64 << 30) - (512 << 10))) 512k" "$T/big.qcow2" >/dev/null ||
    bail "qemu-io writes"
serve qemu-nbd-big sock "$T/big.sock" \
    qemu-nbd -r -t -e 4 -f qcow2 -k "$T/big.sock" "$T/big.qcow2" ||
    bail "qemu-nbd (64G) did not start"
start=$(date +%s)
copy "a sparse 64 GiB qcow2 over NBD" "nbd+unix:///?socket=$T/big.sock" "$T/big.raw"
secs=$(($(date +%s) - start))
jsoncheck "only its 3.5 MiB of data are read" \
    "j['size'] == 64 << 30 and j['bytes_read'] == 3584 << 10"
# Speed belongs to make bench; the bytes read above are the proof.
echo "# the 64 GiB sparse copy took $secs s"
check "the sparse copy matches the image" \
    qemu-img compare -q -f raw -F qcow2 "$T/big.raw" "$T/big.qcow2"
truncate -s 64G "$T/bigfile.raw"
dd if="$T/src.raw" of="$T/bigfile.raw" bs=1M count=2 seek=40000 \
    conv=notrunc status=none
copy "a sparse 64 GiB raw file, direct" "$T/bigfile.raw" "$T/bigfile.copy"
jsoncheck "direct reads only its data too" \
    "j['transport'] == 'direct' and j['bytes_read'] <= 3 << 20"
rm -f "$T/big.raw" "$T/bigfile.raw" "$T/bigfile.copy"

# --- dirty bitmaps ----------------------------------------------------------

cp "$T/disk.qcow2" "$T/cbt.qcow2"
qemu-img bitmap --add "$T/cbt.qcow2" b0 || bail "qemu-img bitmap --add"
cp "$T/ref.raw" "$T/cbt.raw"	# the copy of the point the bitmap starts at
qemu-io -f qcow2 -c 'write -P 0x55 1M 64k' -c "write -P 0x66 $((37 * MiB + 4096)) 8k" \
    -c 'write -P 0x77 48M 4k' "$T/cbt.qcow2" >/dev/null || bail "qemu-io writes"
qemu-img convert -f qcow2 -O raw "$T/cbt.qcow2" "$T/cbt.ref" || bail "convert"
serve qemu-nbd-cbt sock "$T/cbt.sock" \
    qemu-nbd -r -t -e 4 -f qcow2 -B b0 -k "$T/cbt.sock" "$T/cbt.qcow2" ||
    bail "qemu-nbd -B did not start"
cbt="nbd+unix:///?socket=$T/cbt.sock"
check "dirty map of bitmap b0" "$DR" --dirty-bitmap b0 --map "$cbt"
jsoncheck "exactly the touched 1 MiB blocks: 1, 37 and 48 (the last)" \
    "j['dirty'] == [1, 37, 48] and j['blocks'] == 49"
check "dirty map in 64 KiB blocks" "$DR" --dirty-bitmap b0 --block-size 65536 --map "$cbt"
jsoncheck "64 KiB blocks 16, 592 and 768" "j['dirty'] == [16, 592, 768]"
copy "incremental copy of the dirty blocks only" "$cbt" "$T/cbt.raw" \
    --dirty-bitmap b0 --dirty
jsoncheck "it read 2 MiB and the 4 KiB tail, nothing else" \
    "j['bytes_read'] == (2 << 20) + 4096"
same "and the result is the changed image" "$T/cbt.ref" "$T/cbt.raw"
expect_exit 3 "a bitmap the server does not export" \
    "$DR" --dirty-bitmap nope --map "$cbt"
jsoncheck "the reason names it" "'does not export dirty bitmap' in j['error'] and 'nope' in j['error']"
expect_exit 3 "no bitmap named" "$DR" --map "$cbt"
expect_exit 3 "a local file has no dirty bitmap" \
    "$DR" --dirty-bitmap b0 --map "$T/ref.raw"
jsoncheck "the reason says so" "'NBD' in j['error']"

# --- TLS ---------------------------------------------------------------------

pki_init
mkdir -p "$T/qtls"
cp "$PKI/ca.crt" "$T/qtls/ca-cert.pem"
cp "$PKI/target.crt" "$T/qtls/server-cert.pem"
cp "$PKI/target.key" "$T/qtls/server-key.pem"
port=$(free_port) || bail "no free port"
serve qemu-nbd-tls port "$port" \
    qemu-nbd -r -t -e 4 -f qcow2 -b 127.0.0.1 -p "$port" \
    --object "tls-creds-x509,id=tls0,dir=$T/qtls,endpoint=server,verify-peer=on" \
    --tls-creds tls0 "$T/disk.qcow2" || bail "qemu-nbd (TLS) did not start"
tls=(--tls-ca "$PKI/ca.crt" --tls-cert "$PKI/acme.crt" --tls-key "$PKI/acme.key")
copy "nbds:// with certificates (qemu-nbd, client certificate required)" \
    "nbds://127.0.0.1:$port/" "$T/tls.raw" "${tls[@]}"
same "TLS copy identical" "$T/ref.raw" "$T/tls.raw"
jsoncheck "transport nbds" "j['transport'] == 'nbds'"
if [ -z "$(ls -A "$TMPDIR")" ]; then
	ok "no temporary certificate links left"
else
	not_ok "no temporary certificate links left" "$(ls -A "$TMPDIR")"
fi
expect_exit 1 "nbds:// without a client certificate" \
    "$DR" --tls-ca "$PKI/ca.crt" "nbds://127.0.0.1:$port/" "$T/x.raw"
expect_exit 1 "nbds:// trusting another CA" \
    "$DR" --tls-ca "$PKI/other-ca.crt" --tls-cert "$PKI/other.crt" \
    --tls-key "$PKI/other.key" "nbds://127.0.0.1:$port/" "$T/x.raw"
expect_grep "certificate verification" "$LAST_ERR" "the server's certificate is checked"
expect_exit 1 "plain nbd:// to a TLS-only server" \
    "$DR" "nbd://127.0.0.1:$port/" "$T/x.raw"
expect_exit 1 "a missing CA file is named" \
    "$DR" --tls-ca "$T/nope.crt" "nbds://127.0.0.1:$port/" "$T/x.raw"
expect_grep "nope.crt" "$LAST_ERR" "the message names the file"

# A server whose certificate names another host.
mkdir -p "$T/qtls2"
cp "$PKI/ca.crt" "$T/qtls2/ca-cert.pem"
cp "$PKI/target-wrongname.crt" "$T/qtls2/server-cert.pem"
cp "$PKI/target-wrongname.key" "$T/qtls2/server-key.pem"
port2=$(free_port) || bail "no free port"
serve qemu-nbd-wrongname port "$port2" \
    qemu-nbd -r -t -f qcow2 -b 127.0.0.1 -p "$port2" \
    --object "tls-creds-x509,id=tls0,dir=$T/qtls2,endpoint=server,verify-peer=off" \
    --tls-creds tls0 "$T/disk.qcow2" || bail "qemu-nbd (wrong name) did not start"
expect_exit 1 "nbds:// to a server with another host's certificate" \
    "$DR" "${tls[@]}" "nbds://127.0.0.1:$port2/" "$T/x.raw"
expect_grep "certificate verification" "$LAST_ERR" "its name is checked"

# TLS-PSK with nbdkit: the identity comes from the URI.
printf 'alice:%s\n' "$(openssl rand -hex 32)" >"$T/psk"
printf 'alice:%s\n' "$(openssl rand -hex 32)" >"$T/psk.wrong"
chmod 600 "$T/psk" "$T/psk.wrong"
serve nbdkit-psk sock "$T/psk.sock" \
    nbdkit -f -U "$T/psk.sock" --tls=require --tls-psk="$T/psk" file \
    file="$T/ref.raw" || bail "nbdkit (PSK) did not start"
copy "nbds+unix:// with a pre-shared key (nbdkit)" \
    "nbds+unix://alice@/?socket=$T/psk.sock" "$T/psk.raw" --tls-psk-file "$T/psk"
same "PSK copy identical" "$T/ref.raw" "$T/psk.raw"
jsoncheck "transport nbds" "j['transport'] == 'nbds'"
expect_exit 1 "the wrong key" "$DR" --tls-psk-file "$T/psk.wrong" \
    "nbds+unix://alice@/?socket=$T/psk.sock" "$T/x.raw"
expect_exit 1 "a PSK without an identity in the URI" \
    "$DR" --tls-psk-file "$T/psk" "nbds+unix:///?socket=$T/psk.sock" "$T/x.raw"
expect_grep "identity" "$LAST_ERR" "it says where the identity goes"

# --- refused before connecting -------------------------------------------------

# These addresses are never contacted: the refusal comes first.
for uri in nbd://192.0.2.1/vda nbd://backup.example.com:10809/vda \
    "nbd://[2001:db8::1]/vda"; do
	start=$(date +%s)
	expect_exit 1 "plain $uri refused" "$DR" "$uri" "$T/x.raw"
	expect_grep "refusing plain NBD.*nbds://" "$LAST_ERR" "pointing to nbds:// ($uri)"
	[ $(($(date +%s) - start)) -le 2 ] && ok "at once ($uri)" ||
	    not_ok "refusal of $uri took too long (did it connect?)"
done
expect_exit 1 "--transport direct on a URI" \
    "$DR" --transport direct "nbd+unix:///?socket=$T/q.sock" "$T/x.raw"
expect_exit 1 "--transport nbd on a file" \
    "$DR" --transport nbd "$T/ref.raw" "$T/x.raw"
expect_grep "local path" "$LAST_ERR" "it says why"
check "--transport direct on a file" "$DR" --transport direct "$T/ref.raw" "$T/x.raw"
jsoncheck "reads it directly" "j['transport'] == 'direct'"

finish
