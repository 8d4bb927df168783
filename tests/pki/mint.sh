#!/bin/sh
# Mint a throwaway test PKI with the openssl CLI (OpenSSL 3.0).
#
#   tests/pki/mint.sh OUTDIR
#
# OUTDIR gets (keys are EC P-256, mode 0600, never committed):
#   ca.crt ca.key            test CA
#   other-ca.crt other-ca.key  a second, unrelated CA
#   other.crt other.key      client CN acme-source signed by other-ca
#   target.crt target.key    server: SAN DNS:localhost, IP:127.0.0.1, CN target
#   target-wrongname.crt/.key  server: SAN DNS:wrong.example only
#   acme.crt acme.key        client CN acme-source, SAN DNS:acme-source
#   globex.crt globex.key    client CN globex-source (no SAN)
#   unknown.crt unknown.key  client CN nobody-source (valid, no tenant)
#   expired.crt expired.key  client CN acme-source, expired in 2020
#   revoked.crt revoked.key  client CN acme-source, listed in ca.crl
#   soon.crt soon.key        client CN acme-source, ends in 10 days
#   future.crt future.key    client CN acme-source, valid from 2099
#   ca.crl                   CRL of the test CA (PEM)
#   stale.crl                the same CA's CRL, whose next update was in 2020
set -eu

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
out=$1
mkdir -p "$out"
umask 077
db=$out/.ca
mkdir -p "$db"
: >"$db/index.txt"
echo 1000 >"$db/serial"
echo 1000 >"$db/crlnumber"

# quiet unless it fails
run() {
	if ! "$@" >"$db/log" 2>&1; then
		cat "$db/log" >&2
		echo "mint.sh: failed: $*" >&2
		exit 1
	fi
}

# ca NAME CN: self-signed CA
ca() {
	run openssl req -x509 -new -noenc -newkey ec \
	    -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 3650 \
	    -keyout "$out/$1.key" -out "$out/$1.crt" -subj "/O=transporter test/CN=$2" \
	    -addext "basicConstraints=critical,CA:TRUE" \
	    -addext "keyUsage=critical,keyCertSign,cRLSign" \
	    -addext "subjectKeyIdentifier=hash"
}

# key NAME: a new EC P-256 key and a CSR for CN
csr() {
	run openssl req -new -noenc -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
	    -keyout "$out/$1.key" -out "$db/$1.csr" -subj "/O=transporter test/CN=$2"
}

# ext NAME KIND [SAN]: extension file for a server or client leaf
ext() {
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature"
		echo "authorityKeyIdentifier=keyid"
		echo "subjectKeyIdentifier=hash"
		echo "extendedKeyUsage=$2"
		[ -z "${3:-}" ] || echo "subjectAltName=$3"
	} >"$db/$1.ext"
}

# leaf NAME CN ISSUER KIND [SAN]: key + cert signed by ISSUER
leaf() {
	csr "$1" "$2"
	ext "$1" "$4" "${5:-}"
	run openssl x509 -req -in "$db/$1.csr" -CA "$out/$3.crt" \
	    -CAkey "$out/$3.key" -CAserial "$db/$3.srl" -CAcreateserial \
	    -sha256 -days 825 -extfile "$db/$1.ext" -out "$out/$1.crt"
}

ca ca "transporter test CA"
ca other-ca "unrelated test CA"

leaf target target ca serverAuth "DNS:localhost,IP:127.0.0.1"
leaf target-wrongname wrong.example ca serverAuth "DNS:wrong.example"
leaf acme acme-source ca clientAuth "DNS:acme-source"
leaf globex globex-source ca clientAuth
leaf unknown nobody-source ca clientAuth "DNS:nobody-source"
leaf other acme-source other-ca clientAuth "DNS:acme-source"

# `openssl ca` for what x509 -req cannot do: dates in the past, a CRL.
cat >"$db/ca.cnf" <<CNF
[ca]
default_ca = test_ca
[test_ca]
dir = $db
database = $db/index.txt
serial = $db/serial
crlnumber = $db/crlnumber
new_certs_dir = $db
certificate = $out/ca.crt
private_key = $out/ca.key
default_md = sha256
default_days = 825
default_crl_days = 3650
policy = policy_any
unique_subject = no
copy_extensions = none
[policy_any]
organizationName = optional
commonName = supplied
CNF

# caleaf NAME CN [ca options]: client cert issued through `openssl ca`
caleaf() {
	name=$1 cn=$2
	shift 2
	csr "$name" "$cn"
	ext "$name" clientAuth "DNS:$cn"
	run openssl ca -batch -notext -config "$db/ca.cnf" -in "$db/$name.csr" \
	    -extfile "$db/$name.ext" -out "$out/$name.crt" "$@"
}

caleaf expired acme-source -startdate 200101000000Z -enddate 200201000000Z
caleaf revoked acme-source
run openssl ca -batch -config "$db/ca.cnf" -revoke "$out/revoked.crt" \
    -crl_reason keyCompromise
run openssl ca -batch -config "$db/ca.cnf" -gencrl -out "$out/ca.crl"
caleaf soon acme-source -days 10
caleaf future acme-source -startdate 20990101000000Z -enddate 21000101000000Z
run openssl ca -batch -config "$db/ca.cnf" -gencrl -out "$out/stale.crl" \
    -crl_lastupdate 20200101000000Z -crl_nextupdate 20200201000000Z

chmod 600 "$out"/*.key
chmod 644 "$out"/*.crt "$out"/*.crl
