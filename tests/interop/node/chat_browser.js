#!/usr/bin/env node
// The chat example in headless Chromium, driven by playwright-core: pages (each in an isolated
// browser context) join the chat served by `wsloop chat` (or tests/chat.rs's in-process copy)
// and use it as people would, on a desktop (1440x900) and on a phone (390x844).
//
// Usage: node chat_browser.js http://127.0.0.1:PORT/ [--screenshots DIR] [--restart]
//        node chat_browser.js http://127.0.0.1:PORT/ --history
//        node chat_browser.js http://127.0.0.1:PORT/ --undelivered
//        node chat_browser.js http://127.0.0.1:PORT/ --demo DIR
//
// Checks (each prints `ok <check>`): joining, the online lists, typing (in a room and in a
// private conversation), messages, markup shown as text, links made clickable safely,
// multi-line messages (Shift+Enter), private messages with an unread badge and the unread count
// in the tab title, keyboard access, nicknames in any script (normalised to NFC) and the
// server's reason for refusing one, the list of other rooms and a room's history on joining it
// (with a line where the history ends), the rate limit (the messages over it stay on the page
// in one row of messages not sent, announced once, with a Retry all that sends them in their
// order), a "new messages" button when scrolled up, follow-up messages showing their time on
// hover and on keyboard focus, dates on messages of other days, a text of control characters
// answered with an error (the connection stays), a text over the limit refused with a warning
// and kept, leaving one's only room with the keyboard (the focus goes to the way back), the
// history after a reload, the phone layout (the sidebar behind a button, touch targets of
// 44 px, fields of 16 px), and axe-core on every screen (no violation at all). With --restart, it prints
// `restart-server` and waits for `restarted` on stdin (the test restarts the server on the
// same port), twice: first the page must reconnect and rejoin by itself as the same nickname;
// then, while it is kept offline, someone else takes its nickname, and the page must say so
// (the corner no longer showing the old name) and let the user pick another, after which it
// says it reconnected and the focus is in the message box.
//
// Prints `chat browser: N passed, 0 failed` and exits 0; or `FAIL <step>: <why>` and
// `chat browser: N passed, 1 failed` and exits 1. Every step has a timeout and the whole run a
// 150 s deadline.
//
// --screenshots DIR: saves chat-1440x900.png and chat-390x844.png there.
// --history: only the room history, against a chat process on Redis (see history() below).
// --undelivered: only the notice of a message that could not reach the other processes (see
// undelivered() below).
// --demo DIR: plays a short conversation and saves screenshot.png (960x600),
// screenshot-1440x900.png and screenshot-390x844.png in DIR (for the README).
//
// Chromium: $WSLOOP_CHROMIUM, else /usr/bin/chromium (playwright-core downloads no browser).
'use strict';

const fs = require('fs');
const path = require('path');
const { CheckFailed, check, sleep, within, until: untilWithin, nextLine, runChecks } = require('./page_support');

const DEADLINE_MS = 150_000;
const STEP_TIMEOUT_MS = 10_000;
const RESTART_TIMEOUT_MS = 30_000;
const XSS = '<img src=x onerror="window.__pwned=true;document.title=\'pwned\'">';
const DESKTOP = { width: 1440, height: 900 };
const PHONE = { width: 390, height: 844 };

