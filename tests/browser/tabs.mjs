// The sesame-client package (clients/typescript) in three Chromium tabs that share one
// session in localStorage, against a sesame whose access tokens live 3 s: the tabs'
// timers all come due at the same moment, rotation after rotation, and the package must
// send exactly one POST /auth/refresh per rotation (counted in the browser and in
// sesame's audit trail: no token presented twice, no reuse-interval answer, no reuse
// detected), and no tab may sign out. Then three tabs call refresh() at once: one request.
//
// (localStorage reaches the other tabs asynchronously in Chromium, so a tab can get the
// lock before it sees the pair stored by the tab that had it: this test caught that, and
// the package's rotated-token mark is the answer.)
//
// Environment (set by run.sh): SESAME_URL, PAGE_PORT, MAILDIR, OUT_DIR, CLIENT_DIR (the
// package, built), DATABASE_URL (sesame's database, to read the audit trail).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Mailbox, blockedReport, check, launch, need, sleep, waitFor, watch } from './lib.mjs';

const api = need('SESAME_URL');
const pagePort = Number(need('PAGE_PORT'));
const client = path.resolve(need('CLIENT_DIR'));
const mailbox = new Mailbox(need('MAILDIR'));
const outDir = need('OUT_DIR');
const databaseUrl = need('DATABASE_URL');
const origin = `http://127.0.0.1:${pagePort}`;
const email = `tabs-${Date.now()}@example.com`;
const ROTATIONS = 3; // timer-driven rotations to watch
const note = (s) => console.error(`  ${s}`);

// The page: the package's dist/ and openapi-fetch through an import map, no bundler. It
// keeps every event of its manager in window.events.
const page = `<!doctype html><meta charset="utf-8"><title>tabs</title>
<script type="importmap">{"imports": {"sesame-client": "/client/index.js", "openapi-fetch": "/openapi-fetch.js"}}</script>
<script type="module">
  import { SessionManager } from 'sesame-client';
  // Counts this tab's requests for the refresh lock (the manager asks before each refresh).
  window.lockRequests = 0;
  const request = navigator.locks.request.bind(navigator.locks);
  navigator.locks.request = (name, ...rest) => {
    if (name.startsWith('sesame-client.refresh:')) window.lockRequests += 1;
    return request(name, ...rest);
  };
  // The manager's clock, which the test may turn back (window.clockShift) to stop the rotations.
  const now = () => Date.now() + (window.clockShift ?? 0);
  const auth = new SessionManager({ baseUrl: ${JSON.stringify(api)}, storage: 'local', now });
  window.events = [];
  for (const type of ['signed-in', 'refreshed', 'signed-out']) {
    auth.on(type, (e) => window.events.push({ type, reason: e.reason, fromOtherTab: e.fromOtherTab, refreshToken: e.session?.refreshToken ?? null }));
  }
  window.auth = auth;
  window.ready = true;
</script>`;
const files = {
  '/openapi-fetch.js': path.join(client, 'node_modules/openapi-fetch/dist/index.mjs'),
};
const server = http.createServer((req, res) => {
  const url = new URL(req.url, origin);
  if (url.pathname === '/') return res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page);
  const file = files[url.pathname] ?? (url.pathname.startsWith('/client/') ? path.join(client, 'dist', path.normalize(url.pathname.slice(8))) : null);
  if (!file || !file.startsWith(client)) return res.writeHead(404).end();
  fs.readFile(file, (err, body) => {
    if (err) return res.writeHead(404).end();
    const type = file.endsWith('.js') || file.endsWith('.mjs') ? 'text/javascript; charset=utf-8' : 'application/octet-stream';
    res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
  });
});
await new Promise((ok, fail) => server.once('error', fail).listen(pagePort, '127.0.0.1', ok));

/** Rows of sesame's audit trail (psql, tab-separated). */
function audit(sql) {
  const out = execFileSync('psql', ['-X', '-q', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-d', databaseUrl, '-c', sql], {
    encoding: 'utf8',
  });
  return out.split('\n').filter(Boolean).map((l) => l.split('\t'));
}

