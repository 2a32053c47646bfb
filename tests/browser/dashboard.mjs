// SPDX-License-Identifier: MIT
// Drives vramd's dashboard in the system Chromium (playwright-core, no
// browser download) and checks what a user would see. Run by
// tests/integration/test_dashboard.py, which starts vramd on simulated GPUs:
//
//   node dashboard.mjs '{"scenario": "...", "url": "http://127.0.0.1:PORT", "out": DIR, ...}'
//
// Scenarios: "actions" (start shows starting then ready without a reload,
// offload, restore, stop and release with their confirmation, a followed
// log, decisions, the chart), "token" (the token typed in once, kept for the
// tab, never in a URL), "cors" (a page on another origin fetching
// /api/status: allowed or blocked). Each step that fails throws: the script
// exits 1 with the reason. Screenshots go to DIR. The last line printed is a
// JSON object with what was seen.
import { chromium } from 'playwright-core';
import http from 'node:http';
import path from 'node:path';

const cfg = JSON.parse(process.argv[2]);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = 30000; // generous: a loaded 2-core machine
const result = { scenario: cfg.scenario, screenshots: [] };

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
}

async function shot(page, name) {
  const file = path.join(cfg.out, name + '.png');
  await page.screenshot({ path: file, fullPage: true });
  result.screenshots.push(file);
}

const stateOf = (page, name) => page.locator(`tr[data-workload="${name}"] .state`);

async function waitState(page, name, state) {
  await page.waitForFunction(([n, s]) => {
    const e = document.querySelector(`tr[data-workload="${n}"] .state`);
    return e && e.textContent === s;
  }, [name, state], { timeout: WAIT_MS });
}

async function click(page, name, action) {
  const b = page.locator(`tr[data-workload="${name}"] button[data-action="${action}"]`);
  await b.waitFor({ timeout: WAIT_MS });
  await page.waitForFunction(([n, a]) => {
    const e = document.querySelector(`tr[data-workload="${n}"] button[data-action="${a}"]`);
    return e && !e.disabled;
  }, [name, action], { timeout: WAIT_MS });
  await b.click();
}

// Records every state a workload's row shows, as it changes (no sampling gaps).
async function recordStates(page, name) {
  await page.evaluate((n) => {
    window.__seen = window.__seen || {};
    const seen = (window.__seen[n] = []);
    const look = () => {
      const e = document.querySelector(`tr[data-workload="${n}"] .state`);
      const s = e && e.textContent;
      if (s && seen[seen.length - 1] !== s) seen.push(s);
    };
    look();
    new MutationObserver(look).observe(document.body, { subtree: true, childList: true, characterData: true });
  }, name);
}

async function actions(page) {
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(cfg.url + '/');
  await page.waitForSelector('#conn[data-state="live"]', { timeout: WAIT_MS });
  await page.waitForSelector('tr[data-workload="chat"]', { timeout: WAIT_MS });
  check(await page.locator('#gpus .gpu').count() === 2, 'two GPU bars for two simulated GPUs');
  check(await stateOf(page, 'chat').textContent() === 'stopped', 'chat starts stopped');

  // Start: starting, then ready, in the same page (a marker survives: no reload).
  await page.evaluate(() => { window.__noReload = 'still here'; });
  await recordStates(page, 'chat');
  await click(page, 'chat', 'start');
  await waitState(page, 'chat', 'ready');
  const seen = await page.evaluate(() => window.__seen.chat);
  result.start_states = seen;
  check(JSON.stringify(seen.slice(-3)) === JSON.stringify(['stopped', 'starting', 'ready']),
    'the row shows stopped, starting, ready in turn (saw ' + seen.join(' → ') + ')');
  check(await page.evaluate(() => window.__noReload) === 'still here', 'the page was not reloaded');
  // The GPU bar holds chat's memory, the decisions list its placement.
  await page.waitForFunction(() => [...document.querySelectorAll('#gpus title')].some((t) => t.textContent.startsWith('chat: 20')),
    null, { timeout: WAIT_MS });
  await page.waitForSelector('#decisions li[data-kind="placed"]', { timeout: WAIT_MS });
  result.decision = await page.locator('#decisions li[data-kind="placed"]').first().textContent();
  check(result.decision.includes('chat') && result.decision.includes('GPU'), 'the placement names chat and its GPU');

  // Offload and restore from the page.
  await recordStates(page, 'chat');
  await click(page, 'chat', 'offload');
  await waitState(page, 'chat', 'offloaded');
  await page.waitForFunction(() => document.querySelector('tr[data-workload="chat"]').textContent.includes('host'),
    null, { timeout: WAIT_MS });
  await click(page, 'chat', 'restore');
  await waitState(page, 'chat', 'ready');
  result.offload_states = await page.evaluate(() => window.__seen.chat);
  check(result.offload_states.includes('offloaded'), 'offloaded was shown');

  // A followed log: lines the workload writes later appear without a reload.
  await click(page, 'ticker', 'log');
  await page.waitForFunction(() => /tick \d+/.test(document.getElementById('log').textContent), null, { timeout: WAIT_MS });
  const first = await page.evaluate(() => Math.max(...[...document.getElementById('log').textContent.matchAll(/tick (\d+)/g)].map((m) => +m[1])));
  await page.waitForFunction((n) => {
    const ticks = [...document.getElementById('log').textContent.matchAll(/tick (\d+)/g)].map((m) => +m[1]);
    return Math.max(...ticks) >= n + 2;
  }, first, { timeout: WAIT_MS });
  result.log_followed_from = first;
  check(await page.locator('#log-state').textContent() === 'following', 'the log is still followed');

  // A second workload on the other GPU, for the picture.
  await click(page, 'embed', 'start');
  await waitState(page, 'embed', 'ready');
  // ...offloaded: the host tier holds it
  await click(page, 'embed', 'offload');
  await waitState(page, 'embed', 'offloaded');
  await page.waitForFunction(() => [...document.querySelectorAll('#host title')].some((t) => t.textContent.startsWith('embed: 4')),
    null, { timeout: WAIT_MS });

  // The chart has a line per GPU.
  await page.waitForFunction(() => document.querySelectorAll('#chart path.line').length === 2, null, { timeout: WAIT_MS });
  await shot(page, 'dashboard');

  // Stop asks first: cancel keeps it ready, confirm stops it.
  await click(page, 'chat', 'stop');
  await page.waitForSelector('#confirm[open]', { timeout: WAIT_MS });
  check((await page.locator('#confirm-text').textContent()).includes('Stop chat'), 'the confirmation names chat');
  await page.click('#confirm-cancel');
  await page.waitForTimeout(500); // nothing may happen: give it a chance to
  check(await stateOf(page, 'chat').textContent() === 'ready', 'a cancelled stop leaves chat ready');
  await click(page, 'chat', 'stop');
  await page.click('#confirm-ok');
  await waitState(page, 'chat', 'stopped');

  // Idle timers: set from the page, shown in the row.
  await click(page, 'embed', 'timers');
  await page.fill('#t-offload', '10m');
  await page.click('#timers-ok');
  await page.waitForFunction(() => document.querySelector('tr[data-workload="embed"]').textContent.includes('offload 10m'),
    null, { timeout: WAIT_MS });

  // Release asks too, and ends the workload.
  await click(page, 'embed', 'release');
  await page.waitForSelector('#confirm[open]', { timeout: WAIT_MS });
  await page.click('#confirm-ok');
  await waitState(page, 'embed', 'stopped');
  await shot(page, 'after-actions');
  // No polling loop for state: while nothing changes, the page asks for no status.
  const fetches = () => requests.filter((u) => u.endsWith('/api/status')).length;
  const before = fetches();
  await page.waitForTimeout(3000); // an absence: there is no event to wait for
  result.status_fetches_while_quiet = fetches() - before;
  check(result.status_fetches_while_quiet === 0,
    'no /api/status fetch while nothing changes (saw ' + result.status_fetches_while_quiet + ')');
}

