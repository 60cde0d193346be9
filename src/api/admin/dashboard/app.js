// sesame's operators' dashboard. Plain script, no build step, no library: it
// reads the admin API of the listener that served it (the admin token from the
// form, kept in sessionStorage, sent as a Bearer header, never in a URL) and
// draws its charts as inline SVG, each beside a table of the same numbers.
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';
const TOKEN_KEY = 'sesame.adminToken';
/** The bucket of each window: 30 to 168 points. */
const BUCKET_OF = { '1h': '1m', '24h': '1h', '7d': '6h', '30d': '1d' };
const EVENTS_EVERY_MS = 5000;
const STATS_EVERY_MS = 30000;
/** Series styles: each differs by dash and marker too, so colour is never needed. */
const LINE_STYLES = [
  { color: '#1d4f91', dash: '', marker: 'circle' },
  { color: '#a4480b', dash: '7 4', marker: 'square' },
  { color: '#2b6e2b', dash: '2 3', marker: 'triangle' },
  { color: '#6b3d8f', dash: '10 3 2 3', marker: 'diamond' },
];
/** Bar fills: a colour and a distinct hatch each. */
const BAR_STYLES = [
  { color: '#1d4f91', hatch: 'solid' },
  { color: '#a4480b', hatch: 'diagonal' },
  { color: '#2b6e2b', hatch: 'dots' },
  { color: '#6b3d8f', hatch: 'cross' },
  { color: '#8a6d00', hatch: 'horizontal' },
  { color: '#00707a', hatch: 'vertical' },
  { color: '#8f2d3d', hatch: 'back' },
  { color: '#555555', hatch: 'grid' },
];

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY);
let since = '24h';
let openUser = null;
let timers = [];

// --- The admin API ---------------------------------------------------------------

class Unauthorized extends Error {}

async function api(method, path) {
  const resp = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
    cache: 'no-store',
  });
  const body = await resp.json().catch(() => ({}));
  if (resp.status === 401) throw new Unauthorized(body.error ?? 'the admin token was refused');
  if (!resp.ok) throw new Error(body.error ?? `HTTP ${resp.status}`);
  return body;
}

function say(text) {
  $('status').textContent = text;
}

function failed(err) {
  if (err instanceof Unauthorized) {
    signOut();
    say(`Signed out: ${err.message}.`);
  } else {
    say(`Error: ${err.message}`);
  }
}

// --- Signing in ------------------------------------------------------------------

