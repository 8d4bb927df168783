#!/bin/bash
# Backups over an emulated WAN: target <- wanrelay <- source, 25 ms each
# way (50 ms round trip) at 200 Mbit/s (25 MB/s), with a bounded buffer.
#
# Goodput: an image of incompressible data (so that compression cannot
# hide the link) is backed up and restored through the relay; the rate is
# printed as a fraction of the link rate.  The goal is >= 90% (issue 6);
# on a shared 2-core machine a timed assertion that tight would flake, so
# the test asserts only WAN_MIN_PCT (default 60%).  That bound still
# catches a stop-and-wait data path: one 1 MiB block per round trip takes
# 50 ms + 1 MiB / 25 MB/s = 92 ms, 11.4 MB/s, 46% of the link.
#
# Cuts: the relay resets the first connection at a seeded random offset,
# in the handshake and in the middle of the data; and, with the job on
# three connections (`connections = 3`), the second one mid-data, which
# must end the job on all three.  The backup either fails cleanly (and
# lists no partial point) or resumes by itself; either way the next
# backup completes and restores byte-identical.
#
# The same backup and its restore on four connections are timed too
# (printed, and held to WAN_MIN_PCT); the relay gives each connection a
# link of its own, so they go faster (make bench-connections compares a
# shared link).  A restore on three whose second connection is cut
# resumes by itself.
#
# WAN_SIZE_MIB (default 256) and WAN_MIN_PCT tune it.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
SIZE_MIB=${WAN_SIZE_MIB:-256}
MIN_PCT=${WAN_MIN_PCT:-60}
DELAY_MS=25
RATE=200mbit
LINK_BPS=25000000	# 200 Mbit/s in bytes per second

# wan_relay ARGS...: relay_start ARGS, and $T/source.conf goes through it
# with CONNECTIONS connections per job (default 1)
wan_relay() {
	relay_start "$@"
	source_conf "$T/source.conf" acme "target = 127.0.0.1:$RELAY_PORT" \
	    "connections = ${CONNECTIONS:-1}"
}

# secs_since T0: seconds since date +%s.%N gave T0
secs_since() {
	awk -v t0="$1" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.3f", t1 - t0 }'
}

# pct BYTES SECS: BYTES / SECS as a percentage of the link rate
pct() {
	awk -v b="$1" -v s="$2" -v l="$LINK_BPS" 'BEGIN { printf "%.1f", b / s / l * 100 }'
}

# at_least NAME PCT: ok if PCT >= MIN_PCT
at_least() {
	if awk -v p="$2" -v m="$MIN_PCT" 'BEGIN { exit !(p >= m) }'; then
		ok "$1: $2% of the link >= $MIN_PCT%"
	else
		not_ok "$1: $2% of the link >= $MIN_PCT%" \
		    "stop-and-wait would give about 46%; see $T/relay.log"
		diag "$T/relay.log"
	fi
}

# points NAME: how many restore points of NAME the target lists
points() {
	src list --json 2>/dev/null | "$PY" -c '
import json, sys
print(len([p for p in json.load(sys.stdin) if p["name"] == sys.argv[1]]))' \
	    "$1" 2>/dev/null || echo "list failed"
}

target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
random_image "$T/random.img" "$SIZE_MIB" 1
size=$((SIZE_MIB << 20))

# --- goodput --------------------------------------------------------------

wan_relay -d "$DELAY_MS" -r "$RATE"
echo "# link: $DELAY_MS ms each way, $RATE; image: $SIZE_MIB MiB of random bytes"
t0=$(date +%s.%N)
check "backup of $SIZE_MIB MiB through the WAN relay" \
    src backup --disk "$T/random.img" --name wan --json
secs=$(secs_since "$t0")
cp "$LAST_OUT" "$T/backup.json"
sent=$(json_get "$T/backup.json" bytes_sent)
p=$(pct "$size" "$secs")
echo "# backup goodput: $size bytes in $secs s = $p% of $RATE" \
    "(wire: ${sent:-?} bytes, $(pct "${sent:-0}" "$secs")%)"
at_least "backup goodput" "$p"

t0=$(date +%s.%N)
check "restore through the WAN relay" \
    src restore --name wan --output "$T/restored.img"
