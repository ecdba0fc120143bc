#!/usr/bin/env python3
"""Interop client for wsloop, built on the `websockets` package (asyncio API).

Usage: python_client.py ws://127.0.0.1:PORT/ [--deflate]

Runs a fixed list of checks against an ECHO server, printing `ok <name>` for each,
and exits 0 only if all passed. The first failure prints `FAIL <name>: <why>` and
exits 1. Every await has a timeout and the whole run a deadline, so it can never hang.
With --deflate it offers permessage-deflate and asserts the server accepted it;
without it, it offers no extension at all.
"""

import asyncio
import os
import sys

try:
    from websockets.asyncio.client import connect
except ImportError as e:
    sys.exit(f"python_client.py needs websockets>=14 ({e}); tests/run.sh installs it in tests/interop/.venv")

TIMEOUT = 10.0  # seconds, for every single await
DEADLINE = 60.0  # seconds, for the whole run
MIB = 1 << 20


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def describe(data):
    """Short description of a payload for error messages."""
    kind = "text" if isinstance(data, str) else "binary"
    head = data[:40]
    return f"{kind} len={len(data)} head={head!r}"


async def within(awaitable, what):
    try:
        return await asyncio.wait_for(awaitable, TIMEOUT)
    except asyncio.TimeoutError:
        raise CheckFailed(f"timed out after {TIMEOUT:g}s waiting for {what}") from None


async def echo(ws, message):
    """Send one message (a str/bytes, or a list of fragments) and return the reply."""
    await within(ws.send(message), "send")
    return await within(ws.recv(), "echo")


def expect_equal(got, want):
    expect(type(got) is type(want), f"wrong message type: sent {describe(want)}, got {describe(got)}")
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise CheckFailed(f"echo differs at index {at}: sent {describe(want)}, got {describe(got)}")


async def check_text(ws):
    for msg in ["hello", "héllo ✓ 🎉", ""]:
        expect_equal(await echo(ws, msg), msg)


async def check_binary(ws):
    msg = bytes(range(256))
    expect_equal(await echo(ws, msg), msg)


async def check_large_binary(ws):
    msg = os.urandom(MIB)
    expect_equal(await echo(ws, msg), msg)


async def check_large_text(ws):
    msg = "héllo ✓ 🎉 " * (MIB // 16)  # 16 UTF-8 bytes per repetition: exactly 1 MiB
    assert len(msg.encode()) == MIB
    expect_equal(await echo(ws, msg), msg)


async def check_fragmented(ws):
    # A list is sent as one message in several frames (first frame + continuations).
    text = ["frag", "mented ", "héllo ✓ ", "🎉"]
    expect_equal(await echo(ws, text), "".join(text))
    binary = [b"\x00\x01", bytes(range(2, 200)), b"\xfe\xff"]
    expect_equal(await echo(ws, binary), b"".join(binary))


async def check_ping(ws):
    payload = b"ping-payload-\x00\xff"
    pong_waiter = await within(ws.ping(payload), "sending ping")
    # websockets resolves this waiter only on a pong carrying the same payload.
    await within(pong_waiter, "pong with the ping's payload")


async def check_pipelined(ws):
    n = 1000
    for i in range(n):
        await within(ws.send(f"msg {i}"), f"send #{i}")
    for i in range(n):
        got = await within(ws.recv(), f"echo #{i} of {n}")
        expect(got == f"msg {i}", f"pipelined echo #{i} out of order or wrong: got {got!r}")


async def check_close(ws):
    try:
        await asyncio.wait_for(ws.close(1000, "bye"), 5.0)
    except asyncio.TimeoutError:
        raise CheckFailed("close handshake not finished within 5s "
                          "(server sent no Close frame or did not close the TCP connection)") from None
    expect(ws.protocol.close_rcvd is not None,
           f"no Close frame received from the server (close_code={ws.close_code})")
    expect(ws.close_code == 1000,
           f"server answered close with code {ws.close_code} reason {ws.close_reason!r}, expected 1000")


CHECKS = [
    ("text echo", check_text),
    ("binary echo", check_binary),
    ("1 MiB binary echo", check_large_binary),
    ("1 MiB text echo", check_large_text),
    ("fragmented message", check_fragmented),
    ("ping/pong", check_ping),
    ("1000 pipelined messages", check_pipelined),
    ("clean close", check_close),
]


async def main(url, deflate):
    passed = 0
    name = "connect"
    try:
        ws = await within(
            connect(url, compression="deflate" if deflate else None,
                    max_size=16 * MIB, open_timeout=TIMEOUT, close_timeout=TIMEOUT),
            "the opening handshake",
        )
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        name = "negotiation"
        if deflate:
            expect("permessage-deflate" in extensions,
                   f"server did not accept permessage-deflate (Sec-WebSocket-Extensions: {extensions!r})")
        else:
            expect(not extensions, f"server sent extensions nobody offered: {extensions!r}")
        print(f"ok connect (extensions: {extensions or 'none'})", flush=True)
        passed += 1
        for name, check in CHECKS:
            await check(ws)
            print(f"ok {name}", flush=True)
            passed += 1
    except Exception as e:  # any failure (assertion, protocol error, closed connection) fails the run
        reason = str(e) if isinstance(e, CheckFailed) else f"{type(e).__name__}: {e}"
        print(f"FAIL {name}: {reason}", flush=True)
        print(f"python interop: {passed} passed, 1 failed", flush=True)
        return 1
    print(f"python interop: {passed} passed", flush=True)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    deflate = "--deflate" in args
    urls = [a for a in args if a != "--deflate"]
    if len(urls) != 1 or not urls[0].startswith(("ws://", "wss://")):
        print("usage: python_client.py ws://127.0.0.1:PORT/ [--deflate]", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(asyncio.run(asyncio.wait_for(main(urls[0], deflate), DEADLINE)))
    except asyncio.TimeoutError:
        print(f"FAIL deadline: the whole run took over {DEADLINE:g}s", flush=True)
        sys.exit(1)
