#!/bin/bash
# CPU seconds of both daemons for full backups of one image: what decides
# the wall time when both share this machine's cores, and, unlike the wall
# time, hardly moved by the other users of a shared machine.
#
#   BUILD=/abs/build bash tests/bench/cpu.sh IMAGE [RUNS] [MODE...]
#
# MODE: source-side (default both) or in-flight.  For each mode, RUNS
# (default 5) full backups into empty repositories, each after
# `cat IMAGE > /dev/null`; prints one line per run and the median:
# source and target CPU seconds (user + system, all threads) and the
# bytes on the wire.  Extra source configuration lines: CPU_CONF="k = v";
# extra target configuration lines: CPU_TCONF="k = v".
# CPU_REPO=DIR puts the repositories under DIR (e.g. on a tmpfs, to leave
# out the file system's inode allocator, which on this machine's
# journal-less ext4 costs the target more the more files other users
# have just deleted).  Old repositories are deleted only at the end.

if [ -z "${BASH_VERSION:-}" ]; then
	exec bash "$0" "$@"
fi
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"

IMG=${1:?usage: cpu.sh IMAGE [RUNS] [MODE...]}
RUNS=${2:-5}
shift 2 2>/dev/null || shift $#
MODES=${*:-source-side in-flight}
TCK=$(getconf CLK_TCK)
SRC=$BUILD/source-transporter

# cpu_ticks PID: user + system clock ticks of PID and its threads so far
cpu_ticks() {
	sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

need_bins
pki_init
REPO=${CPU_REPO:-$T}/cpu-repo.$$
target_conf "$T/target.conf" ${CPU_TCONF:+"$CPU_TCONF"}
sed -i "s|^repository = .*|repository = $REPO|" "$T/target.conf"
at_exit "rm -rf '$REPO' '$REPO'.old.*"
umask 077
password_source_conf "$T/source.conf" ${CPU_CONF:+"$CPU_CONF"}

for mode in $MODES; do
	: >"$T/runs"
	for k in $(seq "$RUNS"); do
		target_stop
		[ ! -d "$REPO" ] || mv "$REPO" "$REPO.old.$mode.$k"
		mkdir -p "$REPO"
		# an empty repository: what the source remembers must go too
		# (state_directory), or it refuses the "rolled back" target
		rm -rf "$T/state"
		target_start "$T/target.conf" || { echo "cpu: no target" >&2; exit 1; }
		cat "$IMG" >/dev/null
		t0=$(cpu_ticks "$TARGET_PID")
		/usr/bin/time -f '%e %U %S' -o "$T/time" "$SRC" -f "$T/source.conf" \
		    backup --disk "$IMG" --name vm --full --encryption "$mode" \
		    --json >"$T/out" 2>"$T/err" ||
		    { echo "cpu: backup failed: $(tail -n 3 "$T/err")" >&2; exit 1; }
		t1=$(cpu_ticks "$TARGET_PID")
		read -r wall u s <"$T/time"
		wire=$(json_get "$T/out" bytes_sent)
		awk -v m="$mode" -v w="$wall" -v u="$u" -v s="$s" -v a="$t0" \
		    -v b="$t1" -v h="$TCK" -v o="$wire" 'BEGIN {
			t = (b - a) / h
			printf "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%d\n", m, w, u + s,
			    t, u + s + t, o }' | tee -a "$T/runs"
	done
	sort -t$'\t' -k5,5n "$T/runs" | awk -F'\t' -v n="$RUNS" '
	    { r[NR] = $0 } END { split(r[int((n + 1) / 2)], f, "\t")
	    printf "median %s: wall %s s, source %s CPU s, target %s CPU s, " \
	    "both %s CPU s, %s bytes sent\n", f[1], f[2], f[3], f[4], f[5], f[6] }'
done
target_stop
