#!/usr/bin/env python3
"""fillkeys.py FILE N: pads a TRKC key file (keys.h, keychain_pack) to N
keys with copies of its first key under made-up key ids, put right after
it, so that a test can reach the key file's limit without N backups.
The copies do not unwrap (the key id is in the wrap's AAD); nothing may
need them, which is what prune is meant to find out."""
import hashlib
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pbwire import field, read_varint, vfield  # noqa: E402


def main():
    path, want = sys.argv[1], int(sys.argv[2])
    b = open(path, "rb").read()
    assert b[:4] == b"TRKC", "not a key file"
    pb = b[8:8 + struct.unpack(">I", b[4:8])[0]]
    fmt, name, keys, i = 0, b"", [], 0
    while i < len(pb):          # KeyChain: format 1, name 2, keys 3
        tag, i = read_varint(pb, i)
        if tag == 1 << 3:
            fmt, i = read_varint(pb, i)
            continue
        n, i = read_varint(pb, i)
        if tag == 2 << 3 | 2:
            name = pb[i:i + n]
        elif tag == 3 << 3 | 2:
            keys.append(pb[i:i + n])
        i += n
    first = keys[0]
    assert first[:2] == b"\x0a\x10", "key_id is not the first field"
    fake = [first[:2] + hashlib.md5(b"fake %d" % k).digest() + first[18:]
            for k in range(want - len(keys))]
    body = vfield(1, fmt) + field(2, name) + b"".join(
        field(3, k) for k in keys[:1] + fake + keys[1:])
    f = b"TRKC" + struct.pack(">I", len(body)) + body
    open(path, "wb").write(f + hashlib.sha256(f).digest())


if __name__ == "__main__":
    main()
