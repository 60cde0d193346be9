// C: the examples/web page, end to end in Chromium: sign in with a code, watch
// the access token being refreshed before it expires (sesame runs with a 2 s
// ACCESS_TOKEN_EXPIRY), a 401 retried once after a refresh, concurrent refreshes
// shared in a tab and converging across tabs, log out, sign in by magic link,
// log out again.
//
// Environment (set by run.sh): SESAME_URL, PAGE_PORT, MAILDIR, OUT_DIR, EXAMPLE_DIR.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Mailbox, blockedReport, check, launch, need, postJson, sleep, waitFor, watch } from './lib.mjs';

const api = need('SESAME_URL');
const pagePort = Number(need('PAGE_PORT'));
const root = path.resolve(need('EXAMPLE_DIR'));
const mailbox = new Mailbox(need('MAILDIR'));
const outDir = need('OUT_DIR');
const origin = `http://127.0.0.1:${pagePort}`;
const email = `example-${Date.now()}@example.com`;
const note = (s) => console.error(`  ${s}`);

// --- A static server, as any would: files, index.html for folders, 301 to add a slash.
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css' };
const server = http.createServer((req, res) => {
  const url = new URL(req.url, origin);
  const file = path.join(root, decodeURIComponent(url.pathname));
  if (!file.startsWith(root)) return res.writeHead(403).end();
  fs.stat(file, (err, st) => {
    if (err) return res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    if (st.isDirectory()) {
      if (!url.pathname.endsWith('/')) return res.writeHead(301, { location: `${url.pathname}/${url.search}` }).end();
      return serve(path.join(file, 'index.html'));
    }
    serve(file);
  });
  function serve(f) {
    fs.readFile(f, (err, body) => {
      if (err) return res.writeHead(404).end();
      res.writeHead(200, { 'content-type': types[path.extname(f)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(body);
    });
  }
});
await new Promise((ok, fail) => server.once('error', fail).listen(pagePort, '127.0.0.1', ok));

const chrome = await launch();
const { browser, context, blocked } = chrome;
const log = [];
const page = await context.newPage();
watch(page, log);

// Every call the page makes to sesame, in order.
const calls = [];
context.on('response', (r) => {
  const u = new URL(r.url());
  if (u.origin === new URL(api).origin && r.request().method() !== 'OPTIONS') {
    calls.push({ method: r.request().method(), path: u.pathname, status: r.status(), auth: r.request().headers().authorization });
  }
});
const stored = (p = page) => p.evaluate(() => JSON.parse(localStorage.getItem('sesame.session')));
const whoShown = (p = page) => p.locator('#signed-in:not([hidden]) #who').filter({ hasText: email });

try {
  // --- Point the page at this sesame ------------------------------------------------
  await page.goto(`${origin}/`);
  await page.locator('details summary', { hasText: 'Server' }).click();
  await page.locator('#base').fill(api);
  await page.getByRole('button', { name: 'Use' }).click();
  await page.locator('#status', { hasText: `Using ${api}` }).waitFor();

  // --- Sign in with a code ------------------------------------------------------------
  await page.getByLabel('Email').fill(email);
  await page.getByRole('button', { name: 'Email me a code' }).click();
  await page.locator('#status', { hasText: `Check ${email} for your code` }).waitFor();
  const code = await mailbox.nextCode(email);
  await page.getByLabel('Code').fill(code);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await whoShown().waitFor();
  await page.locator('#status', { hasText: `Signed in as ${email}` }).waitFor();
  const first = await stored();
  check(first?.token && first.refreshToken && first.user?.email === email, 'the session is in localStorage');
  check(
    calls.some((c) => c.path === '/auth/me' && c.status === 200),
    'the user shown came from GET /auth/me',
  );
  note(`signed in with code ${code}; user ${first.user.id}`);

  // --- The access token (2 s) is refreshed before it expires ------------------------
  const second = await waitFor(
    async () => {
      const s = await stored();
      return s && s.token !== first.token ? s : null;
    },
    'the page to refresh its access token',
    10_000,
  );
  check(second.refreshToken !== first.refreshToken, 'the refresh token rotated');
  check(calls.some((c) => c.path === '/auth/refresh' && c.status === 200), 'the page called POST /auth/refresh');
  await sleep(2500); // past the first token's lifetime
  const [meRes] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/auth/me') && r.request().method() === 'GET'),
    page.getByRole('button', { name: 'Reload profile' }).click(),
  ]);
  const usedToken = meRes.request().headers().authorization?.replace(/^Bearer /, '');
  check(meRes.status() === 200, `GET /auth/me after refresh answered ${meRes.status()}`);
  check(usedToken && usedToken !== first.token, 'GET /auth/me used a new access token');
  await page.locator('#status', { hasText: `Signed in as ${email}` }).waitFor();
  note(`refreshed before expiry: /auth/me with a new token → 200 (${calls.filter((c) => c.path === '/auth/refresh').length} refreshes so far)`);

  // --- Concurrent callers in one tab share one refresh --------------------------------
  const shared = await page.evaluate(async () => {
    const ps = [window.sesame.refresh(), window.sesame.refresh(), window.sesame.refresh()];
    const same = ps[0] === ps[1] && ps[1] === ps[2];
    const pairs = await Promise.all(ps);
    return { same, tokens: new Set(pairs.map((p) => p.token)).size };
  });
  check(shared.same && shared.tokens === 1, `three concurrent refresh() calls share one promise: ${JSON.stringify(shared)}`);

  // --- A 401 is retried once, after a refresh ------------------------------------------
  await page.evaluate(() => {
    const s = JSON.parse(localStorage.getItem('sesame.session'));
    // A rejected access token that the page still believes valid for a minute.
    localStorage.setItem(
      'sesame.session',
      JSON.stringify({ ...s, token: 'not-a-valid.jwt.token', expiresAt: Date.now() + 60_000, lifetime: 60_000 }),
    );
  });
  const mark = calls.length;
  await page.getByRole('button', { name: 'Reload profile' }).click();
  await waitFor(() => calls.slice(mark).some((c) => c.path === '/auth/me' && c.status === 200), 'the retried /auth/me');
  const seq = calls.slice(mark).map((c) => `${c.method} ${c.path} ${c.status}`);
  check(
    seq[0] === 'GET /auth/me 401' && seq[1] === 'POST /auth/refresh 200' && seq[2] === 'GET /auth/me 200',
    `401 → refresh → retry: ${seq.join(', ')}`,
  );
  check(calls[mark].auth === 'Bearer not-a-valid.jwt.token', 'the first try carried the rejected token');
  await page.locator('#status', { hasText: `Signed in as ${email}` }).waitFor();
  note(`401 retried once: ${seq.slice(0, 3).join(' → ')}`);

  // --- Tabs converge: three tabs present the same refresh token at once ---------------
  // Two tabs without Web Locks and this one (alone with its lock, so it does not wait)
  // each send POST /auth/refresh. A gate holds each request in the browser until all
  // three are out, so none of them can see another's answer first: the race is certain,
  // not left to timing. The server rotates for the first and must give the other two
  // the same child (REFRESH_REUSE_INTERVAL), so the tabs converge on one session.
  const tabs = [];
  for (let i = 0; i < 2; i += 1) {
    const t = await context.newPage();
    watch(t, log);
    await t.addInitScript(() => Object.defineProperty(Navigator.prototype, 'locks', { get: () => undefined }));
    await t.goto(`${origin}/`);
    await whoShown(t).waitFor();
    tabs.push(t);
  }
  const hasLocks = await Promise.all([page, ...tabs].map((p) => p.evaluate(() => navigator.locks !== undefined)));
  check(JSON.stringify(hasLocks) === '[true,false,false]', `Web Locks in the three tabs: ${hasLocks}`);
  const gated = []; // {request, parent, sentAt, answeredAt}
  let allOut;
  const gate = new Promise((ok) => {
    allOut = ok;
  });
  const refreshUrl = `${api}/auth/refresh`;
  const onRefresh = async (route) => {
    const request = route.request();
    if (request.method() !== 'POST') return route.continue(); // the CORS preflight
    gated.push({ request, parent: request.postDataJSON()?.refreshToken, sentAt: performance.now() });
    if (gated.length === 3) allOut();
    await gate;
    return route.continue();
  };
  const answered = (r) => {
    const g = gated.find((x) => x.request === r.request());
    if (g) g.answeredAt = performance.now();
  };
  context.on('response', answered);
  await context.route(refreshUrl, onRefresh);
  let raced;
  try {
    const racing = Promise.all([page, ...tabs].map((p) => p.evaluate(() => window.sesame.refresh().then((s) => s.refreshToken))));
    // Fewer than three within 10 s: let them through, and the checks below say so.
    await Promise.race([gate, sleep(10_000).then(allOut)]);
    raced = await racing;
  } finally {
    await context.unroute(refreshUrl, onRefresh);
    context.off('response', answered);
  }
  check(gated.length === 3, `three POST /auth/refresh were sent in the race: ${gated.length}`);
  const lastSent = Math.max(...gated.map((g) => g.sentAt));
  const firstAnswer = Math.min(...gated.map((g) => g.answeredAt ?? Infinity));
  check(lastSent < firstAnswer, `all three were sent before the first answer came back (${lastSent} < ${firstAnswer})`);
  const parent = gated[0].parent;
  check(
    parent && gated.every((g) => g.parent === parent),
    `all three presented the same refresh token: ${new Set(gated.map((g) => g.parent)).size} distinct`,
  );
  const answers = await Promise.all(
    gated.map(async (g) => {
      const r = await g.request.response();
      return { status: r?.status(), refreshToken: r && r.status() === 200 ? (await r.json()).refreshToken : undefined };
    }),
  );
  check(answers.every((a) => a.status === 200), `every refresh of the race answered 200: ${answers.map((a) => a.status)}`);
  const child = answers[0].refreshToken;
  check(child && child !== parent && answers.every((a) => a.refreshToken === child), 'the server answered the same new refresh token to all three');
  check(raced.length === 3 && raced.every((t) => t === child), `the tabs converged on that token: ${new Set(raced).size} distinct`);
  for (const p of [page, ...tabs]) {
    const u = await p.evaluate(() => window.sesame.refresh().then(() => window.sesame.authed('/auth/me')));
    check(u.user.email === email, 'each tab still refreshes and reads /auth/me after the race');
  }
  note(`three tabs presented one refresh token at once (3 POST /auth/refresh, all 200, all sent before the first answer) and converged on one child`);

  // --- Log out --------------------------------------------------------------------------
  const beforeLogout = await stored();
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.locator('#signed-out:not([hidden])').waitFor();
  await page.locator('#status', { hasText: 'Signed out.' }).waitFor();
  check((await stored()) === null, 'logging out clears the session from localStorage');
  for (const t of tabs) await t.locator('#signed-out:not([hidden])').waitFor(); // the other tabs follow
  check(calls.some((c) => c.method === 'POST' && c.path === '/auth/logout' && c.status === 200), 'POST /auth/logout answered 200');
  const reuse = await postJson(api, '/auth/refresh', { refreshToken: beforeLogout.refreshToken });
  check(reuse.status === 401 && reuse.body.code === 'invalid_refresh_token', `the logged-out refresh token is dead: ${JSON.stringify(reuse)}`);
  for (const t of tabs) await t.close();
  note('logged out: storage cleared, refresh token revoked');

  // --- Sign in by magic link --------------------------------------------------------------
  await page.getByLabel('Email').fill(email);
  await page.getByRole('button', { name: 'Email me a link' }).click();
  await page.locator('#status', { hasText: `Check ${email}: the link signs you in` }).waitFor();
  const link = await mailbox.nextLink(email);
  check(link.startsWith(`${origin}/auth/verify?token=`), `the link points at FRONTEND_URL/auth/verify: ${link}`);
  const [verify] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/auth/verify-magic-link') && r.request().method() === 'POST'),
    page.goto(link),
  ]);
  check(verify.status() === 200, `verify-magic-link answered ${verify.status()}`);
  await whoShown().waitFor();
  await page.locator('#status', { hasText: `Signed in as ${email}` }).waitFor();
  check(!page.url().includes('token='), `the token is gone from the address bar: ${page.url()}`);
  const viaLink = await stored();
  check(viaLink.user.id === first.user.id, 'the magic link signed in the same user');
  note(`signed in by magic link, landed on ${page.url()}`);
  await page.screenshot({ path: path.join(outDir, 'example.png') });

  // --- Log out again ------------------------------------------------------------------------
  const lastRefresh = (await stored()).refreshToken;
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.locator('#signed-out:not([hidden])').waitFor();
  check((await stored()) === null, 'the second logout clears localStorage');
  const dead = await postJson(api, '/auth/refresh', { refreshToken: lastRefresh });
  check(dead.status === 401, `the magic-link session ended: ${dead.status}`);

  check(blocked.length === 0, `the page loaded nothing from outside 127.0.0.1: ${blocked.join(', ')}`);
  note(`${calls.length} calls to sesame; ${blockedReport(chrome)}`);
  console.log('example page: ok');
} catch (e) {
  await page.screenshot({ path: path.join(outDir, 'example-failed.png') }).catch(() => {});
  console.error(log.join('\n'));
  console.error(calls.map((c) => `${c.method} ${c.path} ${c.status}`).join('\n'));
  console.error('example page: FAILED');
  throw e;
} finally {
  await browser.close();
  server.close();
}
