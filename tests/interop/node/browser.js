#!/usr/bin/env node
// Browser interop for wsloop: headless Chromium, driven by playwright-core, loads the echo page
// (tests/interop/browser/echo.html) from a wsloop server and lets it run its WebSocket checks
// with Chromium's own permessage-deflate offer.
//
// Usage: node browser.js http://127.0.0.1:PORT/ [--screenshot PATH]
//
// Chromium: $WSLOOP_CHROMIUM, else /usr/bin/chromium (playwright-core downloads no browser).
// Prints `browser: <version>`, `extensions: <negotiated>`, `ok <check>` lines, then
// `browser interop: N passed` and exits 0; or `FAIL <what>: <why>` lines, then
// `browser interop: N passed, M failed` and exits 1. Every step has a timeout and the whole run
// a 60 s deadline; the browser runs on a fresh user-data-dir that is removed afterwards.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');

const DEADLINE_MS = 60_000;
const LAUNCH_TIMEOUT_MS = 30_000;
const PAGE_TIMEOUT_MS = 15_000;
const RUN_TIMEOUT_MS = 45_000;
// The page tests' Chromium flags.
const { CHROMIUM_ARGS: ARGS } = require('./page_support');

class CheckFailed extends Error {}

function usage() {
  console.error('usage: node browser.js http://127.0.0.1:PORT/ [--screenshot PATH]');
  process.exit(2);
}

function parseArgs(argv) {
  let url = null;
  let screenshot = null;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--screenshot' && i + 1 < argv.length) screenshot = argv[++i];
    else if (!url && /^https?:\/\//.test(argv[i])) url = argv[i];
    else usage();
  }
  if (!url) usage();
  return { url, screenshot };
}

// Resolves with `promise`, or fails after `ms`.
function within(promise, what, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CheckFailed(`timed out after ${ms / 1000}s: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function main({ url, screenshot }) {
  const executablePath = process.env.WSLOOP_CHROMIUM || '/usr/bin/chromium';
  if (!fs.existsSync(executablePath)) {
    console.log(`FAIL launch: no Chromium at ${executablePath} (tests/run.sh installs it: apt-get install chromium)`);
    console.log('browser interop: 0 passed, 1 failed');
    return 1;
  }
  let chromium;
  try {
    ({ chromium } = require('playwright-core'));
  } catch (err) {
    console.log(`FAIL launch: playwright-core is not installed (run npm ci in tests/interop/node): ${err.message}`);
    console.log('browser interop: 0 passed, 1 failed');
    return 1;
  }

  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsloop-chromium-'));
  const logs = [];
  let context = null;
  let step = 'launch';
  try {
    context = await within(chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      args: ARGS,
      timeout: LAUNCH_TIMEOUT_MS,
      viewport: { width: 900, height: 760 },
    }), 'launching Chromium', LAUNCH_TIMEOUT_MS + 5_000);
    console.log(`browser: Chromium ${context.browser() ? context.browser().version() : '(persistent context)'} at ${executablePath}`);
    const page = context.pages()[0] || await context.newPage();
    page.on('console', (msg) => logs.push(`console.${msg.type()}: ${msg.text()}`));
    page.on('pageerror', (err) => logs.push(`page error: ${err.message}`));

    step = 'load the page';
    const response = await page.goto(url, { timeout: PAGE_TIMEOUT_MS, waitUntil: 'load' });
    if (!response || response.status() !== 200) {
      throw new CheckFailed(`GET ${url} answered ${response ? response.status() : 'nothing'}`);
    }

    step = 'run the page';
    await page.waitForFunction(() => window.wsloopResult && window.wsloopResult.done, null,
      { timeout: RUN_TIMEOUT_MS, polling: 100 });
    const result = await page.evaluate(() => window.wsloopResult);

    if (screenshot) {
      step = 'screenshot';
      fs.mkdirSync(path.dirname(screenshot), { recursive: true });
      await page.screenshot({ path: screenshot, fullPage: true, timeout: PAGE_TIMEOUT_MS });
      console.log(`screenshot: ${screenshot}`);
    }

    step = 'results';
    console.log(`extensions: ${result.extensions}`);
    console.log(`page: ${result.passed} passed, ${result.failed} failed of ${result.expected} in ${result.ms} ms`);
    for (const failure of result.failures) console.log(`FAIL page: ${failure}`);
    const problems = [];
    if (!(result.extensions || '').includes('permessage-deflate')) {
      problems.push(`ws.extensions '${result.extensions}' lacks permessage-deflate`);
    }
    if (result.closeCode !== 1000 || !result.wasClean) {
      problems.push(`close: code ${result.closeCode}, clean ${result.wasClean}`);
    }
    if (result.passed !== result.expected) problems.push(`${result.passed} of ${result.expected} checks passed`);
    for (const p of problems) console.log(`FAIL results: ${p}`);
    if (result.failed || problems.length) {
      for (const line of logs) console.log(line);
      console.log(`browser interop: ${result.passed} passed, ${result.failed || problems.length} failed`);
      return 1;
    }
    console.log(`browser interop: ${result.passed} passed`);
    return 0;
  } catch (err) {
    const why = err instanceof CheckFailed ? err.message : `${err.name}: ${err.message}`;
    console.log(`FAIL ${step}: ${why}`);
    for (const line of logs) console.log(line);
    console.log('browser interop: 0 passed, 1 failed');
    return 1;
  } finally {
    if (context) await within(context.close(), 'closing Chromium', 10_000).catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

setTimeout(() => {
  console.log(`FAIL deadline: the whole run took over ${DEADLINE_MS / 1000}s`);
  console.log('browser interop: 0 passed, 1 failed');
  process.exit(1); // playwright-core kills the browser it launched when the process exits
}, DEADLINE_MS).unref();
main(parseArgs(process.argv.slice(2))).then((code) => process.exit(code));
