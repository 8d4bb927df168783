# rawpeer.py: a misbehaving source for the load and limits tests.  It
# speaks just enough of the protocol (TLS 1.3 with a client certificate,
# the frame length prefix, a hand-packed Hello) to be slow on purpose.
#
#   rawpeer.py HOST PORT CA CERT KEY MODE [ARG]
#
# MODE dribble: after Hello, a frame header, then one byte every 0.3 s
#      idle:    after Hello, nothing
#      hold:    after Hello, prints "admitted" or "refused: MESSAGE" and
#               stays until closed or killed
#      slowread NAME: asks to restore NAME, reads a little, then stops
#               reading for ARG seconds (default 20)
#      flood KIND MB: after Hello, requests the target answers (KIND
#               keepalive, or list: a ListRequest of every name) for up
#               to MB MiB, reading nothing; prints "sent N MiB, then
#               HOW": all sent, blocked (not taken for 30 s) or closed
#               (by the target); then reads (and drops) what comes until
#               the target closes
#      busy WHAT NAME [DISK BLOCK]: asks to restore NAME (WHAT restore)
#               or to back it up incrementally (WHAT backup, a DISK-byte
#               disk in BLOCK-byte blocks), and 0.2 s later sends a
#               Keepalive on a second connection; prints "keepalive=S
#               reply=S": the seconds from the request to the first byte
#               of the Keepalive's answer and of the request's reply (a
#               tie goes to the reply)
#      ping SECS: a Keepalive every 0.1 s for SECS seconds, each after
#               the answer to the last; prints "answered=N slowest=S":
#               how many, and the longest wait for one in seconds
#
# Prints one line: "end=HOW after=SECONDS error=CODE:MESSAGE", HOW being
# eof, reset, tls-error or timeout (still open after 20 s).
import select, socket, ssl, sys, time

from pbwire import field, frame, read_varint, varint, vfield

host, port, ca, cert, key, mode = sys.argv[1:7]
arg = sys.argv[7] if len(sys.argv) > 7 else None


def error_of(body):
	"""CODE:MESSAGE of an Error frame body (tag 13), else None."""
	if not body or body[0] != 0x6a:
		return None
	n, i = read_varint(body, 1)
	msg, code = body[i:i + n], 0
	i = 0
	text = ""
	while i < len(msg):
		tag, i = read_varint(msg, i)
		if tag == 0x08:
			code, i = read_varint(msg, i)
		elif tag == 0x12:
			n, i = read_varint(msg, i)
			text = msg[i:i + n].decode(errors="replace")
			i += n
		else:
			break
	return "%d:%s" % (code, text)


HELLO = frame(field(1, b"\x08\x01" + field(3, b"rawpeer") + b"\x20" +
    varint(17 << 20)))
start = time.time()
buf = b""
error = None


def frames(s):
	"""Reads what comes within the socket's timeout; returns the bodies
	of whole frames, or None when the connection ended (end: how)."""
	global buf, end
	try:
		d = s.recv(1 << 16)
	except (BlockingIOError, ssl.SSLWantReadError, socket.timeout):
		return []
	except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
		end = "eof"
		return None
	except ssl.SSLError as e:
		end = "tls-error(%s)" % e.reason
		return None
	except (ConnectionResetError, BrokenPipeError):
		end = "reset"
		return None
	if not d:
		end = "eof"
		return None
	buf += d
	out = []
	while len(buf) >= 4:
		n = int.from_bytes(buf[:4], "big")
		if len(buf) < 4 + n:
			break
		out.append(buf[4:4 + n])
		buf = buf[4 + n:]
	return out


def watch(s, secs, every=None, dribble=None):
	"""Reads until the target closes or secs pass, sending a dribble
	byte every interval; records an Error frame."""
	global error, end
	end = "timeout"
	s.settimeout(every or 1)
	deadline = time.time() + secs
	while time.time() < deadline:
		if dribble is not None:
			try:
				s.sendall(dribble)
			except (OSError, ssl.SSLError):
				pass
		got = frames(s)
		if got is None:
			return
		for body in got:
			error = error_of(body) or error


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)


def connect():
	raw = socket.create_connection((host, int(port)), timeout=10)
	if mode == "slowread":
		raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
	c = ctx.wrap_socket(raw, server_hostname="localhost")
	c.sendall(HELLO)
	return c


