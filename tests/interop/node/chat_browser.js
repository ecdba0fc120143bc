#!/usr/bin/env node
// The chat example in headless Chromium, driven by playwright-core: two pages (two isolated
// browser contexts) join the chat served by examples/chat (or tests/chat.rs's in-process copy)
// and use it as people would.
//
// Usage: node chat_browser.js http://127.0.0.1:PORT/ [--screenshot PATH] [--restart]
//        node chat_browser.js http://127.0.0.1:PORT/ --demo PATH
//
// Checks: both pages join (alice, bob) and each sees the other in the online list; a message
// typed in one appears in the other; typing shows "alice is typing…" in the other; a message
// `<img src=x onerror=...>` appears as literal text (no img element, the handler never ran);
// a private message opens a conversation on the other side; closing one page removes it from
// the other's list and posts a leave notice. With --restart, it then prints `restart-server`,
// waits for a `restarted` line on stdin (the test restarts the server on the same port), and
// checks that the page reconnected by itself, rejoined as the same nickname and can chat.
//
// Prints `ok <check>` per check, then `chat browser: N passed, 0 failed` and exits 0; or
// `FAIL <step>: <why>` and `chat browser: N passed, 1 failed` and exits 1. Every step has a
// timeout and the whole run a 90 s deadline.
//
// --demo PATH: plays a short conversation and saves a screenshot of it at PATH (for the README),
// with no checks beyond the page working.
//
// Chromium: $WSLOOP_CHROMIUM, else /usr/bin/chromium (playwright-core downloads no browser).
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');

const DEADLINE_MS = 90_000;
const LAUNCH_TIMEOUT_MS = 30_000;
const STEP_TIMEOUT_MS = 10_000;
const RESTART_TIMEOUT_MS = 30_000;
const XSS = '<img src=x onerror="window.__pwned=true;document.title=\'pwned\'">';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-proxy-server',
  '--font-render-hinting=none',
];

class CheckFailed extends Error {}

