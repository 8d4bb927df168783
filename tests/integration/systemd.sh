#!/bin/bash
# Deployment files: the systemd units (hardening score, offline
# verification, their command lines run for real against a target on
# loopback), `make install` into a DESTDIR, the example configurations
# (every commented key uncommented still parses), and the man pages.
#
# systemd-analyze security: systemd 252 (Debian 12) parses --threshold as
# an integer on a 0-100 scale, exposure x 10 ("2.0" is refused there), so
# the threshold passed is 20 and the printed score is compared too.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
UNITS=$TOP/deploy/systemd
MAX_EXPOSURE=2.0
DAEMON_UNITS="target-transporter.service source-transporter.service"
ALL_UNITS="$DAEMON_UNITS source-transporter-backup@.service
source-transporter-backup@.timer target-transporter-prune.service
target-transporter-prune.timer"

# unit_has UNIT REGEX: does the unit file have a line matching REGEX?
unit_has() {
	grep -Eq -- "$2" "$UNITS/$1"
}

# --- systemd-analyze security ----------------------------------------------

if ! command -v systemd-analyze >/dev/null; then
	skip "systemd units: exposure scores" "systemd-analyze is not installed"
elif ! systemd-analyze security --help 2>&1 | grep -q -- '--offline'; then
	skip "systemd units: exposure scores" \
	    "this systemd-analyze has no --offline (systemd < 250)"
else
	for u in $DAEMON_UNITS source-transporter-backup@.service \
	    target-transporter-prune.service; do
		run systemd-analyze security --offline=true --threshold=20 \
		    "$UNITS/$u"
		rc=$RC
		# "→ Overall exposure level for NAME: 1.2 OK"
		score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' \
		    "$LAST" | tail -n 1)
		if [ -n "$score" ] && [ "$rc" -eq 0 ] &&
		    awk -v s="$score" -v m="$MAX_EXPOSURE" \
		    'BEGIN { exit !(s <= m) }'; then
			ok "$u: exposure $score <= $MAX_EXPOSURE (systemd-analyze security --offline)"
		else
			not_ok "$u: exposure ${score:-?} <= $MAX_EXPOSURE" \
			    "systemd-analyze exit $rc"
			grep -E '^✗' "$LAST" | diag
		fi
	done
fi

# --- systemd-analyze verify --------------------------------------------------