pending = {}


def next_frame(c):
	"""The next frame's body on c (blocking)."""
	got = pending.get(c, b"")
	while len(got) < 4 or len(got) < 4 + int.from_bytes(got[:4], "big"):
		d = c.recv(1 << 16)
		if not d:
			sys.exit("connection closed")
		got += d
	n = int.from_bytes(got[:4], "big")
	pending[c] = got[4 + n:]
	return got[4:4 + n]


s = connect()
end = "timeout"

if mode == "dribble":
	s.sendall((1000).to_bytes(4, "big"))
	watch(s, 20, every=0.3, dribble=b"\x0a")
elif mode == "idle":
	watch(s, 20)
elif mode == "hold":
	s.settimeout(20)
	got = []
	while not got:
		got = frames(s)
		if got is None:
			break
	err = error_of(got[0]) if got else None
	print("refused: " + err if err else "admitted" if got else
	    "closed: " + end, flush=True)
	if got and not err:
		watch(s, 3600)
elif mode == "slowread":
	s.sendall(frame(field(9, field(1, arg.encode()))))
	got, n = [], 0
	while n < 4 and time.time() - start < 20:
		got = frames(s)
		if got is None:
			break
		n += len(got)
	print("read %d frames, now reading nothing" % n, flush=True)
	time.sleep(float(sys.argv[8]) if len(sys.argv) > 8 else 20)
elif mode == "flood":
	one = frame(b"\x9a\x01\x00") if arg == "keepalive" else \
	    frame(b"\x3a\x00")
	burst = one * (65536 // len(one))
	s.settimeout(30)
	sent, how = 0, "all sent"
	try:
		while sent < int(sys.argv[8]) << 20:
			s.sendall(burst)
			sent += len(burst)
	except (socket.timeout, ssl.SSLWantWriteError):
		how = "blocked"
	except (OSError, ssl.SSLError):
		how = "closed"
	print("sent %d MiB, then %s" % (sent >> 20, how), flush=True)
	s.settimeout(20)
	end = "timeout"
	try:
		while s.recv(1 << 20):
			pass
		end = "eof"
	except socket.timeout:
		pass
	except (ssl.SSLError, OSError):
		end = "reset"
elif mode == "busy":
	other = connect()
	name = sys.argv[8]
	if arg == "restore":
		req = field(9, field(1, name))
	else:
		req = field(2, field(1, name) + vfield(2, int(sys.argv[9])) +
		    vfield(3, int(sys.argv[10])) + vfield(4, 1) +
		    vfield(6, 64 << 20) + vfield(7, 1))
	s.settimeout(60)
	other.settimeout(60)
	next_frame(s)			# the Hellos: both are in
	next_frame(other)
	t0 = time.monotonic()
	s.sendall(frame(req))
	time.sleep(0.2)
	other.sendall(frame(b"\x9a\x01\x00"))
	times = {}
	while len(times) < 2:
		# The request's connection first: on a tie, it wins.
		wait = [c for c in (s, other) if c not in times]
		ready = [c for c in wait if c.pending()] or \
		    select.select(wait, [], [], 60)[0]
		if not ready:
			sys.exit("no answer within 60 s")
		for c in ready:
			try:
				d = c.recv(1 << 16)
			except ssl.SSLWantReadError:
				continue
			if not d:
				sys.exit("connection closed")
			times[c] = time.monotonic() - t0
	print("keepalive=%.3f reply=%.3f" % (times[other], times[s]),
	    flush=True)
	sys.exit(0)
elif mode == "ping":
	s.settimeout(60)
	next_frame(s)			# Hello
	slowest, n, until = 0.0, 0, time.monotonic() + float(arg)
	while time.monotonic() < until:
		t = time.monotonic()
		s.sendall(frame(b"\x9a\x01\x00"))
		next_frame(s)
		slowest = max(slowest, time.monotonic() - t)
		n += 1
		time.sleep(0.1)
	print("answered=%d slowest=%.3f" % (n, slowest), flush=True)
	sys.exit(0)
else:
	sys.exit("unknown mode " + mode)
print("end=%s after=%.1f error=%s" % (end, time.time() - start, error))
