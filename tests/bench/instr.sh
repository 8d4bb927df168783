#!/bin/bash
# Instructions both daemons execute for one full backup of one image,
# counted by valgrind's callgrind: exact and repeatable on a shared
# machine whose hardware counters are not virtualised (perf stat -e
# instructions says <not supported>) and whose CPU seconds move with
# the other users' load.
#
#   BUILD=/abs/build bash tests/bench/instr.sh IMAGE [MODE] [OUTDIR]
#
# MODE: source-side (default) or in-flight.  Prints the instructions
# (Ir) of the source and of the target; the callgrind files go to OUTDIR
# (default $BUILD/bench/instr) for callgrind_annotate.  Extra source
# configuration lines: CPU_CONF="k = v".  Callgrind runs the threads one
# at a time, about 50 times slower: use an image of a few hundred MiB.

if [ -z "${BASH_VERSION:-}" ]; then
	exec bash "$0" "$@"
fi
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"

IMG=${1:?usage: instr.sh IMAGE [MODE] [OUTDIR]}
MODE=${2:-source-side}
OUT=${3:-$BUILD/bench/instr}
REAL=$BUILD

command -v valgrind >/dev/null || { echo "instr: valgrind is missing" >&2; exit 1; }
need_bins
mkdir -p "$OUT" "$T/bin"
rm -f "$OUT/$MODE".*.out
# Both programs under callgrind, where target_start and src look for them.
for p in source-transporter target-transporter; do
	printf '#!/bin/sh\nexec valgrind -q --tool=callgrind --callgrind-out-file=%s/%s.%s.out %s/%s "$@"\n' \
	    "$OUT" "$MODE" "${p%%-*}" "$REAL" "$p" >"$T/bin/$p"
	chmod +x "$T/bin/$p"
done
pki_init
target_conf "$T/target.conf"
umask 077
password_source_conf "$T/source.conf" ${CPU_CONF:+"$CPU_CONF"}
BUILD=$T/bin
target_start "$T/target.conf" || { echo "instr: no target" >&2; exit 1; }
"$T/bin/source-transporter" -f "$T/source.conf" backup --disk "$IMG" \
    --name vm --full --encryption "$MODE" >"$T/out" 2>"$T/err" ||
    { echo "instr: backup failed: $(tail -n 3 "$T/err")" >&2; exit 1; }
target_stop
for side in source target; do
	f=$OUT/$MODE.$side.out
	[ -s "$f" ] || { echo "instr: no $f" >&2; exit 1; }
	printf '%s %s: %s instructions\n' "$MODE" "$side" \
	    "$(sed -n 's/^summary: //p' "$f" | head -n 1)"
done
