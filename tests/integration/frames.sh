#!/bin/bash
# Hostile frames from an authenticated peer: the target closes that
# session (ideally after an Error frame) and goes on serving others.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init
make_image "$T/small.img" 2M+99 41

target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme

# A raw peer.  Prints "end=HOW tags=T,T,..": how the target ended the
# session (eof, reset, tls-error, timeout = still open after 10 s, sent =
# we closed first) and the first byte of each frame it sent (0a Hello,
# 6a Error).
cat >"$T/frames.py" <<'EOF'
import os, socket, ssl, sys, time

sys.path.insert(0, os.environ["TOOLS"])
from pbwire import field, frame, varint

host, port, ca, cert, key, case = sys.argv[1:7]
port = int(port)

hello = b"\x08\x01" + field(3, b"frames.sh") + b"\x20" + varint(17 << 20)
HELLO = frame(field(1, hello))

def read_all(s):
	buf, tags, end = b"", [], "timeout"
	s.settimeout(1)
	deadline = time.time() + 10
	while time.time() < deadline:
		try:
			d = s.recv(65536)
		except socket.timeout:
			continue
		except ssl.SSLZeroReturnError:
			end = "eof"; break
		except ssl.SSLEOFError:
			end = "eof"; break
		except ssl.SSLError as e:
			end = "tls-error(%s)" % e.reason; break
		except (ConnectionResetError, BrokenPipeError):
			end = "reset"; break
		if not d:
			end = "eof"; break
		buf += d
		while len(buf) >= 4:
			n = int.from_bytes(buf[:4], "big")
			if len(buf) < 4 + n:
				break
			tags.append("%02x" % buf[4] if n else "empty")
			buf = buf[4 + n:]
	return end, tags

def send(s, data):
	try:
		s.sendall(data)
	except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
		pass

raw = socket.create_connection((host, port), timeout=10)
if case == "plain":
	send(raw, b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)) * 4)
	end, tags = read_all(raw)
	print("end=%s tags=%s" % (end, ",".join(tags)))
	sys.exit(0)
if case == "half-handshake":
	send(raw, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
	raw.close()
	print("end=sent tags=")
	sys.exit(0)

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)
s = ctx.wrap_socket(raw, server_hostname="localhost")

if case == "early":		# a ListRequest before any Hello
	send(s, frame(field(7, b"")))
elif case == "oversize":	# a length far over FRAME_MAX
	send(s, HELLO + b"\x7f\xff\xff\xff" + b"A" * 4096)
elif case == "garbage":		# a frame that is not a protobuf Frame
	send(s, HELLO + frame(b"\xff" * 16))
elif case == "truncated":	# a frame cut short, then we hang up
	send(s, HELLO + (1000).to_bytes(4, "big") + b"\x0a" * 10)
	s.close()
	print("end=sent tags=")
	sys.exit(0)
else:
	sys.exit("unknown case " + case)
end, tags = read_all(s)
print("end=%s tags=%s" % (end, ",".join(tags)))
EOF

# peer CASE: run the raw peer; its verdict in $LAST_OUT
peer() {
	TOOLS=$TOP/tests/tools run timeout 30 "$PY" "$T/frames.py" 127.0.0.1 "$TARGET_PORT" \
	    "$PKI/ca.crt" "$PKI/acme.crt" "$PKI/acme.key" "$1"
	echo "# $1: $(cat "$LAST")"
}

# closes NAME CASE: ok if the target ends the session itself
closes() {
	peer "$2"
	if [ "$RC" -ne 0 ]; then
		not_ok "$1" "frames.py failed"
		diag "$LAST"
	elif grep -q '^end=timeout' "$LAST_OUT"; then
		not_ok "$1" "session still open after 10 s"
	else
		ok "$1"
	fi
}

# error_frame NAME: ok if the last session got an Error frame
error_frame() {
	if grep -q '^end=.* tags=.*6a' "$LAST_OUT"; then
		ok "$1"
	else
		skip "$1" "no Error frame before the close"
	fi
}

# alive AFTER: ok if the target survived
alive() {
	if target_alive; then
		ok "target alive after $1"
	else
		not_ok "target alive after $1"
		diag "$TARGET_LOG"
		bail "target died"
	fi
}

closes "oversized frame length 0x7fffffff: session closed" oversize
error_frame "oversized frame: Error frame sent"
alive "an oversized frame"

closes "garbage protobuf frame: session closed" garbage
error_frame "garbage frame: Error frame sent"
alive "a garbage frame"

closes "frame before Hello: session closed" early
if grep -q 'tags=.*3a\|tags=.*42' "$LAST_OUT"; then
	not_ok "no reply to a request before Hello" "$(cat "$LAST_OUT")"
else
	ok "no reply to a request before Hello"
fi
alive "a frame before Hello"

peer truncated
alive "a truncated frame and hang-up"

closes "plaintext on the TLS port: closed" plain
alive "plaintext on the TLS port"

for _ in $(seq 20); do
	TOOLS=$TOP/tests/tools timeout 10 "$PY" "$T/frames.py" 127.0.0.1 "$TARGET_PORT" \
	    "$PKI/ca.crt" "$PKI/acme.crt" "$PKI/acme.key" half-handshake >/dev/null 2>&1
done
alive "20 half handshakes"

check "a normal backup still works" src backup --disk "$T/small.img" --name small
check "and restores" src restore --name small --output "$T/restored.img"
if files_identical "$T/small.img" "$T/restored.img"; then
	ok "restored image is byte-identical"
else
	not_ok "restored image is byte-identical"
fi

finish
