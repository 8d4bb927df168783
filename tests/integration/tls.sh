#!/bin/bash
# Mutual TLS: who may talk to the target, and who the source trusts.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
make_image "$T/small.img" 3M+1234 21

# s_client CONF-LESS ARGS...: openssl s_client to the target, exiting when
# the target closes; RC and $LAST as run()
s_client() {
	run timeout 10 openssl s_client -connect "127.0.0.1:$TARGET_PORT" \
	    -CAfile "$PKI/ca.crt" -servername localhost -ign_eof "$@" </dev/null
}

# the target's configuration check
target_conf "$T/target.conf"
expect_exit 0 "target -n accepts a good config" \
    "$BUILD/target-transporter" -n -f "$T/target.conf"
cp "$PKI/target.key" "$T/readable.key"
chmod 644 "$T/readable.key"
target_conf "$T/bad.conf" "key = $T/readable.key"
expect_exit 2 "target -n refuses a key readable by others (exit 2)" \
    "$BUILD/target-transporter" -n -f "$T/bad.conf"
expect_grep 'readable.key' "$LAST" "the refusal names the key file"
target_conf "$T/bad.conf" "certificate = $T/nosuch.crt" "repository = $T/no/such/repo" \
    "listen = nonsense"
expect_exit 2 "target -n refuses a missing certificate file (exit 2)" \
    "$BUILD/target-transporter" -n -f "$T/bad.conf"
expect_grep "bad.conf:2: certificate: $T/nosuch.crt: No such file or directory" "$LAST" \
    "file:line, the key and the path"
expect_grep "repository = $T/no/such/repo: neither it nor $T/no/such exists" "$LAST" \
    "and a repository whose directory does not exist, in the same pass"
source_conf "$T/bad.conf" acme "ca = $T/nosuch-ca.crt"
SRC_CONF=$T/bad.conf expect_exit 2 "the source refuses a missing CA file (exit 2)" \
    src list
expect_grep "bad.conf:[0-9]+: ca: $T/nosuch-ca.crt: No such file or directory" "$LAST" \
    "file:line, the key and the path"

# a key given twice is refused at its second line, in both daemons
target_conf "$T/twice.conf"
sed -i -e '1p' -e '$a kek_name = a' -e '$a kek_name = b' "$T/twice.conf"
expect_exit 2 "target -n refuses a key set twice (exit 2)" \
    "$BUILD/target-transporter" -n -f "$T/twice.conf"
expect_grep "twice.conf:2: listen is set twice" "$LAST" "file:line and the key"
expect_grep "twice.conf:12: kek_name is set twice" "$LAST" \
    "and one set twice in a tenant's section, in the same pass"
source_conf "$T/twice.conf" acme
sed -i '2p' "$T/twice.conf"
SRC_CONF=$T/twice.conf expect_exit 2 "the source refuses a key set twice (exit 2)" \
    src list
expect_grep "twice.conf:3: server_name is set twice" "$LAST" "file:line and the key"

# the usual mix-ups of certificate files: one line each, naming the file
openssl pkey -in "$PKI/target.key" -aes256 -passout pass:x \
    -out "$T/encrypted.key" 2>/dev/null || bail "openssl pkey failed"
chmod 600 "$T/encrypted.key"
target_conf "$T/bad.conf" "key = $PKI/acme.key"
expect_exit 2 "target -n refuses a key that is not its certificate's (exit 2)" \
    "$BUILD/target-transporter" -n -f "$T/bad.conf"
expect_grep "private key $PKI/acme.key is not the key of certificate $PKI/target.crt" \
    "$LAST" "and names both files"
target_conf "$T/bad.conf" "certificate = $PKI/target.key"
expect_exit 2 "target -n refuses a key given as its certificate (exit 2)" \
    "$BUILD/target-transporter" -n -f "$T/bad.conf"
expect_grep "certificate $PKI/target.key holds a private key, not a certificate" \
    "$LAST" "and says what the file holds"