function usage() {
  console.error('usage: node chat_browser.js http://127.0.0.1:PORT/ [--screenshot PATH] [--restart] | --demo PATH');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { url: null, screenshot: null, restart: false, demo: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--screenshot' && i + 1 < argv.length) opts.screenshot = argv[++i];
    else if (argv[i] === '--demo' && i + 1 < argv.length) opts.demo = argv[++i];
    else if (argv[i] === '--restart') opts.restart = true;
    else if (!opts.url && /^https?:\/\//.test(argv[i])) opts.url = argv[i];
    else usage();
  }
  if (!opts.url) usage();
  return opts;
}

// Resolves with `promise`, or fails after `ms`.
function within(promise, what, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CheckFailed(`timed out after ${ms / 1000}s: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Waits until `fn(arg)` is truthy in `page`, failing with `what`.
async function until(page, what, fn, arg, ms = STEP_TIMEOUT_MS) {
  try {
    await page.waitForFunction(fn, arg, { timeout: ms, polling: 50 });
  } catch (err) {
    throw new CheckFailed(`${what} (${err.message.split('\n')[0]})`);
  }
}

function nicksIn(page) {
  return page.$$eval('#users li', (lis) => lis.map((li) => li.dataset.nick));
}

// Opens a page in a fresh context and joins as `nick`.
async function openAndJoin(browser, url, nick, logs, viewport) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on('console', (msg) => logs.push(`${nick} console.${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => logs.push(`${nick} page error: ${err.message}`));
  page.on('dialog', (dialog) => { logs.push(`${nick} dialog: ${dialog.message()}`); dialog.dismiss(); });
  const response = await page.goto(url, { timeout: STEP_TIMEOUT_MS, waitUntil: 'load' });
  if (!response || response.status() !== 200) {
    throw new CheckFailed(`GET ${url} answered ${response ? response.status() : 'nothing'}`);
  }
  await until(page, `${nick}: the page connects`, () => document.querySelector('#status.online') !== null);
  await page.fill('#nick', nick);
  await page.click('#join-button');
  await until(page, `${nick}: joined and in #lobby`,
    (n) => !document.getElementById('chat-screen').hidden
      && document.querySelector(`#users li[data-nick="${n}"]`) !== null
      && document.getElementById('conv-title').textContent === '#lobby', nick);
  return { context, page };
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.click('#send');
}

// The texts of the messages in the conversation shown, as the DOM has them.
function texts(page) {
  return page.$$eval('#log .msg .text', (ps) => ps.map((p) => p.textContent));
}

async function checks(browser, opts, pass, logs) {
  const viewport = { width: 1000, height: 640 };
  const a = await openAndJoin(browser, opts.url, 'alice', logs, viewport);
  const b = await openAndJoin(browser, opts.url, 'bob', logs, viewport);
  pass('both pages join');

  await until(a.page, 'alice sees bob online', () => document.querySelector('#users li[data-nick="bob"]') !== null);
  await until(b.page, 'bob sees alice online', () => document.querySelector('#users li[data-nick="alice"]') !== null);
  const listA = await nicksIn(a.page);
  const listB = await nicksIn(b.page);
  if (listA.join() !== 'alice,bob' || listB.join() !== 'alice,bob') {
    throw new CheckFailed(`online lists: alice sees ${listA}, bob sees ${listB}`);
  }
  pass('each sees the other in the online list');

  await a.page.click('#text');
  await a.page.keyboard.type('hel', { delay: 20 });
  await until(b.page, 'bob sees "alice is typing…"',
    () => document.getElementById('typing').textContent === 'alice is typing…');
  pass('typing shows in the other page');

  await a.page.keyboard.type('lo bob');
  await a.page.click('#send');
  await until(b.page, 'bob sees alice\'s message',
    () => [...document.querySelectorAll('#log .msg')].some((m) =>
      m.querySelector('.from').textContent === 'alice' && m.querySelector('.text').textContent === 'hello bob'));
  await until(b.page, 'bob no longer sees alice typing', () => document.getElementById('typing').textContent === '');
  await until(a.page, 'alice sees her own message', () =>
    [...document.querySelectorAll('#log .msg.mine .text')].some((p) => p.textContent === 'hello bob'));
  pass('a message sent in one page appears in the other');

  for (const p of [a.page, b.page]) await p.evaluate(() => { window.__pwned = false; });
  await say(b.page, XSS);
  for (const [who, p] of [['alice', a.page], ['bob', b.page]]) {
    await until(p, `${who} shows the markup as text`,
      (xss) => [...document.querySelectorAll('#log .msg .text')].some((t) => t.textContent === xss), XSS);
  }
  await sleep(300); // an image error handler would have run by now
  for (const [who, p] of [['alice', a.page], ['bob', b.page]]) {
    const seen = await p.evaluate((xss) => {
      const node = [...document.querySelectorAll('#log .msg .text')].find((t) => t.textContent === xss);
      return {
        imgs: document.querySelectorAll('img').length,
        children: node ? node.children.length : -1,
        pwned: window.__pwned,
        title: document.title,
      };
    }, XSS);
    if (seen.imgs !== 0 || seen.children !== 0 || seen.pwned !== false || seen.title === 'pwned') {
      throw new CheckFailed(`${who}: markup was interpreted: ${JSON.stringify(seen)}`);
    }
  }
  pass('<img onerror> appears as literal text, no element, no script');

  await b.page.click('#users li[data-nick="alice"]');
  await until(b.page, 'bob opens a private conversation', () => document.getElementById('conv-title').textContent === '@alice');
  await say(b.page, 'just between us');
  await until(a.page, 'alice gets a private conversation with an unread badge',
    () => [...document.querySelectorAll('#dms li')].some((li) =>
      li.dataset.key === '@bob' && li.querySelector('.badge').textContent === '1'));
  await a.page.click('#dms li[data-key="@bob"]');
  const dm = await texts(a.page);
  if (dm.join('|') !== 'just between us') throw new CheckFailed(`alice's @bob conversation: ${JSON.stringify(dm)}`);
  await a.page.click('#rooms li[data-key="#lobby"]');
  pass('a private message reaches the other page');

  await b.context.close();
  await until(a.page, 'bob leaves alice\'s online list', () => document.querySelector('#users li[data-nick="bob"]') === null);
  await until(a.page, 'alice sees "bob left #lobby"',
    () => [...document.querySelectorAll('#log .notice')].some((n) => n.textContent === 'bob left #lobby'));
  const after = await nicksIn(a.page);
  if (after.join() !== 'alice') throw new CheckFailed(`after bob closed, alice sees ${after}`);
  pass('closing one page updates the other\'s list');

  if (opts.restart) {
    console.log('restart-server');
    const line = await within(nextLine(), 'waiting for the test to restart the server', RESTART_TIMEOUT_MS);
    if (line !== 'restarted') throw new CheckFailed(`expected "restarted" on stdin, got ${JSON.stringify(line)}`);
    await until(a.page, 'alice\'s page notices the restart',
      () => [...document.querySelectorAll('#log .notice')].some((n) => n.textContent.startsWith('Disconnected')),
      undefined, RESTART_TIMEOUT_MS);
    await until(a.page, 'alice\'s page reconnects and rejoins as alice',
      () => document.getElementById('status-text').textContent === 'connected as alice'
        && [...document.querySelectorAll('#log .notice')].some((n) => n.textContent === 'Reconnected.')
        && document.querySelector('#users li[data-nick="alice"]') !== null,
      undefined, RESTART_TIMEOUT_MS);
    await say(a.page, 'back again');
    await until(a.page, 'a message after the restart comes back',
      () => [...document.querySelectorAll('#log .msg .text')].some((p) => p.textContent === 'back again'));
    pass('the page reconnects after a server restart and rejoins with the same nickname');
  }

  if (opts.screenshot) {
    fs.mkdirSync(path.dirname(opts.screenshot), { recursive: true });
    await a.page.screenshot({ path: opts.screenshot, timeout: STEP_TIMEOUT_MS });
    console.log(`screenshot: ${opts.screenshot}`);
  }
  await a.context.close();
}

// A short, friendly conversation for the README's screenshot, seen from alice's page.
async function demo(browser, opts, pass, logs) {
  const viewport = { width: 960, height: 600 };
  const a = await openAndJoin(browser, opts.url, 'alice', logs, viewport);
  const b = await openAndJoin(browser, opts.url, 'bob', logs, viewport);
  const c = await openAndJoin(browser, opts.url, 'carol', logs, viewport);
  const lines = [
    [a, 'Morning! The new chat server is up.'],
    [b, 'Nice. Is that the wsloop one?'],
    [a, 'Yes: one thread, rooms are topics, and the page reconnects by itself if the server restarts.'],
    [c, 'Tried it with <b>markup</b>: it shows up as plain text, as it should.'],
    [b, 'Rooms too? I made #release for the 0.1 notes.'],
  ];
  for (const [who, text] of lines) {
    await say(who.page, text);
    await sleep(150);
  }
  await b.page.fill('#room-name', 'release');
  await b.page.click('#room-form button');
  await a.page.fill('#room-name', 'release');
  await a.page.click('#room-form button');
  await until(a.page, 'alice in #release', () => document.getElementById('conv-title').textContent === '#release');
  await a.page.click('#rooms li[data-key="#lobby"]');
  await say(b.page, 'Changelog draft is in #release, have a look when you can');
  // bob's message went to #release (bob's page shows it); send one to the lobby too.
  await b.page.click('#rooms li[data-key="#lobby"]');
  await say(b.page, 'Lunch at 12:30?');
  await c.page.click('#users li[data-nick="alice"]');
  await say(c.page, 'Can you review my PR after lunch?');
  await sleep(200);
  await b.page.click('#text');
  await b.page.keyboard.type('Sounds g', { delay: 20 });
  await until(a.page, 'alice sees bob typing', () => document.getElementById('typing').textContent === 'bob is typing…');
  await a.page.screenshot({ path: opts.demo, timeout: STEP_TIMEOUT_MS });
  console.log(`screenshot: ${opts.demo}`);
  pass('demo');
  for (const x of [a, b, c]) await x.context.close();
}

// The next line on stdin.
let stdinLines = null;
function nextLine() {
  if (!stdinLines) {
    const rl = readline.createInterface({ input: process.stdin });
    const queue = [];
    const waiting = [];
    rl.on('line', (line) => {
      const w = waiting.shift();
      if (w) w(line.trim()); else queue.push(line.trim());
    });
    rl.on('close', () => { for (const w of waiting.splice(0)) w(null); });
    stdinLines = { queue, waiting };
  }
  if (stdinLines.queue.length) return Promise.resolve(stdinLines.queue.shift());
  return new Promise((resolve) => stdinLines.waiting.push(resolve));
}

async function main(opts) {
  const executablePath = process.env.WSLOOP_CHROMIUM || '/usr/bin/chromium';
  if (!fs.existsSync(executablePath)) {
    console.log(`FAIL launch: no Chromium at ${executablePath} (tests/run.sh installs it: apt-get install chromium)`);
    console.log('chat browser: 0 passed, 1 failed');
    return 1;
  }
  let chromium;
  try {
    ({ chromium } = require('playwright-core'));
  } catch (err) {
    console.log(`FAIL launch: playwright-core is not installed (run npm ci in tests/interop/node): ${err.message}`);
    console.log('chat browser: 0 passed, 1 failed');
    return 1;
  }
  const logs = [];
  let passed = 0;
  let step = 'launch';
  const pass = (what) => { passed += 1; step = `after "${what}"`; console.log(`ok ${what}`); };
  let browser = null;
  try {
    browser = await within(chromium.launch({
      executablePath, headless: true, args: ARGS, timeout: LAUNCH_TIMEOUT_MS,
    }), 'launching Chromium', LAUNCH_TIMEOUT_MS + 5_000);
    console.log(`browser: Chromium ${browser.version()} at ${executablePath}`);
    step = 'checks';
    await (opts.demo ? demo : checks)(browser, opts, pass, logs);
    console.log(`chat browser: ${passed} passed, 0 failed`);
    return 0;
  } catch (err) {
    const why = err instanceof CheckFailed ? err.message : `${err.name}: ${err.message}`;
    console.log(`FAIL ${step}: ${why}`);
    for (const line of logs) console.log(line);
    console.log(`chat browser: ${passed} passed, 1 failed`);
    return 1;
  } finally {
    if (browser) await within(browser.close(), 'closing Chromium', 10_000).catch(() => {});
  }
}

setTimeout(() => {
  console.log(`FAIL deadline: the whole run took over ${DEADLINE_MS / 1000}s`);
  console.log('chat browser: 0 passed, 1 failed');
  process.exit(1); // playwright-core kills the browser it launched when the process exits
}, DEADLINE_MS).unref();
main(parseArgs(process.argv.slice(2))).then((code) => process.exit(code));