function usage() {
  console.error('usage: node chat_browser.js http://127.0.0.1:PORT/ [--screenshots DIR] [--restart] | --demo DIR');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { url: null, screenshots: null, restart: false, demo: null, history: false, undelivered: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--screenshots' && i + 1 < argv.length) opts.screenshots = argv[++i];
    else if (argv[i] === '--demo' && i + 1 < argv.length) opts.demo = argv[++i];
    else if (argv[i] === '--restart') opts.restart = true;
    else if (argv[i] === '--history') opts.history = true;
    else if (argv[i] === '--undelivered') opts.undelivered = true;
    else if (!opts.url && /^https?:\/\//.test(argv[i])) opts.url = argv[i];
    else usage();
  }
  if (!opts.url) usage();
  return opts;
}

// Waits until `fn(arg)` is truthy in `page`, failing with `what`.
const until = (page, what, fn, arg, ms = STEP_TIMEOUT_MS) => untilWithin(page, what, fn, arg, ms);

function nicksIn(page) {
  return page.$$eval('#users li', (lis) => lis.map((li) => li.dataset.nick));
}

// Opens the page in a fresh context (a phone's if `viewport` is PHONE), its clock `ahead` ms
// ahead of the real one.
async function open(browser, url, name, logs, viewport, ahead = 0) {
  const phone = viewport.width < 500;
  const context = await browser.newContext({
    viewport, deviceScaleFactor: 1, isMobile: phone, hasTouch: phone,
  });
  if (ahead) await context.clock.install({ time: Date.now() + ahead });
  const page = await context.newPage();
  page.on('console', (msg) => logs.push(`${name} console.${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => logs.push(`${name} page error: ${err.message}`));
  page.on('dialog', (dialog) => { logs.push(`${name} dialog: ${dialog.message()}`); dialog.dismiss(); });
  page.on('response', (res) => { if (res.status() >= 400) logs.push(`${name} HTTP ${res.status()} ${res.url()}`); });
  const response = await page.goto(url, { timeout: STEP_TIMEOUT_MS, waitUntil: 'load' });
  check(response && response.status() === 200, `GET ${url} answered ${response ? response.status() : 'nothing'}`);
  await until(page, `${name}: the page connects`, () => document.querySelector('#status.online') !== null);
  return { context, page };
}

async function join(page, nick) {
  await page.fill('#nick', nick);
  await page.click('#join-button');
  await until(page, `${nick}: joined and in #lobby`,
    (n) => !document.getElementById('chat-screen').hidden
      && document.querySelector(`#users li[data-nick="${n}"]`) !== null
      && document.getElementById('conv-title').textContent === '#lobby', nick);
}

async function openAndJoin(browser, url, nick, logs, viewport, ahead = 0) {
  const x = await open(browser, url, nick, logs, viewport, ahead);
  await join(x.page, nick);
  return x;
}

// Types `text` in the message box and sends it with Enter.
async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

// The texts of the messages in the conversation shown, as the DOM has them.
function texts(page) {
  return page.$$eval('#log .msg .text', (ps) => ps.map((p) => p.textContent));
}

function sees(page, who, text, what) {
  return until(page, what || `sees ${JSON.stringify(text.slice(0, 40))}`,
    ([from, t]) => [...document.querySelectorAll('#log .msg:not(.pending):not(.failed)')].some((m) =>
      m.dataset.from === from && m.querySelector('.text').textContent === t), [who, text]);
}

// Runs axe-core in `page` and fails on any violation, whatever its impact.
const AXE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
async function axe(page, where) {
  await page.evaluate(AXE);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document);
    return result.violations
      .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join('; ')}`);
  });
  check(violations.length === 0, `axe-core on ${where}: ${violations.join(' | ')}`);
}

async function checks(browser, opts, pass, logs) {
  const a = await open(browser, opts.url, 'alice', logs, DESKTOP);
  await axe(a.page, 'the join screen');
  await join(a.page, 'alice');
  const b = await openAndJoin(browser, opts.url, 'bob', logs, DESKTOP);
  pass('both pages join');

  // A nickname in another script, typed decomposed (NFD): joined as its NFC form; one with a
  // space is refused with the server's reason.
  const e = await open(browser, opts.url, 'emile', logs, DESKTOP);
  await e.page.fill('#nick', 'e\u0301'.repeat(25)); // 50 code points, 25 characters in NFC
  await e.page.click('#join-button');
  await until(e.page, 'the page says a nickname of 25 characters is too long',
    () => document.getElementById('join-error').textContent === 'A nickname has at most 24 characters; this one has 25.');
  await e.page.fill('#nick', 'two words');
  await e.page.click('#join-button');
  await until(e.page, 'the server\'s reason for refusing "two words"',
    () => document.getElementById('join-error').textContent.startsWith('Nickname may only have letters, digits'));
  const refused = await e.page.textContent('#join-error');
  check(!/please/i.test(refused) && refused.includes('U+0020'), `the reason: ${JSON.stringify(refused)}`);
  await axe(e.page, 'the join screen with a refused nickname');
  await e.page.fill('#nick', 'E\u0301mile');
  await e.page.click('#join-button');
  await until(e.page, 'Émile joins', () => !document.getElementById('chat-screen').hidden
    && document.getElementById('me').textContent === '\u00c9mile'
    && document.querySelector('#users li[data-nick="\u00c9mile"]') !== null);
  await until(a.page, 'alice sees Émile online', () => document.querySelector('#users li[data-nick="\u00c9mile"]') !== null);
  await e.context.close();
  await until(a.page, 'Émile leaves', () => document.querySelector('#users li[data-nick="\u00c9mile"]') === null);
  pass('a nickname in any script joins (normalised to NFC); a refused one gets the server\'s reason');

  await until(a.page, 'alice sees bob online', () => document.querySelector('#users li[data-nick="bob"]') !== null);
  await until(b.page, 'bob sees alice online', () => document.querySelector('#users li[data-nick="alice"]') !== null);
  const listA = await nicksIn(a.page);
  const listB = await nicksIn(b.page);
  check(listA.join() === 'alice,bob' && listB.join() === 'alice,bob', `online lists: alice sees ${listA}, bob sees ${listB}`);
  pass('each sees the other in the online list');

  await a.page.click('#text');
  await a.page.keyboard.type('hel', { delay: 20 });
  await until(b.page, 'bob sees "alice is typing…"',
    () => document.getElementById('typing').textContent === 'alice is typing…');
  pass('typing shows in the other page');

  await a.page.keyboard.type('lo bob');
  await a.page.keyboard.press('Enter');
  await sees(b.page, 'alice', 'hello bob', 'bob sees alice\'s message');
  await until(b.page, 'bob no longer sees alice typing', () => document.getElementById('typing').textContent === '');
  await until(a.page, 'alice sees her own message, delivered',
    () => [...document.querySelectorAll('#log .msg.mine:not(.pending) .text')].some((p) => p.textContent === 'hello bob'));
  pass('a message sent in one page appears in the other');

  for (const p of [a.page, b.page]) await p.evaluate(() => { window.__pwned = false; });
  await say(b.page, XSS);
  for (const [who, p] of [['alice', a.page], ['bob', b.page]]) await sees(p, 'bob', XSS, `${who} shows the markup as text`);
  await sleep(300); // an image error handler would have run by now
  for (const [who, p] of [['alice', a.page], ['bob', b.page]]) {
    const seen = await p.evaluate((xss) => {
      const node = [...document.querySelectorAll('#log .msg .text')].find((t) => t.textContent === xss);
      return {
        imgs: document.querySelectorAll('#log img').length,
        children: node ? node.children.length : -1,
        pwned: window.__pwned,
        title: document.title,
      };
    }, XSS);
    check(seen.imgs === 0 && seen.children === 0 && seen.pwned === false && seen.title !== 'pwned',
      `${who}: markup was interpreted: ${JSON.stringify(seen)}`);
  }
  pass('<img onerror> appears as literal text, no element, no script');

  const LINKS = 'docs at https://example.com/guide?x=1&y=2. not javascript:alert(1) nor <a href="https://evil.example/">x</a>';
  await say(b.page, LINKS);
  await sees(a.page, 'bob', LINKS, 'alice sees the message with links');
  const links = await a.page.evaluate((t) => {
    const p = [...document.querySelectorAll('#log .msg .text')].find((x) => x.textContent === t);
    return {
      elements: [...p.querySelectorAll('*')].map((e) => e.tagName),
      links: [...p.querySelectorAll('a')].map((x) => ({ href: x.href, text: x.textContent, rel: x.rel, target: x.target })),
    };
  }, LINKS);
  check(JSON.stringify(links.elements) === '["A","A"]', `elements in the text: ${JSON.stringify(links)}`);
  const [first, second] = links.links;
  check(first.href === 'https://example.com/guide?x=1&y=2' && first.text === 'https://example.com/guide?x=1&y=2'
    && second.href === 'https://evil.example/' && links.links.every((l) => l.rel.includes('noopener') && l.target === '_blank'),
  `links: ${JSON.stringify(links.links)}`);
  pass('links are clickable (http and https only, as text, rel=noopener) and nothing else is markup');

  await a.page.click('#text');
  await a.page.keyboard.type('first line');
  await a.page.keyboard.press('Shift+Enter');
  await a.page.keyboard.type('second line');
  const box = await a.page.inputValue('#text');
  check(box === 'first line\nsecond line', `Shift+Enter: the box has ${JSON.stringify(box)}`);
  await a.page.keyboard.press('Enter');
  await sees(b.page, 'alice', 'first line\nsecond line', 'bob gets a message of two lines');
  check(await a.page.inputValue('#text') === '', 'Enter sent the message and emptied the box');
  pass('Shift+Enter starts a new line, Enter sends');

  // Keyboard only: every room, person and conversation is a button.
  const notButtons = await a.page.$$eval('#rooms li, #dms li, #other-rooms li, #users li:not(.self)',
    (lis) => lis.filter((li) => !li.querySelector('button')).map((li) => li.outerHTML));
  check(notButtons.length === 0, `not reachable by keyboard: ${notButtons}`);
  await b.page.focus('#users li[data-nick="alice"] button');
  await b.page.keyboard.press('Enter');
  await until(b.page, 'bob opens a private conversation with the keyboard', () => document.getElementById('conv-title').textContent === '@alice');
  await say(b.page, 'just between us');
  await until(a.page, 'alice gets a private conversation with an unread badge',
    () => [...document.querySelectorAll('#dms li')].some((li) =>
      li.dataset.key === '@bob' && li.querySelector('.badge').firstChild.textContent === '1'));
  check(await a.page.title() === '(1) wsloop chat', `alice's tab title: ${await a.page.title()}`);
  pass('a private message reaches the other page, with the unread count in the tab title');

  await a.page.focus('#dms li[data-key="@bob"] button');
  await a.page.keyboard.press('Space');
  await until(a.page, 'alice opens @bob with the keyboard', () => document.getElementById('conv-title').textContent === '@bob');
  check(await a.page.title() === 'wsloop chat', `alice's tab title after reading: ${await a.page.title()}`);
  const dm = await texts(a.page);
  check(dm.join('|') === 'just between us', `alice's @bob conversation: ${JSON.stringify(dm)}`);
  await b.page.click('#text');
  await b.page.keyboard.type('are you th', { delay: 20 });
  await until(a.page, 'alice sees bob typing in the private conversation',
    () => document.getElementById('typing').textContent === 'bob is typing…');
  await b.page.fill('#text', '');
  await b.page.dispatchEvent('#text', 'input');
  await until(a.page, 'bob stopped typing', () => document.getElementById('typing').textContent === '');
  pass('keyboard access to people and conversations; typing shows in private conversations');

  // The list of other rooms, and a room's history on entering it.
  await a.page.focus('#room-name');
  await a.page.keyboard.type('release');
  await a.page.keyboard.press('Enter');
  await until(a.page, 'alice in #release', () => document.getElementById('conv-title').textContent === '#release');
  await say(a.page, 'release notes draft');
  await sees(a.page, 'alice', 'release notes draft');
  await b.page.click('#rooms li[data-key="#lobby"] button');
  await b.page.focus('#room-name'); // the list is refreshed now and then, and on coming here
  await until(b.page, 'bob sees #release in the other rooms',
    () => document.querySelector('#other-rooms li[data-room="release"] .members')?.textContent === '1 member');
  await b.page.focus('#other-rooms li[data-room="release"] button');
  await b.page.keyboard.press('Enter');
  await until(b.page, 'bob in #release', () => document.getElementById('conv-title').textContent === '#release');
  await sees(b.page, 'alice', 'release notes draft', 'bob sees what was said in #release before he came');
  const order = await b.page.$$eval('#log li', (lis) => lis.map((li) => li.className.split(' ')[0]));
  check(order.slice(0, 3).join() === 'msg,divider,notice', `history, a line, then "You joined": ${order}`);
  pass('other rooms are listed and joined in one step, with their history and a line where it ends');

  // The rate limit: a burst of messages; those over it stay on the page as not sent, in one
  // row (a row for each run of consecutive failures), announced once.
  // Sent at once from the page (Enter in the box, 30 times), so that the count does not depend
  // on how fast this machine drives the browser: at most 20 fit the budget.
  const burst = Array.from({ length: 30 }, (_, i) => `burst ${i}`);
  await b.page.evaluate((all) => {
    const live = document.getElementById('announce');
    window.__announced = [];
    new MutationObserver(() => window.__announced.push(live.textContent))
      .observe(live, { childList: true, characterData: true, subtree: true });
    const box = document.getElementById('text');
    for (const text of all) {
      box.value = text;
      box.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true, cancelable: true }));
    }
  }, burst);
  await until(b.page, 'every message of the burst is settled, and announced',
    () => document.querySelectorAll('#log .msg.pending').length === 0 && window.__announced.length > 0);
  await sleep(500); // a second announcement would come within 300 ms
  const rows = await b.page.$$eval('#log .failed-row', (all) => all.map((row) => ({
    why: row.querySelector('.failed-why').textContent,
    retry: row.querySelector('.retry').textContent,
    texts: [...row.querySelectorAll('.failed-list .msg .text')].map((p) => p.textContent),
    alone: !row.previousElementSibling?.classList.contains('failed-row'),
  })));
  const failed = rows.flatMap((r) => r.texts);
  const n = failed.length;
  check(n >= 1 && rows.every((r) => r.alone && r.texts.length >= 1
    && r.why === `${r.texts.length === 1 ? '1 message' : `${r.texts.length} messages`} not sent: too many messages at once, retry in a moment`
    && r.retry === (r.texts.length === 1 ? 'Retry' : `Retry all ${r.texts.length}`)), `rows of messages not sent: ${JSON.stringify(rows)}`);
  const told = await b.page.evaluate(() => ({
    announced: window.__announced,
    alerts: document.querySelectorAll('#log [role="alert"]').length,
  }));
  check(told.alerts === 0 && told.announced.length === 1 && told.announced[0].startsWith(`${n} messages not sent`),
    `what screen readers are told: ${JSON.stringify(told)}`);
  const delivered = burst.filter((t) => !failed.includes(t));
  check(failed.join() === burst.filter((t) => failed.includes(t)).join(), `the rows keep the order: ${failed}`);
  await sees(a.page, 'bob', delivered[delivered.length - 1]);
  const gotA = (await texts(a.page)).filter((t) => t.startsWith('burst '));
  check(gotA.join() === delivered.join(), `alice got ${gotA}, bob delivered ${delivered}`);
  check(await b.page.textContent('#status-text') === 'connected as bob', 'bob stayed connected');
  await axe(b.page, 'a row of messages not sent');
  await sleep(250 * n + 1000); // the budget refills at 4 messages a second
  while (await b.page.$('#log .failed-row')) await b.page.click('#log .failed-row .retry');
  check(await b.page.evaluate(() => document.activeElement.id) === 'text', 'the focus goes back to the message box');
  await sees(a.page, 'bob', failed[n - 1], 'alice gets the messages bob sent again');
  await until(b.page, 'bob\'s messages sent again are delivered',
    () => document.querySelectorAll('#log .msg.pending, #log .failed-row').length === 0);
  const again = (await texts(a.page)).filter((t) => t.startsWith('burst '));
  check(again.join() === delivered.concat(failed).join(), `alice got ${again} after Retry all`);
  pass(`the messages over the rate limit make one row of ${n} not sent, announced once, and Retry all sends them in order`);

  // Scrolled up, a new message shows a button that jumps down.
  await a.page.setViewportSize({ width: DESKTOP.width, height: 480 });
  const scrolled = await a.page.evaluate(() => {
    const log = document.getElementById('log');
    log.scrollTop = 0;
    return log.scrollHeight - log.clientHeight;
  });
  check(scrolled > 100, `alice's log does not scroll (${scrolled} px)`);
  await say(b.page, 'anyone still here?');
  await until(a.page, 'alice sees "1 new message ↓", the log staying where it was',
    () => !document.getElementById('jump').hidden && document.getElementById('jump').textContent === '1 new message ↓'
      && document.getElementById('log').scrollTop === 0);
  await axe(a.page, 'the log with its new messages button');
  await a.page.click('#jump');
  const jumped = await a.page.evaluate(() => {
    const log = document.getElementById('log');
    return { bottom: log.scrollHeight - log.scrollTop - log.clientHeight, hidden: document.getElementById('jump').hidden, focus: document.activeElement.id };
  });
  check(jumped.bottom < 2 && jumped.hidden && jumped.focus === 'text', `after the button: ${JSON.stringify(jumped)}`);
  await a.page.setViewportSize(DESKTOP);
  pass('scrolled up, new messages show a "new messages ↓" button that jumps to the bottom');

  // A follow-up message (bob's, after his own) shows its time on hover and on keyboard focus.
  const opacity = () => a.page.evaluate(() => getComputedStyle(document.querySelector('#log .msg.continued:last-child time')).opacity);
  await a.page.mouse.move(5, 5);
  check(await opacity() === '0', 'a follow-up message shows its time without hover or focus');
  await a.page.hover('#log .msg.continued:last-child .text');
  check(await opacity() === '1', 'hovering a follow-up message does not show its time');
  await a.page.mouse.move(5, 5);
  await a.page.focus('#log');
  await a.page.keyboard.press('End');
  const focused = await a.page.evaluate(() => {
    const li = document.activeElement;
    const time = li.querySelector('time');
    return { last: li === document.querySelector('#log li:last-child'), continued: li.classList.contains('continued'),
      opacity: getComputedStyle(time).opacity, text: time.textContent, title: time.title, iso: time.dateTime };
  });
  check(focused.last && focused.continued && focused.opacity === '1' && /\d/.test(focused.text)
    && focused.title.length > focused.text.length && !Number.isNaN(Date.parse(focused.iso)), `the focused message: ${JSON.stringify(focused)}`);
  await a.page.keyboard.press('ArrowUp');
  check(await a.page.evaluate(() => document.activeElement === document.querySelector('#log li:last-child').previousElementSibling),
    'ArrowUp moves to the item before');
  pass('follow-up messages show their time on hover and on keyboard focus (arrow keys in the log)');

  await b.page.fill('#text', '\u0001'.repeat(2000));
  await b.page.press('#text', 'Enter');
  await until(b.page, 'bob sees why 2,000 control characters were not sent',
    () => [...document.querySelectorAll('#log .failed-row .failed-why')].some((s) => s.textContent.includes('control character')));
  check(await b.page.textContent('#status-text') === 'connected as bob', 'bob stayed connected (no 1009)');
  const over = 'x'.repeat(2001);
  await b.page.fill('#text', over);
  await b.page.press('#text', 'Enter');
  const warned = await b.page.evaluate(() => ({
    box: document.getElementById('text').value.length,
    warning: document.getElementById('text-count').textContent,
    visible: document.getElementById('text-count').offsetHeight > 0,
    invalid: document.getElementById('text').getAttribute('aria-invalid'),
    pending: document.querySelectorAll('#log .msg.pending').length,
  }));
  check(warned.box === 2001 && warned.visible && warned.warning.includes('at most 2000') && warned.invalid === 'true' && warned.pending === 0,
    `a text over the limit: ${JSON.stringify(warned)}`);
  await b.page.fill('#text', '');
  await b.page.dispatchEvent('#text', 'input');
  pass('control characters get an error, the connection stays; a text over the limit is kept with a warning');

  // Leaving one's only room, with the keyboard.
  const c = await openAndJoin(browser, opts.url, 'carol', logs, DESKTOP);
  await c.page.focus('#leave');
  await c.page.keyboard.press('Enter');
  await until(c.page, 'carol has no room and an invitation to join one, with the focus on it',
    () => !document.getElementById('empty').hidden && document.getElementById('composer').hidden
      && document.getElementById('log').hidden && document.querySelectorAll('#rooms li').length === 0
      && document.activeElement.id === 'join-lobby');
  await axe(c.page, 'the page with no room');
  await c.page.keyboard.press('Enter');
  await until(c.page, 'carol back in #lobby, typing', () => document.getElementById('conv-title').textContent === '#lobby'
    && !document.getElementById('composer').hidden && document.activeElement.id === 'text');
  await c.context.close();
  pass('leaving one\'s only room with the keyboard shows how to join one, with the focus on it');

  // A reload: the same nickname, the lobby's history.
  await b.page.reload({ waitUntil: 'load' });
  await until(b.page, 'bob is back after a reload', () => document.getElementById('status-text').textContent === 'connected as bob'
    && document.getElementById('conv-title').textContent === '#lobby');
  await sees(b.page, 'alice', 'hello bob', 'bob sees the lobby\'s history after a reload');
  pass('after a reload the page rejoins with its nickname and shows the room\'s history');

  // A reconnect without a restart (the server closes a flooding connection with 1008): the
  // history replayed on rejoining merges with what the page shows, nothing twice.
  await a.page.click('#rooms li[data-key="#lobby"] button');
  await a.page.evaluate(() => { for (let i = 0; i < 45; i++) ws.send('{"type":"list_rooms"}'); }); // eslint-disable-line no-undef
  await until(a.page, 'alice\'s page is closed for flooding, reconnects and rejoins',
    () => [...document.querySelectorAll('#log .notice')].some((n) => n.textContent.startsWith('Disconnected (rate limit'))
      && [...document.querySelectorAll('#log .notice')].some((n) => n.textContent === 'Reconnected.')
      && document.getElementById('status-text').textContent === 'connected as alice', undefined, RESTART_TIMEOUT_MS);
  await sleep(500); // the histories of both rooms have come by now
  const lobby = await texts(a.page);
  const twice = lobby.filter((t, i) => lobby.indexOf(t) !== i);
  check(lobby.includes('hello bob') && twice.length === 0, `after rejoining, the lobby shows ${JSON.stringify(lobby)}`);
  const errors = await a.page.$$eval('#log .error', (rows) => rows.map((r) => r.textContent));
  check(errors.length === 1 && /^Error: rate limit.* \((\d+) times\)$/.test(errors[0]),
    `the flood's refusals make one row: ${JSON.stringify(errors)}`);
  pass('a reconnect merges the room\'s history with what the page shows, nothing twice; the flood\'s refusals make one row');
  await axe(a.page, 'the desktop page');

  // The phone, its clock two days ahead: the lobby's history is from another day.
  const d = await open(browser, opts.url, 'dora', logs, PHONE, 2 * 86_400_000);
  const joinFields = await d.page.evaluate(() => parseFloat(getComputedStyle(document.getElementById('nick')).fontSize));
  check(joinFields >= 16, `the nickname field's font is ${joinFields} px (iOS zooms in under 16)`);
  await join(d.page, 'dora');
  await until(d.page, 'dora sees the lobby\'s history', () => document.querySelector('#log .msg.earlier time') !== null);
  const dated = await d.page.evaluate(() => [...document.querySelectorAll('#log .msg.earlier:not(.continued) time')].map((t) => {
    const at = new Date(t.dateTime);
    return [t.textContent, at.toLocaleDateString([], { day: 'numeric', month: 'short' }), at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })];
  }));
  check(dated.length > 0 && dated.every(([text, day, clock]) => text !== clock && text.startsWith(day) && text.endsWith(clock)),
    `times of earlier days: ${JSON.stringify(dated)}`);
  const today = await a.page.evaluate(() => [...document.querySelectorAll('#log .msg time')].map((t) =>
    [t.textContent, new Date(t.dateTime).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })]));
  check(today.length > 0 && today.every(([text, clock]) => text === clock), `times of today: ${JSON.stringify(today)}`);
  pass('messages of another day show their date, today\'s only the time');
  const layout = await d.page.evaluate(() => ({
    width: document.documentElement.scrollWidth,
    menu: getComputedStyle(document.getElementById('menu')).display !== 'none',
    sidebar: getComputedStyle(document.getElementById('sidebar')).visibility,
    send: document.getElementById('send').getBoundingClientRect().right,
  }));
  check(layout.width <= PHONE.width && layout.menu && layout.sidebar === 'hidden' && layout.send <= PHONE.width,
    `phone layout: ${JSON.stringify(layout)}`);
  if (opts.screenshots) await shoot(d.page, opts.screenshots, 'chat-390x844.png');
  await d.page.click('#menu');
  await until(d.page, 'the sidebar opens', () => getComputedStyle(document.getElementById('sidebar')).visibility === 'visible'
    && document.getElementById('menu').getAttribute('aria-expanded') === 'true');
  await axe(d.page, 'the phone page with its sidebar open');
  const touch = await d.page.evaluate(() => {
    const shown = (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility === 'visible';
    return {
      fields: [...document.querySelectorAll('input, textarea')].filter(shown)
        .map((f) => [f.id, parseFloat(getComputedStyle(f).fontSize)]).filter(([, size]) => size < 16),
      buttons: [...document.querySelectorAll('button')].filter(shown)
        .map((b) => [b.textContent.trim() || b.getAttribute('aria-label'), b.getBoundingClientRect().height]).filter(([, h]) => h < 44),
      counted: [...document.querySelectorAll('#sidebar button')].filter(shown).length,
    };
  });
  check(touch.fields.length === 0 && touch.buttons.length === 0 && touch.counted >= 4,
    `on the phone, fields under 16 px or buttons under 44 px: ${JSON.stringify(touch)}`);
  await d.page.click('#users li[data-nick="alice"] button');
  await until(d.page, 'choosing someone closes the sidebar', () => document.getElementById('conv-title').textContent === '@alice'
    && getComputedStyle(document.getElementById('sidebar')).visibility === 'hidden');
  await d.context.close();
  pass('on a phone the sidebar folds away behind a button; its buttons are 44 px high, its fields 16 px');
  pass('axe-core: no violation (join screen, refused nickname, desktop, messages not sent, new messages, no room, phone with its sidebar open, nickname taken)');

  await b.context.close();
  await until(a.page, 'bob leaves alice\'s online list', () => document.querySelector('#users li[data-nick="bob"]') === null);
  await until(a.page, 'alice sees "bob left #lobby"',
    () => [...document.querySelectorAll('#log .notice')].some((n) => n.textContent === 'bob left #lobby'));
  const after = await nicksIn(a.page);
  check(after.join() === 'alice', `after bob closed, alice sees ${after}`);
  pass('closing one page updates the other\'s list');
  if (opts.screenshots) await shoot(a.page, opts.screenshots, 'chat-1440x900.png');

  if (opts.restart) {
    await restartServer();
    await until(a.page, 'alice\'s page notices the restart',
      () => [...document.querySelectorAll('#log .notice')].some((n) => n.textContent.startsWith('Disconnected')),
      undefined, RESTART_TIMEOUT_MS);
    await until(a.page, 'alice\'s page reconnects and rejoins as alice',
      () => document.getElementById('status-text').textContent === 'connected as alice'
        && [...document.querySelectorAll('#log .notice')].some((n) => n.textContent === 'Reconnected.')
        && document.querySelector('#users li[data-nick="alice"]') !== null,
      undefined, RESTART_TIMEOUT_MS);
    await say(a.page, 'back again');
    await sees(a.page, 'alice', 'back again', 'a message after the restart comes back');
    pass('the page reconnects after a server restart and rejoins with the same nickname');

    // Kept offline while the server restarts, alice's page finds her nickname taken.
    await a.context.setOffline(true);
    await restartServer();
    const squatter = await squat(opts.url, 'alice');
    await a.context.setOffline(false);
    await until(a.page, 'alice\'s page says her nickname was taken and asks for another',
      () => !document.getElementById('join-screen').hidden
        && document.getElementById('join-error').textContent.includes('taken by someone else'),
      undefined, RESTART_TIMEOUT_MS);
    check(await a.page.textContent('#me') === '', `the corner still shows ${await a.page.textContent('#me')}`);
    await axe(a.page, 'the join screen after the nickname was taken');
    await sleep(1500);
    const status = await a.page.textContent('#status-text');
    check(status === 'connected: pick a nickname', `no retry loop: the status says ${JSON.stringify(status)}`);
    await a.page.fill('#nick', 'alice2');
    await a.page.press('#nick', 'Enter');
    await until(a.page, 'alice joins again as alice2, in her rooms',
      () => document.getElementById('status-text').textContent === 'connected as alice2'
        && document.querySelector('#rooms li[data-key="#release"]') !== null
        && document.querySelector('#users li[data-nick="alice"]') !== null);
    const back = await a.page.evaluate(() => ({
      last: document.querySelector('#log li:last-child').textContent,
      me: document.getElementById('me').textContent,
      focus: document.activeElement.id,
    }));
    check(back.last === 'Reconnected as alice2.' && back.me === 'alice2' && back.focus === 'text', `after joining again: ${JSON.stringify(back)}`);
    squatter.close();
    pass('a nickname taken during a restart: the page says so and another can be picked, then says it reconnected, focus in the message box');
  }
  await a.context.close();
}

