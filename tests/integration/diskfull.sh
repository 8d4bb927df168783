#!/bin/bash
# A repository that runs out of space: the failing backup says so with
# exit 7, leaves no point, and loses nothing already committed.  Then the
# space runs out at random points of a backup (a filler file of random
# size leaves less room than the backup needs), each a clean failure, and
# the next backup works once the filler is gone.  DISKFULL_SEED=N repeats
# a run's filler sizes.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init

mkdir -p "$T/repo"
if ! mount -t tmpfs -o size=40m tmpfs "$T/repo" 2>"$T/mount.err"; then
	skip "disk full tests" "cannot mount a tmpfs: $(head -n 1 "$T/mount.err")"
	finish
fi
# shellcheck disable=SC2016
at_exit 'umount -l "$T/repo"'

make_image "$T/small.img" 6M+4321 31
# incompressible, well over the 40 MiB of the repository
head -c $((64 << 20)) /dev/urandom >"$T/big.img"

target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme

check "a small backup fits" src backup --disk "$T/small.img" --name small
expect_exit 7 "a backup bigger than the repository: exit 7" \
    src backup --disk "$T/big.img" --name big
expect_grep 'space|full' "$LAST" "the error says the repository is out of space"
echo "# repository: $(df -k "$T/repo" | tail -n 1)"

not_listed big "the failed backup is not listed"
check "the first point still restores" \
    src restore --name small --output "$T/restored.img"
if files_identical "$T/small.img" "$T/restored.img"; then
	ok "and it is byte-identical"
else
	not_ok "and it is byte-identical"
fi
check "the next small backup works" src backup --disk "$T/small.img" --name small
check "list --name small" src list --name small --json
if [ "$(grep -o '"point_id"' "$LAST_OUT" | wc -l)" -eq 2 ]; then
	ok "two points of small listed"
else
	not_ok "two points of small listed" "$(cat "$LAST_OUT")"
fi
if target_alive; then
	ok "target still running"
else
	not_ok "target still running"
	diag "$TARGET_LOG"
fi

# Random points: a fresh 6 MiB of incompressible data each round, with
# between 64 KiB and (its size - 1 MiB) of room left, so that the space
# runs out somewhere among its chunks, the journal, the index and the
# manifest.
SEED=${DISKFULL_SEED:-$RANDOM}
RANDOM=$SEED
echo "# seed $SEED (DISKFULL_SEED=$SEED repeats these filler sizes)"
rm -f "$T/restored.img"
for round in 1 2 3 4; do
	head -c 6M /dev/urandom >"$T/r.img"
	free_kib=$(df -k --output=avail "$T/repo" | tail -n 1)
	room=$((64 + (RANDOM * 32768 + RANDOM) % (5 * 1024 - 64)))
	filler=$((free_kib - room))
	[ "$filler" -gt 0 ] || filler=0
	head -c "$((filler * 1024))" /dev/zero >"$T/repo/filler" 2>/dev/null
	echo "# round $round: $room KiB left for 6 MiB"
	expect_exit 7 "round $round: the backup fails with exit 7" \
	    src backup --disk "$T/r.img" --name "r$round"
	expect_grep 'space|full' "$LAST" "round $round: the error says the repository is full"
	not_listed "r$round" "round $round: the failed backup is not listed"
	rm -f "$T/restored.img"
	if src restore --name small --output "$T/restored.img" >/dev/null 2>&1 &&
	    files_identical "$T/small.img" "$T/restored.img"; then
		ok "round $round: the earlier point restores byte-identical"
	else
		not_ok "round $round: the earlier point restores byte-identical"
	fi
	rm -f "$T/repo/filler" "$T/restored.img"
	check "round $round: with the space freed, the backup works" \
	    src backup --disk "$T/r.img" --name "r$round"
	if src restore --name "r$round" --output "$T/restored.img" >/dev/null 2>&1 &&
	    files_identical "$T/r.img" "$T/restored.img"; then
		ok "round $round: and restores byte-identical"
	else
		not_ok "round $round: and restores byte-identical"
	fi
	rm -f "$T/restored.img"
done
if target_alive; then
	ok "target still running after the random rounds"
else
	not_ok "target still running after the random rounds"
	diag "$TARGET_LOG"
fi

finish
