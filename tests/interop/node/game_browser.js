#!/usr/bin/env node
// The game_loop example's page in headless Chromium (playwright-core), on a desktop (1440x900)
// and on a phone held upright (390x844, touch) and sideways (844x390), against a game served by
// tests/browser.rs with its bots, then with a dozen players from Node's `ws` moving at random.
//
// Usage: node game_browser.js http://127.0.0.1:PORT/ --bots N [--screenshots DIR]
//
// Checks (each prints `ok <check>`): the page loads with no request answered 4xx (favicon
// included), connects with ws on http (wss on https) and, alone, shows the game's N bots; it
// shows the players; the arrow keys move the player's dot, whose whole disc stays on the field
// at the right edge; on the phone the touch pad moves the player, sits over the field's lower
// right corner upright and beside the field sideways, and the dots and the "you" label keep a
// readable size; then it prints `stop-server`, waits for `stopped` on stdin (the test stops the
// server), and checks that the pages say they are offline instead of showing the last figures
// over a frozen field. Prints `game browser: N passed, 0 failed` (exit 0), or
// `FAIL <step>: <why>` (exit 1). Every step has a timeout, the whole run a 90 s deadline.
//
// --screenshots DIR: saves game-1440x900.png, game-390x844.png and game-844x390.png (playing).
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const { check, sleep, until: untilWithin, nextLine, runChecks } = require('./page_support');

const DEADLINE_MS = 90_000;
const STEP_TIMEOUT_MS = 10_000;
const BOTS = 12;
const DESKTOP = { width: 1440, height: 900 };
const PHONE = { width: 390, height: 844 };
const SIDEWAYS = { width: 844, height: 390 };
// On a phone: the smallest radius of the player's dot and size of its label, in CSS pixels.
const MIN_DOT_PX = 7, MIN_LABEL_PX = 12;

const until = (page, what, fn, arg, ms = STEP_TIMEOUT_MS) => untilWithin(page, what, fn, arg, ms);

// The player's own position in the last snapshot, read from the page's variables.
function myPosition(page) {
  return page.evaluate(() => {
    /* global snapshot, me */
    if (!snapshot || me < 0) return null;
    const slots = snapshot.getUint16(5, true);
    const bytes = new Uint8Array(snapshot.buffer);
    for (let id = 0, off = 7 + ((slots + 7) >> 3); id < slots; id++) {
      if (!(bytes[7 + (id >> 3)] & (1 << (id & 7)))) continue;
      const packed = bytes[off] | (bytes[off + 1] << 8) | (bytes[off + 2] << 16);
      off += 3;
      if (id === me) return [packed & 0xfff, packed >> 12];
    }
    return null;
  });
}

async function open(browser, url, name, viewport, logs, players = BOTS + 1) {
  const phone = viewport.width < 900;
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, isMobile: phone, hasTouch: phone });
  const page = await context.newPage();
  page.on('pageerror', (err) => logs.push(`${name} page error: ${err.message}`));
  page.on('response', (res) => { if (res.status() >= 400) logs.push(`${name} HTTP ${res.status()} ${res.url()}`); });
  const response = await page.goto(url, { timeout: STEP_TIMEOUT_MS, waitUntil: 'load' });
  check(response && response.status() === 200, `GET ${url}: ${response && response.status()}`);
  await until(page, `${name}: connected with players on the field`,
    (n) => document.getElementById('status').textContent === 'connected'
      && Number((/^players (\d+) /.exec(document.getElementById('info').textContent) || [])[1]) >= n, players);
  return { context, page };
}

// A dozen players from Node, changing direction every 400 ms.
function bots(url) {
  const WebSocket = require('ws');
  const all = [];
  for (let i = 0; i < BOTS; i++) {
    const ws = new WebSocket(url.replace(/^http/, 'ws'));
    ws.on('open', () => {
      ws.timer = setInterval(() => ws.send(Buffer.from([1 << Math.floor(Math.random() * 4)])), 400);
    });
    ws.on('error', () => {});
    ws.on('close', () => clearInterval(ws.timer));
    all.push(ws);
  }
  return all;
}

