#!/bin/bash
# Test runner (make check):  BUILD=/abs/build sh tests/run.sh [PATTERN]
#
# Runs every unit test binary $BUILD/tests/test_* (cmocka, TAP output) and
# every tests/integration/*.sh, or only those whose name matches the glob
# PATTERN.  Counts "ok" / "not ok" / "# SKIP" lines across all of them; a
# program that exits non-zero without reporting a failure, or reports
# nothing, counts as one failure.  Each program's output goes to
# $BUILD/test-logs/NAME.log; failures are shown here.  The last line is
# "N passed, N failed, N skipped"; the exit status is non-zero on failure.
#
# TEST_TIMEOUT (seconds, default 600) bounds each program.

# make runs us with sh; the rest is bash
if [ -z "${BASH_VERSION:-}" ]; then
	exec bash "$0" "$@"
fi
set -u

TOP=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$TOP/build}
mkdir -p "$BUILD"
BUILD=$(cd "$BUILD" && pwd)
export BUILD
LOGS=$BUILD/test-logs
PATTERN=${1:-}
TIMEOUT=${TEST_TIMEOUT:-600}
cd "$TOP" || exit 1

progs=()
for f in "$BUILD"/tests/test_* tests/integration/*.sh; do
	[ -f "$f" ] || continue
	case $f in
	*.sh) ;;
	*) [ -x "$f" ] || continue ;;
	esac
	# shellcheck disable=SC2053
	[ -z "$PATTERN" ] || [[ $(basename "$f") == *$PATTERN* ]] || continue
	progs+=("$f")
done
if [ ${#progs[@]} -eq 0 ] && [ -n "$PATTERN" ]; then
	echo "run.sh: nothing matches '$PATTERN'" >&2
	echo "0 passed, 0 failed, 0 skipped"
	exit 1
fi

rm -rf "$LOGS"
mkdir -p "$LOGS/unit" "$LOGS/integration"

# show_failures LOG: the "not ok" lines of LOG with their diagnostics
show_failures() {
	awk '
		/^not ok/ && !/# *[Ss][Kk][Ii][Pp]/ { show = 1; print "    " $0; next }
		show && /^#/ { print "    " $0; next }
		{ show = 0 }' "$1" | head -n 80
}

passed=0 failed=0 skipped=0
for prog in "${progs[@]}"; do
	case $prog in
	*.sh)	name=integration/$(basename "$prog" .sh) ;;
	*)	name=unit/$(basename "$prog") ;;
	esac
	log=$LOGS/$name.log
	t0=$(date +%s)
	case $prog in
	*.sh)	timeout -k 10 "$TIMEOUT" bash "$prog" </dev/null >"$log" 2>&1 ;;
	*)	CMOCKA_MESSAGE_OUTPUT=TAP timeout -k 10 "$TIMEOUT" "$prog" \
		    </dev/null >"$log" 2>&1 ;;
	esac
	rc=$?
	secs=$(($(date +%s) - t0))

	s=$(grep -Eic '^(not )?ok\b.*#[[:space:]]*skip' "$log")
	p=$(grep -Ei '^ok\b' "$log" | grep -Eivc '#[[:space:]]*skip')
	f=$(grep -Ei '^not ok\b' "$log" | grep -Eivc '#[[:space:]]*skip')
	why=
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		why="timed out after $TIMEOUT s"
	elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		why="exit status $rc"
	elif [ $((p + f + s)) -eq 0 ]; then
		why="no test results"
	fi
	[ -z "$why" ] || [ "$f" -gt 0 ] || f=1
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))

	if [ "$f" -eq 0 ]; then
		printf 'PASS  %-28s %3d passed, %d skipped  (%ds)\n' \
		    "$name" "$p" "$s" "$secs"
	else
		printf 'FAIL  %-28s %3d passed, %d failed, %d skipped  (%ds)%s\n' \
		    "$name" "$p" "$f" "$s" "$secs" "${why:+  -- $why}"
		show_failures "$log"
		if [ -n "$why" ]; then
			echo "    --- last lines of $log:"
			tail -n 20 "$log" | sed 's/^/    | /'
		fi
	fi
done

echo "logs: $LOGS"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