async function shoot(page, dir, name) {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  await page.screenshot({ path: file, timeout: STEP_TIMEOUT_MS });
  console.log(`screenshot: ${file}`);
}

async function restartServer() {
  console.log('restart-server');
  const line = await within(nextLine(), 'waiting for the test to restart the server', RESTART_TIMEOUT_MS);
  check(line === 'restarted', `expected "restarted" on stdin, got ${JSON.stringify(line)}`);
}

// Joins as `nick` from Node (the `ws` client), waiting for the welcome.
function squat(url, nick) {
  const WebSocket = require('ws');
  const ws = new WebSocket(`${url.replace(/^http/, 'ws').replace(/\/$/, '')}/ws`, 'chat.v1');
  return within(new Promise((resolve, reject) => {
    ws.on('open', () => ws.send(JSON.stringify({ type: 'join', nick })));
    ws.on('message', (data) => {
      const msg = JSON.parse(data.toString());
      if (msg.type === 'welcome') resolve(ws);
      else if (msg.type === 'error') reject(new CheckFailed(`the squatter could not join: ${msg.message}`));
    });
    ws.on('error', reject);
  }), `joining as ${nick} from node`, STEP_TIMEOUT_MS);
}

// --history: a room's history as a chat process on Redis replays it (a moment after
// room_joined): someone from Node says two things, then a page joins and shows them above its
// "You joined" notice, then a live message below; after a reload, all three, once each.
async function history(browser, opts, pass, logs) {
  const writer = await squat(opts.url, 'writer');
  const said = (text) => new Promise((resolve) => {
    const echo = (data) => {
      const msg = JSON.parse(data.toString());
      if (msg.type === 'message' && msg.text === text) { writer.off('message', echo); resolve(); }
    };
    writer.on('message', echo);
    writer.send(JSON.stringify({ type: 'say', room: 'lobby', text }));
  });
  await within(said('before 1').then(() => said('before 2')), 'the writer\'s messages', STEP_TIMEOUT_MS);
  const p = await openAndJoin(browser, opts.url, 'pia', logs, DESKTOP);
  await sees(p.page, 'writer', 'before 2', 'the page shows the history from Redis');
  const order = await p.page.$$eval('#log li', (lis) => lis.map((li) => li.className.split(' ')[0]));
  check(order.join() === 'msg,msg,divider,notice', `history, a line, then "You joined": ${order}`);
  await said('live 1');
  await sees(p.page, 'writer', 'live 1');
  check((await texts(p.page)).join('|') === 'before 1|before 2|live 1', `the lobby: ${await texts(p.page)}`);
  pass('a room\'s history from Redis shows above "You joined", live messages below');
  await p.page.reload({ waitUntil: 'load' });
  await until(p.page, 'pia is back after a reload', () => document.getElementById('status-text').textContent === 'connected as pia');
  await sees(p.page, 'writer', 'live 1', 'the history after a reload');
  await sleep(300);
  check((await texts(p.page)).join('|') === 'before 1|before 2|live 1', `after a reload: ${await texts(p.page)}`);
  pass('after a reload the history from Redis is shown again, once');
  writer.close();
  await p.context.close();
}