# Offline, on copies whose commands are the built binaries (verify checks
# that they exist) and with our man pages on MANPATH (it checks those too).
mkdir -p "$T/units" "$T/man/man5" "$T/man/man8"
cp "$TOP"/docs/man/*.5 "$T/man/man5/"
cp "$TOP"/docs/man/*.8 "$T/man/man8/"
for u in $ALL_UNITS; do
	# verify wants an instance, not a template
	sed "s|/usr/sbin/|$BUILD/|g" "$UNITS/$u" >"$T/units/${u/@./@vm1.}"
done
if ! command -v systemd-analyze >/dev/null; then
	skip "systemd-analyze verify" "systemd-analyze is not installed"
else
	MANPATH=$T/man:/usr/share/man run systemd-analyze verify \
	    "$T/units/target-transporter.service" \
	    "$T/units/source-transporter.service" \
	    "$T/units/source-transporter-backup@vm1.service" \
	    "$T/units/source-transporter-backup@vm1.timer" \
	    "$T/units/target-transporter-prune.service" \
	    "$T/units/target-transporter-prune.timer"
	if [ "$RC" -eq 0 ] && [ ! -s "$LAST_ERR" ]; then
		ok "systemd-analyze verify: every unit, without a warning"
	else
		not_ok "systemd-analyze verify: every unit, without a warning" \
		    "exit $RC"
		diag "$LAST"
	fi
fi

# --- what the units promise --------------------------------------------------

t=target-transporter.service
if unit_has $t '^Type=notify$' && unit_has $t '^WatchdogSec=' &&
    unit_has $t '^ExecReload=/bin/kill -HUP \$MAINPID$' &&
    unit_has $t '^ExecStart=/usr/sbin/target-transporter -d -f /etc/transporter/target.conf$' &&
    unit_has $t '^User=transporter$' && unit_has $t '^StateDirectory=transporter$' &&
    unit_has $t '^ConfigurationDirectory=transporter$' &&
    unit_has $t '^PrivateDevices=yes$' &&
    unit_has $t '^CapabilityBoundingSet=$' &&
    unit_has $t '^RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX$' &&
    unit_has $t '^SystemCallFilter=@system-service$'; then
	ok "$t: notify + watchdog, reload by SIGHUP, own user, state and config directories, hardened"
else
	not_ok "$t: notify + watchdog, reload by SIGHUP, own user, state and config directories, hardened"
fi
b=source-transporter-backup@.service
if unit_has $b '^Type=oneshot$' &&
    unit_has $b '^EnvironmentFile=/etc/transporter/backup-%i.env$' &&
    unit_has $b '^ExecStart=/usr/sbin/source-transporter -f /etc/transporter/source.conf backup --disk \$\{DISK\} --name %i' &&
    ! unit_has $b '^PrivateDevices=yes' && unit_has $b '^DevicePolicy=closed$' &&
    ! unit_has $b '^DeviceAllow=.* [a-z]*w'; then
	ok "$b: one-shot, disk from backup-%i.env, block devices read-only and nothing else"
else
	not_ok "$b: one-shot, disk from backup-%i.env, block devices read-only and nothing else"
fi
if unit_has source-transporter-backup@.timer '^OnCalendar=' &&
    unit_has source-transporter-backup@.timer '^Persistent=true$' &&
    unit_has source-transporter-backup@.timer '^WantedBy=timers.target$'; then
	ok "source-transporter-backup@.timer: a persistent calendar timer"
else
	not_ok "source-transporter-backup@.timer: a persistent calendar timer"
fi
p=target-transporter-prune.service
if unit_has $p '^Type=oneshot$' &&
    unit_has $p '^Conflicts=target-transporter.service$' &&
    unit_has $p '^After=target-transporter.service$' &&
    unit_has $p '^OnSuccess=target-transporter.service$' &&
    unit_has $p '^OnFailure=target-transporter.service$' &&
    unit_has $p '^ExecStart=/usr/sbin/target-transporter prune -f /etc/transporter/target.conf --keep-last \$\{KEEP_LAST\}$' &&
    unit_has $p '^User=transporter$' && unit_has $p '^PrivateNetwork=yes$' &&
    unit_has target-transporter-prune.timer '^Persistent=true$'; then
	ok "$p: stops the daemon, prunes, starts it again either way; no network"
else
	not_ok "$p: stops the daemon, prunes, starts it again either way; no network"
fi
if command -v systemd-sysusers >/dev/null; then
	run systemd-sysusers --dry-run "$UNITS/transporter.sysusers"
	if grep -q "Creating user 'transporter'" "$LAST" ||
	    getent passwd transporter >/dev/null; then
		ok "transporter.sysusers creates the transporter user (sysusers --dry-run)"
	else
		not_ok "transporter.sysusers creates the transporter user (sysusers --dry-run)"
		diag "$LAST"
	fi
elif grep -Eq '^u transporter ' "$UNITS/transporter.sysusers"; then
	ok "transporter.sysusers creates the transporter user"
else
	not_ok "transporter.sysusers creates the transporter user"
fi

# --- the units' commands, run as systemd would ------------------------------

# exec_line UNIT KEY: the command of KEY= in UNIT, with %i = vm1, the
# installed paths mapped to the build and to $T, ${DISK} and $OPTIONS
# from the environment file
exec_line() {
	sed -n "s/^$2=//p" "$UNITS/$1" | head -n 1 | sed \
	    -e "s|/usr/sbin/|$BUILD/|g" \
	    -e "s|/etc/transporter/|$T/etc/|g" \
	    -e "s|%i|vm1|g"
}

mkdir -p "$T/etc"
target_conf "$T/etc/target.conf"
source_conf "$T/etc/source.conf" acme
make_image "$T/disk.img" 5M+4096 7
echo "DISK=$T/disk.img" >"$T/etc/backup-vm1.env"

pre=$(exec_line target-transporter.service ExecStartPre)
# shellcheck disable=SC2086
check "target unit: ExecStartPre (-n) accepts a good configuration" $pre
target_start "$T/etc/target.conf" || bail "the target did not start"

cmd=$(exec_line source-transporter-backup@.service ExecStart)
# systemd's expansion: ${DISK} one word, $OPTIONS split, from the env file
# shellcheck disable=SC2016
run env -i PATH="$PATH" bash -c 'set -a; . "$1"; OPTIONS=${OPTIONS:-}; set +a
eval "set -- $2"; exec "$@"' sh "$T/etc/backup-vm1.env" \
    "${cmd//\$OPTIONS/\$OPTIONS}"
if [ "$RC" -eq 0 ]; then
	ok "backup@vm1: ExecStart with backup-vm1.env backs the disk up"
else
	not_ok "backup@vm1: ExecStart with backup-vm1.env backs the disk up" \
	    "exit $RC: $cmd"
	diag "$LAST"
fi
SRC_CONF=$T/etc/source.conf run src list --name vm1 --json
jsoncheck "backup@vm1: the restore point is named after the instance" \
    'len(j) == 1 and j[0]["name"] == "vm1"'

# The prune unit's command, with the daemon stopped as Conflicts= does:
# a second point of vm1, then KEEP_LAST=1 of the unit's Environment=.
SRC_CONF=$T/etc/source.conf check "a second backup of vm1" \
    src backup --disk "$T/disk.img" --name vm1
keep=$(sed -n 's/^Environment=KEEP_LAST=//p' \
    "$UNITS/target-transporter-prune.service")
[ "$keep" -ge 1 ] 2>/dev/null && ok "prune unit: KEEP_LAST=$keep" ||
    not_ok "prune unit: KEEP_LAST is a number" "'$keep'"
target_stop
cmd=$(exec_line target-transporter-prune.service ExecStart)
# shellcheck disable=SC2086
run ${cmd//\$\{KEEP_LAST\}/1}
if [ "$RC" -eq 0 ] && grep -q "1 restore point(s) pruned, 1 kept" "$LAST_OUT"; then
	ok "prune unit: ExecStart prunes the repository of target.conf"
else
	not_ok "prune unit: ExecStart prunes the repository of target.conf" \
	    "exit $RC: $cmd"
	diag "$LAST"
fi
target_start "$T/etc/target.conf" || bail "the target did not start again"

# --- make install ------------------------------------------------------------

# -o all: the suite runs on what is built (make check built it); the
# install rule itself is what is tested.
R=$T/root
run make -C "$TOP" --no-print-directory -o all install DESTDIR="$R" \
    BUILD="$BUILD" PREFIX=/usr SYSCONFDIR=/etc
if [ "$RC" -eq 0 ]; then
	ok "make install DESTDIR=... PREFIX=/usr"
else
	not_ok "make install DESTDIR=... PREFIX=/usr" "exit $RC"
	diag "$LAST"
fi
missing=
for f in sbin/target-transporter sbin/source-transporter \
    lib/systemd/system/target-transporter.service \
    lib/systemd/system/source-transporter.service \
    lib/systemd/system/source-transporter-backup@.service \
    lib/systemd/system/source-transporter-backup@.timer \
    lib/systemd/system/target-transporter-prune.service \
    lib/systemd/system/target-transporter-prune.timer \
    lib/sysusers.d/transporter.conf \
    share/man/man5/transporter.conf.5 \
    share/man/man8/target-transporter.8 \
    share/man/man8/source-transporter.8 \
    share/doc/transporter/mint-pki.sh; do
	[ -f "$R/usr/$f" ] || missing="$missing /usr/$f"
done
for f in etc/transporter/target.conf etc/transporter/source.conf; do
	[ -f "$R/$f" ] || missing="$missing /$f"
done
if [ -z "$missing" ]; then
	ok "make install puts binaries, units, sysusers, man pages and examples in place"
else
	not_ok "make install puts binaries, units, sysusers, man pages and examples in place" \
	    "missing:$missing"
fi
if "$R/usr/sbin/target-transporter" -V >/dev/null 2>&1 &&
    grep -q '^ExecStart=/usr/sbin/target-transporter ' \
    "$R/usr/lib/systemd/system/target-transporter.service"; then
	ok "installed units run the installed binaries"
else
	not_ok "installed units run the installed binaries"
fi
run make -C "$TOP" --no-print-directory -o all install DESTDIR="$T/local" \
    BUILD="$BUILD"
if [ "$RC" -eq 0 ] && grep -q '^ExecStart=/usr/local/sbin/target-transporter ' \
    "$T/local/usr/local/lib/systemd/system/target-transporter.service"; then
	ok "with the default PREFIX the units run /usr/local/sbin/..."
else
	not_ok "with the default PREFIX the units run /usr/local/sbin/..." "exit $RC"
fi
echo "# edited by the operator" >>"$R/etc/transporter/target.conf"
run make -C "$TOP" --no-print-directory -o all install DESTDIR="$R" \
    BUILD="$BUILD" PREFIX=/usr SYSCONFDIR=/etc
if [ "$RC" -eq 0 ] &&
    tail -n 1 "$R/etc/transporter/target.conf" | grep -q 'edited by the operator'; then
	ok "make install again keeps an edited configuration"
else
	not_ok "make install again keeps an edited configuration" "exit $RC"
fi

# --- the example configurations ----------------------------------------------

# uncomment FILE: every "#key = value" line of FILE made live, and the
# installed paths mapped to files of the test PKI
uncomment() {
	sed -E -e 's/^#([a-z_]+ = )/\1/' -e 's/^#(\[(tenant|job) )/\1/' \
	    -e "s|/etc/transporter/pki/acme-source|$PKI/acme|g" \
	    -e "s|/etc/transporter/pki/acme-kms|$PKI/acme|g" \
	    -e "s|/etc/transporter/pki/kms-ca.crt|$PKI/ca.crt|g" \
	    -e "s|/etc/transporter/pki/ca.crl|$PKI/ca.crl|g" \
	    -e "s|/etc/transporter/pki/|$PKI/|g" \
	    -e "s|/etc/transporter/backup.password|$T/password|g" \
	    -e "s|/var/lib/transporter/repository|$T/example-repo|g" "$1"
}
echo "correct horse battery staple" >"$T/password"
chmod 600 "$T/password"
# (at_rest = kmip uncommented: its password_file alternative goes)
uncomment "$TOP/deploy/examples/target.conf" |
    sed -e '/^password_file = /d' \
    -e "s|$PKI/target-kms|$PKI/target|g" >"$T/example-target.conf"
expect_exit 0 "deploy/examples/target.conf, every key uncommented, passes -n" \
    "$BUILD/target-transporter" -n -f "$T/example-target.conf"
uncomment "$TOP/deploy/examples/source.conf" |
    sed -e "s|^target = .*|target = 127.0.0.1:$TARGET_PORT|" \
    -e "s|^server_name = .*|server_name = localhost|" \
    -e "s|^key_provider = .*|key_provider = password|" \
    -e "s|^kms = .*|kms = 127.0.0.1:1|" \
    -e "s|^state_directory = .*|state_directory = $T/state|" >"$T/example-source.conf"
SRC_CONF=$T/example-source.conf check \
    "deploy/examples/source.conf, every key uncommented, parses and connects" \
    src list
if grep -q '^certificate = /etc/transporter/pki/' "$TOP/deploy/examples/target.conf" &&
    grep -q '^repository = /var/lib/transporter/' "$TOP/deploy/examples/target.conf"; then
	ok "the target example uses the units' directories"
else
	not_ok "the target example uses the units' directories"
fi

# --- man pages ---------------------------------------------------------------

if command -v mandoc >/dev/null; then
	run mandoc -T lint -W warning "$TOP"/docs/man/*.[58]
	if [ "$RC" -eq 0 ] && [ ! -s "$LAST" ]; then
		ok "mandoc -T lint: the man pages are clean"
	else
		not_ok "mandoc -T lint: the man pages are clean" "exit $RC"
		diag "$LAST"
	fi
elif command -v groff >/dev/null; then
	run groff -mandoc -z -ww "$TOP"/docs/man/*.[58]
	if [ "$RC" -eq 0 ] && [ ! -s "$LAST" ]; then
		ok "groff -ww: the man pages are clean (no mandoc)"
	else
		not_ok "groff -ww: the man pages are clean (no mandoc)" "exit $RC"
		diag "$LAST"
	fi
else
	skip "man pages lint" "neither mandoc nor groff is installed"
fi
# every option, command, key and exit status is documented
undocumented=
for w in '-d' '-n' '-f' '-v' '-V'; do
	grep -q "^\.It Fl ${w#-}" "$TOP/docs/man/target-transporter.8" ||
	    undocumented="$undocumented target:$w"
done
for opt in $("$BUILD/target-transporter" -h 2>&1 | grep -o -- '--[a-z-]*' | sort -u); do
	grep -q "Fl Fl ${opt#--}" "$TOP/docs/man/target-transporter.8" ||
	    undocumented="$undocumented target:$opt"
done
for opt in $("$BUILD/source-transporter" -h 2>&1 | grep -o -- '--[a-z-]*' | sort -u); do
	grep -q "Fl Fl ${opt#--}" "$TOP/docs/man/source-transporter.8" ||
	    undocumented="$undocumented source:$opt"
done
for w in backup list restore keys benchmark; do
	grep -q "^\.Ss $w" "$TOP/docs/man/source-transporter.8" ||
	    undocumented="$undocumented source:$w"
done
for cmd in backup list restore keys benchmark; do
	for opt in $("$BUILD/source-transporter" $cmd --help 2>&1 |
	    grep -o -- '--[a-z-]*' | sort -u); do
		[ "$opt" = --help ] && continue
		grep -q "Fl Fl ${opt#--}" "$TOP/docs/man/source-transporter.8" ||
		    undocumented="$undocumented source-$cmd:$opt"
	done
done
for code in 0 1 2 3 4 5 6 7 8 9; do
	grep -q "^\.It $code\$" "$TOP/docs/man/source-transporter.8" ||
	    undocumented="$undocumented exit:$code"
done
for key in $(grep -Eho '^#?[a-z_]+ =' "$TOP"/deploy/examples/*.conf | tr -d '#=' | sort -u); do
	grep -q "^\.It Cm $key " "$TOP/docs/man/transporter.conf.5" ||
	    undocumented="$undocumented conf:$key"
done
if [ -z "$undocumented" ]; then
	ok "the man pages document every option, command, exit status and key"
else
	not_ok "the man pages document every option, command, exit status and key" \
	    "undocumented:$undocumented"
fi
if command -v man >/dev/null; then
	run man -l "$TOP/docs/man/transporter.conf.5"
	if [ "$RC" -eq 0 ] && grep -q 'TARGET KEYS' "$LAST_OUT"; then
		ok "man -l renders transporter.conf(5)"
	else
		not_ok "man -l renders transporter.conf(5)" "exit $RC"
	fi
fi

finish
