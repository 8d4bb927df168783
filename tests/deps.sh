#!/bin/sh
# Debian packages needed to build and test transporter.
# All present: silent.  Missing and root: install them.  Otherwise print
# the apt-get line to run and exit 1.

PKGS="build-essential pkg-config libssl-dev libevent-dev libzstd-dev
libprotobuf-c-dev protobuf-c-compiler libcmocka-dev libargon2-dev
libsystemd-dev libnbd-dev nbdkit qemu-utils python3 python3-pykmip
e2fsprogs zstd openssl iproute2 clang libclang-rt-14-dev python3-openssl
python3-cryptography libxxhash-dev python3-xxhash"

missing=
for p in $PKGS; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)
	case $st in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
	echo "deps: installing:$missing"
	apt-get update -q || exit 1
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing || exit 1
	exit 0
fi

echo "deps: missing Debian packages; run as root:" >&2
echo "  apt-get update && apt-get install -y$missing" >&2
exit 1
