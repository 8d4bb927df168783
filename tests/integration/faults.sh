#!/bin/bash
# Storage errors in the target's repository, injected through
# tests/tools/faultinject.so: EIO from a syncfs, fsync, directory fsync,
# write or rename at each step of a backup's checkpoint and commit, and
# ENOSPC at random writes.  Each ends in a clean failure at the source
# (exit 7, the error named), the point is neither reported nor listed,
# the same target process serves the next backup (the fault is one-shot,
# as if space were freed), which completes and restores byte-identical.
# A chunk staged before a failed syncfs never becomes a chunk that a
# later backup deduplicates against.  FAULTS_SEED=N repeats the random
# writes of a run.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/tools/faultinject/shim.sh
. "$TOP/tests/tools/faultinject/shim.sh"
need_bins
pki_init
export TRANSPORTER_ARGON2_MEMORY_KIB=64
SRC_TIMEOUT=60
SEED=${FAULTS_SEED:-$RANDOM}
RANDOM=$SEED
echo "# seed $SEED (FAULTS_SEED=$SEED repeats this run)"

# vm: in flight, 24 MiB new in a 64 MiB window: a checkpoint (journal,
# chunks published) before the commit.  sec: source-side (key file).
make_image "$T/vm1.img" 3M+777 21
make_image "$T/sec1.img" 2M 22
fault_confs
# sec too in a 64 MiB window: 24 MiB of new data syncs before the commit
echo "window = 64M" >>"$T/sec.conf"
CASE=0

target_start "$T/target.conf" || bail "target did not start"
check "first backup of vm" as vm backup --disk "$T/vm1.img" --name vm
check "first backup of sec" as sec backup --disk "$T/sec1.img" --name sec
target_stop

# new_disk NAME: $T/NAME2.img, the first point's disk then 24 MiB (vm) or
# SEC_NEW (sec, default 8 MiB: no sync before the commit) never stored
# before
new_disk() {
	cp "$T/${1}1.img" "$T/${1}2.img"
	head -c "$([ "$1" = vm ] && echo 24M || echo "${SEC_NEW:-8M}")" /dev/urandom \
	    >>"$T/${1}2.img"
}

# chunks: the chunk files of the repository, sorted
chunks() {
	find "$REPO/tenants/acme/chunks" -type f | sort
}

# fault NAME WHAT ERRNO-RE VAR=VALUE...: a backup of NAME with the fault
# given by the FAULT_ variables; WHAT names it; ERRNO-RE must be in the
# source's error.  Checks the failure, the listing, the same target's next
# backup and its restore, and that no index is left without a manifest.
fault() {
	local name=$1 what=$2 re=$3 pid before n_index n_manifest
	shift 3
	CASE=$((CASE + 1))
	new_disk "$name"
	chunks >"$T/chunks.before"
	rm -f "$T/hits"
	shim_start "$T/target.conf" "$@" FAULT_LOG="$T/hits" ||
	    bail "target with the shim did not start"
	pid=$TARGET_PID
	before=$(as vm list --json | grep -o '"point_id"' | wc -l)
	expect_exit 7 "$what: the backup fails with exit 7" \
	    as "$name" backup --disk "$T/${name}2.img" --name "$name" --json
	expect_grep "$re" "$LAST_ERR" "$what: the error says why"
	if ! grep -q " eio\| enospc" "$T/hits" 2>/dev/null; then
		not_ok "$what: the fault was injected" "no step was faulted"
	fi
	if grep -q '"point_id"' "$LAST_OUT"; then
		not_ok "$what: no point reported" "$(cat "$LAST_OUT")"
	fi
	run as vm list --json
	if [ "$(grep -o '"point_id"' "$LAST_OUT" | wc -l)" -eq "$before" ]; then
		ok "$what: no new point listed"
	else
		not_ok "$what: no new point listed" "$(cat "$LAST_OUT")"
	fi
	chunks >"$T/chunks.after.$CASE"
	if [ "$pid" = "$TARGET_PID" ] && kill -0 "$pid" 2>/dev/null; then
		ok "$what: the target keeps serving"
	else
		not_ok "$what: the target keeps serving"
		diag "$TARGET_LOG"
		target_start "$T/target.conf" || bail "target did not restart"
	fi
	check "$what: the next backup completes" \
	    as "$name" backup --disk "$T/${name}2.img" --name "$name" --json
	cp "$LAST_OUT" "$T/next.json"
	rm -f "$T/out.img"
	if as "$name" restore --name "$name" --output "$T/out.img" \
	    >/dev/null 2>&1 && files_identical "$T/${name}2.img" "$T/out.img"; then
		ok "$what: and restores byte-identical"
	else
		not_ok "$what: and restores byte-identical"
	fi
	n_index=$(find "$REPO/tenants/acme/points/$name" -name '*.index' | wc -l)
	n_manifest=$(find "$REPO/tenants/acme/points/$name" -name '*.manifest' |
	    wc -l)
	if [ "$n_index" -eq "$n_manifest" ]; then
		ok "$what: no index without a manifest"
	else
		not_ok "$what: no index without a manifest" \
		    "$n_index indexes, $n_manifest manifests"
	fi
	target_stop
}

G=$REPO/tenants/acme
EIO="input/output error"

# A failed syncfs before any chunk of the batch is linked: none of the
# failed job's chunks enters the store, so the next backup sends and
# stores every new block again (nothing deduplicated, nothing resumed).
fault vm "EIO from the checkpoint's first syncfs" "$EIO" \
    FAULT_CLASS=syncfs FAULT_AT=1 FAULT_ACTION=eio
