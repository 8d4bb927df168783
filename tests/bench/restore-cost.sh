#!/bin/bash
# What one restore costs each daemon, in numbers a shared machine does
# not blur: instructions (valgrind --tool=callgrind, user space only)
# and CPU time (perf stat -e task-clock, user and kernel), for the same
# image and repository.
#
#	BUILD=/abs/build bash tests/bench/restore-cost.sh [MIB [RUNS]]
#
# MIB (default 128) of /usr/lib as a tar stream is backed up once; then
# one restore with both daemons under callgrind, and RUNS (default 5)
# restores with both under perf stat, of which the median CPU time of
# each daemon is printed.  Every restore is compared with cmp.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
MIB=${1:-128}
RUNS=${2:-5}
command -v valgrind >/dev/null || bail "valgrind missing"
command -v perf >/dev/null || bail "perf missing"

tar -C /usr/lib -cf - . 2>/dev/null | head -c "${MIB}M" >"$T/disk.img"
target_conf "$T/target.conf"
source_conf "$T/source.conf" acme
target_start "$T/target.conf" || bail "target did not start"
check "backup of $MIB MiB" src backup --disk "$T/disk.img" --name vm
target_stop
find "$T/repo" -type f -exec cat {} + >/dev/null	# into the page cache

# under WRAPPER...: start the target under a wrapper; waits for it
under() {
	"$@" "$BUILD/target-transporter" -d -f "$T/target.conf" \
	    >"$T/wrapped.log" 2>&1 &
	TARGET_PID=$!
	for _ in $(seq 600); do
		grep -q 'listening on' "$T/wrapped.log" && return 0
		sleep 0.1
	done
	bail "wrapped target did not start: $(tail -3 "$T/wrapped.log")"
}

# stopped: SIGTERM to the wrapper's child (the target), wait for both
stopped() {
	local kids
	kids=$(cat "/proc/$TARGET_PID/task/$TARGET_PID/children" 2>/dev/null)
	# shellcheck disable=SC2086
	kill -TERM ${kids:-$TARGET_PID}
	wait "$TARGET_PID" 2>/dev/null
	TARGET_PID=
}

restore_once() {
	rm -f "$T/out.img"
	"$@" "$BUILD/source-transporter" -f "$T/source.conf" restore \
	    --name vm --output "$T/out.img" >"$T/restore.out" 2>&1 ||
	    bail "restore failed: $(tail -3 "$T/restore.out")"
	cmp -s "$T/disk.img" "$T/out.img" || bail "restore not byte-identical"
}

# callgrind's total instructions in FILE
ir() {
	sed -n 's/^summary: *//p; s/^totals: *//p' "$1" | head -n 1
}

under valgrind --tool=callgrind --callgrind-out-file="$T/cg.target"
restore_once valgrind -q --tool=callgrind --callgrind-out-file="$T/cg.source"
stopped
echo "# callgrind instructions: source $(ir "$T/cg.source"), target $(ir "$T/cg.target")"

# task-clock in msec from a perf stat -x, output file
msec() {
	awk -F, '$3 == "task-clock" { printf "%.0f", $1 }' "$1"
}
for i in $(seq "$RUNS"); do
	under perf stat -x, -e task-clock -o "$T/ps.target.$i"
	restore_once perf stat -x, -e task-clock -o "$T/ps.source.$i"
	stopped
	echo "$(msec "$T/ps.source.$i") $(msec "$T/ps.target.$i")" >>"$T/cpu"
done
echo "# CPU ms per restore, runs: $(tr '\n' ';' <"$T/cpu")"
echo "# median CPU ms: source $(cut -d' ' -f1 "$T/cpu" | sort -n |
    sed -n "$(((RUNS + 1) / 2))p"), target $(cut -d' ' -f2 "$T/cpu" |
    sort -n | sed -n "$(((RUNS + 1) / 2))p")"
[ -z "${KEEP_CG:-}" ] || cp "$T/cg.source" "$T/cg.target" "$KEEP_CG"/
ok "measured"
finish
