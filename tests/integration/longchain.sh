#!/bin/bash
# A long source-side chain.  A point lists the keys of its chunks and,
# when some blocks are unchanged, every key its base lists (an unchanged
# block may come from any earlier point): here block 1 never changes and
# block 0 changes each time, so point k lists k data keys and all the
# points with all their keys grow as the square of the chain: past ~460
# points of a name no frame held them and list, status, verify and keys
# export failed.  The source asks for the points "brief" (each names the
# KEKs it needs; the keys go only where the key file lacks them): a list
# costs a bounded amount per point, measured by the target's bytes sent.
# A --full point lists only the keys of the chunks it has.
# LONGCHAIN_POINTS (make soak: 600) makes a chain past the old limit.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins

N=${LONGCHAIN_POINTS:-40}
IMG=$T/disk.img
head -c $(((1 << 20) + (64 << 10))) /dev/urandom >"$IMG"	# two blocks
echo "long chain password" >"$T/pw"
echo "export passphrase" >"$T/pass"
chmod 600 "$T/pw" "$T/pass"
export TRANSPORTER_ARGON2_MEMORY_KIB=8192

MPORT=$(free_port)
target_conf "$T/target.conf" "metrics = 127.0.0.1:$MPORT"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme "encryption = source-side" \
    "key_provider = password" "password_file = $T/pw"
export SRC_CONF=$T/source.conf

for i in $(seq 1 "$N"); do
	printf '%08d' "$i" | dd of="$IMG" conv=notrunc status=none
	[ "$i" -eq 1 ] && cp "$IMG" "$T/first.img"
	src backup --disk "$IMG" --name vm >/dev/null 2>&1 ||
	    bail "backup $i of $N failed: $(cat "$LAST" 2>/dev/null)"
done
ok "$N source-side backups of one name"
echo "# the target's peak RSS after the backups: $(peak_rss_kib "$TARGET_PID") KiB"
manifest=$(ls "$T/repo/tenants/acme/points/vm/"*.manifest | sort | tail -1)

# sent: the target's frame bytes sent so far
sent() {
	scrape "$MPORT" >"$T/metrics.txt" 2>/dev/null || return 1
	metric "$T/metrics.txt" transporter_bytes_sent_total
}
before=$(sent) || bail "no metrics"
check "list of $N points" src list --name vm
after=$(sent)
n=$(grep -c '^vm ' "$LAST_OUT")
[ "$n" -eq "$N" ] && ok "every point listed" || not_ok "every point listed" "$n of $N"
per=$(( (after - before) / N ))
# A point's entry (ids, sizes, its one KEK) is a few hundred bytes; with
# every key of the chain it was ~170 bytes a key: 3.5 KiB a point at 40.
[ "$per" -lt 1024 ] && ok "a listed point costs $per bytes on the wire (< 1 KiB)" ||
    not_ok "a listed point costs < 1 KiB on the wire" "$per bytes"
expect_grep "needs password key pw-" "$LAST_OUT" "each point names the key it needs"
check "list --json --check-keys" src list --name vm --json --check-keys
jsoncheck "each point names one available password KEK" \
    "len(j) == $N and all(len(p['keks']) == 1 and p['keks'][0]['kek_provider'] == 'password' and p['keks'][0]['available'] for p in j)"
check "status" src status
expect_grep "^vm +$N " "$LAST_OUT" "with $N points"
check "verify of the chain and its newest point" src verify --name vm
echo "# the target's peak RSS after list, status and verify: $(peak_rss_kib "$TARGET_PID") KiB"
first=$(ls "$T/repo/tenants/acme/points/vm/" | sed -n 's/\.manifest$//p' | sort | head -1)
check "the first point restores" src restore --name vm --point "$first" --output "$T/out1.img"
same "byte-identical" "$T/first.img" "$T/out1.img"
check "keys export" src keys export --name vm --output "$T/vm.keys" \
    --passphrase-file "$T/pass"
source_conf "$T/dr.conf" acme
SRC_CONF=$T/dr.conf check "the newest point restores from the exported keys" \
    src restore --name vm --output "$T/outN.img" --key-file "$T/vm.keys" \
    --passphrase-file "$T/pass"
same "byte-identical" "$IMG" "$T/outN.img"
# The key file is what a brief list leaves the keys to; without it the
# points' own copies come along, and the export still has every key.
mv "$T/repo/tenants/acme/points/vm/keychain" "$T/keychain.saved"
before=$(sent)
check "keys export without the target's key file" src keys export --name vm \
    --output "$T/vm2.keys" --passphrase-file "$T/pass"
per=$(( ($(sent) - before) / N ))
# Each key once (from the newest point that lists it), not once a point.
[ "$per" -lt 1024 ] && ok "each key sent once: $per bytes a point (< 1 KiB)" ||
    not_ok "each key sent once: < 1 KiB a point" "$per bytes"
mv "$T/keychain.saved" "$T/repo/tenants/acme/points/vm/keychain"
SRC_CONF=$T/dr.conf check "and the first point restores from it" \
    src restore --name vm --point "$first" --output "$T/out2.img" \
    --key-file "$T/vm2.keys" --passphrase-file "$T/pass"
same "byte-identical" "$T/first.img" "$T/out2.img"
# The newest point lists the chunk-id key and the N data keys; a full
# point only those of its two chunks, made by backups 1 and N.
check "a --full backup" src backup --disk "$IMG" --name vm --full
if [ "$N" -le 100 ]; then
	check "list --json --keys" src list --name vm --json --keys
	jsoncheck "the point before lists $((N + 1)) keys, the full point 3" \
	    "len(j) == $N + 1 and len(j[-2]['keys']) == $N + 1 and len(j[-1]['keys']) == 3"
else
	# Every key of every point no longer fits one reply: the manifests say it.
	set -- $(ls -t "$T/repo/tenants/acme/points/vm/"*.manifest | head -2)
	full=$(stat -c %s "$1") before=$(stat -c %s "$2")
	[ "$full" -lt 2048 ] && [ "$before" -gt $((N * 150)) ] &&
	    ok "the full point's manifest is $full bytes, the one before $before" ||
	    not_ok "the full point's manifest is small" "$full bytes, the one before $before"
fi
check "the full point restores" src restore --name vm --output "$T/outF.img"
same "byte-identical" "$IMG" "$T/outF.img"
# For the record (not judged): a list reads every manifest whole.
echo "# the newest manifest: $(stat -c %s "$manifest") bytes; the target's peak RSS after keys export: $(peak_rss_kib "$TARGET_PID") KiB"
finish
