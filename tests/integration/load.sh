#!/bin/bash
# Load: memory stays bounded whoever is slow.  (1) 64 concurrent backups
# (4 MiB images, two tenants) into one target complete, every point
# restores byte-identical, and the target's peak RSS stays under a bound
# that does not grow with the data; its descriptors go back to where
# they were.  (2) Restore clients that stop reading: the target's RSS
# stays bounded (its output per session is capped, not the credit
# window), and idle_timeout closes them.  (3) A fast source into a slow
# target disk (every write and fsync of the target delayed by an
# LD_PRELOAD shim): the target stops reading the socket when its job
# slots are full, so the source stalls (TCP back-pressure) and the
# target's RSS stays bounded; the deadlines do not fire on the target's
# own slowness.  LOAD_SESSIONS (default 64) sets the number of sessions
# (make soak runs more).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
N=${LOAD_SESSIONS:-64}

# rss_kib PID / hwm_kib PID / fds PID: from /proc
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# Under make asan the sanitizer's shadow memory and quarantine (16 MiB)
# add a fixed amount to every daemon's RSS: the bounds get it on top.
ASAN_MIB=0
[ "${TRANSPORTER_ASAN:-0}" = 1 ] && ASAN_MIB=48

# under NAME VALUE BOUND: ok if VALUE < BOUND (integers)
under() {
	if [ "$2" -lt "$3" ]; then
		ok "$1 ($2 < $3)"
	else
		not_ok "$1" "$2 is not under $3"
	fi
}

# --- 1. N concurrent backups ------------------------------------------------

