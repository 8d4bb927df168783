#!/bin/bash
# The KMIP client (common/kmip.c, through kmip-tool) against a real
# PyKMIP server, and against a hostile one (tests/kmip/evil-kms.py).
#
# Certificates come from tests/pki/mint.sh: the KMS serves target.crt
# (SAN DNS:localhost, IP:127.0.0.1); acme.crt and globex.crt are two
# clients (PyKMIP owners by CN); other.crt is signed by an unrelated CA.
. "$(dirname "$0")/../lib.sh"

TOOL=$BUILD/tests/tools/kmip-tool
[ -x "$TOOL" ] || bail "kmip-tool not built in $BUILD (make $BUILD/tests/tools/kmip-tool)"

kms_init	# lib.sh: pykmip-server on $KMS_PORT, stopped on exit
ok "pykmip-server starts (TLS 1.2, client certificates required)"
PORT=$KMS_PORT

# kt CERT ARGS...: kmip-tool as client CERT against the KMS
kt() {
	local cert=$1
	shift
	"$TOOL" -t 10 -H 127.0.0.1 -p "$PORT" -c "$PKI/$cert.crt" \
	    -k "$PKI/$cert.key" -C "$PKI/ca.crt" "$@"
}

# --- three versions of one key ------------------------------------------

uids=()
for v in 1 2 3; do
	if run kt acme create acme-kek && [ -n "$(cat "$LAST_OUT")" ]; then
		uids+=("$(cat "$LAST_OUT")")
		check "activate version $v (${uids[-1]})" kt acme activate "${uids[-1]}"
	else
		not_ok "create version $v of acme-kek" "exit $RC"
		diag "$LAST"
		bail "cannot create keys"
	fi
done
ok "create three AES-256 versions of acme-kek"
u1=${uids[0]} u2=${uids[1]} u3=${uids[2]}

run kt acme locate acme-kek
sort "$LAST_OUT" >"$T/sorted" && cp "$T/sorted" "$LAST_OUT"
expect_out "locate acme-kek finds exactly the three" \
    "$(printf '%s\n' "$u1" "$u2" "$u3" | sort)"

run kt acme attrs "$u2"
if [ "$RC" -eq 0 ] && [ "$(cut -d' ' -f2 "$LAST_OUT")" = Active ] &&
    [ "$(cut -d' ' -f3 "$LAST_OUT")" -gt 1000000000 ]; then
	ok "get attributes: Active, with an Initial Date"
else
	not_ok "get attributes: Active, with an Initial Date"
	diag "$LAST"
fi

# A fourth version, created but never activated, is not a candidate.
run kt acme create acme-kek
u4=$(cat "$LAST_OUT")
[ "$RC" -eq 0 ] && [ -n "$u4" ]
verdict "create a fourth, Pre-Active version"

run kt acme newest acme-kek
newest_uid=$(cut -d' ' -f1 "$LAST_OUT")
newest_key=$(cut -d' ' -f3 "$LAST_OUT")
if [ "$RC" -eq 0 ] && [ "$newest_uid" = "$u3" ]; then
	ok "newest Active version is the third ($u3), not the Pre-Active one"
else
	not_ok "newest Active version is the third ($u3)" "exit $RC"
	diag "$LAST"
fi

run kt acme get "$u3"
k3a=$(cat "$LAST_OUT")
run kt acme get "$u3"
k3b=$(cat "$LAST_OUT")
if [ "$RC" -eq 0 ] && [[ $k3a =~ ^[0-9a-f]{64}$ ]] && [ "$k3a" = "$k3b" ]; then
	ok "get returns the same 32 bytes twice"
else
	not_ok "get returns the same 32 bytes twice" "'$k3a' vs '$k3b'"
	diag "$LAST"
fi
[ "$newest_key" = "$k3a" ]
verdict "newest returns the key that get returns"
run kt acme get "$u1"
k1=$(cat "$LAST_OUT")
[ -n "$k1" ] && [ "$k1" != "$k3a" ]
verdict "versions have different keys"

# --- rotation backwards: revoke the newest ------------------------------

check "revoke the newest version (superseded)" kt acme revoke "$u3"
run kt acme attrs "$u3"
[ "$(cut -d' ' -f2 "$LAST_OUT")" = Deactivated ]
verdict "revoked version is Deactivated"
run kt acme newest acme-kek
if [ "$RC" -eq 0 ] && [ "$(cut -d' ' -f1 "$LAST_OUT")" = "$u2" ]; then
	ok "after the revocation, newest is the second version ($u2)"