function get(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => { res.resume(); resolve(res.statusCode); }).on('error', reject);
  });
}

async function shoot(page, dir, name) {
  if (!dir) return;
  fs.mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: path.join(dir, name), timeout: STEP_TIMEOUT_MS });
  console.log(`screenshot: ${path.join(dir, name)}`);
}

// The phone page's layout, and the size on screen of the player's dot and label.
async function phoneLayout(page) {
  await until(page, 'the phone page knows its position', () => typeof me === 'number' && me >= 0 && snapshot !== null);
  const at = await myPosition(page);
  return page.evaluate(([x, y]) => {
    const rect = (id) => document.getElementById(id).getBoundingClientRect().toJSON();
    const canvas = document.getElementById('field');
    const scale = canvas.clientWidth / canvas.width;
    const row = canvas.getContext('2d').getImageData(0, Math.max(0, Math.min(canvas.height - 1, y)), canvas.width, 1).data;
    let white = 0;
    for (let i = 0; i < canvas.width; i++) if (row[4 * i] > 240 && row[4 * i + 1] > 240 && row[4 * i + 2] > 240) white++;
    return {
      field: rect('field'), pad: rect('pad'), padShown: getComputedStyle(document.getElementById('pad')).display,
      scrollWidth: document.documentElement.scrollWidth, scrollHeight: document.documentElement.scrollHeight,
      dot: white * scale, label: parseFloat(/(\d+(\.\d+)?)px/.exec(canvas.getContext('2d').font)[1]) * scale, x, y,
    };
  }, at);
}