// Against a chat on Redis whose relay holds publishes for a moment (tests/chat_redis.rs): once
// the page has joined it prints `stop-redis` and waits for a line on stdin (the test stops
// Redis), then says something; the message shows here (the server had it), and once the relay
// gives up on it the page marks it, in its conversation, as not delivered to the other servers.
async function undelivered(browser, opts, pass, logs) {
  const p = await openAndJoin(browser, opts.url, 'alice', logs, DESKTOP);
  console.log('stop-redis');
  check(await within(nextLine(), 'the test stopping Redis', RESTART_TIMEOUT_MS) !== null, 'stdin closed');
  await say(p.page, 'anyone there?');
  await sees(p.page, 'alice', 'anyone there?', 'her message shows on her page');
  await until(p.page, 'the undelivered notice',
    () => [...document.querySelectorAll('#log li.error')].some((li) => li.textContent.includes('"anyone there?"')),
    null, 20_000);
  const notice = await p.page.evaluate(() => [...document.querySelectorAll('#log li.error')]
    .map((li) => li.textContent).find((t) => t.includes('"anyone there?"')));
  check(/^Your message "anyone there\?" \(.+\) .*other servers.*\.$/.test(notice), `the notice: ${notice}`);
  await axe(p.page, 'the page with the notice');
  pass('the sender\'s page marks a message that could not reach the other servers');
  await p.context.close();
}

