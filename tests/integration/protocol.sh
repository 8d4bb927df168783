#!/bin/bash
# The target's protocol state machine against a hostile but authenticated
# source: a raw client (python3: pyOpenSSL for the TLS exporter that keys
# the in-flight encryption, cryptography for AES-GCM, protobuf by hand)
# completes the handshake and Hello, then sends one bad sequence per
# connection: out of order, duplicated, tampered, miscounted, truncated,
# oversized, trailing garbage.  Each must end with an Error frame (or the
# target closing), the daemon must stay up, and no partial restore point
# may be listed.  A well-formed backup from the same client commits and
# restores byte-identical first, so that the refusals mean something; a
# normal backup by source-transporter still works at the end.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
need_bins
pki_init

if ! "$PY" -c 'import OpenSSL.SSL, cryptography.hazmat.primitives.ciphers.aead' \
    2>"$T/import.err"; then
	skip "hostile protocol sequences" "needs python3-openssl and" \
	    "python3-cryptography: $(tail -n 1 "$T/import.err")"
	finish
fi

make_image "$T/small.img" 3M+777 53
target_conf "$T/target.conf"
target_start "$T/target.conf" || bail "target did not start"
source_conf "$T/source.conf" acme

# proto.py HOST PORT CA CERT KEY CASE [IMAGE-OUT]: runs one case on a new
# connection and prints "end=HOW frames=T,T errors=CODE:MSG|...": how the
# session ended (eof, reset, timeout = still open after 10 s, sent = we
# hung up first), the type of each frame the target sent (hello, ack,
# committed, error, ...), and each Error's code and message.
cat >"$T/proto.py" <<'EOF'
import hashlib, os, select, socket, sys, time
from OpenSSL import SSL
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

host, port, ca, cert, key, case = sys.argv[1:7]
image_out = sys.argv[7] if len(sys.argv) > 7 else None
BS = 64 << 10				# BLOCK_SIZE_MIN
BLOCKS = 4
EXPORTER = b"EXPORTER-transporter-in-flight-v1"
NAMES = {1: "hello", 2: "backup_begin", 3: "block", 4: "ack",
	5: "backup_end", 6: "committed", 8: "list_reply", 13: "error",
	14: "base_index", 10: "restore_begin", 12: "restore_end"}

def varint(n):
	out = b""
	while True:
		b = n & 0x7f
		n >>= 7
		if not n:
			return out + bytes([b])
		out += bytes([b | 0x80])

def vfield(num, n):			# varint field
	return varint(num << 3) + varint(n)

def lfield(num, payload):		# length-delimited field
	return varint(num << 3 | 2) + varint(len(payload)) + payload

def frame(num, msg):
	body = lfield(num, msg)
	return len(body).to_bytes(4, "big") + body

def read_varint(buf, i):
	n = shift = 0
	while True:
		b = buf[i]
		i += 1
		n |= (b & 0x7f) << shift
		shift += 7
		if not b & 0x80:
			return n, i

def fields(buf):			# {number: [value, ...]}
	out, i = {}, 0
	while i < len(buf):
		tag, i = read_varint(buf, i)
		if tag & 7 == 0:
			v, i = read_varint(buf, i)
		elif tag & 7 == 2:
			n, i = read_varint(buf, i)
			v, i = buf[i:i + n], i + n
		else:
			raise ValueError("wire type %d" % (tag & 7))
		out.setdefault(tag >> 3, []).append(v)
	return out

HELLO = frame(1, vfield(1, 1) + lfield(3, b"protocol.sh") +
    vfield(4, 17 << 20))

def begin(name, blocks=BLOCKS, incremental=0, connections=0):
	return frame(2, lfield(1, name.encode()) + vfield(2, blocks * BS) +
	    vfield(3, BS) + vfield(4, 1) + vfield(6, 64 << 20) +
	    (vfield(7, 1) if incremental else b"") +
	    (vfield(12, connections) if connections else b""))

