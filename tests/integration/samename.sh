#!/bin/bash
# Two source-side backups of one name at once.  Each commit replaces the
# chain's key file with the one its job started from plus its own data
# key, and a chunk both store new is kept once, sealed under one job's
# key: run together, the second commit dropped the first's key from the
# file and could list a point whose chunk is sealed under a key the
# point does not name (it did not restore).  The target runs them one at
# a time: the second is told BUSY and tries again when the first is
# done; a password change (which rewrites the key file) is refused
# meanwhile.  Both points then restore byte-identical, and the offline
# verify finds every chunk's key listed.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins

echo "same name password" >"$T/pw"
chmod 600 "$T/pw"
export TRANSPORTER_ARGON2_MEMORY_KIB=8192
random_image "$T/a.img" 8 samename-a
target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme "encryption = source-side" \
    "key_provider = password" "password_file = $T/pw"
export SRC_CONF=$T/source.conf
check "the first point" src backup --disk "$T/a.img" --name vm

# Both new images share a new block (2 MiB in), the second has one more.
random_image "$T/new.img" 2 samename-new
cp "$T/a.img" "$T/b.img"
dd if="$T/new.img" of="$T/b.img" bs=1M count=1 seek=2 conv=notrunc status=none
cp "$T/b.img" "$T/c.img"
dd if="$T/new.img" of="$T/c.img" bs=1M skip=1 count=1 seek=5 conv=notrunc status=none

# The slow one (1 MiB/s: its two new blocks take seconds) starts first.
log_mark
src backup --disk "$T/b.img" --name vm --bandwidth-limit 1M --json \
    >"$T/b.out" 2>"$T/b.err" &
slow=$!
for _ in $(seq 100); do
	tail -n "+$LOG_MARK" "$TARGET_LOG" | grep -q "backup of 'vm' started" &&
	    break
	sleep 0.1
done
tail -n "+$LOG_MARK" "$TARGET_LOG" | grep -q "backup of 'vm' started" ||
    bail "the first backup did not start: $(cat "$T/b.err")"
# A password change meanwhile would be put back by the backup's commit.
echo "another password" >"$T/pw2"
chmod 600 "$T/pw2"
expect_exit 3 "keys change-password while the backup runs: refused (exit 3)" \
    src keys change-password --name vm --new-password-file "$T/pw2"
expect_grep "source-side backup of 'vm' is running; change its key file when it is done" \
    "$LAST" "and says to do it when the backup is done"
check "the second backup, started while the first runs" \
    src backup --disk "$T/c.img" --name vm --json
pc=$(json_get "$LAST_OUT" point_id)
expect_grep "source-side backup of 'vm' is running" "$LAST_ERR" \
    "it was told to wait"
expect_grep "backup of 'vm': the target is busy \(attempt 1\); trying again in 1 s" \
    "$LAST_ERR" "and tried again"
wait_ok "$slow" "the first backup committed" "$T/b.err"
pb=$(json_get "$T/b.out" point_id)

check "the first's point restores" src restore --name vm --point "$pb" \
    --output "$T/rb.img"
same "byte-identical" "$T/b.img" "$T/rb.img"
check "the second's point restores" src restore --name vm --point "$pc" \
    --output "$T/rc.img"
same "byte-identical" "$T/c.img" "$T/rc.img"
check "the offline verify finds every chunk's key listed" \
    "$BUILD/target-transporter" verify -f "$T/target.conf"

# Without the key file the points' own lists must do.
mv "$T/repo/tenants/acme/points/vm/keychain" "$T/keychain.saved"
check "without the key file the first's point restores" \
    src restore --name vm --point "$pb" --output "$T/rb2.img"
same "byte-identical" "$T/b.img" "$T/rb2.img"
check "and the second's" src restore --name vm --point "$pc" \
    --output "$T/rc2.img"
same "byte-identical" "$T/c.img" "$T/rc2.img"
finish