target_conf "$T/bad.conf" "ca = $PKI/target.key"
expect_exit 2 "target -n refuses a CA file with no certificate (exit 2)" \
    "$BUILD/target-transporter" -n -f "$T/bad.conf"
expect_grep "CA file $PKI/target.key holds a private key, not a certificate" \
    "$LAST" "and says so"
target_conf "$T/bad.conf" "ca = $PKI/ca.crl"
expect_exit 2 "target -n refuses a CA file that holds only a CRL (exit 2)" \
    "$BUILD/target-transporter" -n -f "$T/bad.conf"
expect_grep "CA file $PKI/ca.crl holds a CRL, not a certificate" "$LAST" "and says so"
openssl x509 -in "$PKI/target.crt" -outform der -out "$T/target.der"
target_conf "$T/bad.conf" "certificate = $T/target.der"
expect_exit 2 "target -n refuses a DER certificate (exit 2)" \
    "$BUILD/target-transporter" -n -f "$T/bad.conf"
expect_grep "certificate $T/target.der is not a PEM file .*openssl x509 -inform der -in $T/target.der" \
    "$LAST" "and says how to convert it"
cat "$PKI/ca.crt" "$PKI/target.crt" >"$T/ca-first.crt"
target_conf "$T/bad.conf" "certificate = $T/ca-first.crt"
expect_exit 2 "target -n refuses a chain with the CA first (exit 2)" \
    "$BUILD/target-transporter" -n -f "$T/bad.conf"
expect_grep "certificate $T/ca-first.crt starts with a CA certificate; put this daemon's own certificate first" \
    "$LAST" "and says what goes first"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
    -out "$T/rsa.key" 2>/dev/null || bail "openssl genpkey failed"
chmod 600 "$T/rsa.key"
target_conf "$T/bad.conf" "key = $T/rsa.key"
expect_exit 2 "target -n refuses a key of another type than its certificate's (exit 2)" \
    "$BUILD/target-transporter" -n -f "$T/bad.conf"
expect_grep "private key $T/rsa.key is not the key of certificate $PKI/target.crt" \
    "$LAST" "and says the two do not go together"
head -c 100 "$PKI/target.key" >"$T/cut.key"
chmod 600 "$T/cut.key"
target_conf "$T/bad.conf" "key = $T/cut.key"
expect_exit 2 "target -n refuses a truncated key (exit 2)" \
    "$BUILD/target-transporter" -n -f "$T/bad.conf"
expect_grep "private key $T/cut.key is damaged, or of a kind OpenSSL cannot read" \
    "$LAST" "and says it is damaged"
target_conf "$T/bad.conf" "key = $T/encrypted.key"
expect_exit 2 "target -n refuses a passphrase-protected key without asking (exit 2)" \
    timeout 20 "$BUILD/target-transporter" -n -f "$T/bad.conf"
expect_grep "private key $T/encrypted.key is encrypted with a passphrase" \
    "$LAST" "and says why"
# On a terminal too, where OpenSSL would prompt: script(1) gives it one.
script -qec "timeout 20 '$BUILD/target-transporter' -n -f '$T/bad.conf'" \
    "$T/tty.log" </dev/null >/dev/null 2>&1
rc=$?
[ $rc -eq 2 ] && ! grep -qi "pass phrase" "$T/tty.log" &&
    grep -q "is encrypted with a passphrase" "$T/tty.log" &&
    ok "on a terminal: exit 2 at once, no prompt" ||
    not_ok "on a terminal: exit 2 at once, no prompt" "exit $rc: $(cat "$T/tty.log")"
source_conf "$T/bad.conf" acme "key = $PKI/globex.key"
SRC_CONF=$T/bad.conf expect_exit 2 "the source refuses a key that is not its certificate's (exit 2)" \
    src list
expect_grep "private key $PKI/globex.key is not the key of certificate $PKI/acme.crt" \
    "$LAST" "and names both files"

target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"

source_conf "$T/source.conf" acme
check "good client backs up a small image" \
    src backup --disk "$T/small.img" --name small

