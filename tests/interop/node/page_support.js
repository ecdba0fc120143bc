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

module.exports = { CheckFailed, check, sleep, within, until, nextLine };
