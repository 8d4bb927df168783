#!/bin/bash
# How many TCP connections a job should use (source.conf `connections`):
# the goodput of a full in-flight backup of incompressible data, and of
# its restore, through tests/tools/wanrelay, for 1, 2 and 4 connections,
# on two kinds of WAN path of the same rate and delay:
#
#   per-flow   every connection gets a link of RATE (a path that shapes or
#              polices each flow, or a long fat pipe where one TCP flow's
#              window is the limit): more connections, more links;
#   shared     one link of RATE for all of them (wanrelay -S): the usual
#              bottleneck, where more connections can only compete.
#
#   make bench-connections   (BUILD=/abs/build bash tests/bench/connections.sh)
#
# CONN_SIZE_MIB (default 128), CONN_DELAY_MS (one way, default 25),
# CONN_RATE (default 200mbit), CONN_RUNS (default 2; the median is
# printed), CONN_COUNTS (default "1 2 4").  The loopback side of the
# choice (CPU per backup) is tests/bench/cpu.sh with CPU_CONF="connections
# = N" (docs/PERFORMANCE.md).  A benchmark: it never fails on a figure.
if [ -z "${BASH_VERSION:-}" ]; then
	exec bash "$0" "$@"
fi
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
SIZE_MIB=${CONN_SIZE_MIB:-128}
DELAY_MS=${CONN_DELAY_MS:-25}
RATE=${CONN_RATE:-200mbit}
RUNS=${CONN_RUNS:-2}
COUNTS=${CONN_COUNTS:-1 2 4}

target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
random_image "$T/random.img" "$SIZE_MIB" 1

# median: the median of the numbers on stdin
median() {
	sort -n | awk '{ v[NR] = $1 }
	    END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "# $SIZE_MIB MiB of random bytes, $DELAY_MS ms each way, $RATE;" \
    "median of $RUNS runs; MB/s of disk data"
link_bps=$("$PY" -c 'import sys
r = sys.argv[1].lower()
m = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
for k, f in m.items():
	if r.endswith(k):
		print(int(float(r[:-len(k)]) * f / 8)); break
else:
	print(int(r))' "$RATE")
# timed KIND CMD...: runs CMD, appends its wall ms to $T/KIND (not on failure)
timed() {
	local kind=$1 t0
	shift
	t0=$(date +%s%N)
	if ! SRC_TIMEOUT=600 run "$@"; then
		echo "# $path, $n connections: $kind failed (exit $RC)"
		diag "$LAST"
		return
	fi
	echo "$((($(date +%s%N) - t0) / 1000000))" >>"$T/$kind"
}

# row KIND: the table row of the median of $T/KIND
row() {
	awk -v ms="$(median <"$T/$1")" -v b="$((SIZE_MIB << 20))" \
	    -v l="$link_bps" -v p="$path" -v n="$n" -v k="$1" 'BEGIN {
	    s = ms / 1000; printf "| %s | %s | %d | %.2f | %.1f | %.0f%% |\n",
	    p, k, n, s, b / s / 1e6, b / s / l * 100 }'
}

printf '| path | job | connections | wall s | MB/s | of the rate |\n'
printf '|---|---|---:|---:|---:|---:|\n'
for path in per-flow shared; do
	flag=
	[ "$path" = shared ] && flag=-S
	# shellcheck disable=SC2086
	relay_start -d "$DELAY_MS" -r "$RATE" $flag
	for n in $COUNTS; do
		source_conf "$T/source.conf" acme \
		    "target = 127.0.0.1:$RELAY_PORT" "connections = $n"
		: >"$T/backup"
		: >"$T/restore"
		for r in $(seq "$RUNS"); do
			timed backup src backup --disk "$T/random.img" \
			    --name "c$n-$r" --full --json
			rm -f "$T/restored.img"
			timed restore src restore --name "c$n-$r" \
			    --output "$T/restored.img"
		done
		row backup
		row restore
	done
done
stop_pid "$RELAY_PID"
