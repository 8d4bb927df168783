# pbwire.py: the protobuf wire format and the frame length prefix, by
# hand, for the test peers (rawpeer.py, faketarget.py): enough to pack
# and read the few messages they speak, without generated code.


def varint(n):
	out = b""
	while True:
		b = n & 0x7f
		n >>= 7
		if n:
			out += bytes([b | 0x80])
		else:
			return out + bytes([b])


def field(num, payload):		# a length-delimited field
	if isinstance(payload, str):
		payload = payload.encode()
	return varint(num << 3 | 2) + varint(len(payload)) + payload


def vfield(num, n):			# a varint field
	return varint(num << 3) + varint(n)


def frame(body):
	return len(body).to_bytes(4, "big") + body


def read_varint(b, i):
	n = shift = 0
	while True:
		n |= (b[i] & 0x7f) << shift
		shift += 7
		i += 1
		if not b[i - 1] & 0x80:
			return n, i


def fields(b):
	"""{number: value} of a message's varint and length-delimited
	fields (the last of each number)."""
	out, i = {}, 0
	while i < len(b):
		tag, i = read_varint(b, i)
		if tag & 7 == 0:
			out[tag >> 3], i = read_varint(b, i)
		elif tag & 7 == 2:
			n, i = read_varint(b, i)
			out[tag >> 3] = b[i:i + n]
			i += n
		else:
			break
	return out