# an end that is near or past is said when the certificates load
source_conf "$T/soon.conf" soon
SRC_CONF=$T/soon.conf check "a certificate ending in 10 days still backs up" \
    src backup --disk "$T/small.img" --name soon
expect_grep "our certificate $PKI/soon.crt expires on 20[0-9-]+ [0-9:]+ UTC, in 9 day\(s\), and then peers refuse it; re-issue it" \
    "$LAST" "and the source says when it ends and what to do"
port=$TARGET_PORT
target_conf "$T/stale.conf" "crl = $PKI/stale.crl"
TARGET_PORT=$port
expect_exit 0 "target -n loads a CRL past its next update" \
    "$BUILD/target-transporter" -n -f "$T/stale.conf"
expect_grep "CRL $PKI/stale.crl expired on 2020-02-01 00:00 UTC: every peer is refused; write a new one" \
    "$LAST" "and says it is stale and what to do"
# Last month's CRL kept beside this month's: OpenSSL checks the newer.
cat "$PKI/stale.crl" "$PKI/ca.crl" >"$T/both.crl"
target_conf "$T/both.conf" "crl = $T/both.crl"
TARGET_PORT=$port
expect_exit 0 "target -n loads a CRL file holding an old and a current CRL" \
    "$BUILD/target-transporter" -n -f "$T/both.conf"
if grep -q "expire" "$LAST"; then
	not_ok "and does not call it expired: the issuer's newer CRL counts" "$(cat "$LAST")"
else
	ok "and does not call it expired: the issuer's newer CRL counts"
fi
source_conf "$T/future.conf" future
SRC_CONF=$T/future.conf expect_exit 3 "a certificate valid only from 2099 is refused (exit 3)" \
    src list
expect_grep "our certificate $PKI/future.crt is valid only from 2099-01-01 00:00 UTC: peers refuse it until then; check this host's clock" \
    "$LAST" "and the source said so before it connected"
SRC_CONF=$T/source.conf expect_exit 0 "certificates of 825 days: no warning" \
    src list
if grep -q "expire\|valid only" "$LAST" "$TARGET_LOG"; then
	not_ok "no date warning for certificates of 825 days, in the source or the target" \
	    "$(grep "expire\|valid only" "$LAST" "$TARGET_LOG")"
else
	ok "no date warning for certificates of 825 days, in the source or the target"
fi

source_conf "$T/noname.conf" acme "server_name ="
SRC_CONF=$T/noname.conf check "without server_name the source checks IP 127.0.0.1" \
    src list

# no client certificate
source_conf "$T/nocert.conf" none
SRC_CONF=$T/nocert.conf expect_exit 2 \
    "source refuses a config without certificate (exit 2)" \
    src backup --disk "$T/small.img" --name nocert
s_client -tls1_3
if [ "$RC" -ne 0 ] && [ "$RC" -ne 124 ] && grep -qi 'alert' "$LAST"; then
	ok "TLS 1.3 handshake without a client certificate is refused"
else
	not_ok "TLS 1.3 handshake without a client certificate is refused" \
	    "s_client exit $RC"
	diag "$LAST"
fi

# certificate from another CA
source_conf "$T/other.conf" other
log_mark
SRC_CONF=$T/other.conf expect_exit 3 "client cert of another CA: exit 3" \
    src backup --disk "$T/small.img" --name other
log_new
expect_grep 'certificate|verify' "$TARGET_NEW" "target log says why it refused the other CA"
# The alert itself ("alert 'unknown CA': it refused our certificate") when
# the source reads it before the connection's reset; its certificate either way.
expect_grep "our certificate:? $PKI/other.crt" "$LAST" \
    "the source names its own certificate as the suspect"
# With JSON logs, the failure is one line at level error.
run "$BUILD/source-transporter" --log-format json -f "$T/other.conf" list
if [ "$RC" -eq 3 ] && "$PY" - "$LAST_ERR" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sys.exit(0 if any(o["level"] == "error" and "certificate" in o["msg"]
                  for o in lines) else 1)
