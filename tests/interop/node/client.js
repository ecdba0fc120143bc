#!/usr/bin/env node
// Interop client for wsloop, built on the `ws` package.
//
// Usage: node client.js ws://127.0.0.1:PORT/ [--deflate]
//
// Runs a fixed list of checks against an ECHO server, printing `ok <name>` for each,
// and exits 0 only if all passed. The first failure prints `FAIL <name>: <why>` and
// exits 1. Every wait has a timeout and the whole run a deadline, so it can never hang.
// With --deflate it offers permessage-deflate (compressing every message, however small)
// and asserts the server accepted it; without it, it offers no extension at all.
'use strict';

const crypto = require('crypto');
const WebSocket = require('ws');

const TIMEOUT_MS = 10_000; // for every single wait
const DEADLINE_MS = 60_000; // for the whole run
const MIB = 1 << 20;

class CheckFailed extends Error {}

function expect(cond, msg) {
  if (!cond) throw new CheckFailed(msg);
}

// Resolve with `promise`, or fail with a clear message after TIMEOUT_MS.
function within(promise, what, ms = TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CheckFailed(`timed out after ${ms / 1000}s waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Queues incoming messages so checks can `await next()` them in order; a close or error
// while a check waits fails that check instead of hanging it.
class Inbox {
  constructor(ws) {
    this.queue = [];
    this.waiters = [];
    this.ended = null;
    ws.on('message', (data, isBinary) => this.push({ data, isBinary }));
    ws.on('close', (code, reason) => this.end(`connection closed (code ${code}, reason '${reason}')`));
    ws.on('error', (err) => this.end(`connection error: ${err.message}`));
  }
  push(msg) {
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve(msg);
    else this.queue.push(msg);
  }
  end(why) {
    this.ended = this.ended || why;
    for (const waiter of this.waiters.splice(0)) waiter.reject(new CheckFailed(this.ended));
  }
  next(what = 'echo') {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.ended) return Promise.reject(new CheckFailed(this.ended));
    return within(new Promise((resolve, reject) => this.waiters.push({ resolve, reject })), what);
  }
}

function describe(buf, isBinary) {
  const head = isBinary ? buf.subarray(0, 20).toString('hex') : JSON.stringify(buf.subarray(0, 40).toString());
  return `${isBinary ? 'binary' : 'text'} len=${buf.length} head=${head}`;
}

// Compare a received message with what was sent (as bytes, plus the text/binary flag).
function expectEqual(got, want, wantBinary) {
  const sent = describe(want, wantBinary);
  expect(got.isBinary === wantBinary, `wrong message type: sent ${sent}, got ${describe(got.data, got.isBinary)}`);
  if (!got.data.equals(want)) {
    let at = 0;
    while (at < got.data.length && at < want.length && got.data[at] === want[at]) at++;
    throw new CheckFailed(`echo differs at byte ${at}: sent ${sent}, got ${describe(got.data, got.isBinary)}`);
  }
}

async function echo(ws, inbox, msg) {
  ws.send(msg);
  const binary = typeof msg !== 'string';
  expectEqual(await inbox.next(), binary ? msg : Buffer.from(msg), binary);
}

const CHECKS = [
  ['text echo', async (ws, inbox) => {
    for (const msg of ['hello', 'héllo ✓ 🎉', '']) await echo(ws, inbox, msg);
  }],
  ['binary echo', async (ws, inbox) => {
    await echo(ws, inbox, Buffer.from([...Array(256).keys()]));
  }],
  ['1 MiB binary echo', async (ws, inbox) => {
    await echo(ws, inbox, crypto.randomBytes(MIB));
  }],
  ['1 MiB text echo', async (ws, inbox) => {
    const msg = 'héllo ✓ 🎉 '.repeat(MIB / 16); // 16 UTF-8 bytes per repetition: exactly 1 MiB
    expect(Buffer.byteLength(msg) === MIB, 'test bug: text is not 1 MiB');
    await echo(ws, inbox, msg);
  }],
  ['fragmented message', async (ws, inbox) => {
    // One text message in 4 frames; the cuts split multi-byte characters across frames.
    const text = Buffer.from('fragmented héllo ✓ 🎉');
    const cuts = [0, 12, 19, text.length - 2, text.length];
    for (let i = 0; i + 1 < cuts.length; i++) {
      ws.send(text.subarray(cuts[i], cuts[i + 1]), { binary: false, fin: i + 2 === cuts.length });
    }
    expectEqual(await inbox.next(), text, false);
    // One binary message in 3 frames.
    const parts = [Buffer.from([0, 1]), Buffer.from([...Array(198).keys()].map((i) => i + 2)), Buffer.from([254, 255])];
    parts.forEach((part, i) => ws.send(part, { fin: i === parts.length - 1 }));
    expectEqual(await inbox.next(), Buffer.concat(parts), true);
  }],
  ['ping/pong', async (ws) => {
    const payload = Buffer.from('ping-payload-\x00\xff', 'latin1');
    const pong = new Promise((resolve) => {
      const onPong = (data) => {
        if (data.equals(payload)) { ws.off('pong', onPong); resolve(); }
      };
      ws.on('pong', onPong);
    });
    ws.ping(payload);
    await within(pong, "pong with the ping's payload");
  }],
  ['1000 pipelined messages', async (ws, inbox) => {
    const n = 1000;
    for (let i = 0; i < n; i++) ws.send(`msg ${i}`);
    for (let i = 0; i < n; i++) {
      const got = await inbox.next(`echo #${i} of ${n}`);
      const text = got.data.toString();
      expect(!got.isBinary && text === `msg ${i}`, `pipelined echo #${i} out of order or wrong: got '${text}'`);
    }
  }],
  ['clean close', async (ws) => {
    const closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.close(1000, 'bye');
    // ws reports 1005/1006 unless the server answered with a Close frame.
    const { code, reason } = await within(closed, 'the close handshake (server Close frame + TCP close)', 5000);
    expect(code === 1000, `server answered close with code ${code} reason '${reason}', expected 1000`);
  }],
];

