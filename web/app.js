// SPDX-License-Identifier: MIT
// The vramd dashboard: plain JavaScript, no build step (docs/dashboard.md).
//
// State comes from GET /api/status, fetched again whenever /api/events says
// something changed: there is no polling loop for state. The event stream is
// read with fetch(), not EventSource, so that it can carry the token in an
// Authorization header (EventSource cannot set headers, and a token in a URL
// would end up in logs). The token is typed in once and kept in
// sessionStorage: it is gone when the tab closes.
'use strict';

const TOKEN_KEY = 'vramd-token';
const LOG_KEEP = 256 * 1024;         // characters of a followed log kept on screen
const RETRY_MS = [1000, 2000, 5000]; // waits before reconnecting the event stream
const HISTORY_REFRESH_MS = 10000;    // the chart's samples (not state) are fetched this often
const SVG = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);

let status = null;        // the last /api/status reply
let statusAt = 0;         // performance.now() when it came
let statusBusy = false;   // a fetch of it is under way
let statusAgain = false;  // another change came meanwhile: fetch once more after
let history = null;       // the last /api/history reply
let eventsAbort = null;   // AbortController of the event stream
let logAbort = null;      // AbortController of the followed log
let retries = 0;

// ------------------------------------------------------------------ API

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const t = token();
  if (t) h.Authorization = 'Bearer ' + t;
  return h;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// fetch() with the token; throws ApiError with the API's message on a non-2xx reply.
async function call(method, path, body, signal) {
  const init = { method, headers: headers(), signal, cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (r.status === 401) {
    needToken(token() ? 'the token was refused: enter it again' : 'this vramd needs its token');
    throw new ApiError(401, 'unauthorized');
  }
  if (!r.ok) {
    let msg = r.status + ' ' + r.statusText;
    try {
      const j = await r.json();
      if (j && j.error && j.error.message) msg = j.error.message;
    } catch (e) { /* not JSON */ }
    throw new ApiError(r.status, msg);
  }
  return r;
}

async function getJson(path) {
  return (await call('GET', path)).json();
}

function showError(msg) {
  const e = $('error');
  e.textContent = msg || '';
  e.hidden = !msg;
}

function setConn(state, text) {
  const c = $('conn');
  c.dataset.state = state;
  c.textContent = text;
}

// ---------------------------------------------------------------- token

function needToken(why) {
  setConn('token', why);
  $('token-form').hidden = false;
  $('token-forget').hidden = !token();
  $('token-input').focus();
}

function useToken() {
  const v = $('token-input').value.trim();
  if (!v) return;
  sessionStorage.setItem(TOKEN_KEY, v);
  $('token-input').value = '';
  $('token-form').hidden = true;
  $('token-forget').hidden = false;
  connect();
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  $('token-forget').hidden = true;
  if (eventsAbort) eventsAbort.abort();
  needToken('token forgotten');
}

// --------------------------------------------------------------- format

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)) + ' ' + units[i];
}

function secs(s) {
  if (s === null || s === undefined) return 'never';
  if (s < 60) return Math.round(s) + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm' + (s % 60 >= 1 ? String(Math.floor(s % 60)).padStart(2, '0') + 's' : '');
  if (s < 86400) return Math.floor(s / 3600) + 'h' + String(Math.floor((s % 3600) / 60)).padStart(2, '0') + 'm';
  return Math.floor(s / 86400) + 'd' + Math.floor((s % 86400) / 3600) + 'h';
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString();
}