EOF
then
	ok "JSON logs: the refusal is at level error"
else
	not_ok "JSON logs: the refusal is at level error" "exit $RC: $(cat "$LAST_ERR")"
fi

# expired
source_conf "$T/expired.conf" expired
log_mark
SRC_CONF=$T/expired.conf expect_exit 3 "expired client certificate: exit 3" \
    src backup --disk "$T/small.img" --name expired
log_new
expect_grep 'expired' "$TARGET_NEW" "target log says the certificate expired"
expect_grep "our certificate:? $PKI/expired.crt" "$LAST" \
    "the source names its own certificate as the suspect"

# the source checks the target's name
source_conf "$T/wrongname.conf" acme "server_name = wrong.example"
log_mark
SRC_CONF=$T/wrongname.conf expect_exit 3 "server_name not in the target certificate: exit 3" \
    src backup --disk "$T/small.img" --name wrongname
expect_grep 'wrong\.example' "$LAST" "the error names wrong.example"
log_new
expect_grep "the source refused this target's certificate \(TLS alert: [a-z ]+\); check" \
    "$TARGET_NEW" "the target log says the source refused its certificate"

# valid certificate, no tenant
source_conf "$T/unknown.conf" unknown
log_mark
SRC_CONF=$T/unknown.conf expect_exit 3 "identity without a tenant: exit 3" \
    src backup --disk "$T/small.img" --name unknown
expect_grep 'identity|tenant|authori[sz]|nobody-source' "$LAST" \
    "the source says the identity is not allowed"
log_new
expect_grep 'nobody-source' "$TARGET_NEW" "target log names the unknown identity"

# TLS 1.2
s_client -tls1_2 -cert "$PKI/acme.crt" -key "$PKI/acme.key"
if [ "$RC" -ne 0 ] && [ "$RC" -ne 124 ] &&
    grep -Eqi 'alert|protocol|version' "$LAST"; then
	ok "TLS 1.2 client is refused"
else
	not_ok "TLS 1.2 client is refused" "s_client exit $RC"
	diag "$LAST"
fi

# none of that hurt the target
if target_alive; then
	ok "target still running after the refused clients"
else
	not_ok "target still running after the refused clients"
	diag "$TARGET_LOG"
fi
check "target still serves a good client" \
    src backup --disk "$T/small.img" --name small
check "list shows only the good client's name" src list --json
if grep -Eq 'nocert|"other"|expired|wrongname|unknown' "$LAST_OUT"; then
	not_ok "refused clients left no restore points" "$(cat "$LAST_OUT")"
else
	ok "refused clients left no restore points"
fi
target_stop

# the target presents a certificate for another name
target_conf "$T/target-wrongname.conf" \
    "certificate = $PKI/target-wrongname.crt" \
    "key = $PKI/target-wrongname.key"
if target_start "$T/target-wrongname.conf"; then
	source_conf "$T/source.conf" acme
	expect_exit 3 "target certificate for another name: exit 3" \
	    src backup --disk "$T/small.img" --name wrongcert
	expect_grep 'localhost|name|certificate|verify' "$LAST" \
	    "the error says the target's certificate does not match"
	target_stop
else
	not_ok "target with target-wrongname.crt starts"
fi

# certificate revocation
target_conf "$T/target-crl.conf" "crl = $PKI/ca.crl"
if target_start "$T/target-crl.conf"; then
	source_conf "$T/revoked.conf" revoked
	log_mark
	SRC_CONF=$T/revoked.conf expect_exit 3 "revoked client certificate: exit 3" \
	    src backup --disk "$T/small.img" --name revoked
	log_new
	expect_grep 'revoked' "$TARGET_NEW" "target log says the certificate is revoked"
	source_conf "$T/source.conf" acme
	check "with a CRL, a good client still backs up" \
	    src backup --disk "$T/small.img" --name small
	target_stop
else
	not_ok "target with a CRL starts"
fi

finish
