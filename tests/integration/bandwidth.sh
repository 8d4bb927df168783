#!/bin/bash
# Bandwidth limits: a token bucket per job (source.conf bandwidth_limit)
# and one for all sessions of the target.  Only lower bounds on time are
# asserted: a busy machine can make a run slower, never faster.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
head -c 12M /dev/urandom >"$T/disk.img"
target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/slow.conf" acme "bandwidth_limit = 2M"

# secs CMD...: runs CMD (through check), sets SECS to its wall time
secs() {
	local t0
	t0=$(date +%s%N)
	check "$@"
	SECS=$((($(date +%s%N) - t0) / 1000000))
}

secs "a backup limited to 2 MB/s" env BUILD="$BUILD" bash -c \
    "'$BUILD/source-transporter' -f '$T/slow.conf' backup --disk '$T/disk.img' --name vm --json"
# 12 MiB of random data at 2 MiB/s: 6 s; a quarter-second burst aside.
[ "$SECS" -ge 5000 ] && ok "it took ${SECS} ms (>= 5 s for 12 MiB)" ||
    not_ok "the limit holds" "took $SECS ms"
SRC_CONF=$T/slow.conf check "restore under the limit" src restore --name vm --output "$T/r.img"
same "byte-identical" "$T/disk.img" "$T/r.img"

# The target's limit applies to all its sessions together.
target_conf "$T/target-lim.conf" "bandwidth_limit = 2M"
target_start "$T/target-lim.conf" || bail "target did not restart"
source_conf "$T/source.conf" acme
secs "a restore from a target limited to 2 MB/s" src restore --name vm --output "$T/r2.img" --force
[ "$SECS" -ge 5000 ] && ok "it took ${SECS} ms (>= 5 s for 12 MiB)" ||
    not_ok "the target's limit holds" "took $SECS ms"
same "byte-identical" "$T/disk.img" "$T/r2.img"
source_conf "$T/bad.conf" acme "bandwidth_limit = 10"
SRC_CONF=$T/bad.conf expect_exit 2 "a limit below 64K is refused" src list

# --bandwidth-limit: one run's own limit over an unlimited configuration.
target_conf "$T/target-free.conf"
target_start "$T/target-free.conf" || bail "target did not restart"
source_conf "$T/source.conf" acme
secs "a backup run with --bandwidth-limit 2M" src backup --disk "$T/disk.img" \
    --name cli --bandwidth-limit 2M
[ "$SECS" -ge 5000 ] && ok "it took ${SECS} ms (>= 5 s for 12 MiB)" ||
    not_ok "--bandwidth-limit holds" "took $SECS ms"
expect_exit 2 "--bandwidth-limit below 64K is refused" \
    src backup --disk "$T/disk.img" --name cli --bandwidth-limit 10
expect_grep "bandwidth-limit must be 0 \\(none\\) or at least 64K" "$LAST" "and says what it takes"
source_conf "$T/job.conf" acme "[job vm]" "disk = $T/disk.img" "every = 1h" \
    "bandwidth_limit = 10"
SRC_CONF=$T/job.conf expect_exit 2 "a job's bandwidth_limit below 64K is refused" src list
finish
