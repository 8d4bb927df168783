# faketarget.py: a target that answers the source wrongly, for
# hostile_target.sh.  TLS 1.3 with the target's certificate, client
# certificates required; the frame length prefix and the few messages it
# needs packed by hand.  It serves connections until killed.
#
#   faketarget.py PORT CA CERT KEY MODE
#
# Every ListRequest gets one point: vm/p-fake-1, 4 MiB in 4 blocks of
# 1 MiB, none zero, in-flight, sequence 1.  A RestoreRequest gets a
# RestoreBegin, then nothing (the source is to refuse it):
# MODE wrong-name   the point of another name (other/p-fake-1)
#      wrong-point  the point p-fake-2 of the name asked for
#      fewer        the point asked for, announcing 0 of its 4 blocks
#      bad-newest   (ListRequest) the newest point's id holds a newline
#      old-keys     (ListRequest) a source-side point listing its two keys,
#                   under one KMIP KEK, and no keks: a target older than
#                   ListRequest.brief
import socket, ssl, sys, threading

from pbwire import field, fields, frame, vfield

port, ca, cert, key, mode = sys.argv[1:6]
PROTOCOL_VERSION = 1


def point(name, point_id):
	"""PointInfo: 4 MiB, 4 blocks of 1 MiB, in-flight, sequence 1."""
	return (field(1, name) + field(2, point_id) +
	    vfield(3, 1700000000) + vfield(4, 4 << 20) + vfield(5, 1 << 20) +
	    vfield(7, 1) + vfield(8, 4) + vfield(9, 0) + vfield(13, 1))


def wrapped_key(n):
	"""WrappedKey n under KMIP key kek-1 'acme-kek' version 7."""
	kek = (vfield(1, 1) + field(2, "kms.example:5696") +
	    field(3, "acme-kek") + field(4, "kek-1") + vfield(5, 7))
	return (field(1, bytes([n]) * 16) + vfield(2, n) + field(3, kek) +
	    field(4, bytes(60)))


def send(s, frame_field, body):
	s.sendall(frame(field(frame_field, body)))


def serve(s):
	buf = b""
	try:
		while True:
			d = s.recv(1 << 16)
			if not d:
				return
			buf += d
			while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(
			    buf[:4], "big"):
				n = int.from_bytes(buf[:4], "big")
				body, buf = buf[4:4 + n], buf[4 + n:]
				f = fields(body)
				if 1 in f:		# Hello
					send(s, 1, vfield(1, PROTOCOL_VERSION) +
					    field(3, "faketarget") + vfield(5, 600))
				elif 7 in f:		# ListRequest
					pid = "a\nvm2 999 x" if \
					    mode == "bad-newest" else "p-fake-1"
					p = point("vm", pid)
					if mode == "old-keys":
						p += vfield(7, 3) + field(10,
						    wrapped_key(1)) + field(10,
						    wrapped_key(2))
					send(s, 8, field(1, p))
				elif 9 in f:		# RestoreRequest
					rr = fields(f[9])
					name = rr.get(1, b"").decode()
					pid = rr.get(2, b"").decode() or "p-fake-1"
					blocks = 4
					if mode == "wrong-name":
						name = "other"
					elif mode == "wrong-point":
						pid = "p-fake-2"
					elif mode == "fewer":
						blocks = 0
					send(s, 10, field(1, point(name, pid)) +
					    vfield(2, blocks))
	except (OSError, ssl.SSLError):
		return
	finally:
		s.close()


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(ca)
ctx.verify_mode = ssl.CERT_REQUIRED
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(port)))
ls.listen(8)
print("listening", flush=True)
while True:
	c, _ = ls.accept()
	try:
		t = ctx.wrap_socket(c, server_side=True)
	except (OSError, ssl.SSLError):
		c.close()
		continue
	threading.Thread(target=serve, args=(t,), daemon=True).start()
