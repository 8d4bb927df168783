#!/bin/bash
# The progress line: drawn when stdout is a terminal (captured here in a
# pseudo-terminal), never when it is not.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
make_image "$T/disk.img" 48M 41
target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme

# in_pty OUT CMD...: runs CMD with stdout and stderr on a pseudo-terminal,
# everything it printed into OUT; exits with CMD's status
in_pty() {
	"$PY" - "$@" <<'PYEOF'
import os, pty, subprocess, sys
out = sys.argv[1]
master, slave = pty.openpty()
p = subprocess.Popen(sys.argv[2:], stdout=slave, stderr=slave, stdin=slave)
os.close(slave)
data = b""
while True:
	try:
		chunk = os.read(master, 65536)
	except OSError:
		break
	if not chunk:
		break
	data += chunk
open(out, "wb").write(data)
sys.exit(p.wait())
PYEOF
}

SRC="$BUILD/source-transporter -f $T/source.conf"
# shellcheck disable=SC2086
check "backup on a terminal" in_pty "$T/tty.out" $SRC backup --disk "$T/disk.img" --name vm
expect_grep 'backup \[=+ *\] +[0-9]+% ' "$T/tty.out" "a progress bar with a percentage"
expect_grep 'ETA [0-9]+:[0-9][0-9]' "$T/tty.out" "and the time left"
expect_grep '/s ETA' "$T/tty.out" "and the rate"
grep -q $'\r' "$T/tty.out" && ok "redrawn in place (carriage return)" ||
    not_ok "redrawn in place"
expect_grep 'committed as restore point' "$T/tty.out" "then the summary"

check "backup to a file" src backup --disk "$T/disk.img" --name vm
if grep -q $'\r' "$LAST_OUT" || grep -q 'ETA' "$LAST_OUT"; then
	not_ok "no progress line when stdout is not a terminal" "$(cat -A "$LAST_OUT" | head -3)"
else
	ok "no progress line when stdout is not a terminal"
fi
# shellcheck disable=SC2086
check "restore on a terminal" in_pty "$T/rtty.out" $SRC restore --name vm --output "$T/r.img"
expect_grep 'restore \[=+ *\] +[0-9]+% ' "$T/rtty.out" "restore draws a progress bar too"
same "and restores byte-identical" "$T/disk.img" "$T/r.img"
# shellcheck disable=SC2086
check "--json on a terminal" in_pty "$T/json.out" $SRC backup --disk "$T/disk.img" --name vm --json
if grep -q 'ETA' "$T/json.out"; then
	not_ok "no progress line with --json"
else
	ok "no progress line with --json"
fi
finish