async function checks(browser, opts, pass, logs) {
  const d = await open(browser, opts.url, 'desktop', DESKTOP, logs, opts.bots + 1);
  check(await get(new URL('/favicon.ico', opts.url)) === 200, 'GET /favicon.ico is not 200');
  const urls = await d.page.evaluate(() => [
    socketUrl({ protocol: 'https:', host: 'game.example:8443' }), socketUrl({ protocol: 'http:', host: 'game.example' }),
  ]);
  check(urls.join() === 'wss://game.example:8443/,ws://game.example/', `the WebSocket URLs of https and http pages: ${urls}`);
  pass(`the page loads, connects (wss on https) and, alone, shows the ${opts.bots} bots; no request is answered 4xx (favicon.ico included)`);
  const crowd = bots(opts.url);
  await until(d.page, 'the desktop page shows the crowd too', (n) =>
    Number((/^players (\d+) /.exec(document.getElementById('info').textContent) || [])[1]) >= n, opts.bots + BOTS + 1);

  // Hold the right arrow until the dot stops at the right edge.
  await d.page.keyboard.down('ArrowRight');
  let last = null;
  for (let i = 0; i < 80; i++) {
    await sleep(100);
    const now = await myPosition(d.page);
    if (last && now && now[0] === last[0] && now[0] > 1000) break;
    last = now;
  }
  await d.page.keyboard.up('ArrowRight');
  const at = await myPosition(d.page);
  check(at && at[0] >= 1260, `the dot did not reach the right edge: ${at}`);
  // The white disc's pixels on its row: as many right of the centre as left of it.
  const disc = await d.page.evaluate(([x, y]) => {
    const canvas = document.getElementById('field');
    const row = canvas.getContext('2d').getImageData(0, y, canvas.width, 1).data;
    const white = [];
    for (let i = 0; i < canvas.width; i++) if (row[4 * i] > 240 && row[4 * i + 1] > 240 && row[4 * i + 2] > 240) white.push(i);
    return { width: canvas.width, left: x - Math.min(...white), right: Math.max(...white) - x };
  }, at);
  check(disc.right >= 10 && Math.abs(disc.left - disc.right) <= 1, `the dot is clipped at the right edge: ${JSON.stringify(disc)} at ${at}`);
  pass(`the arrow keys move the dot, which stays whole at the right edge (x=${at[0]} of ${disc.width})`);
  await shoot(d.page, opts.screenshots, 'game-1440x900.png');

  const p = await open(browser, opts.url, 'phone', PHONE, logs);
  const upright = await phoneLayout(p.page);
  const { field, pad: corner } = upright;
  check(upright.padShown === 'grid' && upright.scrollWidth <= PHONE.width && upright.scrollHeight <= PHONE.height
    && field.width >= PHONE.width - 20 && corner.top < field.bottom && corner.bottom > field.bottom
    && corner.right <= field.right && corner.right > field.right - 20,
  `upright, the pad is not over the field's lower right corner: ${JSON.stringify(upright)}`);
  const before = await myPosition(p.page);
  const side = before[0] > 640 ? 'left' : 'right';
  const pad = await p.page.locator(`#pad .${side}`).boundingBox();
  await p.page.dispatchEvent(`#pad .${side}`, 'pointerdown', { pointerId: 1, pointerType: 'touch', isPrimary: true, clientX: pad.x + 10, clientY: pad.y + 10 });
  await sleep(600);
  await p.page.dispatchEvent(`#pad .${side}`, 'pointerup', { pointerId: 1, pointerType: 'touch', isPrimary: true });
  await sleep(200);
  const after = await myPosition(p.page);
  const moved = side === 'right' ? after[0] - before[0] : before[0] - after[0];
  check(moved > 50 && Math.abs(after[1] - before[1]) <= 1, `the touch pad moved the dot from ${before} to ${after}`);
  pass(`on a phone the touch pad shows and moves the player (${moved} units ${side})`);
  await shoot(p.page, opts.screenshots, 'game-390x844.png');

  const s = await open(browser, opts.url, 'sideways', SIDEWAYS, logs);
  const sideways = await phoneLayout(s.page);
  check(sideways.padShown === 'grid' && sideways.scrollWidth <= SIDEWAYS.width && sideways.scrollHeight <= SIDEWAYS.height
    && sideways.pad.left >= sideways.field.right && sideways.pad.right <= SIDEWAYS.width
    && sideways.field.width >= 560, `sideways, the pad is not beside a large field: ${JSON.stringify(sideways)}`);
  for (const [name, at] of [['upright', upright], ['sideways', sideways]]) {
    check(at.dot >= 2 * MIN_DOT_PX && at.label >= MIN_LABEL_PX, `${name}, the dot or its label is too small: ${JSON.stringify(at)}`);
  }
  pass(`on a phone the pad is over the field's corner upright and beside it sideways (field ${Math.round(sideways.field.width)}x${Math.round(sideways.field.height)} px); dots and labels stay readable`);
  await sleep(1100); // the page shows its snapshot rate after a second
  await shoot(s.page, opts.screenshots, 'game-844x390.png');

  for (const ws of crowd) ws.close();
  console.log('stop-server');
  const line = await nextLine();
  check(line === 'stopped', `expected "stopped" on stdin, got ${JSON.stringify(line)}`);
  for (const [name, x] of [['desktop', d], ['phone', p], ['sideways', s]]) {
    await until(x.page, `${name}: says it is offline, with no stale figures`,
      () => document.getElementById('status').textContent.startsWith('offline')
        && document.getElementById('info').textContent === '' && snapshot === null);
  }
  await sleep(200);
  const shown = await d.page.evaluate(([x, y]) => {
    const canvas = document.getElementById('field');
    const px = canvas.getContext('2d').getImageData(x, y, 1, 1).data;
    return [px[0], px[1], px[2]];
  }, at);
  check(shown.every((c) => c < 200), `the player's dot is still drawn while offline: ${shown}`);
  pass('while the server is down both pages say offline, with no players or rates over a frozen field');
  for (const x of [d, p, s]) await x.context.close();
}

const [url, botsFlag, bots_, flag, dir] = process.argv.slice(2);
if (!url || !/^http:\/\//.test(url) || botsFlag !== '--bots' || !/^\d+$/.test(bots_ || '') || (flag && flag !== '--screenshots')) {
  console.error('usage: node game_browser.js http://127.0.0.1:PORT/ --bots N [--screenshots DIR]');
  process.exit(2);
}
const opts = { url, bots: Number(bots_), screenshots: flag ? dir : null };
runChecks('game browser', DEADLINE_MS, (browser, pass, logs) => checks(browser, opts, pass, logs))
  .then((code) => process.exit(code));
