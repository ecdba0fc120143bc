#!/usr/bin/env node
// Interop client for wsloop, built on the `ws` package.
//
// Usage: node client.js ws://127.0.0.1:PORT/ [--deflate | --deflate=PARAMS]
//
// Runs a fixed list of checks against an ECHO server, printing `ok <name>` for each,
// and exits 0 only if all passed. The first failure prints `FAIL <name>: <why>` and
// exits 1. Every wait has a timeout and the whole run a deadline, so it can never hang.
// With --deflate it offers permessage-deflate (compressing every message, however small)
// and asserts the server accepted it; without it, it offers no extension at all.
//
// --deflate=PARAMS offers permessage-deflate with exactly the parameters in PARAMS, a
// comma-separated list (empty: no parameter at all) of
//     server_no_context_takeover   client_no_context_takeover
//     no_context_takeover          (both of the above)
//     server_max_window_bits=N     client_max_window_bits[=N]
// e.g. --deflate=client_max_window_bits=9,no_context_takeover. It checks that the answer
// honours them, and adds one check: text and binary echoes of every size from 1 byte to
// 1 MiB (compressible and not), all compressed.
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

// Message sizes for the size sweep: around every frame-length and threshold boundary.
const SIZES = [1, 2, 63, 64, 65, 125, 126, 127, 1000, 4095, 4096, 65535, 65536, 65537, 100000, 500000, MIB];

// Valid UTF-8 text of exactly `size` bytes, multi-byte characters included.
function textOf(size) {
  const text = 'héllo ✓ 🎉 '.repeat(Math.floor(size / 16)) + 'x'.repeat(size % 16); // 16 bytes a unit
  if (Buffer.byteLength(text) !== size) throw new Error(`test bug: text of ${size} bytes`);
  return text;
}

async function checkSizes(ws, inbox) {
  for (const size of SIZES) {
    const pattern = Buffer.alloc(size);
    for (let i = 0; i < size; i++) pattern[i] = i % 7;
    for (const msg of [textOf(size), crypto.randomBytes(size), pattern]) await echo(ws, inbox, msg);
  }
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

// The offer's parameters from `--deflate=PARAMS`, as an object; exits 2 if malformed.
function parseDeflateParams(spec) {
  const params = {};
  for (const item of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [key, value] = item.split('=', 2);
    const bits = Number(value);
    if (key === 'no_context_takeover' && value === undefined) {
      params.server_no_context_takeover = params.client_no_context_takeover = true;
    } else if (['server_no_context_takeover', 'client_no_context_takeover'].includes(key) && value === undefined) {
      params[key] = true;
    } else if (key === 'client_max_window_bits' && value === undefined) {
      params[key] = true;
    } else if (['server_max_window_bits', 'client_max_window_bits'].includes(key) && /^\d+$/.test(value) && bits >= 8 && bits <= 15) {
      params[key] = bits;
    } else {
      console.error(`client.js: bad --deflate parameter '${item}'`);
      process.exit(2);
    }
  }
  return params;
}

// ws's perMessageDeflate options that offer exactly `params`, compressing every message.
function deflateOptions(params) {
  const options = { threshold: 0, clientMaxWindowBits: params.client_max_window_bits || false };
  if (params.server_no_context_takeover) options.serverNoContextTakeover = true;
  if (params.client_no_context_takeover) options.clientNoContextTakeover = true;
  if (params.server_max_window_bits) options.serverMaxWindowBits = params.server_max_window_bits;
  return options;
}

// The parameters of a `permessage-deflate` answer (true for no value).
function answerParams(extensions) {
  const parts = extensions.split(';').map((s) => s.trim());
  expect(parts[0] === 'permessage-deflate' && !extensions.includes(','),
    `expected one permessage-deflate answer, got '${extensions}'`);
  const params = {};
  for (const part of parts.slice(1)) {
    const [key, value] = part.split('=', 2).map((s) => s.trim());
    params[key] = value === undefined ? true : Number(value.replace(/"/g, ''));
  }
  return params;
}

// The server's answer honours what was offered (RFC 7692 7.1).
function checkAnswer(offered, extensions) {
  const got = answerParams(extensions);
  if (offered.server_no_context_takeover) {
    expect(got.server_no_context_takeover === true,
      `offered server_no_context_takeover, answer lacks it: '${extensions}'`);
  }
  if (offered.server_max_window_bits) {
    expect(Number.isInteger(got.server_max_window_bits) && got.server_max_window_bits <= offered.server_max_window_bits,
      `offered server_max_window_bits=${offered.server_max_window_bits}, answer: '${extensions}'`);
  }
  if ('client_max_window_bits' in got) {
    expect('client_max_window_bits' in offered,
      `answer names client_max_window_bits, which was not offered: '${extensions}'`);
    if (offered.client_max_window_bits !== true) {
      expect(got.client_max_window_bits <= offered.client_max_window_bits,
        `answer's client_max_window_bits above the offer: '${extensions}'`);
    }
  }
}

// `params`: the explicit offer of --deflate=PARAMS (then `deflate` is true too).
async function main(url, deflate, params) {
  let passed = 0;
  let name = 'connect';
  const checks = [...CHECKS];
  // The sweep goes before the last check, the close.
  if (params) checks.splice(checks.length - 1, 0, ['text and binary, 1 B to 1 MiB', checkSizes]);
  try {
    let perMessageDeflate = false;
    if (params) perMessageDeflate = deflateOptions(params);
    else if (deflate) perMessageDeflate = { threshold: 0 };
    const ws = new WebSocket(url, {
      perMessageDeflate,
      maxPayload: 16 * MIB,
      handshakeTimeout: TIMEOUT_MS,
    });
    const inbox = new Inbox(ws);
    // ws.extensions holds only the names: keep the server's whole answer.
    let answer = '';
    ws.once('upgrade', (res) => { answer = res.headers['sec-websocket-extensions'] || ''; });
    await within(new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode} instead of 101`)));
    }), 'the opening handshake');
    name = 'negotiation';
    if (deflate) {
      expect(ws.extensions.includes('permessage-deflate'),
        `server did not accept permessage-deflate (extensions: '${ws.extensions}')`);
      if (params) checkAnswer(params, answer);
    } else {
      expect(ws.extensions === '', `server sent extensions nobody offered: '${ws.extensions}'`);
    }
    console.log(`ok connect (extensions: ${answer || 'none'})`);
    passed++;
    for (const [checkName, check] of checks) {
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
const specs = args.filter((a) => a.startsWith('--deflate=')).map((a) => a.slice('--deflate='.length));
const params = specs.length ? parseDeflateParams(specs[specs.length - 1]) : null;
const urls = args.filter((a) => a !== '--deflate' && !a.startsWith('--deflate='));
if (urls.length !== 1 || !/^wss?:\/\//.test(urls[0])) {
  console.error('usage: node client.js ws://127.0.0.1:PORT/ [--deflate | --deflate=PARAMS]');
  process.exit(2);
}
setTimeout(() => {
  console.log(`FAIL deadline: the whole run took over ${DEADLINE_MS / 1000}s`);
  process.exit(1);
}, DEADLINE_MS).unref();
main(urls[0], args.includes('--deflate') || params !== null, params).then((code) => process.exit(code));
