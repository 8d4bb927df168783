# shellcheck shell=bash
# Helpers for the scripts that preload faultinject.so (see faultinject.c)
# into the target.  Source after tests/lib.sh.

SHIM=$BUILD/tests/tools/faultinject.so
[ -f "$SHIM" ] || bail "$SHIM not built (make run-tests builds it)"

# shim_start CONF VAR=VALUE...: target_start with the shim preloaded into
# the target only (FAULT_PROG), counting steps under $T/repo, and the
# FAULT_ variables given.  Under make asan the daemons carry clang's
# static ASan runtime, whose interceptors call on into the shim; the link
# order check only matters for gcc's shared libasan, so it is turned off.
shim_start() {
	local conf=$1 rc asan=${ASAN_OPTIONS:-}
	shift
	[ "${TRANSPORTER_ASAN:-0}" = 1 ] &&
	    export ASAN_OPTIONS=${asan:+$asan:}verify_asan_link_order=0
	export LD_PRELOAD=$SHIM FAULT_PROG=target-transporter \
	    FAULT_PATH="$T/repo"
	# shellcheck disable=SC2163 # VAR=VALUE arguments
	export "$@"
	target_start "$conf"
	rc=$?
	unset LD_PRELOAD FAULT_PROG FAULT_PATH FAULT_CLASS FAULT_MATCH \
	    FAULT_AT FAULT_TIMES FAULT_ACTION FAULT_LOG
	[ "${TRANSPORTER_ASAN:-0}" = 1 ] && export ASAN_OPTIONS=$asan
	return "$rc"
}

# target_wait_dead [TENTHS]: wait for the target to exit (default 5 s);
# 0 if it did (and forget it), 1 if it still runs
target_wait_dead() {
	for _ in $(seq "${1:-50}"); do
		if ! kill -0 "$TARGET_PID" 2>/dev/null; then
			{ wait "$TARGET_PID"; } 2>/dev/null
			TARGET_PID=
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# shim_plan LOG REPO [TEAR [KINDS [N]]]: from a counting run's FAULT_LOG,
# the steps to fault, one "class glob k kind" a line: every step of each
# kind when there are at most three of it, else the first and the last
# (with N, only the first N).
# k counts the steps of that class whose path matches glob, exactly as the
# shim counts them.  With TEAR ("tear"), also "tear" lines for the first
# write of each kind.  KINDS (comma-separated) keeps only those kinds.
shim_plan() {
	"$PY" - "$1" "$2" "${3:-}" "${4:-}" "${5:-0}" <<'EOF'
import fnmatch, sys
log, repo, tear, only, first = sys.argv[1:6]
# kind, glob under the repository: the first that matches names a step
KINDS = [
	("chunk-stage", "tenants/*/tmp/*/c[0-9]*"),
	("journal", "tenants/*/tmp/*/journal*"),
	("index", "tenants/*index"),
	("keychain", "tenants/*keychain*"),
	("manifest", "tenants/*manifest"),
	("chunk", "tenants/*/chunks/*/*"),
	("chunk-dir", "tenants/*/chunks*"),
	("point-dir", "tenants/*/points/*"),
	("job-dir", "tenants/*/tmp/*"),
]
steps = []
for line in open(log):
	f = line.split()
	if len(f) < 4:
		continue
	cls, path = f[1], f[3]
	if cls == "syncfs":
		steps.append((cls, path, "syncfs", repo + "*"))
		continue
	for kind, glob in KINDS:
		if fnmatch.fnmatchcase(path, repo + "/" + glob):
			steps.append((cls, path, kind, repo + "/" + glob))
			break
groups = {}
for i, (cls, path, kind, glob) in enumerate(steps):
	if not only or kind in only.split(","):
		groups.setdefault((cls, kind), []).append(i)
def k_of(i):
	cls, _, _, glob = steps[i]
	return sum(1 for c, p, _, _ in steps[:i + 1]
	    if c == cls and fnmatch.fnmatchcase(p, glob))
for (cls, kind), idx in groups.items():
	pick = idx if len(idx) <= 3 else [idx[0], idx[-1]]
	if int(first):
		pick = idx[:int(first)]
	for i in pick:
		print(cls, steps[i][3], k_of(i), kind)
	if tear and cls == "write":
		print("tear", steps[idx[0]][3], k_of(idx[0]), kind)
EOF
}

# fault_confs: the configurations both fault scripts use: a target on
# $T/repo (REPO), and sources vm (in flight, a 64 MiB window so that a
# journal checkpoint publishes chunks before the commit) and sec
# (source-side, password KEK: the commit stores the chain's key file),
# each giving up at once rather than resuming; `as NAME ARGS...` runs the
# source with NAME's configuration.
fault_confs() {
	echo "a password" >"$T/pw"
	chmod 600 "$T/pw"
	target_conf "$T/target.conf"
	source_conf "$T/vm.conf" acme "resume_timeout = 0s" "window = 64M"
	source_conf "$T/sec.conf" acme "resume_timeout = 0s" \
	    "encryption = source-side" "key_provider = password" \
	    "password_file = $T/pw"
	REPO=$T/repo
}
as() {
	local name=$1
	shift
	SRC_CONF=$T/$name.conf src "$@"
}