async function signIn(candidate) {
  token = candidate;
  try {
    await api('GET', '/admin/stats?since=1h&bucket=1h');
  } catch (err) {
    token = null;
    say(err instanceof Unauthorized ? `Not signed in: ${err.message}.` : `Error: ${err.message}`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token').value = '';
  show(true);
  say('Signed in.');
  $('main').focus();
  start();
}

function signOut() {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  timers.forEach(clearInterval);
  timers = [];
  show(false);
  say('Signed out.');
}

function show(signedIn) {
  $('signin').hidden = signedIn;
  $('signedin').hidden = !signedIn;
  $('main').hidden = !signedIn;
}

function start() {
  loadStats();
  loadEvents();
  timers.push(setInterval(() => !document.hidden && loadEvents(), EVENTS_EVERY_MS));
  timers.push(setInterval(() => !document.hidden && loadStats(), STATS_EVERY_MS));
}

// --- Formatting ------------------------------------------------------------------

const num = (n) => Number(n).toLocaleString('en');
const pct = (part, whole) => (whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : '—');
const iso = (t) => (t ? new Date(t).toISOString() : '');
const time = (t) => (t ? iso(t).slice(0, 19).replace('T', ' ') : '—');

function bucketLabel(t, bucket) {
  const s = iso(t);
  return bucket.endsWith('d') ? s.slice(0, 10) : s.slice(5, 16).replace('T', ' ');
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// --- Stats and charts -------------------------------------------------------------

async function loadStats() {
  const bucket = BUCKET_OF[since];
  let stats;
  try {
    stats = await api('GET', `/admin/stats?since=${since}&bucket=${bucket}`);
  } catch (err) {
    return failed(err);
  }
  $('range').textContent = `From ${time(stats.from)} to ${time(stats.until)} UTC, in buckets of ${stats.bucket}.`;
  const t = stats.totals;
  for (const node of document.querySelectorAll('[data-total]')) {
    const key = node.dataset.total;
    node.textContent = key === 'successRate' ? pct(t.logins, t.logins + t.verificationFailures) : num(t[key]);
  }
  const labels = stats.buckets.map((b) => bucketLabel(b.start, stats.bucket));
  const col = (f) => stats.buckets.map(f);
  const methods = Object.keys(t.loginsByMethod);
  chart('chart-logins', 'line', labels, [
    { name: 'Sign-ins', values: col((b) => b.logins) },
    ...methods.map((m) => ({ name: `Sign-ins by ${m}`, values: col((b) => b.loginsByMethod[m] ?? 0) })),
  ], [
    {
      name: 'Success rate (%)',
      values: col((b) => (b.logins + b.verificationFailures > 0 ? Math.round((1000 * b.logins) / (b.logins + b.verificationFailures)) / 10 : null)),
      max: 100,
    },
  ]);
  const reasons = Object.keys(t.verificationFailuresByReason);
  chart('chart-failures', 'bars', labels, reasons.map((r) => ({ name: r, values: col((b) => b.verificationFailuresByReason[r] ?? 0) })));
  chart('chart-refresh', 'line', labels, [
    { name: 'Refreshes', values: col((b) => b.refreshes) },
    { name: 'Reuse detected', values: col((b) => b.reuseDetected) },
  ]);
  chart('chart-limits', 'line', labels, [
    { name: 'Rate-limit refusals', values: col((b) => b.rateLimited) },
    { name: 'New users', values: col((b) => b.newUsers) },
  ]);
}

/**
 * Fills section `id` with a chart of `series` (line or stacked bars) and a table of
 * the same numbers; `extra` series get a chart of their own scale (e.g. a percentage).
 */
function chart(id, kind, labels, series, extra = []) {
  const section = $(id);
  const title = section.querySelector('h2').textContent;
  const body = el('div', { class: 'chart-body' });
  const figure = el('figure');
  const summary = series.map((s) => `${s.name}: ${num(sum(s.values))}`).join(', ');
  figure.append(kind === 'bars' ? bars(labels, series, `${title}. Totals: ${summary}.`) : lines(labels, series, `${title}. Totals: ${summary}.`));
  extra.forEach((s, j) => figure.append(lines(labels, [s], `${title}: ${s.name}`, s.max, series.length + j)));
  figure.append(legend(kind, [...series, ...extra]));
  body.append(figure, table(title, labels, [...series, ...extra]));
  section.replaceChildren(section.querySelector('h2'), body);
}

const sum = (xs) => xs.reduce((a, x) => a + (x ?? 0), 0);
const W = 720;
const H = 200;
const PAD = { left: 44, right: 10, top: 10, bottom: 26 };

function frame(label, labels, max) {
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label, class: 'plot' });
  const y = (v) => H - PAD.bottom - ((H - PAD.top - PAD.bottom) * v) / max;
  for (const v of [0, max / 2, max]) {
    root.append(svg('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: 'grid' }));
    const tick = svg('text', { x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' });
    tick.textContent = Number.isInteger(v) ? num(v) : v.toFixed(1);
    root.append(tick);
  }
  const n = labels.length;
  const x = (i) => PAD.left + ((W - PAD.left - PAD.right) * (i + 0.5)) / n;
  for (const i of n > 2 ? [0, Math.floor(n / 2), n - 1] : [...labels.keys()]) {
    // The first and last labels lean inwards, so that none is cut at the edge.
    const anchor = n > 1 && i === 0 ? 'start' : n > 1 && i === n - 1 ? 'end' : 'middle';
    const at = anchor === 'start' ? PAD.left : anchor === 'end' ? W - PAD.right : x(i);
    const tick = svg('text', { x: at, y: H - 8, 'text-anchor': anchor, class: 'tick' });
    tick.textContent = labels[i];
    root.append(tick);
  }
  return { root, x, y, step: (W - PAD.left - PAD.right) / Math.max(n, 1) };
}

function niceMax(v) {
  if (v <= 4) return 4;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}

function lines(labels, series, label, fixedMax, firstStyle = 0) {
  const max = fixedMax ?? niceMax(Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null))));
  const { root, x, y } = frame(label, labels, max);
  series.forEach((s, k) => {
    const style = LINE_STYLES[(firstStyle + k) % LINE_STYLES.length];
    let d = '';
    let pen = 'M';
    s.values.forEach((v, i) => {
      if (v === null) {
        pen = 'M';
        return;
      }
      d += `${pen}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = 'L';
    });
    root.append(svg('path', { d, fill: 'none', stroke: style.color, 'stroke-width': 2, 'stroke-dasharray': style.dash }));
    if (labels.length <= 80) {
      s.values.forEach((v, i) => v !== null && root.append(marker(style, x(i), y(v))));
    }
  });
  return root;
}

function marker(style, cx, cy) {
  const attrs = { fill: style.color };
  if (style.marker === 'square') return svg('rect', { ...attrs, x: cx - 3, y: cy - 3, width: 6, height: 6 });
  if (style.marker === 'diamond') return svg('path', { ...attrs, d: `M${cx},${cy - 4}L${cx + 4},${cy}L${cx},${cy + 4}L${cx - 4},${cy}Z` });
  if (style.marker === 'triangle') return svg('path', { ...attrs, d: `M${cx},${cy - 4}L${cx + 4},${cy + 3}L${cx - 4},${cy + 3}Z` });
  return svg('circle', { ...attrs, cx, cy, r: 3 });
}

function hatch(root, style, id) {
  const p = svg('pattern', { id, width: 6, height: 6, patternUnits: 'userSpaceOnUse' });
  p.append(svg('rect', { width: 6, height: 6, fill: style.hatch === 'solid' ? style.color : '#ffffff' }));
  const stroke = { stroke: style.color, 'stroke-width': 1.6 };
  const shapes = {
    diagonal: [['path', { d: 'M0,6L6,0', ...stroke }]],
    back: [['path', { d: 'M0,0L6,6', ...stroke }]],
    cross: [['path', { d: 'M0,6L6,0M0,0L6,6', ...stroke }]],
    horizontal: [['path', { d: 'M0,3H6', ...stroke }]],
    vertical: [['path', { d: 'M3,0V6', ...stroke }]],
    grid: [['path', { d: 'M0,3H6M3,0V6', ...stroke }]],
    dots: [['circle', { cx: 3, cy: 3, r: 1.6, fill: style.color }]],
    solid: [],
  };
  for (const [tag, attrs] of shapes[style.hatch]) p.append(svg(tag, attrs));
  let defs = root.querySelector('defs');
  if (!defs) root.prepend((defs = svg('defs')));
  defs.append(p);
}

let patternIds = 0;

function bars(labels, series, label) {
  const totals = labels.map((_, i) => sum(series.map((s) => s.values[i])));
  const max = niceMax(Math.max(0, ...totals));
  const { root, x, y, step } = frame(label, labels, max);
  const width = Math.max(1, step * 0.7);
  series.forEach((s, k) => {
    const style = BAR_STYLES[k % BAR_STYLES.length];
    const id = `hatch-${++patternIds}`;
    hatch(root, style, id);
    s.values.forEach((v, i) => {
      if (!v) return;
      const below = sum(series.slice(0, k).map((o) => o.values[i]));
      const rect = svg('rect', { x: x(i) - width / 2, y: y(below + v), width, height: y(below) - y(below + v), fill: `url(#${id})`, stroke: style.color });
      const tip = svg('title');
      tip.textContent = `${labels[i]} ${s.name}: ${v}`;
      rect.append(tip);
      root.append(rect);
    });
  });
  return root;
}

function legend(kind, series) {
  const list = el('ul', { class: 'legend' });
  series.forEach((s, k) => {
    const key = svg('svg', { width: 28, height: 12, 'aria-hidden': 'true' });
    if (kind === 'bars') {
      const style = BAR_STYLES[k % BAR_STYLES.length];
      const id = `hatch-${++patternIds}`;
      hatch(key, style, id);
      key.append(svg('rect', { x: 1, y: 1, width: 26, height: 10, fill: `url(#${id})`, stroke: style.color }));
    } else {
      const style = LINE_STYLES[k % LINE_STYLES.length];
      key.append(svg('line', { x1: 0, x2: 28, y1: 6, y2: 6, stroke: style.color, 'stroke-width': 2, 'stroke-dasharray': style.dash }));
      key.append(marker(style, 14, 6));
    }
    list.append(el('li', {}, key, ` ${s.name}`));
  });
  return list;
}

function table(title, labels, series) {
  const head = el('tr', {}, el('th', { scope: 'col', text: 'Bucket (UTC)' }), ...series.map((s) => el('th', { scope: 'col', text: s.name })));
  const rows = labels.map((l, i) =>
    el('tr', {}, el('th', { scope: 'row', text: l }), ...series.map((s) => el('td', { text: s.values[i] === null ? '—' : num(s.values[i]) }))),
  );
  const foot = el('tr', {}, el('th', { scope: 'row', text: 'Total' }), ...series.map((s) => el('td', { text: s.max ? '' : num(sum(s.values)) })));
  const t = el('table', { class: 'data numbers' }, el('caption', { text: `${title}, in numbers` }), el('thead', {}, head), el('tbody', {}, ...rows), el('tfoot', {}, foot));
  return el('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': `${title}, in numbers` }, t);
}

// --- Events ----------------------------------------------------------------------

function detail(e) {
  const parts = [];
  if (e.error) parts.push(e.error);
  for (const [k, v] of Object.entries(e.metadata ?? {})) parts.push(`${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`);
  return parts.join(', ');
}

function eventRow(e, withEmail) {
  return el(
    'tr',
    {},
    el('td', { text: time(e.createdAt) }),
    el('td', { text: e.event }),
    el('td', { text: e.success ? 'ok' : 'failed', class: e.success ? 'ok' : 'bad' }),
    ...(withEmail ? [el('td', { text: e.email ?? '' })] : []),
    el('td', { text: detail(e) }),
  );
}

async function loadEvents() {
  try {
    const page = await api('GET', '/admin/audit?limit=20');
    $('events').tBodies[0].replaceChildren(...page.events.map((e) => eventRow(e, true)));
  } catch (err) {
    failed(err);
  }
}

// --- Users -----------------------------------------------------------------------

async function searchUsers(query) {
  try {
    const page = await api('GET', `/admin/users?limit=20&query=${encodeURIComponent(query)}`);
    const rows = page.users.map((u) => {
      const open = el('button', { type: 'button', text: 'Open' });
      open.setAttribute('aria-label', `Open ${u.email}`);
      open.addEventListener('click', () => showUser(u.id));
      return el(
        'tr',
        {},
        el('td', { text: u.email }),
        el('td', { text: time(u.createdAt) }),
        el('td', { text: time(u.lastSignInAt) }),
        el('td', { text: num(u.sessions) }),
        el('td', { text: u.disabledAt ? 'disabled' : 'active' }),
        el('td', {}, open),
      );
    });
    $('users').tBodies[0].replaceChildren(...rows);
    say(`${page.users.length} user(s) found.`);
  } catch (err) {
    failed(err);
  }
}

async function showUser(id, focus = true) {
  try {
    const [detailPage, events] = await Promise.all([
      api('GET', `/admin/users/${encodeURIComponent(id)}`),
      api('GET', `/admin/audit?limit=20&userId=${encodeURIComponent(id)}`),
    ]);
    const u = detailPage.user;
    openUser = u;
    $('user-h').textContent = u.email;
    $('user-summary').textContent =
      `${u.disabledAt ? `Disabled since ${time(u.disabledAt)}` : 'Active'}; created ${time(u.createdAt)}; ` +
      `last sign-in ${time(u.lastSignInAt)}; ${u.sessions} live session(s).`;
    $('disable').hidden = Boolean(u.disabledAt);
    $('enable').hidden = !u.disabledAt;
    $('sessions').tBodies[0].replaceChildren(
      ...detailPage.sessions.map((s) =>
        el('tr', {}, el('td', { text: s.id }), el('td', { text: time(s.createdAt) }), el('td', { text: time(s.lastUsedAt) }), el('td', { text: time(s.expiresAt) }), el('td', { text: [s.ip, s.userAgent].filter(Boolean).join(' · ') })),
      ),
    );
    $('userevents').tBodies[0].replaceChildren(...events.events.map((e) => eventRow(e, false)));
    $('user').hidden = false;
    if (focus) $('user').focus();
  } catch (err) {
    failed(err);
  }
}

async function act(method, suffix, done) {
  if (!openUser) return;
  try {
    const body = await api(method, `/admin/users/${encodeURIComponent(openUser.id)}${suffix}`);
    say(done(body));
    await showUser(openUser.id, false);
    loadEvents();
  } catch (err) {
    failed(err);
  }
}

// --- Wiring ----------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('signin').addEventListener('submit', (ev) => {
    ev.preventDefault();
    signIn($('token').value.trim());
  });
  $('signout').addEventListener('click', signOut);
  $('window').addEventListener('change', (ev) => {
    since = ev.target.value;
    loadStats();
  });
  $('window').addEventListener('submit', (ev) => ev.preventDefault());
  $('usersearch').addEventListener('submit', (ev) => {
    ev.preventDefault();
    searchUsers($('query').value.trim());
  });
  $('disable').addEventListener('click', () => act('POST', '/disable', (b) => `Disabled ${b.user.email}.`));
  $('enable').addEventListener('click', () => act('POST', '/enable', (b) => `Enabled ${b.user.email}.`));
  $('endsessions').addEventListener('click', () => act('DELETE', '/sessions', (b) => `Ended ${b.revoked} session(s).`));
  if (token) {
    show(true);
    start();
  }
});