async function tokenScenario(page) {
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(cfg.url + '/');
  await page.waitForSelector('#conn[data-state="token"]', { timeout: WAIT_MS });
  check(await page.locator('#token-form').isVisible(), 'the page asks for the token');
  await shot(page, 'token-asked');
  await page.fill('#token-input', 'wrong-' + cfg.token);
  await page.click('#token-use');
  await page.waitForFunction(() => document.getElementById('conn').textContent.includes('refused'), null, { timeout: WAIT_MS });
  await page.fill('#token-input', cfg.token);
  await page.click('#token-use');
  await page.waitForSelector('#conn[data-state="live"]', { timeout: WAIT_MS });
  await page.waitForSelector('tr[data-workload="chat"]', { timeout: WAIT_MS });
  check(await page.evaluate(() => sessionStorage.getItem('vramd-token')) === cfg.token, 'the token is in sessionStorage');
  // Live updates and actions with the token.
  await recordStates(page, 'chat');
  await click(page, 'chat', 'start');
  await waitState(page, 'chat', 'ready');
  // A reload of the tab keeps it: typed once.
  await page.reload();
  await page.waitForSelector('#conn[data-state="live"]', { timeout: WAIT_MS });
  await waitState(page, 'chat', 'ready');
  check(await page.locator('#token-form').isHidden(), 'no token asked again after a reload');
  // The log is read with the token too.
  await click(page, 'chat', 'log');
  await page.waitForFunction(() => document.getElementById('log').textContent.includes('loaded'), null, { timeout: WAIT_MS });
  check(!requests.some((u) => u.includes(cfg.token)), 'the token never appears in a URL');
  result.requests = requests.length;
}

// A page served by a server of our own on another origin fetches vramd's /api/status.
async function corsScenario(page) {
  const html = `<!doctype html><title>waiting</title><script>
fetch(${JSON.stringify(cfg.url + '/api/status')}).then((r) => r.json())
  .then((j) => { document.title = 'allowed: ' + j.workloads.length + ' workloads'; })
  .catch((e) => { document.title = 'blocked: ' + e.name; });
</script>`;
  const out = {};
  for (const [name, port] of Object.entries(cfg.pages)) {
    const srv = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html' });
      res.end(html);
    });
    await new Promise((ok) => srv.listen(port, '127.0.0.1', ok));
    try {
      await page.goto(`http://127.0.0.1:${port}/`);
      await page.waitForFunction(() => document.title !== 'waiting', null, { timeout: WAIT_MS });
      out[name] = await page.title();
    } finally {
      srv.close();
    }
  }
  result.pages = out;
}

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
try {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  if (cfg.scenario === 'actions') await actions(page);
  else if (cfg.scenario === 'token') await tokenScenario(page);
  else if (cfg.scenario === 'cors') await corsScenario(page);
  else throw new Error('unknown scenario ' + cfg.scenario);
  // A script error, or a blocked script or style (CSP), shows here.
  result.page_errors = errors;
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
