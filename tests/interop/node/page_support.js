// Helpers shared by the page tests in headless Chromium (chat_browser.js, game_browser.js):
// failing checks, waiting in a page, and reading the test's answers on stdin.
'use strict';

const readline = require('readline');

/** A check that failed: its message says what was expected and what was seen. */
class CheckFailed extends Error {}

/** Fails with `why` unless `ok`. */
function check(ok, why) {
  if (!ok) throw new CheckFailed(why);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with `promise`, or fails after `ms` saying it waited for `what`. */
function within(promise, what, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CheckFailed(`timed out after ${ms / 1000}s: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Waits until `fn(arg)` is truthy in `page` (polling every 50 ms), failing with `what` after `ms`. */
async function until(page, what, fn, arg, ms) {
  try {
    await page.waitForFunction(fn, arg, { timeout: ms, polling: 50 });
  } catch (err) {
    throw new CheckFailed(`${what} (${err.message.split('\n')[0]})`);
  }
}

/** The next line on stdin (trimmed), or null at its end. */
let stdinLines = null;
function nextLine() {
  if (!stdinLines) {
    const rl = readline.createInterface({ input: process.stdin });
    stdinLines = { queue: [], waiting: [] };
    rl.on('line', (line) => {
      const w = stdinLines.waiting.shift();
      if (w) w(line.trim()); else stdinLines.queue.push(line.trim());
    });
    rl.on('close', () => { for (const w of stdinLines.waiting.splice(0)) w(null); });
  }
  if (stdinLines.queue.length) return Promise.resolve(stdinLines.queue.shift());
  return new Promise((resolve) => stdinLines.waiting.push(resolve));
}

/** Chromium's flags for the page tests. */
const CHROMIUM_ARGS = [
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
const LAUNCH_TIMEOUT_MS = 30_000;

/**
 * Launches headless Chromium ($WSLOOP_CHROMIUM, else /usr/bin/chromium) and runs
 * `body(browser, pass, logs)` within `deadlineMs`: `pass(what)` prints `ok <what>`; `logs`
 * collects what the pages said (lines with ` page error: ` or an HTTP 4xx/5xx fail the run).
 * Prints `<name>: N passed, 0 failed` and resolves with 0, or prints `FAIL <step>: <why>`, the
 * logs and `<name>: N passed, 1 failed` and resolves with 1. Closes the browser either way.
 */
async function runChecks(name, deadlineMs, body) {
  setTimeout(() => {
    console.log(`FAIL deadline: the whole run took over ${deadlineMs / 1000}s`);
    console.log(`${name}: 0 passed, 1 failed`);
    process.exit(1); // playwright-core kills the browser it launched when the process exits
  }, deadlineMs).unref();
  const executablePath = process.env.WSLOOP_CHROMIUM || '/usr/bin/chromium';
  const logs = [];
  let passed = 0;
  let step = 'launch';
  const pass = (what) => { passed += 1; step = `after "${what}"`; console.log(`ok ${what}`); };
  let browser = null;
  try {
    check(require('fs').existsSync(executablePath),
      `no Chromium at ${executablePath} (tests/run.sh installs it: apt-get install chromium)`);
    let chromium;
    try {
      ({ chromium } = require('playwright-core'));
    } catch (err) {
      throw new CheckFailed(`playwright-core is not installed (run npm ci in tests/interop/node): ${err.message}`);
    }
    browser = await within(chromium.launch({
      executablePath, headless: true, args: CHROMIUM_ARGS, timeout: LAUNCH_TIMEOUT_MS,
    }), 'launching Chromium', LAUNCH_TIMEOUT_MS + 5_000);
    console.log(`browser: Chromium ${browser.version()} at ${executablePath}`);
    step = 'checks';
    await body(browser, pass, logs);
    const errors = logs.filter((l) => / page error: | HTTP [45]\d\d /.test(l));
    check(errors.length === 0, `errors in the pages: ${errors.join(' | ')}`);
    console.log(`${name}: ${passed} passed, 0 failed`);
    return 0;
  } catch (err) {
    const why = err instanceof CheckFailed ? err.message : `${err.name}: ${err.message}`;
    console.log(`FAIL ${step}: ${why}`);
    for (const line of logs) console.log(line);
    console.log(`${name}: ${passed} passed, 1 failed`);
    return 1;
  } finally {
    if (browser) await within(browser.close(), 'closing Chromium', 10_000).catch(() => {});
  }
}

module.exports = { CHROMIUM_ARGS, CheckFailed, check, sleep, within, until, nextLine, runChecks };