// A short, friendly conversation for the README's screenshots, seen from alice's page.
async function demo(browser, opts, pass, logs) {
  const a = await openAndJoin(browser, opts.url, 'alice', logs, { width: 960, height: 600 });
  const b = await openAndJoin(browser, opts.url, 'bob', logs, DESKTOP);
  const c = await openAndJoin(browser, opts.url, 'carol', logs, DESKTOP);
  const lines = [
    [a, 'Morning! The new chat server is up.'],
    [b, 'Nice. Is that the wsloop one?'],
    [a, 'Yes: one thread, rooms are topics, and the page reconnects by itself if the server restarts.\nHistory too: the last 100 messages of a room when you join it.'],
    [c, 'Tried it with <b>markup</b>: it shows up as plain text, as it should. Notes at https://example.com/wsloop'],
    [b, 'Rooms too? I made #release for the 0.1 notes.'],
  ];
  for (const [who, text] of lines) {
    await say(who.page, text);
    await sleep(150);
  }
  await b.page.fill('#room-name', 'release');
  await b.page.press('#room-name', 'Enter');
  await until(b.page, 'bob in #release', () => document.getElementById('conv-title').textContent === '#release');
  await say(b.page, 'Changelog draft is in #release, have a look when you can');
  await b.page.click('#rooms li[data-key="#lobby"] button');
  await say(b.page, 'Lunch at 12:30?');
  await c.page.click('#users li[data-nick="alice"] button');
  await say(c.page, 'Can you review my PR after lunch?');
  await sleep(300);
  await a.page.evaluate(() => { document.getElementById('room-name').focus(); document.getElementById('room-name').dispatchEvent(new Event('focus')); });
  await b.page.click('#text');
  await b.page.keyboard.type('Sounds g', { delay: 20 });
  await until(a.page, 'alice sees bob typing', () => document.getElementById('typing').textContent === 'bob is typing…');
  await a.page.focus('#text');
  fs.mkdirSync(opts.demo, { recursive: true });
  await a.page.screenshot({ path: path.join(opts.demo, 'screenshot.png'), timeout: STEP_TIMEOUT_MS });
  await a.page.setViewportSize(DESKTOP);
  await a.page.screenshot({ path: path.join(opts.demo, 'screenshot-1440x900.png'), timeout: STEP_TIMEOUT_MS });
  const d = await openAndJoin(browser, opts.url, 'dora', logs, PHONE);
  await say(b.page, 'dora, welcome! Lunch at 12:30 if you are around.');
  await sees(d.page, 'bob', 'dora, welcome! Lunch at 12:30 if you are around.');
  await d.page.click('#text');
  await d.page.keyboard.type('On my way');
  await d.page.screenshot({ path: path.join(opts.demo, 'screenshot-390x844.png'), timeout: STEP_TIMEOUT_MS });
  await d.page.click('#menu');
  await sleep(300);
  await d.page.screenshot({ path: path.join(opts.demo, 'screenshot-390x844-menu.png'), timeout: STEP_TIMEOUT_MS });
  console.log(`screenshots: ${opts.demo}`);
  pass('demo');
  for (const x of [a, b, c, d]) await x.context.close();
}

const opts = parseArgs(process.argv.slice(2));
const run = opts.demo ? demo : opts.history ? history : opts.undelivered ? undelivered : checks;
runChecks('chat browser', DEADLINE_MS, (browser, pass, logs) => run(browser, opts, pass, logs))
  .then((code) => process.exit(code));
