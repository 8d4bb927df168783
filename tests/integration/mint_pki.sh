#!/bin/bash
# deploy/pki/mint-pki.sh, the operators' PKI script: the certificates it
# mints verify with openssl, carry the right names, keys are 0600, the
# configuration lines it prints work as they are with the real daemons,
# and the CA rotation of docs/OPERATIONS.md works step by step, with
# reloads (SIGHUP) of a running target: bundle both CAs, re-issue, drop
# the old CA.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
MINT=$TOP/deploy/pki/mint-pki.sh
A=$T/ca-a
B=$T/ca-b
mkdir -p "$T/repo"

# install HOST-DIR FILES...: copy PKI files flat into a host's directory
install_pki() {
	local dir=$1
	shift
	mkdir -p "$dir"
	cp "$@" "$dir/"
}

# printed_conf OUT PREFIX-DIR KIND [IDENTITY]: the lines mint-pki.sh
# printed ($T/printed) for the target or the source IDENTITY, with the
# placeholder install directory replaced by PREFIX-DIR
printed_conf() {
	local out=$1 dir=$2 kind=$3 id=${4:-}
	if [ "$kind" = target ]; then
		sed -n '/^# target.conf/,/^$/p' "$T/printed"
	else
		sed -n "/^# source.conf of $id /,/^\$/p" "$T/printed"
	fi | grep -v '^#' | sed "s|@PKI@|$dir|" >"$out"
}

# reload_target: SIGHUP, as systemctl reload does; waits for "reloaded"
reload_target() {
	local start
	start=$(($(wc -l <"$TARGET_LOG") + 1))
	kill -HUP "$TARGET_PID" || return 1
	for _ in $(seq 50); do
		tail -n "+$start" "$TARGET_LOG" | grep -q 'reloaded' && return 0
		sleep 0.1
	done
	echo "# no 'reloaded' in the target log after SIGHUP:"
	tail -n "+$start" "$TARGET_LOG" | diag
	return 1
}

# fingerprint CERT
fingerprint() {
	openssl x509 -in "$1" -noout -fingerprint -sha256 2>/dev/null
}

# --- minting ---------------------------------------------------------------

run sh "$MINT" -o "$A" -p @PKI@ -t localhost -t 127.0.0.1 -t ::1 \
    -s acme -s globex=globex-host
if [ "$RC" -eq 0 ]; then
	ok "mint-pki.sh mints a CA, a target and two sources"
else
	bail "mint-pki.sh failed (exit $RC): $(tail -n 5 "$LAST")"
fi
cp "$LAST_OUT" "$T/printed"

check "the target certificate verifies as a TLS server" \
    openssl verify -CAfile "$A/ca.crt" -purpose sslserver "$A/target.crt"
check "the source certificates verify as TLS clients, CRL checked" \
    openssl verify -CAfile "$A/ca.crt" -crl_check -CRLfile "$A/ca.crl" \
    -purpose sslclient "$A/sources/acme-source.crt" \
    "$A/sources/globex-host.crt"
run openssl x509 -in "$A/target.crt" -noout -ext subjectAltName
if grep -q 'DNS:localhost' "$LAST_OUT" &&
    grep -q 'IP Address:127.0.0.1' "$LAST_OUT" &&
    grep -q 'IP Address:0:0:0:0:0:0:0:1' "$LAST_OUT"; then
	ok "the target certificate names every -t as a subjectAltName"
else
	not_ok "the target certificate names every -t as a subjectAltName"
	diag "$LAST_OUT"
fi
run openssl x509 -in "$A/sources/globex-host.crt" -noout -subject \
    -ext subjectAltName
if grep -q 'CN = globex-host' "$LAST_OUT" &&
    grep -q 'DNS:globex-host$' "$LAST_OUT"; then
	ok "a source certificate has CN = DNS SAN = its identity"
else
	not_ok "a source certificate has CN = DNS SAN = its identity"
	diag "$LAST_OUT"
fi
modes=$(stat -c '%a' "$A/ca.key" "$A/target.key" "$A/sources/"*.key | sort -u)
if [ "$modes" = 600 ]; then
	ok "every key is mode 0600"
else
	not_ok "every key is mode 0600" "modes: $modes"
fi
if grep -qx '\[tenant acme\]' "$T/printed" &&
    grep -qx 'identity = acme-source' "$T/printed" &&
    grep -qx '\[tenant globex\]' "$T/printed" &&
    grep -qx 'identity = globex-host' "$T/printed"; then
	ok "it prints the [tenant] sections to paste"
else
	not_ok "it prints the [tenant] sections to paste"
	diag "$T/printed"
fi
expect_exit 1 "a bad identity is refused" \
    sh "$MINT" -o "$A" -s 'acme=bad/name'
expect_exit 2 "an unknown option is refused" sh "$MINT" -o "$A" -z

# --- the printed lines work with the daemons --------------------------------

install_pki "$T/etc/target" "$A/ca.crt" "$A/ca.crl" "$A/target.crt" \
    "$A/target.key"
install_pki "$T/etc/acme" "$A/ca.crt" "$A/sources/acme-source.crt" \
    "$A/sources/acme-source.key"
