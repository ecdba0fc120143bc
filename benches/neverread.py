"""Clients that upgrade and then send without ever reading, reconnecting when closed.

    python3 benches/neverread.py HOST PORT CONNS SECONDS [data|pong]

`data`: 64 KiB binary frames (each echo the server makes fills its queue for this client);
`pong`: pings of 125 bytes, whose pongs are never read. Prints how much was sent.
"""

import socket
import struct
import sys
import threading
import time

host, port, conns, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
mode = sys.argv[5] if len(sys.argv) > 5 else "data"
REQUEST = (
    "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()


def frame(opcode, payload):
    """One final, masked frame."""
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


CHUNK = frame(0x9, b"p" * 125) * 512 if mode == "pong" else frame(0x2, b"\x5a" * 65536)
sent = [0] * conns


def connect():
    s = socket.create_connection((host, port))
    s.sendall(REQUEST)
    s.settimeout(0.2)
    return s


def attack(i):
    s = connect()
    end = time.time() + secs
    while time.time() < end:
        try:
            sent[i] += s.send(CHUNK)
        except (socket.timeout, BlockingIOError):
            pass
        except OSError:
            # Closed by the server: come back, as a persistent attacker would.
            try:
                s.close()
                s = connect()
            except OSError:
                time.sleep(0.05)


threads = [threading.Thread(target=attack, args=(i,)) for i in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"attack: {conns} never-readers ({mode}) sent {sum(sent) / 1e6:.1f} MB in {secs:g} s")