async function main(url, deflate) {
  let passed = 0;
  let name = 'connect';
  try {
    const ws = new WebSocket(url, {
      perMessageDeflate: deflate ? { threshold: 0 } : false,
      maxPayload: 16 * MIB,
      handshakeTimeout: TIMEOUT_MS,
    });
    const inbox = new Inbox(ws);
    await within(new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode} instead of 101`)));
    }), 'the opening handshake');
    name = 'negotiation';
    if (deflate) {
      expect(ws.extensions.includes('permessage-deflate'),
        `server did not accept permessage-deflate (extensions: '${ws.extensions}')`);
    } else {
      expect(ws.extensions === '', `server sent extensions nobody offered: '${ws.extensions}'`);
    }
    console.log(`ok connect (extensions: ${ws.extensions || 'none'})`);
    passed++;
    for (const [checkName, check] of CHECKS) {
      name = checkName;
      await check(ws, inbox);
      console.log(`ok ${name}`);
      passed++;
    }
  } catch (err) {
    const reason = err instanceof CheckFailed ? err.message : `${err.name}: ${err.message}`;
    console.log(`FAIL ${name}: ${reason}`);
    console.log(`node interop: ${passed} passed, 1 failed`);
    return 1;
  }
  console.log(`node interop: ${passed} passed`);
  return 0;
}

const args = process.argv.slice(2);
const urls = args.filter((a) => a !== '--deflate');
if (urls.length !== 1 || !/^wss?:\/\//.test(urls[0])) {
  console.error('usage: node client.js ws://127.0.0.1:PORT/ [--deflate]');
  process.exit(2);
}
setTimeout(() => {
  console.log(`FAIL deadline: the whole run took over ${DEADLINE_MS / 1000}s`);
  process.exit(1);
}, DEADLINE_MS).unref();
main(urls[0], args.includes('--deflate')).then((code) => process.exit(code));