install_pki "$T/etc/globex" "$A/ca.crt" "$A/sources/globex-host.crt" \
    "$A/sources/globex-host.key"
TARGET_PORT=$(free_port) || bail "no free port"
printed_conf "$T/target.lines" "$T/etc/target" target
# max_sessions given: a reload of a file without it refuses every
# connection (the default is applied at start-up only; reported).
{
	echo "listen = 127.0.0.1:$TARGET_PORT"
	echo "repository = $T/repo"
	echo "max_sessions = 64"
	cat "$T/target.lines"
} >"$T/target.conf"
for h in acme-source:acme globex-host:globex; do
	printed_conf "$T/$h.lines" "$T/etc/${h#*:}" source "${h%%:*}"
	grep -q "^target = [^ ]*:7878$" "$T/$h.lines" &&
	    ok "${h%%:*}'s printed lines name the target, on the default port" ||
	    not_ok "${h%%:*}'s printed lines name the target" "$(cat "$T/$h.lines")"
	sed -i "s|^target = .*|target = 127.0.0.1:$TARGET_PORT|" "$T/$h.lines"
	cp "$T/$h.lines" "$T/${h#*:}.conf"
done
expect_exit 0 "target -n accepts the printed target lines" \
    "$BUILD/target-transporter" -n -f "$T/target.conf"
target_start "$T/target.conf" || bail "the target did not start"
SRC_CONF=$T/acme.conf check "acme's printed source lines reach the target" \
    src list
SRC_CONF=$T/globex.conf check "globex's printed source lines reach the target" \
    src list

# --- re-issuing, revoking ---------------------------------------------------

before=$(fingerprint "$A/target.crt")
ca_before=$(fingerprint "$A/ca.crt")
run sh "$MINT" -o "$A" -t localhost
if [ "$RC" -eq 0 ] && [ "$(fingerprint "$A/target.crt")" = "$before" ]; then
	ok "without -f an existing certificate is kept"
else
	not_ok "without -f an existing certificate is kept" "exit $RC"
fi
run sh "$MINT" -o "$A" -f -t localhost -t 127.0.0.1
if [ "$RC" -eq 0 ] && [ "$(fingerprint "$A/target.crt")" != "$before" ] &&
    [ "$(fingerprint "$A/ca.crt")" = "$ca_before" ]; then
	ok "-f re-issues the certificate under the same CA"
else
	not_ok "-f re-issues the certificate under the same CA" "exit $RC"
fi

check "-r revokes a source certificate" \
    sh "$MINT" -o "$A" -r "$A/sources/acme-source.crt"
expect_fail "openssl verify with the new CRL refuses the revoked certificate" \
    openssl verify -CAfile "$A/ca.crt" -crl_check -CRLfile "$A/ca.crl" \
    "$A/sources/acme-source.crt"
cp "$A/ca.crl" "$T/etc/target/ca.crl"
reload_target || bail "the target did not reload the CRL"
SRC_CONF=$T/acme.conf expect_exit 3 "after a reload the target refuses the revoked source (exit 3)" \
    src list
SRC_CONF=$T/globex.conf check "and still serves the others" src list

# --- rotating the CA --------------------------------------------------------

# 1. A new CA; every host trusts both (bundles of certificates and CRLs).
run sh "$MINT" -o "$B" -p @PKI@ -t localhost -t 127.0.0.1 -s acme
[ "$RC" -eq 0 ] || bail "minting the new CA failed: $(tail -n 5 "$LAST")"
cat "$A/ca.crt" "$B/ca.crt" >"$T/bundle.crt"
cat "$A/ca.crl" "$B/ca.crl" >"$T/bundle.crl"
for h in target acme globex; do
	cp "$T/bundle.crt" "$T/etc/$h/ca.crt"
done
cp "$T/bundle.crl" "$T/etc/target/ca.crl"
reload_target || bail "the target did not reload the bundle"
SRC_CONF=$T/globex.conf check "rotation 1: an old-CA source works with the bundle" \
    src list

# 2. Re-issue from the new CA, one host at a time.
cp "$B/sources/acme-source.crt" "$B/sources/acme-source.key" "$T/etc/acme/"
SRC_CONF=$T/acme.conf check "rotation 2: a new-CA source works (old target cert)" \
    src list
cp "$B/target.crt" "$B/target.key" "$T/etc/target/"
reload_target || bail "the target did not reload its re-issued certificate"
SRC_CONF=$T/acme.conf check "rotation 2: new-CA source, new-CA target" src list
SRC_CONF=$T/globex.conf check "rotation 2: old-CA source, new-CA target" src list

# 3. Drop the old CA: its certificates are refused.
for h in target acme globex; do
	cp "$B/ca.crt" "$T/etc/$h/ca.crt"
done
cp "$B/ca.crl" "$T/etc/target/ca.crl"
reload_target || bail "the target did not reload the new CA"
SRC_CONF=$T/acme.conf check "rotation 3: the new CA alone serves re-issued sources" \
    src list
SRC_CONF=$T/globex.conf expect_exit 3 \
    "rotation 3: a source not re-issued is refused (exit 3)" src list

finish
