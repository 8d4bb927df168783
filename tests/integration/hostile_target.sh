#!/bin/bash
# The source against a target that answers wrongly (a fake one,
# tests/tools/faketarget.py, with the target's certificate): a restore
# point of another name, or another id, than was asked for; a verify
# announced with fewer blocks than its point has; under --accept-rollback,
# a newest point id that would break the source's state file.  Each is
# refused in one line, with nothing written or remembered.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
make_image "$T/disk.img" 4M 61
# A source that waits on a fake forever fails the case, not the run.
SRC_TIMEOUT=30

# A real backup first: the state file then remembers vm on this target.
target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme "resume_timeout = 0s"
check "a backup on the real target" src backup --disk "$T/disk.img" --name vm
state=$(ls "$T"/state/points-* | grep -v '\.lock$')
target_stop

# fake MODE: the fake target on the real one's port, in place of it
FAKE_PID=
fake() {
	[ -z "$FAKE_PID" ] || stop_pid "$FAKE_PID"
	"$PY" "$TOP/tests/tools/faketarget.py" "$TARGET_PORT" "$PKI/ca.crt" \
	    "$PKI/target.crt" "$PKI/target.key" "$1" >"$T/fake.out" 2>&1 &
	FAKE_PID=$!
	track $FAKE_PID
	for _ in $(seq 50); do
		grep -q listening "$T/fake.out" 2>/dev/null && return 0
		sleep 0.1
	done
	bail "the fake target did not start: $(cat "$T/fake.out")"
}

fake wrong-name
expect_exit 5 "a restore point of another name is refused (exit 5)" \
    src restore --name vm --output "$T/a.img"
expect_grep "restore of vm/\(newest\) failed: the target announced restore point other/p-fake-1 instead; .* was not written" \
    "$LAST_ERR" "... naming what was announced"
[ -z "$(ls "$T"/a.img* 2>/dev/null)" ] && ok "nothing was written" ||
    not_ok "nothing was written" "$(ls "$T"/a.img*)"

fake wrong-point
expect_exit 5 "a point other than --point is refused (exit 5)" \
    src restore --name vm --point p-fake-1 --output "$T/b.img"
expect_grep "announced restore point vm/p-fake-2 instead" "$LAST_ERR" \
    "... naming it"
[ -z "$(ls "$T"/b.img* 2>/dev/null)" ] && ok "nothing was written" ||
    not_ok "nothing was written" "$(ls "$T"/b.img*)"

fake fewer
expect_exit 5 "a verify announced with 0 of the point's 4 blocks is refused (exit 5)" \
    src verify --name vm --point p-fake-1 --accept-rollback
expect_grep "announced fewer or more blocks than the point's data blocks" \
    "$LAST_ERR" "... and says why"

fake bad-newest
cp "$state" "$T/state.before"
expect_exit 1 "a malformed newest point id is not taken under --accept-rollback (exit 1)" \
    src list --accept-rollback
expect_grep "the target reported a malformed newest restore point of vm; nothing was changed" \
    "$LAST_ERR" "... in one line"
cmp -s "$state" "$T/state.before" && ok "the state file is unchanged" ||
    not_ok "the state file is unchanged" "$(cat "$state")"

# A target older than brief lists: every key of each point, no keks.
fake old-keys
check "list from a target that sends every key" src list --name vm --accept-rollback
n=$(grep -c "needs KMIP key kek-1 'acme-kek' version 7 on KMS kms.example:5696" "$LAST_OUT")
[ "$n" -eq 1 ] && ok "the KEK of its keys, once" || not_ok "the KEK of its keys, once" "$(cat "$LAST_OUT")"
check "list --json from it" src list --name vm --json
jsoncheck "keks from the keys: one KMIP KEK, version 7" \
    "len(j[0]['keks']) == 1 and j[0]['keks'][0]['kek_id'] == 'kek-1' and j[0]['keks'][0]['kek_version'] == 7"
finish