def end(sent, zero=0, unchanged=0, joined=0):
	msg = b""
	if sent:
		msg += vfield(1, sent)
	if zero:
		msg += vfield(2, zero)
	if unchanged:
		msg += vfield(4, unchanged)
	if joined:
		msg += vfield(7, joined)
	return frame(5, msg)

def join(token):
	return frame(20, lfield(1, token))

class Client:
	def __init__(self, cert=cert, key=key):
		ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
		ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
		ctx.load_verify_locations(ca)
		ctx.use_certificate_chain_file(cert)
		ctx.use_privatekey_file(key)
		ctx.set_verify(SSL.VERIFY_PEER, lambda c, x, e, d, ok: ok)
		self.sock = socket.create_connection((host, int(port)), timeout=10)
		self.sock.settimeout(None)
		self.conn = SSL.Connection(ctx, self.sock)
		self.conn.set_tlsext_host_name(b"localhost")
		self.conn.set_connect_state()
		self.conn.do_handshake()
		km = self.conn.export_keying_material(EXPORTER, 64)
		self.key = AESGCM(km[:32])
		self.nonce = 0
		self.buf = b""
		self.frames, self.errors, self.end = [], [], None
		self.token = None		# BaseIndex.job_token
		self.sock.setblocking(False)

	def send(self, data):
		view = memoryview(data)
		while view:
			try:
				n = self.conn.send(view[:65536])
				view = view[n:]
			except SSL.WantWriteError:
				select.select([], [self.sock], [], 1)
			except SSL.WantReadError:
				self.pump(0.05)
			except (SSL.Error, OSError) as e:
				self.end = self.end or "reset(%s)" % e
				return

	def block(self, index, data, chunk_id=None, raw_len=None,
	    tamper=False, aad_index=None, encrypted=False):
		cid = chunk_id or hashlib.sha256(data).digest()
		nonce = (0x5052).to_bytes(4, "big") + self.nonce.to_bytes(8, "big")
		self.nonce += 1
		aad = bytes([1, 1]) + bytes(16) + cid + (index if aad_index is
		    None else aad_index).to_bytes(8, "big")
		payload = bytearray(self.key.encrypt(nonce, data, aad))
		if tamper:
			payload[len(payload) // 2] ^= 0x01
		return frame(3, vfield(1, index) + lfield(2, cid) +
		    vfield(3, len(data) if raw_len is None else raw_len) +
		    lfield(5, nonce) + lfield(6, bytes(payload)) +
		    (vfield(7, 1) if encrypted else b""))

	def pump(self, timeout):
		"""Reads what the target sent within timeout seconds."""
		if self.end:
			return
		r, _, _ = select.select([self.sock], [], [], timeout)
		if not r and not self.conn.pending():
			return
		try:
			while True:
				d = self.conn.recv(65536)
				if not d:
					self.end = "eof"
					break
				self.buf += d
		except SSL.WantReadError:
			pass
		except SSL.ZeroReturnError:
			self.end = "eof"
		except SSL.SysCallError as e:
			self.end = "eof" if e.args[0] == -1 else "reset"
		except SSL.Error as e:
			self.end = "tls-error(%s)" % e
		while len(self.buf) >= 4:
			n = int.from_bytes(self.buf[:4], "big")
			if len(self.buf) < 4 + n:
				break
			body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
			f = fields(body)
			num = min(f) if f else 0
			self.frames.append(NAMES.get(num, str(num)))
			if num == 14:
				self.token = fields(f[14][0]).get(14, [None])[0]
			if num == 10:
				self.token = fields(f[10][0]).get(4, [None])[0]
			if num == 13:
				e = fields(f[13][0])
				self.errors.append("%d:%s" % (e.get(1, [0])[0],
				    e.get(2, [b""])[0].decode(errors="replace")))

	def wait(self, what, timeout=10):
		"""Reads until a frame named what, the end, or timeout."""
		deadline = time.time() + timeout
		while not self.end and what not in self.frames and \
		    time.time() < deadline:
			self.pump(deadline - time.time())

	def close(self):
		try:
			self.conn.shutdown()
		except (SSL.Error, OSError):
			pass
		self.sock.close()

def blockdata(i):
	return hashlib.sha256(b"protocol %d" % i).digest() * (BS // 32)

def joined(cert=cert, key=key):
	"""Another connection, after Hello, joined to c's job."""
	j = Client(cert, key)
	j.wait("hello")
	j.send(HELLO + join(c.token))
	return j

c = Client()
c.wait("hello")
c.send(HELLO)
name = "hostile-" + case
d0 = blockdata(0)
hung_up = False
report = c		# whose frames and errors are printed

if case == "control":			# the well-formed sequence, then bye
	name = "proto-ok"
	c.send(begin(name))
	for i in (0, 1, 3):		# block 2 stays a zero block
		c.send(c.block(i, blockdata(i)))
	c.send(end(3, zero=1))
	c.wait("committed", 30)
	with open(image_out, "wb") as f:
		for i in range(BLOCKS):
			f.write(bytes(BS) if i == 2 else blockdata(i))
	c.close()
	hung_up = True
elif case == "two-connections":	# a well-formed job on two connections
	name = "proto-two"
	c.send(begin(name, connections=2))
	c.wait("base_index")
	j = joined()
	c.send(c.block(0, blockdata(0)) + c.block(1, blockdata(1)))
	j.send(j.block(3, blockdata(3)) + end(1))
	c.send(end(3, zero=1, joined=1))
	c.wait("committed", 30)
	with open(image_out, "wb") as f:
		for i in range(BLOCKS):
			f.write(bytes(BS) if i == 2 else blockdata(i))
	c.close()
	j.close()
	hung_up = True
elif case.startswith("restore-"):	# proto-ok on two connections
	c.send(frame(9, lfield(1, b"proto-ok") + vfield(7, 2)))
	c.wait("restore_begin")
	if c.token is None:
		sys.exit("no job token in the RestoreBegin")
	if case == "restore-waits-for-joined":
		c.pump(1)		# nothing may come before Joined
		before = ",".join(c.frames)
		c.send(frame(21, vfield(1, 0)))	# Joined: none after all
		c.wait("restore_end", 10)
		c.pump(0.5)
		c.frames.insert(0, "before-joined:" + before + ";")
		c.close()
		hung_up = True
	elif case == "restore-joined-too-many":
		c.send(frame(21, vfield(1, 5)))
	else:
		sys.exit("unknown case " + case)
elif case == "join-unknown-token":
	c.send(join(os.urandom(32)))
elif case == "join-short-token":
	c.send(join(b"short"))
elif case.startswith("join-"):		# c opens a job on two connections
	c.send(begin(name, connections=2))
	c.wait("base_index")
	if c.token is None:
		sys.exit("no job token in the BaseIndex")
	if case == "join-other-tenant":	# a globex connection with acme's token
		report = joined(os.environ["PROTO_OTHER"] + ".crt",
		    os.environ["PROTO_OTHER"] + ".key")
	elif case == "join-third":	# two asked for, a third joins
		j = joined()
		j.pump(0.5)
		report = joined()
	elif case == "join-end-wrong-count":
		j = joined()
		report = j
		j.send(j.block(0, d0) + end(2))
	elif case == "join-then-lost":	# the joined one vanishes: all end
		j = joined()
		j.send(j.block(1, blockdata(1)))
		j.pump(0.5)
		j.sock.close()
	else:
		sys.exit("unknown case " + case)
elif case == "source-side-unlisted-key":	# sealed under a key not sent
	listed, used = b"\x11" * 16, b"\x77" * 16
	c.send(frame(2, lfield(1, name.encode()) + vfield(2, BLOCKS * BS) +
	    vfield(3, BS) + vfield(4, 3) + vfield(6, 64 << 20)))
	# key id | nonce | ciphertext | tag: opaque to the target
	inner = used + bytes(12) + os.urandom(100) + bytes(16)
	c.send(c.block(0, inner, chunk_id=os.urandom(32), raw_len=BS,
	    encrypted=True))
	key = lfield(1, listed) + vfield(2, 1) + lfield(3, lfield(3, b"kek")) + \
	    lfield(4, os.urandom(60))
	c.send(frame(5, vfield(1, 1) + vfield(2, BLOCKS - 1) +
	    lfield(5, b"a key file") + lfield(6, key)))
elif case == "end-before-begin":
	c.send(end(0))
elif case == "block-before-begin":
	c.send(c.block(0, d0))
elif case == "begin-twice":
	c.send(begin(name) + begin(name))
elif case == "known-id-too-long":	# the rollback check's point id
	c.send(frame(2, lfield(1, name.encode()) +
	    vfield(2, BLOCKS * BS) + vfield(3, BS) + vfield(4, 1) +
	    vfield(6, 64 << 20) + lfield(10, b"x" * 200)))
elif case == "hello-twice":
	c.send(HELLO)
elif case == "index-past-end":
	c.send(begin(name) + c.block(BLOCKS, d0))
elif case == "same-block-twice":
	c.send(begin(name) + c.block(0, d0) + c.block(0, d0))
elif case == "chunk-id-mismatch":	# sealed right, but not that data's id
	c.send(begin(name) + c.block(0, d0,
	    chunk_id=hashlib.sha256(b"other").digest()))
elif case == "wrong-tag":		# a flipped ciphertext bit
	c.send(begin(name) + c.block(0, d0, tamper=True))
elif case == "moved-block":		# sealed for block 1, sent as block 0
	c.send(begin(name) + c.block(0, d0, aad_index=1))
elif case == "wrong-raw-len":
	c.send(begin(name) + c.block(0, d0, raw_len=BS - 1))
elif case == "end-wrong-count":
	c.send(begin(name) + c.block(0, d0) + end(2, zero=3))
elif case == "end-wrong-unchanged":
	c.send(begin(name) + c.block(0, d0) + end(1, zero=3, unchanged=1))
elif case == "unchanged-without-base":
	c.send(begin(name) + c.block(0, d0) + frame(15, lfield(1, varint(1))))
elif case == "truncated-then-close":
	data = begin(name) + c.block(0, d0) + c.block(1, blockdata(1))
	c.send(data[:-1000])
	c.pump(1)
	c.close()
	hung_up = True
elif case == "garbage-in-frame":	# a valid BackupEnd, then junk bytes
	body = lfield(5, vfield(1, 1)) + b"\xff\xff\xff"
	c.send(begin(name) + c.block(0, d0) +
	    len(body).to_bytes(4, "big") + body)
elif case == "garbage-after-frame":	# a valid frame, then a junk one
	c.send(begin(name) + c.block(0, d0) + b"\x00\x00\x00\x08" +
	    os.urandom(8))
elif case == "garbage-after-end":	# a whole backup, then junk
	c.send(begin(name) + b"".join(c.block(i, blockdata(i))
	    for i in range(BLOCKS)) + end(BLOCKS) + b"\x00\x00\x00\x03\xff\xff\xff")
elif case == "zero-length":
	c.send(begin(name) + c.block(0, d0) + b"\x00\x00\x00\x00")
elif case == "oversized-length":
	c.send(begin(name) + c.block(0, d0) + b"\x7f\xff\xff\xff" +
	    b"A" * 4096)
elif case == "index-then-list":	# a request while the ids still go
	c.send(frame(9, lfield(1, b"proto-huge") + vfield(4, 1)) +
	    frame(7, b""))
elif case == "list-invalid-name":	# a name no backup can have
	c.send(frame(7, lfield(1, b"../acme")))
elif case == "index-then-close":	# gone while the ids still go
	c.send(frame(9, lfield(1, b"proto-huge") + vfield(4, 1)))
	c.wait("base_index")
	c.close()
	hung_up = True
elif case.startswith("unchanged-"):	# proto-windows: 5 windows of ids
	WIN, WINDOWS = 32768, 5
	wb = WIN * WINDOWS
	name = "proto-windows"
	c.send(begin(name, blocks=wb, incremental=1))
	deadline = time.time() + 30
	while c.frames.count("base_index") < WINDOWS and not c.end and \
	    time.time() < deadline:
		c.pump(1)
	if case == "unchanged-in-order":
		order = list(range(wb))
	elif case == "unchanged-far-out-of-order":	# the windows in turn
		order = [w * WIN + j for j in range(64) for w in range(WINDOWS)]
	else:
		sys.exit("unknown case " + case)
	for i in range(0, len(order), 16384):
		c.send(frame(15, lfield(1, b"".join(varint(b)
		    for b in order[i:i + 16384]))))
	if case == "unchanged-in-order":
		c.send(end(0, unchanged=wb))
		c.wait("committed", 30)
		c.close()
		hung_up = True
elif case.startswith("resume-"):	# a RestoreRequest that does not fit
	frm, resend = {"resume-from-past-end": (5, []),
	    "resume-resend-unordered": (4, [3, 1]),
	    "resume-resend-zero-block": (4, [2]),
	    "resume-resend-not-below": (1, [1])}[case]
	c.send(frame(9, lfield(1, b"proto-ok") + vfield(5, frm) +
	    (lfield(6, b"".join(varint(i) for i in resend)) if resend else b"")))
else:
	sys.exit("unknown case " + case)

if not hung_up:
	report.wait("error")
	report.pump(0.5)		# and then the close
	if not report.end:
		report.wait("never", 2)
print("end=%s frames=%s errors=%s name=%s" % ("sent" if hung_up else
    report.end or "timeout", ",".join(report.frames),
    "|".join(report.errors), name))
EOF

# proto CASE [ARGS]: run a case; its verdict in $LAST_OUT.  A case
# with a connection of tenant globex uses PROTO_OTHER's .crt and .key.
export PROTO_OTHER=$PKI/globex
proto() {
	run timeout 60 "$PY" "$T/proto.py" 127.0.0.1 "$TARGET_PORT" \
	    "$PKI/ca.crt" "$PKI/acme.crt" "$PKI/acme.key" "$@"
	echo "# $1: $(cat "$LAST")"
}

# names: every backup name acme's list shows, one a line
names() {
	src list --json 2>/dev/null | "$PY" -c '
import json, sys
for p in json.load(sys.stdin):
	print(p["name"])'
}

proto control "$T/control.img"
if grep -q 'frames=hello.*committed' "$LAST_OUT"; then
	ok "control: a well-formed backup from the raw client commits"
else
	not_ok "control: a well-formed backup from the raw client commits" \
	    "$(cat "$LAST")"
	diag "$TARGET_LOG"
	bail "the raw client does not speak the protocol; nothing below means anything"
fi
check "control: it restores" src restore --name proto-ok --output "$T/control.out"
same "control: byte-identical to what the raw client sent" \
    "$T/control.img" "$T/control.out"

# refused CASE CODE WHAT: the target answers CASE with an Error of CODE
# (1 PROTOCOL, 7 INTEGRITY; - when the client hangs up first) or at
# least closes, stays up, and lists no point of it
refused() {
	local name=$1 code=$2 what=$3
	log_mark
	proto "$name"
	if [ "$RC" -ne 0 ]; then
		not_ok "$what: the raw client ran" "$(cat "$LAST")"
	elif [ "$code" = - ]; then
		ok "$what: the client hung up"
	elif grep -q 'errors=[0-9]' "$LAST_OUT"; then
		if grep -q "errors=$code:" "$LAST_OUT"; then
			ok "$what: Error frame, code $code"
		else
			not_ok "$what: Error frame, code $code" "$(cat "$LAST_OUT")"
		fi
	elif grep -Eq '^end=(eof|reset)' "$LAST_OUT"; then
		ok "$what: closed (no Error frame)"
	else
		not_ok "$what: Error frame or close" "$(cat "$LAST_OUT")"
	fi
	if ! target_alive; then
		not_ok "$what: target still running"
		diag "$TARGET_LOG"
		bail "the target died"
	fi
	if names | grep -qx "hostile-$name"; then
		not_ok "$what: no restore point listed" "hostile-$name is listed"
	else
		ok "$what: target up, no restore point listed"
	fi
}

# A job on two connections from the raw client, then the joins the
# target must refuse (code 1) and a lost one, which ends the whole job
# (the first connection is told ABORTED, 12, and may resume).
proto two-connections "$T/two.img"
if grep -q 'frames=hello.*committed' "$LAST_OUT"; then
	ok "two connections: a job carried by two connections commits"
else
	not_ok "two connections: a job carried by two connections commits" \
	    "$(cat "$LAST")"
fi
check "two connections: it restores" src restore --name proto-two --output "$T/two.out"
same "two connections: byte-identical to what both carried" \
    "$T/two.img" "$T/two.out"
refused join-unknown-token 1 "JoinJob with a token no job has"
refused join-short-token 1 "JoinJob with a short token"
refused join-other-tenant 1 "JoinJob with another tenant's job token"
refused join-third 1 "a third connection joining a job that asked for two"
refused join-end-wrong-count 1 "a joined connection's BackupEnd miscounting its blocks"
refused join-then-lost 12 "a joined connection lost mid-job"
refused restore-joined-too-many 1 "a restore's Joined counting more connections than asked for"
proto restore-waits-for-joined
if grep -q 'frames=before-joined:hello,restore_begin;,hello,restore_begin,block,block,block,restore_end' "$LAST_OUT"; then
	ok "a restore on two connections sends no block before Joined, then all of them"
else
	not_ok "a restore on two connections sends no block before Joined, then all of them" \
	    "$(cat "$LAST_OUT")"
fi

refused end-before-begin 1 "BackupEnd before BackupBegin"
refused block-before-begin 1 "a Block before BackupBegin"
refused begin-twice 1 "a second BackupBegin in a backup"
refused hello-twice 1 "a second Hello"
refused known-id-too-long 1 "a BackupBegin naming a 200-byte known point id"
refused index-past-end 1 "a Block past the end of the disk"
refused same-block-twice 1 "the same block twice"
refused chunk-id-mismatch 7 "a Block whose chunk id does not match"
refused wrong-tag 7 "a Block with a wrong tag (tampered payload)"
refused moved-block 7 "a Block sealed for another index"
refused wrong-raw-len 1 "a Block with a wrong raw length"
refused end-wrong-count 1 "a BackupEnd with a wrong block count"
refused end-wrong-unchanged 1 "a BackupEnd with a wrong unchanged count"
refused source-side-unlisted-key 10 "a source-side chunk sealed under a key BackupEnd does not send"
refused unchanged-without-base 1 "Unchanged in a full backup"
refused truncated-then-close - "a truncated frame, then close"
refused garbage-in-frame 1 "garbage after a valid message in a frame"
refused garbage-after-frame 1 "a garbage frame after valid ones"
refused zero-length 1 "a zero-length frame"
refused oversized-length 1 "an oversized length prefix"
# A point whose chunk ids (8 MiB) go out in pieces as the output drains:
# a request before the last piece is refused, not interleaved with them.
truncate -s 256G "$T/huge.img"
printf 'data' | dd of="$T/huge.img" bs=1M seek=100 conv=notrunc status=none
check "a 256 GiB sparse disk backs up" src backup --disk "$T/huge.img" \
    --name proto-huge
refused index-then-list 1 "a ListRequest while a point's chunk ids are still being sent"
refused list-invalid-name 1 "a ListRequest for an invalid name"
expect_grep "backup name '../acme' is not valid" "$LAST_OUT" "and the Error names it"
refused index-then-close - "a hang-up while a point's chunk ids are still being sent"

# An incremental's base is read a window (32768 chunk ids) at a time, a
# few windows held: Unchanged in order commits; Unchanged cycling through
# more windows than that, each one read again, is refused rather than
# served at a window read per block on the loop every session shares.
truncate -s 10G "$T/win.img"
printf 'data' | dd of="$T/win.img" bs=64K seek=100 conv=notrunc status=none
source_conf "$T/s64.conf" acme "block_size = 64K"
SRC_CONF=$T/s64.conf check "a 10 GiB sparse disk in 64 KiB blocks backs up" \
    src backup --disk "$T/win.img" --name proto-windows
proto unchanged-in-order
if grep -q 'frames=.*committed' "$LAST_OUT"; then
	ok "Unchanged for every block of five windows, in order: committed"
else
	not_ok "Unchanged for every block of five windows, in order: committed" \
	    "$(cat "$LAST_OUT")"
fi
refused unchanged-far-out-of-order 1 "Unchanged cycling through five windows of the base"
expect_grep 'far out of order' "$LAST_OUT" "and the Error says so"
SRC_CONF=$T/s64.conf check "the incremental of Unchanged in order restores" \
    src restore --name proto-windows --output "$T/win.out"
if [ "$(stat -c %s "$T/win.out" 2>/dev/null)" = "$(stat -c %s "$T/win.img")" ] &&
    cmp -s -n $((128 << 20)) "$T/win.img" "$T/win.out" &&
    [ "$(allocated_kib "$T/win.out")" -lt 1024 ]; then
	ok "and it is the disk backed up (size, data, the rest holes)"
else
	not_ok "and it is the disk backed up (size, data, the rest holes)"
fi
refused resume-from-past-end 1 "a restore resumed past the end of the point"
refused resume-resend-unordered 1 "a restore resume's blocks out of order"
refused resume-resend-zero-block 1 "a restore resume asking for a zero block"
refused resume-resend-not-below 1 "a restore resume's block not below its start"

# A whole backup followed by junk: the junk is refused; the point may
# have been committed before it was read, but then it must be whole.
log_mark
proto garbage-after-end
if grep -q 'errors=1:' "$LAST_OUT" || grep -Eq '^end=(eof|reset)' "$LAST_OUT"; then
	ok "garbage after a whole backup: refused"
else
	not_ok "garbage after a whole backup: refused" "$(cat "$LAST_OUT")"
fi
if names | grep -qx hostile-garbage-after-end; then
	check "garbage after a whole backup: the listed point restores" \
	    src restore --name hostile-garbage-after-end --output "$T/gae.out"
	"$PY" -c '
import hashlib, sys
BS = 64 << 10
d = b"".join(hashlib.sha256(b"protocol %d" % i).digest() * (BS // 32)
    for i in range(4))
sys.exit(open(sys.argv[1], "rb").read() != d)' "$T/gae.out" &&
	    ok "garbage after a whole backup: and it is whole" ||
	    not_ok "garbage after a whole backup: and it is whole"
else
	ok "garbage after a whole backup: no point listed"
fi

if target_alive; then
	ok "target still running after every hostile sequence"
else
	not_ok "target still running after every hostile sequence"
	diag "$TARGET_LOG"
fi
check "a normal backup by source-transporter still works" \
    src backup --disk "$T/small.img" --name small
check "and restores" src restore --name small --output "$T/small.out"
same "restored image is byte-identical" "$T/small.img" "$T/small.out"

finish
