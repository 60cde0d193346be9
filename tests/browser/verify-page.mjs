// D: sesame's own sign-in page (GET /auth/verify and GET /auth/verify-magic-link),
// for teams whose frontend has no route for the link. Opening the page must use
// nothing; its button signs in and hands the tokens to FRONTEND_URL in the URL
// fragment, under the page's Content-Security-Policy without a violation.
//
// Two links, one per path of the page:
//   - the default link (FRONTEND_URL/auth/verify?token=…), its token opened at
//     sesame's GET /auth/verify;
//   - a link sent with redirectTo = sesame's /auth/verify-magic-link (sesame's origin is
//     on REDIRECT_ALLOW_LIST), opened as mailed.
//
// Environment (set by run.sh): SESAME_URL, FRONTEND_URL (http://127.0.0.1:<port>/app/,
// served here), DATABASE_URL (sesame's database, read with psql), MAILDIR, OUT_DIR.
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { Mailbox, blockedReport, check, launch, need, postJson } from './lib.mjs';

const api = need('SESAME_URL');
const frontend = need('FRONTEND_URL');
const db = need('DATABASE_URL');
const mailbox = new Mailbox(need('MAILDIR'));
const outDir = need('OUT_DIR');
const email = `verify-page-${Date.now()}@example.com`;
const note = (s) => console.error(`  ${s}`);

/** One value from sesame's database. */
const sql = (query) => execFileSync('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-d', db, '-c', query], { encoding: 'utf8' }).trim();
const quote = (s) => `'${s.replaceAll("'", "''")}'`;
/** Whether the link of `token` is used: magic_links.consumed_at (the table keeps its SHA-256). */
const consumed = (token) => sql(`SELECT consumed_at IS NOT NULL FROM magic_links WHERE token_hash = sha256(convert_to(${quote(token)}, 'UTF8'))`);
const verifications = () =>
  sql(`SELECT count(*) || ' (' || count(*) FILTER (WHERE success) || ' ok)' FROM audit_events WHERE event = 'magic_link.verification' AND email = ${quote(email)}`);

// --- The frontend: a plain page at FRONTEND_URL, nothing else ----------------------
const front = new URL(frontend);
const app = http.createServer((req, res) => {
  if (new URL(req.url, front).pathname === front.pathname) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end('<!doctype html><title>app</title><p>the app');
  } else {
    res.writeHead(204).end(); // favicon and the like
  }
});
await new Promise((ok, fail) => app.once('error', fail).listen(Number(front.port), front.hostname, ok));