# N images of 4 MiB: 2 MiB random, 1 MiB of text, 1 MiB hole; distinct.
mkdir -p "$T/img" "$T/out"
"$PY" - "$T/img" "$N" <<'PYEOF'
import os, sys
text = open("/usr/share/common-licenses/GPL-3", "rb").read()
for i in range(int(sys.argv[2])):
	with open("%s/%d.img" % (sys.argv[1], i), "wb") as f:
		f.write(os.urandom(2 << 20))
		f.write((b"%d " % i + text) * ((1 << 20) // len(text)))
		f.truncate(4 << 20)
PYEOF
# One connection a backup (its rollback check rides on it).
target_conf "$T/target.conf" "max_sessions = $N" \
    "max_sessions_per_tenant = $N"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/acme.conf" acme
source_conf "$T/globex.conf" globex
fd0=$(fds "$TARGET_PID")
rss0=$(rss_kib "$TARGET_PID")

# conf I: the source config of session I (even: acme, odd: globex)
conf() { [ $(($1 % 2)) -eq 0 ] && echo "$T/acme.conf" || echo "$T/globex.conf"; }

"$PY" - "$TARGET_PID" "$T/peak" <<'PYEOF' &
import os, sys, time
pid, out = sys.argv[1], sys.argv[2]
peak = 0
while os.path.exists("/proc/" + pid) and not os.path.exists(out + ".stop"):
	try:
		peak = max(peak, len(os.listdir("/proc/%s/fd" % pid)))
	except OSError:
		break
	open(out, "w").write("%d\n" % peak)
	time.sleep(0.05)
PYEOF
track $!
start=$(date +%s%N)
pids=()
for i in $(seq 0 $((N - 1))); do
	SRC_CONF=$(conf "$i") src backup --disk "$T/img/$i.img" --name "vm$i" \
	    >"$T/out/$i.log" 2>&1 &
	pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
	wait "${pids[$i]}" || { failed=$((failed + 1)); echo "# backup $i:"; diag "$T/out/$i.log"; }
done
ms=$((($(date +%s%N) - start) / 1000000))
touch "$T/peak.stop"
hwm=$(peak_rss_kib "$TARGET_PID")
peakfd=$(cat "$T/peak")
echo "# $N concurrent backups of 4 MiB: $ms ms; target RSS $((rss0 / 1024)) MiB before, peak $((hwm / 1024)) MiB; fds $fd0 before, peak $peakfd"
[ "$failed" -eq 0 ] && ok "$N concurrent backups complete" ||
    not_ok "$N concurrent backups complete" "$failed failed"
grep -q "sessions open" "$TARGET_LOG" && not_ok "none was refused" ||
    ok "none was refused"
[ "$peakfd" -gt $((fd0 + N / 2)) ] && ok "they ran concurrently (peak $peakfd fds)" ||
    not_ok "they ran concurrently" "peak $peakfd fds, $fd0 before"
# Per session at most one frame in hand and one on the input (1 MiB
# blocks), and the pool's job slots: memory does not grow with the data
# (N x 4 MiB) beyond that.
under "target peak RSS with $N sessions, MiB" $((hwm / 1024)) $((N * 2 + 64 + ASAN_MIB))

# Restore every point, 8 at a time.
# shellcheck disable=SC2016
seq 0 $((N - 1)) | xargs -P 8 -I{} bash -c '
	c=$([ $(({} % 2)) -eq 0 ] && echo acme || echo globex)
	timeout 300 "$1/source-transporter" -f "$2/$c.conf" restore \
	    --name "vm{}" --output "$2/out/{}.img" >"$2/out/r{}.log" 2>&1 &&
	    cmp -s "$2/img/{}.img" "$2/out/{}.img" || echo {} >>"$2/bad"
' _ "$BUILD" "$T"
if [ -s "$T/bad" ]; then
	not_ok "all $N points restore byte-identical" "bad: $(tr '\n' ' ' <"$T/bad")"
else
	ok "all $N points restore byte-identical"
fi
sleep 1
fd1=$(fds "$TARGET_PID")
echo "# target fds after: $fd1 (before: $fd0)"
under "target descriptors back to the baseline" "$fd1" $((fd0 + 1))
rm -rf "$T/img" "$T/out"

# --- 2. restore clients that stop reading -----------------------------------

# 96 MiB of random bytes: every block is sent, none compresses.
head -c 96M /dev/urandom >"$T/big.img"
target_conf "$T/target.conf" "idle_timeout = 6s"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme
check "a 96 MiB backup" src backup --disk "$T/big.img" --name big
target_stop
target_start "$T/target.conf" || bail "target did not start"
fd0=$(fds "$TARGET_PID")
rss0=$(rss_kib "$TARGET_PID")
log_mark
# 4 clients ask to restore 96 MiB and stop reading after 4 frames; each
# one's credit window is 64 MiB, so a target that buffered up to the
# credit would hold 256 MiB.
for i in 1 2 3 4; do
	timeout 60 "$PY" "$TOP/tests/tools/rawpeer.py" 127.0.0.1 "$TARGET_PORT" \
	    "$PKI/ca.crt" "$PKI/acme.crt" "$PKI/acme.key" slowread big 12 \
	    >"$T/slow$i.out" 2>&1 &
	pids[i]=$!
	track $!
done
for i in 1 2 3 4; do wait "${pids[$i]}"; done
hwm=$(peak_rss_kib "$TARGET_PID")
echo "# 4 stalled restores: target RSS $((rss0 / 1024)) MiB before, peak $((hwm / 1024)) MiB"
expect_grep '^read 4 frames' "$T/slow1.out" "the restores started"
under "target peak RSS with 4 stalled restores of 96 MiB, MiB" $((hwm / 1024)) $((160 + ASAN_MIB))
log_new
n=$(grep -c 'closing: no frame from the source for 6 s in state restore' "$TARGET_NEW")
[ "$n" -eq 4 ] && ok "idle_timeout closed the 4 stalled restores" ||
    not_ok "idle_timeout closed the 4 stalled restores" "$n closed"
sleep 1
under "target descriptors back to the baseline" "$(fds "$TARGET_PID")" $((fd0 + 1))
check "a reader that keeps reading restores meanwhile" \
    src restore --name big --output "$T/big.out"
same "byte-identical" "$T/big.img" "$T/big.out"
rm -f "$T/big.out"

# --- 3. a fast source into a slow target disk --------------------------------

# The shim: every write and fsync to a regular file (not the log) of the
# target sleeps SLOWIO_US microseconds first.
cat >"$T/slowio.c" <<'EOF'
#define _GNU_SOURCE
#include <sys/stat.h>
#include <sys/uio.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

static void
slow(int fd)
{
	static long	 us = -1;
	struct stat	 st;

	if (us == -1)
		us = getenv("SLOWIO_US") ? atol(getenv("SLOWIO_US")) : 0;
	if (us > 0 && fd > 2 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
		usleep(us);
}
#define WRAP(ret, name, params, args)					\
ret name params {							\
	static ret (*real) params;					\
	if (real == NULL)						\
		real = (ret (*) params)dlsym(RTLD_NEXT, #name);		\
	slow(fd);							\
	return real args;						\
}
WRAP(ssize_t, write, (int fd, const void *b, size_t n), (fd, b, n))
WRAP(ssize_t, pwrite, (int fd, const void *b, size_t n, off_t o), (fd, b, n, o))
WRAP(ssize_t, writev, (int fd, const struct iovec *v, int n), (fd, v, n))
WRAP(ssize_t, pwritev, (int fd, const struct iovec *v, int n, off_t o), (fd, v, n, o))
WRAP(int, fsync, (int fd), (fd))
WRAP(int, fdatasync, (int fd), (fd))
EOF
${CC:-cc} -shared -fPIC -O2 -o "$T/slowio.so" "$T/slowio.c" -ldl ||
    bail "cannot build the slow-disk shim"
# The same 96 MiB, all sent; deadlines far below the run's length: the
# target's own slowness must not trip them.  Each run into an empty
# repository.
target_stop
rm -rf "$T/repo"
target_conf "$T/target.conf" "frame_timeout = 2s" "idle_timeout = 2s"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme "resume_timeout = 0s"	# no silent retry
start=$(date +%s%N)
check "an unthrottled backup of 96 MiB (for comparison)" \
    src backup --disk "$T/big.img" --name fast
fast=$((($(date +%s%N) - start) / 1000000))
fhwm=$(peak_rss_kib "$TARGET_PID")
target_stop
rm -rf "$T/repo"
target_conf "$T/target.conf" "frame_timeout = 2s" "idle_timeout = 2s"
LD_PRELOAD=$T/slowio.so SLOWIO_US=40000 target_start "$T/target.conf" ||
    bail "target did not start"
source_conf "$T/source.conf" acme "resume_timeout = 0s"	# no silent retry
rss0=$(rss_kib "$TARGET_PID")
log_mark
start=$(date +%s%N)
check "a backup of 96 MiB into a slow disk completes" \
    src backup --disk "$T/big.img" --name slow
slow=$((($(date +%s%N) - start) / 1000000))
hwm=$(peak_rss_kib "$TARGET_PID")
echo "# slow disk (40 ms per write or fsync): $slow ms, unthrottled $fast ms (peak RSS $((fhwm / 1024)) MiB); target RSS $((rss0 / 1024)) MiB before, peak $((hwm / 1024)) MiB"
log_new
grep -q 'frame_timeout\|idle_timeout' "$TARGET_NEW" &&
    not_ok "no deadline fired on the target's own slowness" ||
    ok "no deadline fired on the target's own slowness"
# The source's window is 256 MiB: a target that read on regardless would
# hold most of the 96 MiB.
under "target peak RSS into a slow disk, MiB" $((hwm / 1024)) $((48 + ASAN_MIB))
check "restores" src restore --name slow --output "$T/big.out"
same "byte-identical" "$T/big.img" "$T/big.out"

# Every write and fsync takes 1.5 s, longer than idle_timeout (1 s): the
# target is the slow one, so its deadlines wait for it.
target_stop
rm -rf "$T/repo"
target_conf "$T/target.conf" "frame_timeout = 1s" "idle_timeout = 1s"
LD_PRELOAD=$T/slowio.so SLOWIO_US=1500000 target_start "$T/target.conf" ||
    bail "target did not start"
source_conf "$T/source.conf" acme "resume_timeout = 0s"	# no silent retry
head -c 1M /dev/urandom >"$T/one.img"
log_mark
check "a backup whose every disk write outlasts idle_timeout completes" \
    src backup --disk "$T/one.img" --name one
log_new
grep -q 'frame_timeout\|idle_timeout' "$TARGET_NEW" &&
    not_ok "no deadline fired on a disk slower than the deadlines" ||
    ok "no deadline fired on a disk slower than the deadlines"
finish