const chrome = await launch();
const { browser, context, blocked } = chrome;
const log = [];
const tabs = [];

// Every POST /auth/refresh any tab sends, with the token it presented and the answer.
const refreshes = [];
context.on('request', (r) => {
  if (r.method() === 'POST' && r.url() === `${api}/auth/refresh`) {
    const entry = { tab: tabs.indexOf(r.frame().page()), parent: r.postDataJSON()?.refreshToken, status: null, child: null };
    refreshes.push(entry);
    r.response().then(async (res) => {
      entry.status = res?.status() ?? 'none';
      if (res?.status() === 200) entry.child = (await res.json()).refreshToken;
    });
  }
});

try {
  for (let i = 0; i < 3; i += 1) {
    const t = await context.newPage();
    watch(t, log);
    await t.goto(`${origin}/`);
    await t.waitForFunction(() => window.ready === true);
    tabs.push(t);
  }
  const locks = await Promise.all(tabs.map((t) => t.evaluate(() => typeof navigator.locks?.request === 'function')));
  check(locks.every(Boolean), `Web Locks in the three tabs: ${locks}`);

  // --- Sign in in the first tab; the others share the session ---------------------------
  await tabs[0].evaluate((e) => window.auth.sendCode(e), email);
  const code = await mailbox.nextCode(email);
  const first = await tabs[0].evaluate(([e, c]) => window.auth.verifyCode(e, c), [email, code]);
  check(first.user?.email === email && first.lifetime === 3000, `signed in with a 3 s access token: ${JSON.stringify(first.user)} ${first.lifetime}`);
  for (const t of tabs.slice(1)) {
    const s = await t.evaluate(() => window.auth.session);
    check(s?.refreshToken === first.refreshToken, 'the other tabs read the session from localStorage');
  }
  note(`signed in in tab 0 with code ${code}; tabs 1 and 2 share the session`);

  // --- Rotations by timer: all three tabs come due at once ------------------------------
  await waitFor(() => refreshes.filter((r) => r.status !== null).length >= ROTATIONS, `${ROTATIONS} refreshes`, 20_000);
  await sleep(300); // a late duplicate would show here
  const timed = refreshes.slice();
  check(timed.every((r) => r.status === 200), `every refresh answered 200: ${timed.map((r) => r.status)}`);
  const parents = timed.map((r) => r.parent);
  check(new Set(parents).size === parents.length, `no refresh token was presented twice: ${parents.length} requests, ${new Set(parents).size} tokens`);
  check(parents[0] === first.refreshToken, 'the first refresh presented the sign-in token');
  for (let i = 1; i < timed.length; i += 1) {
    check(timed[i].parent === timed[i - 1].child, `refresh ${i} presented the token refresh ${i - 1} got`);
  }
  const timedLocks = await Promise.all(tabs.map((t) => t.evaluate(() => window.lockRequests)));
  // The race happened: tabs other than the sender came due too, waited for the lock, and
  // took the stored pair instead of sending their own request.
  const asked = timedLocks.reduce((a, b) => a + b, 0);
  check(asked > timed.length, `more lock requests (${asked}) than refresh requests (${timed.length}): the tabs raced`);
  note(`${timed.length} timer-driven rotations, one POST /auth/refresh each, sent by tabs ${timed.map((r) => r.tab).join(', ')}; lock requests per tab: ${timedLocks}`);

  // --- Three tabs ask for a refresh at the same moment ------------------------------------
  const mark = refreshes.length;
  const lockCount = () => Promise.all(tabs.map((t) => t.evaluate(() => window.lockRequests)));
  const locksBefore = await lockCount();
  const got = await Promise.all(tabs.map((t) => t.evaluate(() => window.auth.refresh().then((s) => s.refreshToken))));
  await sleep(300);
  const together = refreshes.slice(mark);
  check(together.length === 1 && together[0].status === 200, `three refresh() at once made one POST /auth/refresh: ${together.length}`);
  check(got.every((t) => t === together[0].child), `the three tabs got its pair: ${new Set(got).size} distinct`);
  const locksAfter = await lockCount();
  check(locksAfter.every((n, i) => n - locksBefore[i] === 1), `each tab asked for the lock once: ${locksBefore} -> ${locksAfter}`);
  note('three refresh() calls at once, in three tabs: one POST /auth/refresh');

  // Stop the rotations so that the counts below hold still: with the managers' clocks ten
  // minutes back, the pair looks fresh and the timers wait (a timer that comes due finds
  // nothing to do and sets itself again, minutes later).
  for (const t of tabs) await t.evaluate(() => (window.clockShift = -600_000));
  await sleep(300);
  const settled = refreshes.length;

  // --- Counted at the server too ------------------------------------------------------------
  const rows = audit(
    `SELECT success, coalesce(metadata->>'withinReuseInterval', '') FROM audit_events
     WHERE event = 'token.refresh' AND user_id = (SELECT id FROM users WHERE email = '${email}')`,
  );
  check(rows.length === settled, `the audit trail has ${rows.length} token.refresh events for ${settled} requests`);
  check(rows.every(([ok, within]) => ok === 't' && within === ''), `every refresh rotated (none failed, none in the reuse interval): ${JSON.stringify(rows)}`);
  const reuse = audit(`SELECT count(*) FROM audit_events WHERE event = 'token.reuse_detected'`);
  check(reuse[0][0] === '0', `no reuse detected: ${reuse[0][0]}`);

  // --- No tab signed out; every tab holds the live pair and is heard of each refresh -------------
  check(refreshes.length === settled, `no refresh after the clocks were turned back: ${refreshes.length - settled}`);
  const live = refreshes.at(-1).child;
  for (const [i, t] of tabs.entries()) {
    const { session, events, me } = await t.evaluate(async (u) => ({
      session: window.auth.session,
      events: window.events,
      me: (await window.auth.fetch(`${u}/auth/me`)).status,
    }), api);
    check(!events.some((e) => e.type === 'signed-out'), `tab ${i} never signed out: ${JSON.stringify(events)}`);
    check(session?.refreshToken === live, `tab ${i} holds the live refresh token`);
    const refreshed = events.filter((e) => e.type === 'refreshed').map((e) => e.refreshToken);
    check(
      refreshes.every((r) => refreshed.includes(r.child)),
      `tab ${i} had a "refreshed" event for each rotation (its own or broadcast by another tab): ${refreshed.length} of ${refreshes.length}`,
    );
    check(me === 200, `tab ${i}: GET /auth/me through auth.fetch answered ${me}`);
  }
  note(`no tab signed out; each had ${refreshes.length} "refreshed" events; ${rows.length} token.refresh audit rows, all rotations`);

  // --- Logout in one tab signs out all three -----------------------------------------------------
  await tabs[2].evaluate(() => window.auth.logout());
  for (const [i, t] of tabs.entries()) {
    await t.waitForFunction(() => window.auth.session === null && window.events.at(-1)?.type === 'signed-out');
    const reason = await t.evaluate(() => window.events.at(-1));
    check(reason.reason === 'logout' && reason.fromOtherTab === (i !== 2), `tab ${i} heard the logout: ${JSON.stringify(reason)}`);
  }

  check(blocked.length === 0, `the page loaded nothing from outside 127.0.0.1: ${blocked.join(', ')}`);
  note(blockedReport(chrome));
  console.log('client tabs: ok');
} catch (e) {
  for (const [i, t] of tabs.entries()) await t.screenshot({ path: path.join(outDir, `tabs-${i}-failed.png`) }).catch(() => {});
  console.error(log.join('\n'));
  console.error(refreshes.map((r) => `tab ${r.tab}: POST /auth/refresh ${r.status}`).join('\n'));
  console.error('client tabs: FAILED');
  throw e;
} finally {
  await browser.close();
  server.close();
}
