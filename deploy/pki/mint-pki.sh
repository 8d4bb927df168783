#!/bin/sh
# mint-pki.sh: a private CA for transporter, the target's certificate
# and one client certificate per source identity, with the openssl CLI.
#
#   mint-pki.sh [-o DIR] [-p PATH] [-d DAYS] [-f]
#               [-t NAME-OR-IP]... [-s TENANT[=IDENTITY]]...
#   mint-pki.sh [-o DIR] -r CERT        revoke CERT, rewrite DIR/ca.crl
#   mint-pki.sh [-o DIR] -C             rewrite DIR/ca.crl (it lasts a year)
#
#   -o DIR    where the files go (default ./pki); the CA is made there on
#             first use and reused afterwards
#   -t NAME   a DNS name or IP address of the target, repeatable: each
#             becomes a subjectAltName of DIR/target.crt, the first its CN.
#             Sources connect to one of them (server_name in source.conf).
#   -s TENANT[=IDENTITY]
#             a source certificate DIR/sources/IDENTITY.crt whose CN and
#             DNS subjectAltName are IDENTITY (default: TENANT-source),
#             repeatable; the target maps IDENTITY to tenant TENANT.
#   -p PATH   the directory the files will be installed in, for the
#             configuration lines printed at the end (each source's
#             'target' is the first -t name on the default port 7878)
#             (default /etc/transporter/pki)
#   -d DAYS   validity of new leaf certificates (default 825; the CA: 10 years)
#   -f        replace leaf certificates that exist (re-issue); the CA is
#             never replaced: make a new one in another DIR to rotate it
#   -r CERT   revoke a certificate this CA issued; the CRL is rewritten
#   -C        rewrite the CRL only (do it before it expires, yearly)
#
# Files (keys EC P-256, mode 0600; certificates and CRL mode 0644):
#   DIR/ca.crt DIR/ca.key DIR/ca.crl       the CA, its key, its CRL
#   DIR/target.crt DIR/target.key          the target (serverAuth)
#   DIR/sources/ID.crt DIR/sources/ID.key  each source (clientAuth)
#   DIR/.ca/                               the CA's database (openssl ca)
#
# Keep DIR/ca.key offline if you can: only this script needs it.
# Rotating the CA, re-issuing and revoking: docs/OPERATIONS.md.
set -eu

prog=mint-pki.sh
out=./pki
prefix=/etc/transporter/pki
days=825
force=0
revoke=
crlonly=0
targets=
sources=

usage() {
	sed -n '3,10p' "$0" | sed 's/^# \{0,1\}//' >&2
	echo "see the comments at the top of $0" >&2
	exit 2
}

die() {
	echo "$prog: $*" >&2
	exit 1
}

while getopts o:p:d:t:s:fr:Ch opt; do
	case $opt in
	o) out=$OPTARG ;;
	p) prefix=$OPTARG ;;
	d) days=$OPTARG ;;
	t) targets="$targets $OPTARG" ;;
	s) sources="$sources $OPTARG" ;;
	f) force=1 ;;
	r) revoke=$OPTARG ;;
	C) crlonly=1 ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || usage
case $days in
'' | *[!0-9]*) die "-d: '$days' is not a number of days" ;;
esac
if [ -z "$targets$sources$revoke" ] && [ "$crlonly" -eq 0 ] &&
    [ -f "$out/ca.key" ]; then
	usage
fi
command -v openssl >/dev/null || die "openssl is not installed"

umask 077
mkdir -p "$out" "$out/sources"
db=$out/.ca
mkdir -p "$db"
log=$db/last.log

# run CMD...: quiet unless it fails
run() {
	if ! "$@" >"$log" 2>&1; then
		cat "$log" >&2
		die "failed: $*"
	fi
}

# name_ok NAME: letters, digits, '.', '_', '-' (a tenant name, an identity)
name_ok() {
	case $1 in
	'' | -* | *[!A-Za-z0-9._-]*) return 1 ;;
	esac
	return 0
}

# is_ip ADDR: an IPv4 or IPv6 address rather than a DNS name
is_ip() {
	case $1 in
	*:*) return 0 ;;
	*[!0-9.]*) return 1 ;;
	*) return 0 ;;
	esac
}

write_cnf() {
	cat >"$db/ca.cnf" <<CNF
[ca]
default_ca = transporter_ca
[transporter_ca]
dir = $db
database = $db/index.txt
serial = $db/serial
crlnumber = $db/crlnumber
new_certs_dir = $db
certificate = $out/ca.crt
private_key = $out/ca.key
default_md = sha256
default_days = $days
default_crl_days = 365
policy = policy_any
unique_subject = no
copy_extensions = none
[policy_any]
organizationName = optional
commonName = supplied
CNF
}