const chrome = await launch();
const { browser, context } = chrome;
// Every console message and CSP violation, per page load.
const consoleLog = [];
const violations = [];
await context.exposeBinding('reportViolation', (_source, v) => violations.push(v));
await context.addInitScript(() =>
  document.addEventListener('securitypolicyviolation', (e) =>
    window.reportViolation(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'} on ${location.pathname}`),
  ),
);
const page = await context.newPage();
page.on('console', (m) => consoleLog.push(`console.${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => consoleLog.push(`pageerror: ${e.message}`));

/** Opens the page at `url` and checks it and its headers; and, given the link's token, that it used nothing. */
async function open(url, token) {
  const res = await page.goto(url);
  check(res.status() === 200, `GET ${url} answered ${res.status()}`);
  const h = res.headers();
  const csp = h['content-security-policy'] ?? '';
  const nonce = csp.match(/script-src 'nonce-([A-Za-z0-9_-]+)'/)?.[1];
  check(nonce && csp.includes("default-src 'none'") && csp.includes("connect-src 'self'"), `the page's CSP: '${csp}'`);
  const scriptNonces = await page.evaluate(() => [...document.scripts].map((s) => s.nonce));
  check(JSON.stringify(scriptNonces) === JSON.stringify([nonce]), `one script, carrying the CSP's nonce: ${scriptNonces}`);
  check(h['referrer-policy'] === 'no-referrer' && h['cache-control'] === 'no-store', `Referrer-Policy and Cache-Control: ${JSON.stringify(h)}`);
  // Time for anything the page would do by itself (a scanner would not press the button).
  await page.waitForTimeout(500);
  check(page.url() === url, `the page stays until its button is pressed: ${page.url()}`);
  if (token) check(consumed(token) === 'f', `opening the page left the link unused: consumed ${consumed(token)}`);
  await page.getByRole('button', { name: 'Sign in' }).waitFor({ timeout: 5_000 });
  return res;
}

/** Presses the button and returns the answer of the POST it makes. */
async function press() {
  const [verify] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${api}/auth/verify-magic-link` && r.request().method() === 'POST'),
    page.getByRole('button', { name: 'Sign in' }).click(),
  ]);
  return verify;
}

/** After a successful press: on FRONTEND_URL, the tokens in the fragment, and they work. */
async function landed(verify) {
  // (Its body is gone once the page navigates away: the tokens are checked against the database.)
  check(verify.status() === 200, `the button's POST /auth/verify-magic-link answered ${verify.status()}`);
  await page.waitForURL((u) => u.href.startsWith(`${frontend}#`), { timeout: 10_000 });
  const [where, fragment] = page.url().split('#');
  check(where === frontend, `landed on FRONTEND_URL: ${page.url()}`);
  const f = new URLSearchParams(fragment);
  check(
    JSON.stringify([...f.keys()]) === '["access_token","refresh_token","token_type","expires_in"]',
    `the fragment: ${[...f.keys()]}`,
  );
  const owner = sql(
    `SELECT u.email FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id JOIN users u ON u.id = s.user_id
      WHERE r.token_hash = sha256(convert_to(${quote(f.get('refresh_token'))}, 'UTF8')) AND r.parent_id IS NULL AND r.rotated_at IS NULL`,
  );
  check(owner === email, `refresh_token is the first token of a new session of ${email}: '${owner}'`);
  check(f.get('token_type') === 'bearer' && f.get('expires_in') === '900', `token_type and expires_in (ACCESS_TOKEN_EXPIRY=15m): ${fragment.replace(/_token=[^&]+/g, '_token=…')}`);
  await page.locator('text=the app').waitFor(); // the frontend's own page loaded
  const me = await fetch(`${api}/auth/me`, { headers: { authorization: `Bearer ${f.get('access_token')}` } });
  const meBody = await me.json();
  check(me.status === 200 && meBody.user?.email === email, `GET /auth/me with the access token: ${me.status} ${JSON.stringify(meBody)}`);
  const refreshed = await postJson(api, '/auth/refresh', { refreshToken: f.get('refresh_token') });
  check(refreshed.status === 200, `POST /auth/refresh with the refresh token: ${refreshed.status}`);
  return f;
}

try {
  // --- 1. The default link; its token opened at sesame's GET /auth/verify --------------
  let sent = await postJson(api, '/auth/send-magic-link', { email });
  check(sent.status === 200, `send-magic-link: ${JSON.stringify(sent)}`);
  const link1 = await mailbox.nextLink(email);
  check(link1.startsWith(`${frontend}auth/verify?token=`), `the link points at FRONTEND_URL/auth/verify: ${link1}`);
  const token1 = new URL(link1).searchParams.get('token');
  const page1 = `${api}/auth/verify?token=${token1}`;
  // A mail scanner's GET (no script runs) uses nothing either.
  const scanned = await fetch(page1);
  check(scanned.status === 200 && (await scanned.text()).includes('Press the button'), `a plain GET of the page: ${scanned.status}`);
  await open(page1, token1);
  check(verifications() === '0 (0 ok)', `no magic_link.verification before the button: ${verifications()}`);
  check(violations.length === 0 && consoleLog.length === 0, `the page loaded without a CSP violation or console message: ${[...violations, ...consoleLog]}`);
  const f1 = await landed(await press());
  check(consumed(token1) === 't' && verifications() === '1 (1 ok)', `the button used the link: consumed ${consumed(token1)}, verifications ${verifications()}`);
  check(violations.length === 0 && consoleLog.length === 0, `signed in without a CSP violation or console message: ${[...violations, ...consoleLog]}`);
  note(`GET /auth/verify: opened (and fetched) unused, button → ${frontend}#access_token=…&refresh_token=…&token_type=bearer&expires_in=${f1.get('expires_in')}, /auth/me 200`);

  // --- 2. A link sent to sesame's GET /auth/verify-magic-link, opened as mailed ----------
  const pageUrl = `${api}/auth/verify-magic-link`;
  sent = await postJson(api, '/auth/send-magic-link', { email, redirectTo: pageUrl });
  check(sent.status === 200, `send-magic-link with redirectTo: ${JSON.stringify(sent)}`);
  const mail2 = await mailbox.next(email, (m) => (m.part('text/plain') ?? '').includes(`${pageUrl}?token=`));
  const link2 = (mail2.part('text/plain') ?? '').match(/https?:\/\/\S+\/auth\/verify-magic-link\?token=[A-Za-z0-9_-]+/)?.[0];
  check(link2?.startsWith(`${pageUrl}?token=`), `the link points at sesame's page: ${link2}`);
  const token2 = new URL(link2).searchParams.get('token');
  await open(link2, token2);
  check(verifications() === '1 (1 ok)', `no new magic_link.verification before the button: ${verifications()}`);
  const f2 = await landed(await press());
  check(f2.get('access_token') !== f1.get('access_token'), 'a second session');
  check(consumed(token2) === 't' && verifications() === '2 (2 ok)', `the button used the link: ${verifications()}`);
  check(violations.length === 0 && consoleLog.length === 0, `no CSP violation or console message: ${[...violations, ...consoleLog]}`);
  note('GET /auth/verify-magic-link (redirectTo): opened unused, button → FRONTEND_URL with the tokens, /auth/me 200');

  // --- 3. A used link: the page says so and stays ----------------------------------------
  await open(link2);
  const again = await press();
  check(again.status() === 401 && (await again.json()).code === 'invalid_link', `pressing a used link: ${again.status()}`);
  await page.locator('#msg', { hasText: 'This link is invalid, used or expired' }).waitFor();
  check(page.url() === link2, `a used link stays on the page: ${page.url()}`);
  consoleLog.length = 0; // Chromium logs the 401 of the fetch as a failed resource

  // --- FRONTEND_URL must be the app: sesame's own / has no page to take the tokens ----
  const root = await fetch(`${api}/`);
  check(root.status === 404, `GET / on sesame: ${root.status}`);

  // --- Control: the CSP is enforced, and a violation would have been seen ---------------
  await page.evaluate(() => {
    const s = document.createElement('script');
    s.textContent = 'window.injected = true';
    document.body.append(s);
  });
  await page.waitForTimeout(200);
  check((await page.evaluate(() => window.injected)) === undefined, 'a script without the nonce did not run');
  check(violations.some((v) => v.startsWith('script-src')), `the injected script was reported as a violation: ${violations}`);
  check(consoleLog.some((m) => m.includes('Content Security Policy')), `and logged on the console: ${consoleLog}`);
  note(`control: an injected script without the nonce is blocked and reported (${violations.length} violation)`);
  await page.screenshot({ path: path.join(outDir, 'verify-page.png') });
  note(blockedReport(chrome));
  console.log('verify page: ok');
} catch (e) {
  await page.screenshot({ path: path.join(outDir, 'verify-page-failed.png') }).catch(() => {});
  console.error([...violations, ...consoleLog].join('\n'));
  console.error('verify page: FAILED');
  throw e;
} finally {
  await browser.close();
  app.close();
}
