#!/bin/bash
# How busy the machine's cores are, every 50 ms, during one full backup:
# where a backup waits (Argon2id before the first block, the commit's
# syncs after the last) rather than works.
#
#   BUILD=/abs/build bash tests/bench/timeline.sh IMAGE [MODE]
#
# MODE: source-side (default) or in-flight.  TIMELINE_REPO=DIR puts the
# repository under DIR (default: under TMPDIR).  Prints the wall time,
# then "seconds:busy-cores" for each 50 ms (all the machine's cores,
# from /proc/stat; "/ioN" where N cores waited for I/O), then how many
# samples after the first second had fewer than 1.5 cores busy.

if [ -z "${BASH_VERSION:-}" ]; then
	exec bash "$0" "$@"
fi
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"

IMG=${1:?usage: timeline.sh IMAGE [MODE]}
MODE=${2:-source-side}

need_bins
pki_init
REPO=${TIMELINE_REPO:-$T}/timeline-repo.$$
mkdir -p "$REPO"
at_exit "rm -rf '$REPO'"
target_conf "$T/target.conf"
sed -i "s|^repository = .*|repository = $REPO|" "$T/target.conf"
password_source_conf "$T/source.conf"
target_start "$T/target.conf" || { echo "timeline: no target" >&2; exit 1; }
cat "$IMG" >/dev/null
sync
"$PY" - "$BUILD/source-transporter" "$T/source.conf" "$IMG" "$MODE" <<'PYEOF'
import os, subprocess, sys, threading, time

def cpu():
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]

ncpu = os.cpu_count() or 1
samples, done = [], threading.Event()

def sample():
    while not done.is_set():
        samples.append((time.monotonic(), cpu()))
        time.sleep(0.05)

th = threading.Thread(target=sample)
th.start()
t0 = time.monotonic()
rc = subprocess.call([sys.argv[1], "-f", sys.argv[2], "backup", "--disk",
                      sys.argv[3], "--name", "vm", "--full", "--encryption",
                      sys.argv[4], "--json"], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
t1 = time.monotonic()
done.set()
th.join()
print("wall %.2f s, exit %d" % (t1 - t0, rc))
line, idle = [], 0
for (ta, a), (tb, b) in zip(samples, samples[1:]):
    if tb < t0 or ta > t1:
        continue
    d = [y - x for x, y in zip(a, b)]
    tot = sum(d) or 1
    busy = (d[0] + d[1] + d[2] + d[5] + d[6]) / tot * ncpu
    io = d[4] / tot * ncpu
    line.append("%.2f:%.1f%s" % (ta - t0, busy,
                                 "/io%.1f" % io if io >= 0.1 else ""))
    if ta - t0 > 1 and busy < 1.5:
        idle += 1
print(" ".join(line))
print("samples after the first second with < 1.5 cores busy: %d" % idle)
sys.exit(rc)
PYEOF
rc=$?
target_stop
exit "$rc"
