#!/bin/bash
# The target killed at every kind of step of a commit: each chunk write,
# syncfs, link into place and directory fsync, the journal checkpoint, the
# index, the chain's key file and the manifest (a SIGKILL from inside the
# write, fsync or rename call, through tests/tools/faultinject.so; "tear"
# writes half a buffer first).  After each kill and a restart, every earlier
# restore point still verifies and restores byte-identical, the interrupted
# one is either absent or complete (listed and byte-identical), and the next
# backup works.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/tools/faultinject/shim.sh
. "$TOP/tests/tools/faultinject/shim.sh"
need_bins
pki_init
export TRANSPORTER_ARGON2_MEMORY_KIB=64
SRC_TIMEOUT=60

# Two earlier points: vm (in flight) and sec (source-side).  The
# interrupted backup is the next point of one of them, its old blocks
# unchanged and the rest new and incompressible: of sec, whose commit
# stores the chain's key file before it publishes the job's chunks; of vm,
# 24 MiB new in a 64 MiB window, so that a journal checkpoint (every
# window / 4) publishes chunks before the commit.
make_image "$T/vm1.img" 3M+777 11
make_image "$T/sec1.img" 2M 12
cp "$T/vm1.img" "$T/vm2.img"
head -c 24M /dev/urandom >>"$T/vm2.img"
cp "$T/sec1.img" "$T/sec2.img"
head -c 12M /dev/urandom >>"$T/sec2.img"
fault_confs

target_start "$T/target.conf" || bail "target did not start"
as vm backup --disk "$T/vm1.img" --name vm --json >"$T/vm1.json" ||
    bail "backup of vm failed"
as sec backup --disk "$T/sec1.img" --name sec --json >"$T/sec1.json" ||
    bail "backup of sec failed"
declare -A EARLIER=([vm]=$(json_get "$T/vm1.json" point_id)
    [sec]=$(json_get "$T/sec1.json" point_id))
target_stop
cp -a "$REPO" "$T/pristine"
cp -a "$T/state" "$T/pristine-state"

# reset: the repository as it was after the two earlier points, and the
# source's memory of what it committed with it (else it rightly says the
# target went back: exit 9, see integrity.sh)
reset_repo() {
	rm -rf "$REPO" "$T/state" && cp -a "$T/pristine" "$REPO" &&
	    cp -a "$T/pristine-state" "$T/state"
}

# check_after NAME STEP: the checks after a crash at STEP in a backup of
# NAME (of $T/NAME2.img); one TAP line
check_after() {
	local name=$1 step=$2 why='' ids state n id
	target_start "$T/target.conf" || { not_ok "$step: restart"; return; }
	if ! as vm list --json >"$T/list.json" 2>"$T/list.err"; then
		why="list failed: $(head -n 2 "$T/list.err");"
	fi
	ids=$("$PY" -c 'import json, sys
print(" ".join(p["name"] + "/" + p["point_id"] for p in json.load(open(sys.argv[1]))))' \
	    "$T/list.json" 2>/dev/null)
	for n in vm sec; do
		id=${EARLIER[$n]}
		[[ " $ids " == *" $n/$id "* ]] || why+=" $n/$id not listed;"
		as "$n" verify --name "$n" --point "$id" >/dev/null 2>&1 ||
		    why+=" $n/$id does not verify;"
		rm -f "$T/out.img"
		as "$n" restore --name "$n" --point "$id" --output "$T/out.img" \
		    >/dev/null 2>&1 && files_identical "$T/${n}1.img" "$T/out.img" ||
		    why+=" $n/$id does not restore identical;"
	done
	# The interrupted point: absent, or listed and complete.
	state=absent
	for id in $ids; do
		case $id in
		"vm/${EARLIER[vm]}"|"sec/${EARLIER[sec]}") ;;
		$name/*)
			state=complete
			rm -f "$T/out.img"
			as "$name" restore --name "$name" --point "${id#*/}" \
			    --output "$T/out.img" >/dev/null 2>&1 &&
			    files_identical "$T/${name}2.img" "$T/out.img" ||
			    why+=" $id listed but broken;"
			;;
		*)	why+=" unexpected point $id;" ;;
		esac
	done
	rm -f "$T/out.img"
	if ! as "$name" backup --disk "$T/${name}2.img" --name "$name" \
	    >"$T/next.out" 2>&1; then
		why+=" the next backup failed: $(tail -n 1 "$T/next.out");"
	elif ! as "$name" restore --name "$name" --output "$T/out.img" \
	    >/dev/null 2>&1 || ! files_identical "$T/${name}2.img" "$T/out.img"; then
		why+=" the next backup does not restore identical;"
	fi
	[ -z "$(ls -A "$REPO/tenants/acme/tmp")" ] ||
	    why+=" an interrupted job left behind after the next backup;"
	target_stop
	if [ -z "$why" ]; then
		ok "$step: earlier points intact, interrupted point $state, next backup identical"
	else
		not_ok "$step" "$why"
		diag "$TARGET_LOG"
	fi
}