else
	not_ok "after the revocation, newest is the second version ($u2)" "exit $RC"
	diag "$LAST"
fi
run kt acme get "$u3"
[ "$RC" -eq 0 ] && [ "$(cat "$LAST_OUT")" = "$k3a" ]
verdict "a revoked key can still be read (old restore points)"

run kt acme versions acme-kek
cut -d' ' -f1,2 "$LAST_OUT" >"$T/v" && cp "$T/v" "$LAST_OUT"
expect_out "versions lists all four, oldest first, with their states" \
    "$(printf '%s\n' "$u1 Active" "$u2 Active" "$u3 Deactivated" "$u4 Pre-Active")"

# --- destroy, compromise ------------------------------------------------

check "destroy the Pre-Active version" kt acme destroy "$u4"
run kt acme locate acme-kek
[ "$RC" -eq 0 ] && ! grep -qx "$u4" "$LAST_OUT"
verdict "a destroyed version is gone from locate"
expect_exit 1 "destroying an Active key is refused" kt acme destroy "$u2"
expect_grep "Destroy $u2 failed: Permission Denied" "$LAST_ERR" \
    "the refusal names the operation and the server's reason"
check "revoke a version as compromised" kt acme revoke "$u1" compromise
run kt acme attrs "$u1"
[ "$(cut -d' ' -f2 "$LAST_OUT")" = Compromised ]
verdict "compromised version is Compromised"
run kt acme newest acme-kek
[ "$RC" -eq 0 ] && [ "$(cut -d' ' -f1 "$LAST_OUT")" = "$u2" ]
verdict "newest is still the second version"

# --- no usable key ------------------------------------------------------

expect_exit 1 "newest of an unknown name fails" kt acme newest no-such-kek
expect_grep "no key named 'no-such-kek'" "$LAST_ERR" "and says there is no such key"
run kt acme create solo-kek
solo=$(cat "$LAST_OUT")
kt acme activate "$solo" >/dev/null 2>&1
kt acme revoke "$solo" >/dev/null 2>&1
expect_exit 1 "newest fails when no version is Active" kt acme newest solo-kek
expect_grep "none of its 1 versions is Active" "$LAST_ERR" "and says so"
expect_exit 1 "get of an unknown id fails" kt acme get 999999
expect_grep "Get 999999 failed: Item Not Found" "$LAST_ERR" "with the server's reason"

# --- tenants: PyKMIP objects belong to the CN that created them ---------

run kt globex locate acme-kek
[ "$RC" -eq 0 ] && [ ! -s "$LAST_OUT" ]
verdict "another client (globex) does not see acme's keys"
expect_exit 1 "another client cannot get acme's key" kt globex get "$u2"
expect_exit 1 "another client has no newest acme-kek" kt globex newest acme-kek

# --- TLS: who may talk to whom ------------------------------------------

expect_exit 3 "client certificate from another CA is refused" \
    kt other locate acme-kek
expect_grep "refused this client's certificate" "$LAST_ERR" "and the error says so"
expect_exit 3 "expired client certificate is refused" kt expired locate acme-kek
expect_exit 3 "server not signed by our CA is refused" \
    "$TOOL" -t 10 -H 127.0.0.1 -p "$PORT" -c "$PKI/acme.crt" \
    -k "$PKI/acme.key" -C "$PKI/other-ca.crt" locate acme-kek
expect_grep "server certificate refused" "$LAST_ERR" "and the error says so"
expect_exit 3 "server certificate for another name is refused" \
    kt acme -n wrong.example locate acme-kek
expect_grep "hostname mismatch" "$LAST_ERR" "and the error says why"
run "$TOOL" -t 10 -H localhost -p "$PORT" -c "$PKI/acme.crt" \
    -k "$PKI/acme.key" -C "$PKI/ca.crt" newest acme-kek
[ "$RC" -eq 0 ] && [ "$(cut -d' ' -f1 "$LAST_OUT")" = "$u2" ]
verdict "connecting by DNS name (localhost) verifies and works"
expect_exit 2 "kmip-tool without a CA is a usage error" \
    "$TOOL" -H 127.0.0.1 -p "$PORT" -c "$PKI/acme.crt" -k "$PKI/acme.key" locate x
