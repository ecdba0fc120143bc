#!/usr/bin/env python3
"""A WebSocket server on the `websockets` package (asyncio API), for tests/client_cli.rs.

Usage: python_server.py [--tls CERT KEY]

Listens on 127.0.0.1, on a port the system picks, and prints `listening on PORT` on stdout.
What a connection gets depends on its path:
    /info    one text message, JSON: the request's path (with the query), its headers
             `x-test` and `origin`, the subprotocol chosen (the first offered of `chat`,
             `json`) and the extensions agreed; then it echoes like `/`
    /ping    a ping with payload `are you there`, then the text `pinged`, then it echoes
    /close   a close frame with 4000 `custom reason`
    /drop    the TCP connection dropped without a close frame
    /        every message echoed, until the client closes
It stops by itself after 60 seconds.
"""

import asyncio
import json
import ssl
import sys

try:
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed
except ImportError as e:
    print(f"the websockets package is missing: {e}", file=sys.stderr)
    sys.exit(2)


async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def handler(ws):
    path = ws.request.path
    if path.startswith("/info"):
        headers = ws.request.headers
        await ws.send(
            json.dumps(
                {
                    "path": path,
                    "x-test": headers.get("x-test"),
                    "origin": headers.get("origin"),
                    "subprotocol": ws.subprotocol,
                    "extensions": [e.name for e in ws.protocol.extensions],
                }
            )
        )
    elif path == "/ping":
        await ws.ping(b"are you there")
        await ws.send("pinged")
    elif path == "/close":
        await ws.close(4000, "custom reason")
        return
    elif path == "/drop":
        ws.transport.abort()
        return
    await echo(ws)


def select_subprotocol(ws, offered):
    """Our first preference among those offered; none (not a refusal) if none is."""
    return next((p for p in ["chat", "json"] if p in offered), None)


async def main():
    tls = None
    if sys.argv[1:2] == ["--tls"]:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(sys.argv[2], sys.argv[3])
    async with serve(
        handler, "127.0.0.1", 0, ssl=tls, select_subprotocol=select_subprotocol
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on {port}", flush=True)
        await asyncio.sleep(60)


asyncio.run(main())