HIT=
# crash_all NAME [KINDS [N]]: count the steps of a backup of NAME, then
# crash the target at each planned step (shim_plan; not those of the
# classes in $skip, a regex) and check what is left
crash_all() {
	local name=$1 kinds=${2:-} first=${3:-0} cls glob k kind action step bpid
	reset_repo
	rm -f "$T/steps"
	shim_start "$T/target.conf" FAULT_LOG="$T/steps" ||
	    bail "target with the shim did not start"
	check "$name: the backup completes under the shim (counting its steps)" \
	    as "$name" backup --disk "$T/${name}2.img" --name "$name"
	target_stop
	echo "# $name: $(wc -l <"$T/steps") steps: $(awk '{ print $2 }' \
	    "$T/steps" | sort | uniq -c | tr -s ' \n' ' ')"
	shim_plan "$T/steps" "$REPO" tear "$kinds" "$first" |
	    grep -Ev "^(${skip:-none}) " >"$T/plan"
	echo "# $name: $(wc -l <"$T/plan") crash points"
	while read -r cls glob k kind; do
		action='kill'
		if [ "$cls" = tear ]; then
			action=tear
			cls='write'
		fi
		step="$name: $action at $cls #$k of $kind"
		reset_repo
		if ! shim_start "$T/target.conf" FAULT_CLASS="$cls" \
		    FAULT_MATCH="$glob" FAULT_AT="$k" FAULT_ACTION="$action"; then
			not_ok "$step: target with the shim did not start"
			continue
		fi
		# The program itself, not the src wrapper, so that a kill
		# reaches it: once the target is dead its retries are moot.
		"$BUILD/source-transporter" -f "$T/$name.conf" backup \
		    --disk "$T/${name}2.img" --name "$name" >"$T/b.out" 2>&1 &
		bpid=$!
		while kill -0 "$bpid" 2>/dev/null &&
		    kill -0 "$TARGET_PID" 2>/dev/null; do
			sleep 0.05
		done
		kill -KILL "$bpid" 2>/dev/null
		wait "$bpid" 2>/dev/null
		if target_wait_dead 20; then
			HIT+=" $action:$cls:$kind"
		else
			# Threads may order steps unlike the counting run.
			echo "# $step: not reached in this run"
			target_stop
		fi
		check_after "$name" "$step"
	done <"$T/plan"
}

# Every kind of step of a source-side commit (the commit without a
# checkpoint), then the first two of each kind of the in-flight steps
# that a checkpoint adds (the journal, and chunks published before the
# commit).
crash_all sec
skip="mkdir|unlink" crash_all vm journal,syncfs,chunk,job-dir 2

# Not a crash of the target: a source-side backup cut off after a
# checkpoint (the source killed).  The job's data key dies with it, so
# none of its chunks may stay where the next backup would deduplicate
# against them; that backup must restore byte-identical.
cp "$T/sec1.img" "$T/sec3.img"
head -c 24M /dev/urandom >>"$T/sec3.img"
source_conf "$T/sec3.conf" acme "resume_timeout = 0s" "window = 64M" \
    "encryption = source-side" "key_provider = password" "password_file = $T/pw"
# The slowest zstd level on one worker: time to kill it after a checkpoint.
source_conf "$T/slow.conf" acme "resume_timeout = 0s" "window = 64M" \
    "encryption = source-side" "key_provider = password" \
    "password_file = $T/pw" "compression_level = 19" "workers = 1"
reset_repo
TARGET_FLAGS=-vv target_start "$T/target.conf" || bail "target did not start"
log_mark
"$BUILD/source-transporter" -f "$T/slow.conf" backup --disk "$T/sec3.img" \
    --name sec >/dev/null 2>&1 &
bpid=$!
for _ in $(seq 300); do
	tail -n "+$LOG_MARK" "$TARGET_LOG" | grep -q "checkpoint of 'sec'" && break
	kill -0 "$bpid" 2>/dev/null || break
	sleep 0.05
done
if tail -n "+$LOG_MARK" "$TARGET_LOG" | grep -q "checkpoint of 'sec'" &&
    kill -KILL "$bpid" 2>/dev/null; then
	wait "$bpid" 2>/dev/null
	ok "source-side: the source killed after a checkpoint"
	check "source-side: the next backup completes" \
	    as sec3 backup --disk "$T/sec3.img" --name sec
	rm -f "$T/out.img"
	check "source-side: and restores" \
	    as sec3 restore --name sec --output "$T/out.img"
	same "source-side: byte-identical" "$T/sec3.img" "$T/out.img"
else
	wait "$bpid" 2>/dev/null
	skip "source-side: the source killed after a checkpoint" \
	    "the backup ended before a checkpoint"
fi
target_stop

# Every kind of step was crashed at.  (A new chunks/xx directory has no
# fsync of its own: the syncfs after the links makes it durable.)
missing=
for want in kill:create:chunk-stage kill:write:chunk-stage \
    tear:write:chunk-stage kill:syncfs:syncfs kill:link:chunk \
    kill:mkdir:chunk-dir \
    kill:create:journal kill:write:journal kill:fsync:journal \
    kill:link:journal kill:dirsync:job-dir tear:write:journal \
    kill:create:index kill:write:index kill:fsync:index kill:link:index \
    tear:write:index kill:dirsync:point-dir \
    kill:create:keychain kill:write:keychain kill:fsync:keychain \
    kill:link:keychain tear:write:keychain \
    kill:create:manifest kill:write:manifest kill:fsync:manifest \
    kill:link:manifest tear:write:manifest kill:unlink:job-dir; do
	[[ " $HIT " == *" $want "* ]] || missing+=" $want"
done
if [ -z "$missing" ]; then
	ok "every kind of commit step was crashed at"
else
	not_ok "every kind of commit step was crashed at" "never hit:$missing"
fi
finish