secs=$(secs_since "$t0")
p=$(pct "$size" "$secs")
echo "# restore goodput: $size bytes in $secs s = $p% of $RATE"
at_least "restore goodput" "$p"
same "restored through the relay: byte-identical" "$T/random.img" "$T/restored.img"
rm -f "$T/restored.img"
grep 'closed after' "$T/relay.log" | sed 's/^/# /'

CONNECTIONS=4 wan_relay -d "$DELAY_MS" -r "$RATE"
t0=$(date +%s.%N)
check "backup on 4 connections through the WAN relay" \
    src backup --disk "$T/random.img" --name wan4 --full --json
secs=$(secs_since "$t0")
jsoncheck "it used 4 connections" 'j["connections"] == 4'
p=$(pct "$size" "$secs")
echo "# backup goodput on 4 connections: $size bytes in $secs s = $p% of $RATE"
at_least "backup goodput on 4 connections" "$p"
t0=$(date +%s.%N)
check "restore on 4 connections through the WAN relay" \
    src restore --name wan4 --output "$T/restored.img" --json
secs=$(secs_since "$t0")
jsoncheck "it used 4 connections" 'j["connections"] == 4'
p=$(pct "$size" "$secs")
echo "# restore goodput on 4 connections: $size bytes in $secs s = $p% of $RATE"
at_least "restore goodput on 4 connections" "$p"
same "4 connections: byte-identical" "$T/random.img" "$T/restored.img"
rm -f "$T/restored.img"

# --- cuts -----------------------------------------------------------------

random_image "$T/cut.img" 48 2

# cut_case NAME LO-HI SEED [SPARED]: the first connection (after the
# first SPARED) is reset after LO to HI bytes; then the same backup
# again, through the same relay.
cut_case() {
	local name=$1 range=$2 seed=$3 before after
	before=$(points "cut-$seed")
	wan_relay -d "$DELAY_MS" -r "$RATE" -c "$range" -n 1 -s "$seed" \
	    -k "${4:-0}"
	SRC_TIMEOUT=180 run src backup --disk "$T/cut.img" --name "cut-$seed"
	echo "# $name: exit $RC; relay: $(grep -c ' cut after' "$T/relay.log") cut(s) so far"
	if [ "$RC" -eq 0 ]; then
		ok "$name: the backup resumed and completed"
		after=$(points "cut-$seed")
		if [ "$after" = $((before + 1)) ]; then
			ok "$name: exactly one restore point listed"
		else
			not_ok "$name: exactly one restore point listed" \
			    "points before $before, after $after"
		fi
	elif [ "$RC" -lt 124 ]; then
		ok "$name: the backup failed cleanly (exit $RC)"
		after=$(points "cut-$seed")
		if [ "$after" = "$before" ]; then
			ok "$name: no partial restore point listed"
		else
			not_ok "$name: no partial restore point listed" \
			    "points before $before, after $after"
		fi
		check "$name: the next backup completes" \
		    src backup --disk "$T/cut.img" --name "cut-$seed"
	else
		not_ok "$name: the backup ends (exit $RC)"
		diag "$LAST"
	fi
	if target_alive; then
		ok "$name: target still running"
	else
		bail "$name: the target died"
	fi
	check "$name: restore" src restore --name "cut-$seed" \
	    --output "$T/cut-restored.img"
	same "$name: restored byte-identical" "$T/cut.img" "$T/cut-restored.img"
	rm -f "$T/cut-restored.img"
}

cut_case "cut in the TLS handshake" 100-3000 11
cut_case "cut mid-backup" 8M-40M 12
CONNECTIONS=3 cut_case "the second of three connections cut mid-backup" 2M-10M 13 1

# A restore on three connections whose second is cut mid-way: it
# reconnects and resumes by itself, byte-identical.
CONNECTIONS=3 wan_relay -d "$DELAY_MS" -r "$RATE" -c 2M-10M -n 1 -s 14 -k 1
SRC_TIMEOUT=180 run src restore --name cut-12 --output "$T/cut-restored.img" --json
echo "# restore with a cut: exit $RC; relay: $(grep -c ' cut after' "$T/relay.log") cut(s) so far"
if [ "$RC" -eq 0 ]; then
	ok "the second of three connections cut mid-restore: it resumed and completed"
	jsoncheck "and it took another attempt" 'j["attempts"] >= 2'
else
	not_ok "the second of three connections cut mid-restore: it resumed and completed" \
	    "$(cat "$LAST")"
fi
same "the cut restore: byte-identical" "$T/cut.img" "$T/cut-restored.img"

finish
