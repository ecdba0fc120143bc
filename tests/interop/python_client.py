#!/usr/bin/env python3
"""Interop client for wsloop, built on the `websockets` package (asyncio API).

Usage: python_client.py ws://127.0.0.1:PORT/ [--deflate | --deflate=PARAMS]

Runs a fixed list of checks against an ECHO server, printing `ok <name>` for each,
and exits 0 only if all passed. The first failure prints `FAIL <name>: <why>` and
exits 1. Every await has a timeout and the whole run a deadline, so it can never hang.
With --deflate it offers permessage-deflate (websockets' default offer) and asserts the
server accepted it; without it, it offers no extension at all.

--deflate=PARAMS offers permessage-deflate with exactly the parameters in PARAMS, a
comma-separated list (empty: no parameter at all) of
    server_no_context_takeover   client_no_context_takeover
    no_context_takeover          (both of the above)
    server_max_window_bits=N     client_max_window_bits[=N]
e.g. --deflate=client_max_window_bits=9,no_context_takeover. It checks that the answer
honours them, and adds one check: text and binary echoes of every size from 1 byte to
1 MiB (compressible and not), all compressed.
"""

import asyncio
import os
import ssl
import sys

try:
    from websockets.asyncio.client import connect
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
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


# Message sizes for the size sweep: around every frame-length and threshold boundary.
SIZES = [1, 2, 63, 64, 65, 125, 126, 127, 1000, 4095, 4096, 65535, 65536, 65537, 100_000, 500_000, MIB]


def text_of(size):
    """Valid UTF-8 text of exactly `size` bytes, multi-byte characters included."""
    unit = "héllo ✓ 🎉 "  # 16 bytes
    text = unit * (size // 16) + "x" * (size % 16)
    assert len(text.encode()) == size
    return text


async def check_sizes(ws):
    for size in SIZES:
        for msg in [text_of(size), os.urandom(size), bytes(i % 7 for i in range(size))]:
            expect_equal(await echo(ws, msg), msg)


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


def parse_deflate_params(spec):
    """The offer's parameters from `--deflate=PARAMS`, as a dict; exits 2 if malformed."""
    params = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, eq, value = item.partition("=")
        if key == "no_context_takeover" and not eq:
            params["server_no_context_takeover"] = params["client_no_context_takeover"] = True
        elif key in ("server_no_context_takeover", "client_no_context_takeover") and not eq:
            params[key] = True
        elif key == "client_max_window_bits" and not eq:
            params[key] = True
        elif key in ("server_max_window_bits", "client_max_window_bits") and value.isdigit() \
                and 8 <= int(value) <= 15:
            params[key] = int(value)
        else:
            print(f"python_client.py: bad --deflate parameter {item!r}", file=sys.stderr)
            sys.exit(2)
    return params


def answer_params(extensions):
    """The parameters of a `permessage-deflate` answer, as a dict (True for no value)."""
    parts = [p.strip() for p in extensions.split(";")]
    expect(len(parts) > 0 and parts[0] == "permessage-deflate" and "," not in extensions,
           f"expected one permessage-deflate answer, got {extensions!r}")
    params = {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        params[key.strip()] = int(value.strip().strip('"')) if eq else True
    return params


def check_answer(offered, extensions):
    """The server's answer honours what was offered (RFC 7692 7.1)."""
    got = answer_params(extensions)
    if offered.get("server_no_context_takeover"):
        expect(got.get("server_no_context_takeover") is True,
               f"offered server_no_context_takeover, answer lacks it: {extensions!r}")
    if "server_max_window_bits" in offered:
        bits = got.get("server_max_window_bits")
        expect(isinstance(bits, int) and bits <= offered["server_max_window_bits"],
               f"offered server_max_window_bits={offered['server_max_window_bits']}, answer: {extensions!r}")
    if "client_max_window_bits" in got:
        expect("client_max_window_bits" in offered,
               f"answer names client_max_window_bits, which was not offered: {extensions!r}")
        if offered["client_max_window_bits"] is not True:
            expect(got["client_max_window_bits"] <= offered["client_max_window_bits"],
                   f"answer's client_max_window_bits above the offer: {extensions!r}")


async def main(url, deflate, params=None, cafile=None):
    """`params`: the explicit offer of --deflate=PARAMS (then `deflate` is true too);
    `cafile`: the CA to trust for a wss:// URL (--cafile=PEM)."""
    passed = 0
    name = "connect"
    if params is not None:
        factory = ClientPerMessageDeflateFactory(
            server_no_context_takeover=params.get("server_no_context_takeover", False),
            client_no_context_takeover=params.get("client_no_context_takeover", False),
            server_max_window_bits=params.get("server_max_window_bits"),
            client_max_window_bits=params.get("client_max_window_bits"),
        )
        options = {"compression": None, "extensions": [factory]}
    else:
        options = {"compression": "deflate" if deflate else None}
    if cafile is not None:
        options["ssl"] = ssl.create_default_context(cafile=cafile)
    checks = list(CHECKS)
    if params is not None:  # the sweep goes before the last check, the close
        checks.insert(len(checks) - 1, ("text and binary, 1 B to 1 MiB", check_sizes))
    try:
        ws = await within(
            connect(url, max_size=16 * MIB, open_timeout=TIMEOUT, close_timeout=TIMEOUT, **options),
            "the opening handshake",
        )
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        name = "negotiation"
        if deflate:
            expect("permessage-deflate" in extensions,
                   f"server did not accept permessage-deflate (Sec-WebSocket-Extensions: {extensions!r})")
            if params is not None:
                check_answer(params, extensions)
        else:
            expect(not extensions, f"server sent extensions nobody offered: {extensions!r}")
        print(f"ok connect (extensions: {extensions or 'none'})", flush=True)
        passed += 1
        for name, check in checks:
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
    specs = [a[len("--deflate="):] for a in args if a.startswith("--deflate=")]
    params = parse_deflate_params(specs[-1]) if specs else None
    deflate = "--deflate" in args or params is not None
    cafiles = [a[len("--cafile="):] for a in args if a.startswith("--cafile=")]
    cafile = cafiles[-1] if cafiles else None
    urls = [a for a in args if a != "--deflate" and not a.startswith(("--deflate=", "--cafile="))]
    if len(urls) != 1 or not urls[0].startswith(("ws://", "wss://")):
        print("usage: python_client.py ws://127.0.0.1:PORT/ [--deflate | --deflate=PARAMS] "
              "[--cafile=PEM (for wss://)]", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(asyncio.run(asyncio.wait_for(main(urls[0], deflate, params, cafile), DEADLINE)))
    except asyncio.TimeoutError:
        print(f"FAIL deadline: the whole run took over {DEADLINE:g}s", flush=True)
        sys.exit(1)
