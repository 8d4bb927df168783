# shellcheck shell=bash disable=SC2034
# Shared helpers for tests/integration/*.sh (bash).  Source it first:
#
#	. "$(dirname "$0")/../lib.sh"
#
# Results are TAP lines: "ok - NAME", "not ok - NAME" (followed by "#"
# diagnostics), "ok - NAME # SKIP why".  End a script with `finish`.
#
# Environment: BUILD (build directory, default ./build), KEEP=1 keeps the
# temporary directory $T.  Everything a script starts is killed on exit.

set -u

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$TOP/build}
PY=/usr/bin/python3
SCRIPT=$(basename "$0" .sh)
T=$(mktemp -d "${TMPDIR:-/tmp}/transporter-$SCRIPT.XXXXXX")
PKI=$T/pki
LAST=$T/last		# stdout + stderr of the last check / expect_exit
LAST_OUT=$T/last.out	# its stdout alone
LAST_ERR=$T/last.err	# its stderr alone
FAILS=0
PIDS=()			# every background process to kill on exit
AT_EXIT=()		# commands to run on exit, after the kills
TARGET_PID=
TARGET_PORT=
TARGET_LOG=$T/target.log
SRC_TIMEOUT=${SRC_TIMEOUT:-300}

# --- cleanup -------------------------------------------------------------

# stop_pid PID: TERM, up to 5 s grace, then KILL; reaps it.
stop_pid() {
	local pid=$1
	kill -TERM "$pid" 2>/dev/null || { { wait "$pid"; } 2>/dev/null; return 0; }
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	{ wait "$pid"; } 2>/dev/null
	return 0
}

