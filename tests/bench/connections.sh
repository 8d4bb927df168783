#!/bin/bash
# How many TCP connections a backup job should use (source.conf
# `connections`): the goodput of a full in-flight backup of incompressible
# data through tests/tools/wanrelay, for 1, 2 and 4 connections, on two
# kinds of WAN path of the same rate and delay:
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
printf '| path | connections | wall s | MB/s | of the rate |\n'
printf '|---|---:|---:|---:|---:|\n'
link_bps=$("$PY" -c 'import sys
r = sys.argv[1].lower()
m = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
for k, f in m.items():
	if r.endswith(k):
		print(int(float(r[:-len(k)]) * f / 8)); break
else:
	print(int(r))' "$RATE")
for path in per-flow shared; do
	flag=
	[ "$path" = shared ] && flag=-S
	# shellcheck disable=SC2086
	relay_start -d "$DELAY_MS" -r "$RATE" $flag
	for n in $COUNTS; do
		source_conf "$T/source.conf" acme \
		    "target = 127.0.0.1:$RELAY_PORT" "connections = $n"
		: >"$T/secs"
		for r in $(seq "$RUNS"); do
			t0=$(date +%s%N)
			if ! SRC_TIMEOUT=600 run src backup --disk "$T/random.img" \
			    --name "c$n-$r" --full --json; then
				echo "# $path, $n connections: backup failed (exit $RC)"
				diag "$LAST"
				continue
			fi
			echo "$((($(date +%s%N) - t0) / 1000000))" >>"$T/secs"
		done
		ms=$(median <"$T/secs")
		awk -v ms="$ms" -v b="$((SIZE_MIB << 20))" -v l="$link_bps" \
		    -v p="$path" -v n="$n" 'BEGIN { s = ms / 1000;
		    printf "| %s | %d | %.2f | %.1f | %.0f%% |\n", p, n, s,
		    b / s / 1e6, b / s / l * 100 }'
	done
done
stop_pid "$RELAY_PID"