// A stable colour per workload name.
function colour(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return 'hsl(' + (h % 360) + ', 60%, 55%)';
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.dataset[k.slice(5)] = v;
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

// ---------------------------------------------------------------- render

// A horizontal bar of segments [{value, fill, title, cls}] over total.
function bar(total, segments, label) {
  const s = svg('svg', { viewBox: '0 0 1000 24', preserveAspectRatio: 'none', class: 'bar', role: 'img' });
  s.append(svg('rect', { x: 0, y: 0, width: 1000, height: 24, class: 'bar-free' }));
  let x = 0;
  for (const seg of segments) {
    if (!total || !seg.value) continue;
    const w = Math.max(0, Math.min(1000 - x, (seg.value / total) * 1000));
    const r = svg('rect', { x, y: 0, width: w, height: 24, class: seg.cls || 'seg' });
    if (seg.fill) r.style.fill = seg.fill; // over the class's colour
    const t = svg('title');
    t.textContent = seg.title;
    r.append(t);
    s.append(r);
    x += w;
  }
  s.setAttribute('aria-label', label);
  return s;
}

function renderGpus() {
  const box = $('gpus');
  box.replaceChildren();
  const seen = new Set();
  for (const g of status.gpus) {
    const mem = g.memory || {};
    const byWl = new Map();
    if (Array.isArray(g.processes)) {
      for (const p of g.processes) {
        if (p.workload && p.used_bytes) byWl.set(p.workload, (byWl.get(p.workload) || 0) + p.used_bytes);
      }
    }
    // Without a process list (a backend that cannot tell), what vramd placed there.
    if (!Array.isArray(g.processes)) {
      for (const w of status.workloads) {
        const on = (w.gpus || []).some((x) => x.index === g.index);
        const b = w.memory && w.memory.per_gpu_bytes;
        if (on && b && ['ready', 'starting', 'restoring', 'offloading', 'stopping'].includes(w.state)) byWl.set(w.name, b);
      }
    }
    let mine = 0;
    const segs = [];
    for (const [name, b] of byWl) {
      mine += b;
      seen.add(name);
      segs.push({ value: b, fill: colour(name), title: name + ': ' + bytes(b) });
    }
    const other = Math.max(0, (mem.used || 0) - mine);
    segs.push({ value: other, cls: 'seg-other', title: 'other processes: ' + bytes(other) });
    segs.push({ value: mem.reserve || 0, cls: 'seg-reserve', title: 'reserve: ' + bytes(mem.reserve) });
    const label = 'GPU ' + g.index + ': ' + bytes(mem.used) + ' used of ' + bytes(mem.total);
    const row = el('div', { class: 'gpu', 'data-index': String(g.index) },
      el('div', { class: 'gpu-head' },
        el('strong', {}, 'GPU ' + g.index),
        el('span', { class: 'muted' }, ' ' + (g.name || '')),
        el('span', { class: 'gpu-num' }, bytes(mem.used) + ' / ' + bytes(mem.total) +
          (g.utilization_percent !== null && g.utilization_percent !== undefined ? ' · ' + g.utilization_percent + '%' : ''))),
      bar(mem.total, segs, label));
    box.append(row);
  }
  const legend = $('legend');
  legend.replaceChildren();
  for (const name of seen) legend.append(swatch(colour(name), null, name));
  legend.append(swatch(null, 'seg-other', 'other processes'), swatch(null, 'seg-reserve', 'reserve'),
    swatch(null, 'bar-free', 'free'));
}

function swatch(fill, cls, text) {
  const s = svg('svg', { viewBox: '0 0 10 10', class: 'swatch' });
  const r = svg('rect', { x: 0, y: 0, width: 10, height: 10 });
  if (fill) r.style.fill = fill;
  if (cls) r.setAttribute('class', cls);
  s.append(r);
  return el('span', { class: 'legend-item' }, s, ' ' + text);
}

function renderHost() {
  const h = status.host;
  const box = $('host');
  box.replaceChildren();
  if (!h) return;
  const segs = [];
  const parkedBy = status.workloads.filter((w) => w.memory && w.memory.host_bytes);
  for (const w of parkedBy) segs.push({ value: w.memory.host_bytes, fill: colour(w.name), title: w.name + ': ' + bytes(w.memory.host_bytes) + ' in host RAM' });
  const total = h.budget || h.total;
  box.append(
    el('div', { class: 'gpu-head' },
      el('strong', {}, 'Host RAM'),
      el('span', { class: 'gpu-num' }, bytes((h.parked || 0) + (h.kept || 0)) + ' held / ' + bytes(h.budget) + ' budget')),
    bar(total, segs, 'host memory held by workloads'),
    el('dl', { class: 'host-facts' },
      el('dt', {}, 'total'), el('dd', {}, bytes(h.total)),
      el('dt', {}, 'available'), el('dd', {}, bytes(h.available)),
      el('dt', {}, 'reserve'), el('dd', {}, bytes(h.reserve)),
      el('dt', {}, 'offloaded'), el('dd', {}, bytes(h.parked)),
      el('dt', {}, 'kept'), el('dd', {}, bytes(h.kept)),
      el('dt', {}, 'on disk'), el('dd', {}, bytes(h.on_disk))));
}

const ACTIONS = {
  start: (s) => s === 'stopped' || s === 'failed',
  stop: (s) => s !== 'stopped' && s !== 'failed',
  offload: (s) => s === 'ready',
  restore: (s) => s === 'offloaded' || s === 'parked',
  release: (s) => ['ready', 'offloaded', 'parked'].includes(s),
  park: (s) => s === 'ready' || s === 'offloaded',
};

function timersText(t) {
  if (!t) return '–';
  const parts = [];
  parts.push('offload ' + secs(t.offload_after_seconds));
  parts.push('release ' + secs(t.release_after_seconds));
  if (t.park_after_seconds !== null && t.park_after_seconds !== undefined) parts.push('park ' + secs(t.park_after_seconds));
  return parts.join(' · ');
}

function memText(w) {
  const m = w.memory || {};
  const parts = [];
  if (m.gpu_bytes) parts.push(bytes(m.gpu_bytes) + ' GPU');
  if (m.host_bytes) parts.push(bytes(m.host_bytes) + ' host');
  if (m.parked_bytes) parts.push(bytes(m.parked_bytes) + ' disk');
  if (!parts.length) parts.push(m.declared ? m.declared + ' declared' : '–');
  return parts.join(', ');
}

function idleSeconds(w) {
  if (w.idle_seconds === null || w.idle_seconds === undefined) return null;
  return w.idle_seconds + (w.in_flight ? 0 : (performance.now() - statusAt) / 1000);
}

function renderWorkloads() {
  const body = $('workloads').tBodies[0];
  body.replaceChildren();
  for (const w of status.workloads) {
    const actions = el('td', { class: 'actions' });
    for (const [a, ok] of Object.entries(ACTIONS)) {
      const b = el('button', { type: 'button', textContent: a, disabled: !ok(w.state), 'data-action': a });
      b.addEventListener('click', () => act(w.name, a));
      actions.append(b);
    }
    const tb = el('button', { type: 'button', textContent: 'timers', 'data-action': 'timers' });
    tb.addEventListener('click', () => editTimers(w));
    const lb = el('button', { type: 'button', textContent: 'log', 'data-action': 'log' });
    lb.addEventListener('click', () => followLog(w.name));
    actions.append(tb, lb);
    const err = w.last_error ? el('div', { class: 'wl-error' }, w.last_error) : '';
    body.append(el('tr', { 'data-workload': w.name },
      el('td', {}, el('span', { class: 'dot' }), w.name, err),
      el('td', {}, el('span', { class: 'state', 'data-state': w.state }, w.state)),
      el('td', {}, (w.gpus || []).map((g) => g.index).join(', ') || '–'),
      el('td', {}, memText(w)),
      el('td', { class: 'idle', 'data-name': w.name }, w.state === 'stopped' ? '–' : secs(idleSeconds(w))),
      el('td', {}, w.engine && w.engine.name ? w.engine.name : '–'),
      el('td', {}, timersText(w.timeouts)),
      actions));
    body.lastChild.querySelector('.dot').style.background = colour(w.name);
  }
}

// Idle times advance on screen between changes without asking vramd.
function tickIdle() {
  if (!status) return;
  for (const td of document.querySelectorAll('td.idle')) {
    const w = status.workloads.find((x) => x.name === td.dataset.name);
    if (w && w.state !== 'stopped') td.textContent = secs(idleSeconds(w));
  }
}

function renderChart() {
  const c = $('chart');
  c.replaceChildren();
  const W = 600;
  const H = 160;
  if (!history || !history.samples.length) return;
  const gpus = history.gpus;
  const max = Math.max(1, ...gpus.map((g) => g.total || 0));
  const t1 = history.samples[history.samples.length - 1].time;
  const t0 = Math.min(history.samples[0].time, t1 - 60);
  const x = (t) => ((t - t0) / Math.max(1, t1 - t0)) * W;
  const y = (b) => H - (b / max) * (H - 4);
  for (let k = 1; k < 4; k++) c.append(svg('line', { x1: 0, x2: W, y1: (H * k) / 4, y2: (H * k) / 4, class: 'grid' }));
  const legend = $('chart-legend');
  legend.replaceChildren();
  gpus.forEach((g, i) => {
    let d = '';
    for (const s of history.samples) {
      const v = s.used[i];
      if (v === null || v === undefined) continue;
      d += (d ? 'L' : 'M') + x(s.time).toFixed(1) + ',' + y(v).toFixed(1);
    }
    const hue = (i * 137) % 360;
    c.append(svg('path', { d, class: 'line', stroke: 'hsl(' + hue + ', 70%, 45%)' }));
    legend.append(swatch('hsl(' + hue + ', 70%, 45%)', null, 'GPU ' + g.index + ' (of ' + bytes(g.total) + ')'));
  });
  legend.append(el('span', { class: 'muted' }, ' ' + Math.round((t1 - t0) / 60) + ' min, up to ' + bytes(max)));
}

async function loadHistory() {
  try {
    history = await getJson('/api/history');
    renderChart();
  } catch (e) { /* shown by the status fetch */ }
}

async function loadDecisions() {
  let d;
  try {
    d = await getJson('/api/decisions');
  } catch (e) {
    return;
  }
  const list = $('decisions');
  list.replaceChildren();
  for (const r of d.decisions.slice().reverse().slice(0, 20)) {
    const what = r.kind === 'placed'
      ? ((r.gpus || []).length ? 'on GPU ' + r.gpus.join(', ') : 'on the CPU') + (r.evicts && r.evicts.length ? ', evicting ' + r.evicts.join(', ') : '')
      : r.from ? r.from + ' → ' + r.to : '';
    list.append(el('li', { 'data-kind': r.kind },
      el('time', {}, clock(r.time)), ' ',
      el('span', { class: 'kind', 'data-kind': r.kind }, r.kind), ' ',
      el('strong', {}, r.workload), ' ', what ? el('span', {}, what + ': ') : '',
      el('span', { class: 'reason' }, r.reason)));
  }
  if (!d.decisions.length) list.append(el('li', { class: 'muted' }, 'none yet'));
}

function render() {
  renderGpus();
  renderHost();
  renderWorkloads();
}

// Fetches /api/status; changes that come while it runs fetch it once more after.
async function refresh() {
  if (statusBusy) {
    statusAgain = true;
    return;
  }
  statusBusy = true;
  try {
    do {
      statusAgain = false;
      status = await getJson('/api/status');
      statusAt = performance.now();
      render();
    } while (statusAgain);
    showError('');
  } catch (e) {
    if (e.status !== 401) showError('status: ' + e.message);
  } finally {
    statusBusy = false;
  }
}

// -------------------------------------------------------------- events

// Reads /api/events as a stream and calls onEvent(name, data) for each event.
async function readSse(response, onEvent) {
  const reader = response.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
        if (field === 'event') name = val;
        else if (field === 'data') data.push(val);
      }
      if (data.length) onEvent(name, data.join('\n'));
    }
  }
}