cleanup() {
	local pid
	local cmd
	for pid in "${PIDS[@]}"; do
		stop_pid "$pid"
	done
	for cmd in "${AT_EXIT[@]}"; do
		eval "$cmd"
	done
	if [ "${KEEP:-0}" = 1 ]; then
		echo "# kept $T"
	else
		rm -rf "$T"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# track PID: kill PID when the script exits
track() {
	PIDS+=("$1")
}

# at_exit CMD: eval CMD on exit, after every process is stopped
at_exit() {
	AT_EXIT+=("$1")
}

# --- results -------------------------------------------------------------

# diag [FILE]: stdin or the tail of FILE as "#" lines
diag() {
	if [ $# -gt 0 ]; then
		tail -n 15 "$1" 2>/dev/null | sed 's/^/#   /'
	else
		sed 's/^/#   /'
	fi
}

ok() {
	echo "ok - $*"
}

# not_ok NAME [WHY...]
not_ok() {
	local name=$1
	shift
	echo "not ok - $name"
	[ $# -eq 0 ] || echo "$*" | diag
	FAILS=$((FAILS + 1))
}

# skip NAME WHY...
skip() {
	local name=$1
	shift
	echo "ok - $name # SKIP $*"
}

# bail WHY: one failure and stop this script (the rest cannot run)
bail() {
	not_ok "$SCRIPT: $*"
	exit 1
}

# finish: exit status of the script, non-zero if anything failed
finish() {
	[ "$FAILS" -eq 0 ]
	exit
}

# run CMD...: run CMD, output in $LAST_OUT, $LAST_ERR and $LAST; RC = exit.
# (Copy $LAST_OUT elsewhere before giving it to the next command.)
run() {
	"$@" >"$LAST_OUT" 2>"$LAST_ERR"
	RC=$?
	cat "$LAST_OUT" "$LAST_ERR" >"$LAST"
	return "$RC"
}

# check NAME CMD...: ok if CMD exits 0
check() {
	local name=$1
	shift
	if run "$@"; then
		ok "$name"
	else
		not_ok "$name" "exit $RC: $*"
		diag "$LAST"
	fi
}

# verdict NAME: ok if the command just before succeeded, else not ok with
# the output of the last run
verdict() {
	if [ $? -eq 0 ]; then
		ok "$1"
	else
		not_ok "$1"
		diag "$LAST"
	fi
}

# expect_out NAME WANT: ok if the last run exited 0 with stdout WANT
expect_out() {
	local got
	got=$(cat "$LAST_OUT")
	if [ "$RC" -eq 0 ] && [ "$got" = "$2" ]; then
		ok "$1"
	else
		not_ok "$1" "exit $RC, stdout:
$got
expected:
$2"
		diag "$LAST_ERR"
	fi
}

# expect_exit CODE NAME CMD...: ok if CMD exits exactly CODE
expect_exit() {
	local code=$1 name=$2
	shift 2
	run "$@"
	if [ "$RC" -eq "$code" ]; then
		ok "$name"
	else
		not_ok "$name" "exit $RC, expected $code: $*"
		diag "$LAST"
	fi
}

# not_listed BACKUP NAME: ok if `src list --json` works and shows no
# backup called BACKUP (a failed backup committed nothing)
not_listed() {
	if ! run src list --json; then
		not_ok "$2" "list failed: exit $RC"
		diag "$LAST"
	elif grep -q "\"$1\"" "$LAST_OUT"; then
		not_ok "$2" "$(cat "$LAST_OUT")"
	else
		ok "$2"
	fi
}

# expect_fail NAME CMD...: ok if CMD fails cleanly: non-zero, but neither
# killed by a signal nor timed out
expect_fail() {
	local name=$1
	shift
	run "$@"
	if [ "$RC" -ne 0 ] && [ "$RC" -lt 124 ]; then
		ok "$name"
	else
		not_ok "$name" "exit $RC, expected a clean failure: $*"
		diag "$LAST"
	fi
}

# expect_grep PATTERN FILE NAME: ok if FILE matches PATTERN (grep -Ei)
expect_grep() {
	if grep -Eiq -- "$1" "$2" 2>/dev/null; then
		ok "$3"
	else
		not_ok "$3" "no /$1/ in $(basename "$2"):"
		diag "$2"
	fi
}

# wait_grep REGEX FILE: wait up to 10 s for REGEX in FILE; 1 if it never came
wait_grep() {
	local _
	for _ in $(seq 100); do
		grep -Eq -- "$1" "$2" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# --- environment ---------------------------------------------------------

# need_bins: stop unless both daemons are built
need_bins() {
	if [ ! -x "$BUILD/source-transporter" ] ||
	    [ ! -x "$BUILD/target-transporter" ]; then
		bail "daemons not built in $BUILD (run make)"
	fi
}

# free_port: print a loopback TCP port nobody listens on, below the
# ephemeral range so that no outgoing connection takes it meanwhile
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 12000))
		if ! ss -Hltn "( sport = :$p )" 2>/dev/null | grep -q .; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# pki_init: mint the test PKI into $PKI (once)
pki_init() {
	[ -f "$PKI/ca.crt" ] && return 0
	sh "$TOP/tests/pki/mint.sh" "$PKI" || bail "tests/pki/mint.sh failed"
}

# make_image OUT SIZE [SEED]: see tests/tools/mkimage.sh
make_image() {
	bash "$TOP/tests/tools/mkimage.sh" "$@" || bail "mkimage.sh $* failed"
}

# --- configuration -------------------------------------------------------

# conf_write FILE DEFAULTS EXTRA...: DEFAULTS is "key = value" lines; an
# EXTRA line "key = value" replaces the default of that key ("key =" drops
# it) or is added; from the first EXTRA line starting with "[" on, lines go
# at the end.  Global keys come before every section.
conf_write() {
	local file=$1 defaults=$2 line key tail=0
	shift 2
	local -A over=()
	local order=() sections=()
	for line in "$@"; do
		[[ $line == \[* ]] && tail=1
		if [ "$tail" -eq 1 ]; then
			sections+=("$line")
		else
			key=${line%%=*}
			key=${key//[[:space:]]/}
			over[$key]=$line
			order+=("$key")
		fi
	done
	{
		# the defaults' global keys, replaced where EXTRA says so
		while IFS= read -r line; do
			[ -n "$line" ] || continue
			key=${line%%=*}
			key=${key//[[:space:]]/}
			if [ -n "${over[$key]+set}" ]; then
				line=${over[$key]}
				unset "over[$key]"
			fi
			[[ $line =~ =[[:space:]]*$ ]] || echo "$line"
		done < <(sed -n '/^\[/q;p' <<<"$defaults")
		# new global keys
		for key in "${order[@]}"; do
			[ -n "${over[$key]+set}" ] || continue
			line=${over[$key]}
			unset "over[$key]"
			[[ $line =~ =[[:space:]]*$ ]] || echo "$line"
		done
		# the defaults' sections, then EXTRA's
		sed -n '/^\[/,$p' <<<"$defaults"
		[ ${#sections[@]} -eq 0 ] || printf '%s\n' "${sections[@]}"
	} >"$file"
}

# target_conf FILE [EXTRA...]: a target config on a new free port
# ($TARGET_PORT), repository $T/repo, tenants acme (acme-source) and
# globex (globex-source).  Write source configs after it.
target_conf() {
	local file=$1
	shift
	pki_init
	mkdir -p "$T/repo"
	TARGET_PORT=$(free_port) || bail "no free port"
	conf_write "$file" "listen = 127.0.0.1:$TARGET_PORT
certificate = $PKI/target.crt
key = $PKI/target.key
ca = $PKI/ca.crt
repository = $T/repo
[tenant acme]
identity = acme-source
[tenant globex]
identity = globex-source" "$@"
}

# source_conf FILE CERT [EXTRA...]: a source config for $TARGET_PORT with
# client certificate $PKI/CERT.crt and key; CERT "none" leaves both out.
# Its state (the points it committed, for rollback checks) is in $T/state.
source_conf() {
	local file=$1 cert=$2 certlines=
	shift 2
	pki_init
	[ "$cert" = none ] ||
	    certlines="certificate = $PKI/$cert.crt
key = $PKI/$cert.key"
	conf_write "$file" "target = 127.0.0.1:$TARGET_PORT
server_name = localhost
$certlines
ca = $PKI/ca.crt
state_directory = $T/state" "$@"
}

# password_source_conf FILE [KEY = VALUE...]: source_conf for tenant acme
# whose key provider is a password, in $T/password (written, mode 600)
password_source_conf() {
	local conf=$1
	shift
	(umask 077 && echo "bench password" >"$T/password")
	source_conf "$conf" acme "key_provider = password" \
	    "password_file = $T/password" "$@"
}

# chunk_of TENANT_DIR NAME N: "block file" of the Nth non-zero block of
# NAME's newest point in a repository's tenant directory
chunk_of() {
	"$PY" - "$1" "$2" "$3" <<'PYEOF'
import glob, os, sys
repo, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
idx = sorted(glob.glob(os.path.join(repo, "points", name, "*.index")))[-1]
data = open(idx, "rb").read()[20:]
ids = [data[i:i + 32] for i in range(0, len(data), 32)]
blocks = [(i, b) for i, b in enumerate(ids) if b != bytes(32)]
i, b = blocks[n]
h = b.hex()
print(i, os.path.join(repo, "chunks", h[:2], h))
PYEOF
}

# flip FILE OFFSET [fix]: xor a byte of FILE; with fix, a chunk file's
# header digest of its payload is rewritten so only deeper checks can tell
flip() {
	"$PY" - "$@" <<'PYEOF'
import hashlib, sys, xxhash
path, off = sys.argv[1], int(sys.argv[2])
b = bytearray(open(path, "rb").read())
b[off] ^= 0x40
if len(sys.argv) > 3:	# a chunk's header checksum, by its version
	if b[4] == 1:
		b[16:48] = hashlib.sha256(bytes(b[48:])).digest()
	else:
		b[16:48] = xxhash.xxh3_128(bytes(b[48:])).digest() + bytes(16)
open(path, "wb").write(bytes(b))
PYEOF
}

# in_chunks TENANT: is $T/needle (a few bytes of random data, stored raw
# when not encrypted) in any chunk file of TENANT in $T/repo?
in_chunks() {
	"$PY" - "$T/needle" "$T/repo/tenants/$1/chunks" <<'PYEOF'
import os, sys
needle = open(sys.argv[1], "rb").read()
for d, _, files in os.walk(sys.argv[2]):
	for f in files:
		if needle in open(os.path.join(d, f), "rb").read():
			sys.exit(0)
sys.exit(1)
PYEOF
}

# --- daemons -------------------------------------------------------------

# target_start CONF: start the target in the foreground mode, in the
# background, logging to $TARGET_LOG; waits up to 10 s for "listening on".
# Returns 1 (and says why) if it does not get there.  TARGET_FLAGS adds
# options (-vv for debug lines).
target_start() {
	local conf=$1 start
	[ -z "$TARGET_PID" ] || target_stop
	touch "$TARGET_LOG"
	start=$(($(wc -l <"$TARGET_LOG") + 1))
	echo "--- target_start $conf" >>"$TARGET_LOG"
	# shellcheck disable=SC2086
	"$BUILD/target-transporter" -d ${TARGET_FLAGS:-} -f "$conf" >>"$TARGET_LOG" 2>&1 &
	TARGET_PID=$!
	track "$TARGET_PID"
	for _ in $(seq 100); do
		if tail -n "+$start" "$TARGET_LOG" | grep -q 'listening on'; then
			return 0
		fi
		if ! kill -0 "$TARGET_PID" 2>/dev/null; then
			wait "$TARGET_PID"
			echo "# target exited with $? before listening:"
			tail -n "+$start" "$TARGET_LOG" | diag
			TARGET_PID=
			return 1
		fi
		sleep 0.1
	done
	echo "# target not listening after 10 s:"
	tail -n "+$start" "$TARGET_LOG" | diag
	target_stop
	return 1
}

# target_kill: SIGKILL the target (it stays down)
target_kill() {
	kill -KILL "$TARGET_PID"
	{ wait "$TARGET_PID"; } 2>/dev/null
	TARGET_PID=
}

# restart_target: SIGKILL the target, start it again on the same port
restart_target() {
	target_kill
	sleep 0.5
	target_start "$T/target.conf"
}

# target_stop: stop the running target (TERM, then KILL after 5 s)
target_stop() {
	[ -n "$TARGET_PID" ] || return 0
	stop_pid "$TARGET_PID"
	TARGET_PID=
}

# target_alive: is the target still running?
target_alive() {
	[ -n "$TARGET_PID" ] && kill -0 "$TARGET_PID" 2>/dev/null
}

# log_mark: remember where $TARGET_LOG ends now
log_mark() {
	LOG_MARK=$(($(wc -l <"$TARGET_LOG" 2>/dev/null || echo 0) + 1))
}

# log_new: the target log lines written since log_mark into $TARGET_NEW
# (waits half a second for the target to finish writing them)
TARGET_NEW=$T/target.new
LOG_MARK=1
log_new() {
	sleep 0.5
	tail -n "+$LOG_MARK" "$TARGET_LOG" >"$TARGET_NEW" 2>/dev/null
}

# src ARGS...: the source with $T/source.conf (SRC_CONF overrides), with a
# timeout of SRC_TIMEOUT seconds
src() {
	timeout "$SRC_TIMEOUT" "$BUILD/source-transporter" \
	    -f "${SRC_CONF:-$T/source.conf}" "$@"
}

# --- the WAN emulator (tests/tools/wanrelay) --------------------------------

# random_image OUT MIB SEED: incompressible, reproducible bytes
random_image() {
	openssl enc -aes-128-ctr -nosalt -iv 0 \
	    -K "$(printf 'wan %s' "$3" | sha256sum | cut -c1-32)" \
	    -in /dev/zero 2>/dev/null | head -c "$(($2 << 20))" >"$1"
	[ "$(stat -c %s "$1")" -eq $(($2 << 20)) ] || bail "cannot make $1"
}

# relay_start ARGS...: a new wanrelay with ARGS in front of the target
# ($TARGET_PORT) on $RELAY_PORT; the previous one is stopped.  Its log is
# $T/relay.log.
RELAY_PID=
relay_start() {
	local relay=$BUILD/tests/tools/wanrelay
	[ -x "$relay" ] || bail "$relay not built (make run-tests builds it)"
	[ -z "$RELAY_PID" ] || stop_pid "$RELAY_PID"
	RELAY_PORT=
	rm -f "$T/relay.port"
	echo "--- wanrelay $*" >>"$T/relay.log"
	"$relay" "$@" "$TARGET_PORT" >"$T/relay.port" 2>>"$T/relay.log" &
	RELAY_PID=$!
	track "$RELAY_PID"
	for _ in $(seq 50); do
		RELAY_PORT=$(head -n 1 "$T/relay.port" 2>/dev/null)
		[ -z "$RELAY_PORT" ] || return 0
		sleep 0.1
	done
	bail "wanrelay did not start: $(cat "$T/relay.log")"
}

# --- measurements --------------------------------------------------------

# measure CMD...: like run, and RSS_KIB gets CMD's peak resident set size
# (CMD must be a program, not a shell function)
measure() {
	run "$PY" -c '
import resource, subprocess, sys
rc = subprocess.run(sys.argv[2:]).returncode
with open(sys.argv[1], "w") as f:
	f.write("%d\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc if rc >= 0 else 128 - rc)' "$T/rss" "$@"
	RSS_KIB=$(cat "$T/rss" 2>/dev/null || echo 0)
	return "$RC"
}

# peak_rss_kib PID: peak resident set size (VmHWM) of a running process
peak_rss_kib() {
	awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}

# files_identical A B: same bytes?
files_identical() {
	cmp -s -- "$1" "$2"
}

# allocated_kib FILE: disk space FILE really uses
allocated_kib() {
	du -k -- "$1" | cut -f1
}

# apparent_kib FILE: its size
apparent_kib() {
	echo $(($(stat -c %s -- "$1") / 1024))
}

# scrape PORT: GET /metrics of 127.0.0.1:PORT to stdout (exit 1 if none)
scrape() {
	"$PY" -c '
import sys, urllib.request
sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read().decode())' "$1"
}

# metric FILE SAMPLE: the value of SAMPLE (NAME or NAME{LABELS}, as
# rendered) in the scraped FILE; empty if it is not there
metric() {
	awk -v s="$2" '$1 == s { print $2; exit }' "$1"
}

# json_get FILE KEY: a top-level value of the JSON object in FILE
json_get() {
	"$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
	    "$1" "$2" 2>/dev/null
}

# jsoncheck NAME PYTHON-EXPR: ok if EXPR is true of j, the JSON in $LAST_OUT
jsoncheck() {
	if "$PY" -c 'import json, sys
j = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else 1)' "$LAST_OUT" "$2" 2>"$T/py.err"; then
		ok "$1"
	else
		not_ok "$1" "not true of the JSON: $2"
		diag "$LAST_OUT"
		diag "$T/py.err"
	fi
}

# same NAME A B: ok if files A and B are byte-identical
same() {
	if files_identical "$2" "$3"; then
		ok "$1"
	else
		not_ok "$1" "$(cmp "$2" "$3" 2>&1)"
	fi
}

# wait_ok PID NAME ERR: ok if background job PID exits 0, else not ok
# with its exit code and the end of its stderr ERR
wait_ok() {
	local rc
	wait "$1"
	rc=$?
	if [ "$rc" -eq 0 ]; then
		ok "$2"
	else
		not_ok "$2" "exit $rc: $(tail -5 "$3")"
	fi
}

# no_key_bytes PATH...: none of the keys in $T/dek.hex (one hex key a
# line), raw or in hex, in any file PATH or any file under a directory PATH
no_key_bytes() {
	"$PY" - "$T/dek.hex" "$@" <<'EOF'
import os, sys
keys = [bytes.fromhex(l.strip()) for l in open(sys.argv[1]) if l.strip()]
if not keys:
	print("no keys to look for")
	sys.exit(1)
pats = [k for k in keys] + [k.hex().encode() for k in keys]
bad = 0
paths = []
for top in sys.argv[2:]:
	if os.path.isfile(top):
		paths.append(top)
	for d, _, files in os.walk(top):
		paths += [os.path.join(d, f) for f in files]
for p in paths:
	data = open(p, "rb").read()
	for pat in pats:
		if pat in data:
			print("key bytes in", p)
			bad = 1
sys.exit(bad if paths else 1)
EOF
}

# --- a KMS -----------------------------------------------------------------

# kms_init: starts a real pykmip-server (TLS 1.2, client certificates) on
# a free port as $KMS_PORT, stopped on exit, with the test PKI; defines
# kms_start/kms_stop (restart it), kmipt and kt (kmip-tool and keytool
# as client acme) and new_kek (a new active version of acme-kek; prints
# its id).  Fast Argon2id for password KEKs.
kms_init() {
	KT=$BUILD/tests/tools/keytool
	KMIPT=$BUILD/tests/tools/kmip-tool
	KMS_DIR=$T/kms
	[ -x "$KT" ] && [ -x "$KMIPT" ] || bail "keytool and kmip-tool not built"
	[ -x /usr/bin/pykmip-server ] ||
	    bail "pykmip-server missing (apt-get install python3-pykmip)"
	export TRANSPORTER_ARGON2_MEMORY_KIB=64
	at_exit kms_stop
	pki_init
	KMS_PORT=$(free_port) || bail "no free port"
	kms_start || { diag "$T/kms-start"; bail "pykmip-server does not start"; }
	KMS_OPTS=(-t 10 -H 127.0.0.1 -p "$KMS_PORT" -c "$PKI/acme.crt"
	    -k "$PKI/acme.key" -C "$PKI/ca.crt")
}
kms_start() {
	sh "$TOP/tests/kmip/server.sh" start "$KMS_DIR" "$KMS_PORT" \
	    "$PKI/target.crt" "$PKI/target.key" "$PKI/ca.crt" >"$T/kms-start" 2>&1
}
kms_stop() {
	sh "$TOP/tests/kmip/server.sh" stop "$KMS_DIR"
}
kmipt() { "$KMIPT" "${KMS_OPTS[@]}" "$@"; }
kt() { "$KT" "${KMS_OPTS[@]}" "$@"; }
new_kek() {
	local uid
	uid=$(kmipt create acme-kek) && kmipt activate "$uid" >/dev/null &&
	    echo "$uid"
}
