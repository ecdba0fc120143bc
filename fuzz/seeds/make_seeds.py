#!/usr/bin/env python3
"""Writes the seed inputs of each fuzz target into fuzz/seeds/<target>/ (run.sh reads them
beside the committed corpus, fuzz/corpus/<target>/). The byte layouts are documented in
src/harness.rs."""
import os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
GOOD = (b"GET /chat?token=abc&x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nOrigin: https://example.com\r\n"
        b"Cookie: a=1; session=s3cr3t\r\nSec-WebSocket-Protocol: chat, superchat\r\n")
DEFLATE = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def masked(b0, payload, key=b"\x37\xfa\x21\x3d"):
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


HELLO_DEFLATED = bytes([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# handshake: u16 limit, split count + sizes, the request
write("handshake", "good", b"\xff\x1f\x00" + GOOD + b"\r\n")
write("handshake", "deflate", b"\xff\x1f\x02\x05\x11" + GOOD + DEFLATE + b"\r\n")
write("handshake", "bad_version", b"\xff\x1f\x00" + GOOD.replace(b"13", b"8") + b"\r\n")
write("handshake", "plain_get", b"\x00\x10\x00GET / HTTP/1.1\r\nHost: x\r\n\r\n")

# decoder: flags, u16 limit, split count + sizes, the stream
frames = (masked(0x81, b"Hello") + masked(0x01, b"He") + masked(0x89, b"ping")
          + masked(0x80, b"llo") + masked(0x82, bytes(200)) + masked(0x88, b"\x03\xe8bye"))
write("decoder", "plain", b"\x00\xff\xff\x02\x03\x07" + frames)
write("decoder", "deflate", b"\x01\xff\xff\x00" + masked(0xc1, HELLO_DEFLATED)
      + masked(0x41, HELLO_DEFLATED[:3]) + masked(0x80, HELLO_DEFLATED[3:]))
write("decoder", "records", b"\x15\x00\x04\x01\x05" + b"\xc1\x05Hello\x81\x03abc\x89\x00\x88\x02\x03\xe8")
write("decoder", "client", b"\x08\xff\xff\x00" + bytes([0x81, 5]) + b"Hello")

# roundtrip: flags, u16 limit, tuning, split count + sizes, messages
write("roundtrip", "plain", b"\x00\x00\x10\x00\x01\x09" + b"\x03\x05\x00hello\x02\x00\x03\x00" + b"\x20\x03\x00abc\x04ping")
write("roundtrip", "deflate", b"\x03\x00\x10\x0f\x00" + b"\x15\x20\x00" + b"a" * 32 + b"\x10\x00\x94\x08\x00xyzw\x10\x00")
write("roundtrip", "client", b"\x09\x00\x40\x17\x00" + b"\xd3\x10\x00\x05" + b"0123456789abcdef" + b"\x05\x00\x09\x00")

# server: flags, then what the client sends after the optional upgrade request
write("server", "echo", b"\x01" + masked(0x81, b"Hello") + masked(0x88, b"\x03\xe8"))
write("server", "deflate", b"\x03" + masked(0xc1, HELLO_DEFLATED) + masked(0x81, b"!big"))
write("server", "records", b"\x05" + b"\x81\x04!all\x89\x01p\x81\x04!sub\x81\x04!pub\x01\x01x\x80\x01y")
write("server", "raw_request", b"\x08" + GOOD + b"\r\n" + masked(0x81, b"!close"))
write("server", "reject", b"\x81" + masked(0x81, b"x"))

# connection: flags, knobs, u16 limit, split count + sizes, what the client sends after the
# optional upgrade request (our client Connection's)
talk = (masked(0x81, b"Hello") + masked(0x89, b"ping") + masked(0x01, b"He")
        + masked(0x8a, b"pong") + masked(0x80, b"llo") + masked(0x88, b"\x03\xe8bye"))
write("connection", "echo", b"\x21\x00\xff\xff\x03\x01\x07\x00" + talk)
write("connection", "deflate", b"\x2b\x00\xff\xff\x00" + masked(0xc1, HELLO_DEFLATED)
      + masked(0x41, HELLO_DEFLATED[:3]) + masked(0x80, HELLO_DEFLATED[3:]))
write("connection", "records", b"\x25\x01\x00\x01\x02\x05\x11"
      + b"\xc1\x05Hello\x81\x03abc\x89\x00\x82\xfe\x00\x08" + bytes(2048) + b"\x88\x02\x03\xe8")
write("connection", "overflow", b"\x21\x03\xff\x0f\x00" + masked(0x82, bytes(3000)) + masked(0x81, b"after"))
write("connection", "refuse", b"\x51\x00\xff\xff\x00" + masked(0x81, b"x"))
write("connection", "raw_request", b"\x28\x00\xff\xff\x01\x10" + GOOD + DEFLATE + b"\r\n" + talk)
