#!/usr/bin/env python3
"""fillkeys.py FILE N: pads a TRKC key file (keys.h, keychain_pack) to N
keys with copies of its first key under made-up key ids, put right after
it, so that a test can reach the key file's limit without N backups.
The copies do not unwrap (the key id is in the wrap's AAD); nothing may
need them, which is what prune is meant to find out."""
import hashlib
import struct
import sys


def varint(v):
    out = b""
    while True:
        out += bytes([(v & 0x7F) | (0x80 if v > 0x7F else 0)])
        v >>= 7
        if not v:
            return out


def fields(pb):
    """(tag byte, whole field bytes, payload) of each top-level field."""
    i = 0
    while i < len(pb):
        start, tag = i, pb[i]
        i += 1
        if tag & 7 == 0:                # varint
            while pb[i] & 0x80:
                i += 1
            i += 1
            yield tag, pb[start:i], None
            continue
        assert tag & 7 == 2, "unexpected wire type"
        ln = shift = 0
        while True:
            c = pb[i]
            i += 1
            ln |= (c & 0x7F) << shift
            shift += 7
            if not c & 0x80:
                break
        yield tag, pb[start:i + ln], pb[i:i + ln]
        i += ln


def main():
    path, want = sys.argv[1], int(sys.argv[2])
    b = open(path, "rb").read()
    assert b[:4] == b"TRKC", "not a key file"
    n = struct.unpack(">I", b[4:8])[0]
    head, keys = b"", []
    for tag, whole, payload in fields(b[8:8 + n]):
        if tag == 0x1A:                 # KeyChain.keys
            keys.append(payload)
        else:
            head += whole
    first = keys[0]
    assert first[:2] == b"\x0a\x10", "key_id is not the first field"
    fake = [first[:2] + hashlib.md5(b"fake %d" % k).digest() + first[18:]
            for k in range(want - len(keys))]
    body = head + b"".join(b"\x1a" + varint(len(k)) + k
                           for k in keys[:1] + fake + keys[1:])
    f = b"TRKC" + struct.pack(">I", len(body)) + body
    open(path, "wb").write(f + hashlib.sha256(f).digest())


if __name__ == "__main__":
    main()