expect_exit 3 "a missing client key file is a clear error" \
    "$TOOL" -H 127.0.0.1 -p "$PORT" -c "$PKI/acme.crt" -k "$T/nope.key" \
    -C "$PKI/ca.crt" locate x
expect_grep "cannot read private key $T/nope.key: No such file or directory" \
    "$LAST_ERR" "naming the file and why"
openssl pkey -in "$PKI/acme.key" -aes256 -passout pass:x \
    -out "$T/encrypted.key" 2>/dev/null || bail "openssl pkey failed"
expect_exit 3 "a passphrase-protected client key is refused without asking" \
    timeout 20 "$TOOL" -H 127.0.0.1 -p "$PORT" -c "$PKI/acme.crt" \
    -k "$T/encrypted.key" -C "$PKI/ca.crt" locate x
expect_grep "KMS 127.0.0.1:$PORT: private key $T/encrypted.key is encrypted with a passphrase" \
    "$LAST_ERR" "naming the KMS, the file and why"

# --- KMS down: fast and clear -------------------------------------------

kms_stop
t0=$(date +%s%N)
expect_exit 3 "KMS down: kmip-tool exits 3" kt acme newest acme-kek
ms=$((($(date +%s%N) - t0) / 1000000))
expect_grep "KMS 127.0.0.1:$PORT: cannot connect: Connection refused" \
    "$LAST_ERR" "KMS down: one clear line"
[ "$ms" -lt 3000 ]
verdict "KMS down: fails within 3 s ($ms ms)"
expect_exit 3 "KMS down and a bad key path: the path is reported" \
    "$TOOL" -H 127.0.0.1 -p "$PORT" -c "$PKI/acme.crt" -k "$T/nope.key" \
    -C "$PKI/ca.crt" locate x
expect_grep "cannot read private key $T/nope.key" "$LAST_ERR" \
    "before any connection is tried"

# --- hostile KMS --------------------------------------------------------

# evil MODE: a hostile KMS on $EPORT
EVIL_PID=
evil() {
	[ -z "$EVIL_PID" ] || stop_pid "$EVIL_PID"
	EPORT=$(free_port) || bail "no free port"
	rm -f "$T/evil.ready"
	/usr/bin/python3 "$TOP/tests/kmip/evil-kms.py" "$EPORT" \
	    "$PKI/target.crt" "$PKI/target.key" "$PKI/ca.crt" "$1" \
	    "$T/evil.ready" >"$T/evil.log" 2>&1 &
	EVIL_PID=$!
	track "$EVIL_PID"
	for _ in $(seq 100); do
		[ -f "$T/evil.ready" ] && return 0
		sleep 0.1
	done
	diag "$T/evil.log"
	bail "evil-kms.py $1 does not start"
}
ek() {
	"$TOOL" -t "${ET:-5}" -H 127.0.0.1 -p "$EPORT" -c "$PKI/acme.crt" \
	    -k "$PKI/acme.key" -C "$PKI/ca.crt" "$@"
}

evil huge
expect_exit 1 "hostile KMS: a 2 GiB response length is refused" ek newest acme-kek
expect_grep "not a KMIP Response Message of at most 1048576 bytes" "$LAST_ERR" \
    "before anything is allocated"
evil badlen
expect_exit 1 "hostile KMS: an item longer than its message is refused" ek locate acme-kek
expect_grep "malformed response: .*beyond the end" "$LAST_ERR" "with the reason"
evil badpad
expect_exit 1 "hostile KMS: non-zero padding is refused" ek get 1
expect_grep "malformed response: .*padding" "$LAST_ERR" "with the reason"
evil fail
expect_exit 1 "hostile KMS: a failure is reported" ek get 1
expect_grep "Get 1 failed: Permission Denied: evil\?message" "$LAST_ERR" \
    "on one line, control characters replaced"
evil garbage
expect_exit 1 "hostile KMS: garbage is refused" ek locate acme-kek
evil silent
t0=$(date +%s%N)
ET=1 expect_exit 1 "hostile KMS: a silent server times out" ek locate acme-kek
ms=$((($(date +%s%N) - t0) / 1000000))
expect_grep "no answer within 1000 ms" "$LAST_ERR" "saying so"
[ "$ms" -lt 3000 ]
verdict "the timeout holds ($ms ms for -t 1)"

finish
