#!/bin/bash
# Slow and idle peers: connections that dribble a byte at a time, or say
# nothing, are closed at the handshake deadline (absolute, not reset by
# each byte), and a legitimate source gets through meanwhile.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
make_image "$T/disk.img" 8M 91
target_conf "$T/target.conf" "handshake_timeout = 2s" "max_sessions = 64"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme

# 40 peers: 20 dribble a byte every 0.3 s, 20 send nothing.  Each waits
# up to 8 s and reports whether (and when) the target closed it.
"$PY" - "$TARGET_PORT" >"$T/loris.out" 2>&1 <<'PYEOF' &
import socket, sys, time
port = int(sys.argv[1])
socks = []
for i in range(40):
	s = socket.create_connection(("127.0.0.1", port))
	s.setblocking(False)
	socks.append((s, i < 20))
start = time.time()
closed = {}
while time.time() - start < 8 and len(closed) < len(socks):
	for n, (s, dribble) in enumerate(socks):
		if n in closed:
			continue
		try:
			if dribble:
				s.send(b"\x16")
			if s.recv(4096) == b"":
				closed[n] = time.time() - start
		except BlockingIOError:
			pass
		except OSError:
			closed[n] = time.time() - start
	time.sleep(0.3)
print("closed %d of %d, latest after %.1f s" % (len(closed), len(socks),
    max(closed.values()) if closed else -1))
PYEOF
LORIS=$!
track $LORIS
sleep 0.5
check "a legitimate backup gets through while 40 peers stall" \
    src backup --disk "$T/disk.img" --name vm
wait $LORIS
expect_grep '^closed 40 of 40' "$T/loris.out" "the target closed every stalling peer"
latest=$(sed -n 's/.*latest after \([0-9.]*\) s/\1/p' "$T/loris.out")
"$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) < 6 else 1)" "${latest:-99}" &&
    ok "dribbling a byte at a time did not extend the deadline (closed by ${latest} s)" ||
    not_ok "the deadline is absolute" "$(cat "$T/loris.out")"
expect_grep 'no handshake and Hello within 2 s' "$TARGET_LOG" "the target logs why"
target_alive && ok "the target still runs" || not_ok "target alive"
check "and serves" src list
finish