if cmp -s "$T/chunks.before" "$T/chunks.after.$CASE"; then
	ok "no chunk of the failed job entered the store"
else
	not_ok "no chunk of the failed job entered the store" \
	    "$(diff "$T/chunks.before" "$T/chunks.after.$CASE" | head -n 5)"
fi
cp "$T/next.json" "$LAST_OUT"
jsoncheck "the next backup stored every new block again" \
    'j["chunks_new"] == j["blocks_sent"] and j["chunks_dedup"] == 0 and not j["resumed"]'

fault vm "EIO from the checkpoint's second syncfs (names)" "$EIO" \
    FAULT_CLASS=syncfs FAULT_AT=2 FAULT_ACTION=eio
fault vm "EIO from a chunk write" "$EIO" \
    FAULT_CLASS=write "FAULT_MATCH=$G/tmp/*/c[0-9]*" FAULT_AT=5 \
    FAULT_ACTION=eio
fault vm "EIO from the journal's fsync" "$EIO" \
    FAULT_CLASS=fsync "FAULT_MATCH=$G/tmp/*/journal*" FAULT_AT=1 \
    FAULT_ACTION=eio
fault vm "EIO from the journal's directory fsync" "$EIO" \
    FAULT_CLASS=dirsync "FAULT_MATCH=$G/tmp/*" FAULT_AT=1 FAULT_ACTION=eio
fault vm "EIO from the commit's syncfs" "$EIO" \
    FAULT_CLASS=syncfs FAULT_AT=3 FAULT_ACTION=eio
fault vm "EIO from the index's fsync" "$EIO" \
    FAULT_CLASS=fsync "FAULT_MATCH=$G/tmp/*/index" FAULT_AT=1 \
    FAULT_ACTION=eio
fault vm "EIO from the index's directory fsync" "$EIO" \
    FAULT_CLASS=dirsync "FAULT_MATCH=$G/points/*" FAULT_AT=1 \
    FAULT_ACTION=eio
fault vm "EIO from the manifest's write" "$EIO" \
    FAULT_CLASS=write "FAULT_MATCH=$G/tmp/*/manifest" FAULT_AT=1 \
    FAULT_ACTION=eio
fault vm "EIO from the manifest's rename" "$EIO" \
    FAULT_CLASS=link "FAULT_MATCH=*.manifest" FAULT_AT=1 FAULT_ACTION=eio
fault vm "EIO from the manifest's directory fsync" "$EIO" \
    FAULT_CLASS=dirsync "FAULT_MATCH=$G/points/*" FAULT_AT=2 \
    FAULT_ACTION=eio
fault sec "EIO from the key file's fsync (source-side)" "$EIO" \
    FAULT_CLASS=fsync "FAULT_MATCH=*keychain*" FAULT_AT=1 FAULT_ACTION=eio
fault sec "EIO from the source-side commit's syncfs" "$EIO" \
    FAULT_CLASS=syncfs FAULT_AT=1 FAULT_ACTION=eio
# 24 MiB new in a 64 MiB window: a source-side job makes its staged
# chunks durable (none published) while it runs, before its commit's
# first step, the key file's fsync (counted first, no fault); that
# syncfs's error must end the job, the commit's would not see it.
SEC_NEW=24M new_disk sec
rm -f "$T/hits"
shim_start "$T/target.conf" FAULT_CLASS=syncfs,fsync FAULT_LOG="$T/hits" ||
    bail "target with the shim did not start"
check "a source-side backup whose syncs are counted" \
    as sec backup --disk "$T/sec2.img" --name sec
target_stop
first_sync=$(grep -n ' syncfs ' "$T/hits" | head -n 1 | cut -d: -f1)
first_key=$(grep -n 'keychain' "$T/hits" | head -n 1 | cut -d: -f1)
if [ -n "$first_sync" ] && [ -n "$first_key" ] &&
    [ "$first_sync" -lt "$first_key" ]; then
	ok "a source-side job syncs its staged chunks before its commit"
else
	not_ok "a source-side job syncs its staged chunks before its commit" \
	    "$(cat "$T/hits" 2>/dev/null)"
fi
SEC_NEW=24M fault sec "EIO from a source-side job's syncfs while it runs" \
    "$EIO" FAULT_CLASS=syncfs FAULT_AT=1 FAULT_ACTION=eio

# ENOSPC at random writes of a backup (chunks, the journal, the index,
# the manifest; counted on a backup of the same shape first); one-shot,
# as if space were freed right after.
new_disk vm
rm -f "$T/hits"
shim_start "$T/target.conf" FAULT_CLASS=write FAULT_LOG="$T/hits" ||
    bail "target with the shim did not start"
check "a backup whose writes are counted" \
    as vm backup --disk "$T/vm2.img" --name vm
target_stop
WRITES=$(wc -l <"$T/hits" 2>/dev/null || echo 0)
[ "$WRITES" -gt 0 ] || bail "the counted backup made no write"
echo "# a backup of 24 MiB of new data makes $WRITES writes"
for _ in 1 2 3; do
	k=$((1 + RANDOM % WRITES))
	fault vm "ENOSPC from write #$k" "space|full" \
	    FAULT_CLASS=write FAULT_AT="$k" FAULT_ACTION=enospc
done

# Every earlier point still restores.
target_start "$T/target.conf" || bail "target did not start"
rm -f "$T/out.img"
check "the first point of vm still restores" as vm restore --name vm \
    --point "$(as vm list --name vm --json | "$PY" -c \
    'import json, sys; print(json.load(sys.stdin)[0]["point_id"])')" \
    --output "$T/out.img"
same "and is byte-identical" "$T/vm1.img" "$T/out.img"
finish
