#!/usr/bin/python3
"""A hostile KMS for tests: completes a real mutual-TLS handshake, reads
one KMIP request, then answers as MODE says.

    evil-kms.py PORT CERT KEY CA MODE READYFILE

MODE:
  huge     a Response Message header claiming 2 GiB
  badlen   a 64-byte message whose first child claims to run past it
  badpad   a well-formed message but for non-zero padding
  fail     a well-formed Operation Failed, its message holding a newline
  silent   reads the request and never answers
  garbage  64 bytes that are no TTLV at all

Writes READYFILE once listening; serves until killed.
"""
import socket
import ssl
import struct
import sys
import time


def item(tag, typ, value):
    pad = (8 - len(value) % 8) % 8
    return struct.pack(">I", tag)[1:] + bytes([typ]) + \
        struct.pack(">I", len(value)) + value + b"\0" * pad


def st(tag, *children):
    return item(tag, 0x01, b"".join(children))


def integer(tag, v):
    return item(tag, 0x02, struct.pack(">i", v))


def enum(tag, v):
    return item(tag, 0x05, struct.pack(">I", v))


def text(tag, s):
    return item(tag, 0x07, s.encode())


def response(op):
    header = st(0x42007A,
                st(0x420069, integer(0x42006A, 1), integer(0x42006B, 2)),
                item(0x420092, 0x09, struct.pack(">q", int(time.time()))),
                integer(0x42000D, 1))
    batch = st(0x42000F,
               enum(0x42005C, op),
               enum(0x42007F, 1),
               enum(0x42007E, 0x0C),
               text(0x42007D, "evil\nmessage"))
    return st(0x42007B, header, batch)


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def answer(conn, mode):
    hdr = recv_exact(conn, 8)
    body = recv_exact(conn, struct.unpack(">I", hdr[4:])[0])
    # The operation of the request, to echo it (Operation is in the
    # Batch Item; find its tag).
    i = body.find(bytes.fromhex("42005c05"))
    op = struct.unpack(">I", body[i + 8:i + 12])[0] if i >= 0 else 8
    if mode == "huge":
        conn.sendall(bytes.fromhex("42007b0180000000") + b"\0" * 64)
    elif mode == "badlen":
        conn.sendall(bytes.fromhex("42007b0100000038") +
                     bytes.fromhex("42007a0100000100") + b"\0" * 48)
    elif mode == "badpad":
        msg = bytearray(response(op))
        # The Result Message is last: its padding is the last bytes.
        msg[-1] = 0x55
        conn.sendall(bytes(msg))
    elif mode == "fail":
        conn.sendall(response(op))
    elif mode == "silent":
        time.sleep(3600)
    else:
        conn.sendall(b"\xde\xad\xbe\xef" * 16)


def main():
    port, cert, key, ca, mode, ready = sys.argv[1:7]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(port)))
    srv.listen(8)
    with open(ready, "w") as f:
        f.write("ready\n")
    while True:
        raw, _ = srv.accept()
        try:
            with ctx.wrap_socket(raw, server_side=True) as conn:
                answer(conn, mode)
                time.sleep(0.5)
        except (OSError, EOFError, ssl.SSLError):
            pass


if __name__ == "__main__":
    main()