function onEvent(name, data) {
  // every change is a reason to look again; the reply is built at most once
  refresh();
  if (name === 'state') {
    loadDecisions();
    try {
      const ev = JSON.parse(data);
      if (ev.to === 'ready' || ev.to === 'offloaded' || ev.to === 'stopped') loadHistory();
    } catch (e) { /* not JSON: ignore */ }
  }
}

async function connect() {
  if (eventsAbort) eventsAbort.abort();
  const ctl = new AbortController();
  eventsAbort = ctl;
  setConn('connecting', 'connecting');
  let r;
  try {
    r = await call('GET', '/api/events', undefined, ctl.signal);
  } catch (e) {
    if (ctl.signal.aborted || e.status === 401) return;
    return retry(ctl, e.message);
  }
  retries = 0;
  setConn('live', 'live');
  $('token-form').hidden = true;
  // after the stream is open, so that no change falls between the two
  refresh();
  loadDecisions();
  loadHistory();
  try {
    await readSse(r, onEvent);
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  retry(ctl, 'the event stream ended');
}

function retry(ctl, why) {
  if (ctl !== eventsAbort) return;
  const wait = RETRY_MS[Math.min(retries++, RETRY_MS.length - 1)];
  setConn('down', 'reconnecting (' + why + ')');
  setTimeout(() => { if (ctl === eventsAbort) connect(); }, wait);
}

// ------------------------------------------------------------- actions

function confirmDialog(text) {
  const d = $('confirm');
  $('confirm-text').textContent = text;
  return new Promise((resolve) => {
    const done = (v) => () => {
      $('confirm-ok').onclick = null;
      $('confirm-cancel').onclick = null;
      d.close();
      resolve(v);
    };
    $('confirm-ok').onclick = done(true);
    $('confirm-cancel').onclick = done(false);
    d.showModal();
  });
}

async function act(name, action) {
  if (action === 'stop' || action === 'release') {
    const what = action === 'stop'
      ? 'Stop ' + name + '? Its processes are ended; a later start loads it again.'
      : 'Release ' + name + '? Its processes are ended and its GPU and host memory freed.';
    if (!(await confirmDialog(what))) return;
  }
  try {
    // ?wait=0: the answer comes at once, the change comes through the event stream
    await call('POST', '/api/workloads/' + encodeURIComponent(name) + '/' + action + '?wait=0');
    showError('');
  } catch (e) {
    if (e.status !== 401) showError(action + ' ' + name + ': ' + e.message);
  }
}

function editTimers(w) {
  const d = $('timers');
  $('timers-name').textContent = w.name;
  for (const id of ['t-offload', 't-release', 't-park']) $(id).value = '';
  const t = w.timeouts || {};
  $('t-offload').placeholder = secs(t.offload_after_seconds);
  $('t-release').placeholder = secs(t.release_after_seconds);
  $('t-park').placeholder = secs(t.park_after_seconds);
  $('timers-cancel').onclick = () => d.close();
  $('timers-ok').onclick = async () => {
    const body = {};
    const put = (id, key) => {
      const v = $(id).value.trim();
      if (v) body[key] = /^\d+(\.\d+)?$/.test(v) ? Number(v) : v;
    };
    put('t-offload', 'offload_after');
    put('t-release', 'release_after');
    put('t-park', 'park_after');
    d.close();
    if (!Object.keys(body).length) return;
    try {
      await call('PUT', '/api/workloads/' + encodeURIComponent(w.name) + '/idle', body);
      showError('');
      refresh();
    } catch (e) {
      if (e.status !== 401) showError('timers of ' + w.name + ': ' + e.message);
    }
  };
  d.showModal();
}

// ----------------------------------------------------------------- logs

async function followLog(name) {
  if (logAbort) logAbort.abort();
  const ctl = new AbortController();
  logAbort = ctl;
  const pre = $('log');
  pre.textContent = '';
  $('log-name').textContent = name;
  $('log-state').textContent = 'following';
  $('log-stop').hidden = false;
  try {
    const r = await call('GET', '/api/workloads/' + encodeURIComponent(name) + '/logs?follow=1&tail=200',
      undefined, ctl.signal);
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      let text = pre.textContent + dec.decode(value, { stream: true });
      if (text.length > LOG_KEEP) text = text.slice(text.length - LOG_KEEP);
      pre.textContent = text;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
    if (ctl === logAbort) $('log-state').textContent = 'ended';
  } catch (e) {
    if (ctl === logAbort) $('log-state').textContent = ctl.signal.aborted ? 'stopped' : 'error: ' + e.message;
  }
  if (ctl === logAbort) $('log-stop').hidden = true;
}

function stopLog() {
  if (logAbort) logAbort.abort();
  $('log-stop').hidden = true;
}

// ----------------------------------------------------------------- start

document.addEventListener('DOMContentLoaded', () => {
  $('token-use').addEventListener('click', useToken);
  $('token-input').addEventListener('keydown', (e) => { if (e.key === 'Enter') useToken(); });
  $('token-forget').addEventListener('click', forgetToken);
  $('token-forget').hidden = !token();
  $('log-stop').addEventListener('click', stopLog);
  setInterval(tickIdle, 1000);
  setInterval(loadHistory, HISTORY_REFRESH_MS);
  connect();
});