make_ca() {
	[ -f "$out/ca.key" ] && return 0
	[ ! -f "$out/ca.crt" ] || die "$out/ca.crt exists without its key"
	# A name of its own: while two CAs are trusted during a rotation,
	# OpenSSL must not mistake one for the other.
	run openssl req -x509 -new -noenc -newkey ec \
	    -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 3650 \
	    -keyout "$out/ca.key" -out "$out/ca.crt" \
	    -subj "/O=transporter/CN=transporter CA $(date -u +%Y%m%dT%H%M%SZ) $(openssl rand -hex 4)" \
	    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
	    -addext "keyUsage=critical,keyCertSign,cRLSign" \
	    -addext "subjectKeyIdentifier=hash"
	: >"$db/index.txt"
	# Random serials: certificates of two CAs never share one.
	openssl rand -hex 16 >"$db/serial"
	echo 1000 >"$db/crlnumber"
	echo "$prog: new CA $out/ca.crt" >&2
}

gen_crl() {
	run openssl ca -batch -config "$db/ca.cnf" -gencrl -out "$out/ca.crl"
	chmod 644 "$out/ca.crl"
}

# leaf FILE-BASE CN EKU SAN: key, CSR, certificate signed by the CA
leaf() {
	base=$1 cn=$2 eku=$3 san=$4
	if [ -f "$base.crt" ] && [ "$force" -eq 0 ]; then
		echo "$prog: $base.crt exists; -f re-issues it" >&2
		return 0
	fi
	run openssl req -new -noenc -newkey ec \
	    -pkeyopt ec_paramgen_curve:P-256 -keyout "$base.key.new" \
	    -out "$db/leaf.csr" -subj "/O=transporter/CN=$cn"
	cat >"$db/leaf.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=$eku
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=$san
EXT
	run openssl ca -batch -notext -config "$db/ca.cnf" \
	    -in "$db/leaf.csr" -extfile "$db/leaf.ext" -out "$base.crt.new"
	chmod 600 "$base.key.new"
	chmod 644 "$base.crt.new"
	mv -f "$base.key.new" "$base.key"
	mv -f "$base.crt.new" "$base.crt"
	rm -f "$db/leaf.csr" "$db/leaf.ext"
	echo "$prog: issued $base.crt (CN $cn, $san)" >&2
}

make_ca
write_cnf

if [ -n "$revoke" ]; then
	[ -f "$revoke" ] || die "-r: no such certificate: $revoke"
	run openssl ca -batch -config "$db/ca.cnf" -revoke "$revoke" \
	    -crl_reason superseded
	echo "$prog: revoked $revoke" >&2
fi

# The target: every name and address as a subjectAltName.
if [ -n "$targets" ]; then
	san= cn=
	for t in $targets; do
		if is_ip "$t"; then
			san="$san${san:+,}IP:$t"
		else
			name_ok "$t" || die "-t: '$t' is not a DNS name or IP address"
			san="$san${san:+,}DNS:$t"
		fi
		[ -n "$cn" ] || cn=$t
	done
	leaf "$out/target" "$cn" serverAuth "$san"
fi

# The sources: CN = DNS subjectAltName = identity.
for s in $sources; do
	tenant=${s%%=*}
	case $s in
	*=*) identity=${s#*=} ;;
	*) identity=$tenant-source ;;
	esac
	name_ok "$tenant" || die "-s: bad tenant name '$tenant'"
	name_ok "$identity" || die "-s: bad identity '$identity'"
	leaf "$out/sources/$identity" "$identity" clientAuth "DNS:$identity"
done

gen_crl
chmod 600 "$out/ca.key"
chmod 644 "$out/ca.crt"
[ "$crlonly" -eq 0 ] || [ -n "$targets$sources$revoke" ] ||
    echo "$prog: rewrote $out/ca.crl" >&2

# The configuration lines that go with these files.
[ -n "$targets$sources" ] || exit 0
first=
for t in $targets; do
	first=$t
	break
done
echo "# target.conf (files installed in $prefix, keys owned by transporter)"
echo "certificate = $prefix/target.crt"
echo "key = $prefix/target.key"
echo "ca = $prefix/ca.crt"
echo "crl = $prefix/ca.crl"
for s in $sources; do
	tenant=${s%%=*}
	case $s in
	*=*) identity=${s#*=} ;;
	*) identity=$tenant-source ;;
	esac
	echo "[tenant $tenant]"
	echo "identity = $identity"
done
for s in $sources; do
	case $s in
	*=*) identity=${s#*=} ;;
	*) identity=${s%%=*}-source ;;
	esac
	echo
	echo "# source.conf of $identity (copy sources/$identity.crt and .key there)"
	echo "target = ${first:-TARGET-ADDRESS}:7878"
	[ -z "$first" ] || echo "server_name = $first"
	echo "certificate = $prefix/$identity.crt"
	echo "key = $prefix/$identity.key"
	echo "ca = $prefix/ca.crt"
done
