// E: the operators' dashboard (GET /dashboard on the admin listener).
//
// A scripted mix against the public port (sign-ins with codes, a wrong code, a magic link
// used twice, a refresh, the reuse of a rotated token, a rate-limited send), then the page:
//   - signs in with the admin token typed into its form (kept in sessionStorage, never in
//     a URL), and shows the same totals as `sesame audit summary` (the queries of
//     docs/audit-queries.sql) for the last 24 hours;
//   - finds a user, opens it, and its "Disable" button ends the user's session (its
//     refresh token is refused afterwards); the latest events show admin.user.disabled;
//   - makes no request outside the admin listener, and no CSP violation;
//   - is screenshotted at 1280 px and 390 px (OUT_DIR/dashboard-1280.png, -390.png), and
//     keeps working at 390 px.
//
// Environment (set by run.sh): SESAME_URL, ADMIN_URL, ADMIN_TOKEN, SESAME_BIN,
// DATABASE_URL (sesame's database, for `sesame audit summary`), MAILDIR, OUT_DIR.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { Mailbox, blockedReport, check, launch, need, postJson, waitFor } from './lib.mjs';

const api = need('SESAME_URL');
const admin = need('ADMIN_URL');
const adminToken = need('ADMIN_TOKEN');
const bin = need('SESAME_BIN');
const db = need('DATABASE_URL');
const mailbox = new Mailbox(need('MAILDIR'));
const outDir = need('OUT_DIR');
const note = (s) => console.error(`  ${s}`);
const stamp = Date.now();
const ada = `dash-ada-${stamp}@example.com`;
const bob = `dash-bob-${stamp}@example.com`;
const cy = `dash-cy-${stamp}@example.com`;

// --- The scripted mix ------------------------------------------------------------
async function signInWithCode(email, { wrongFirst = false } = {}) {
  check((await postJson(api, '/auth/send-code', { email })).status === 200, `send-code ${email}`);
  const code = await mailbox.nextCode(email);
  if (wrongFirst) {
    const wrong = code === '000000' ? '111111' : '000000';
    check((await postJson(api, '/auth/verify-code', { email, code: wrong })).status === 401, 'a wrong code is refused');
  }
  const res = await postJson(api, '/auth/verify-code', { email, code });
  check(res.status === 200, `verify-code ${email}: ${res.status}`);
  return res.body;
}

const adaTokens = await signInWithCode(ada, { wrongFirst: true });
const bobTokens = await signInWithCode(bob);
// A second send to bob within the send interval: refused by the rate limit.
check((await postJson(api, '/auth/send-code', { email: bob })).status === 429, 'a second send at once is rate-limited');
check((await postJson(api, '/auth/send-magic-link', { email: cy })).status === 200, 'send-magic-link');
const token = new URL(await mailbox.nextLink(cy)).searchParams.get('token');
check((await postJson(api, '/auth/verify-magic-link', { token })).status === 200, 'the link signs in');
check((await postJson(api, '/auth/verify-magic-link', { token })).status === 401, 'the link is used up');
const rotated = await postJson(api, '/auth/refresh', { refreshToken: adaTokens.refreshToken });
check(rotated.status === 200, `refresh: ${rotated.status}`);
check((await postJson(api, '/auth/refresh', { refreshToken: adaTokens.refreshToken })).status === 401, 'the rotated token is reuse');
note('scripted mix done');

// --- What the CLI says -----------------------------------------------------------
/** `sesame audit summary --since 24h`, parsed: {query name: [{column: text}]}. */
function summary() {
  const text = execFileSync(bin, ['audit', 'summary', '--since', '24h'], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, DATABASE_URL: db, JWT_SECRET: 'browser-test-secret-0123456789abcdef0123', RUST_LOG: 'warn' },
  });
  const sections = {};
  for (const block of text.split(/\n\n/).slice(1)) {
    const [title, head, ...rows] = block.trimEnd().split('\n');
    const name = title.split(' — ')[0].trim();
    if (!head || head.trim() === '(none)') {
      sections[name] = [];
      continue;
    }
    // Columns are aligned: cut every row at the header's column starts.
    const starts = [...head.matchAll(/\S+/g)].map((m) => m.index);
    const cut = (line) => starts.map((s, i) => line.slice(s, starts[i + 1]).trim());
    const cols = cut(head);
    sections[name] = rows.map((r) => Object.fromEntries(cut(r).map((v, i) => [cols[i], v])));
  }
  return { text, sections };
}
const { text: summaryText, sections } = summary();
const outcome = (event, success) =>
  Number(sections.events_by_outcome.find((r) => r.event === event && r.success === String(success))?.events ?? 0);
const one = (name, col) => Number(sections[name][0]?.[col] ?? 0);
const expected = {
  codesSent: outcome('otp.sent', true),
  linksSent: outcome('magic_link.sent', true),
  logins: sections.logins_by_method.reduce((a, r) => a + Number(r.logins), 0),
  verificationFailures: one('login_success_rate', 'failed'),
  refreshes: one('refresh_rate', 'refreshes'),
  reuseDetected: one('reuse_detections', 'detections'),
  rateLimited: sections.rate_limit_hits.reduce((a, r) => a + Number(r.hits), 0),
  newUsers: outcome('user.created', true),
};
note(`audit summary: ${JSON.stringify(expected)}`);
// The mix itself fixes them; the summary must agree with it too.
const mix = { codesSent: 2, linksSent: 1, logins: 3, verificationFailures: 2, refreshes: 1, reuseDetected: 1, rateLimited: 1, newUsers: 3 };
check(JSON.stringify(expected) === JSON.stringify(mix), `the summary counts the mix: ${JSON.stringify(expected)}\n${summaryText}`);

// --- The page ---------------------------------------------------------------------
const chrome = await launch();
const { browser, context } = chrome;
const requests = [];
const violations = [];
const log = [];
await context.exposeBinding('reportViolation', (_source, v) => violations.push(v));
await context.addInitScript(() =>
  document.addEventListener('securitypolicyviolation', (e) => window.reportViolation(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'}`)),
);
const page = await context.newPage();
page.on('request', (r) => requests.push(r.url()));
page.on('console', (m) => ['error', 'warning'].includes(m.type()) && log.push(`console.${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));

try {
  const res = await page.goto(`${admin}/dashboard`);
  check(res.status() === 200, `GET /dashboard: ${res.status()}`);
  check((res.headers()['content-security-policy'] ?? '').includes("connect-src 'self'"), 'the page carries its CSP');

  // Keyboard: Tab from the top reaches the token field.
  let focused = '';
  for (let i = 0; i < 6 && focused !== 'token'; i++) {
    await page.keyboard.press('Tab');
    focused = await page.evaluate(() => document.activeElement?.id ?? '');
  }
  check(focused === 'token', `Tab reaches the token field (got '${focused}')`);

  // A wrong token is refused and not kept.
  await page.keyboard.type('not-the-token');
  await page.keyboard.press('Enter');
  await waitFor(async () => (await page.locator('#status').textContent()).includes('Not signed in'), 'the refusal');
  check((await page.evaluate(() => sessionStorage.length)) === 0, 'a refused token is not kept');
  check(await page.locator('#main').isHidden(), 'nothing shows without the token');

  await page.fill('#token', adminToken);
  await page.press('#token', 'Enter');
  await page.locator('#main').waitFor({ state: 'visible' });
  check((await page.evaluate((k) => sessionStorage.getItem(k), 'sesame.adminToken')) === adminToken, 'the token is in sessionStorage');
  await waitFor(async () => (await page.locator('[data-total=logins]').textContent()) !== '—', 'the totals');
  const shown = {};
  for (const key of Object.keys(expected)) {
    shown[key] = Number((await page.locator(`[data-total=${key}]`).textContent()).replaceAll(',', ''));
  }
  note(`page totals: ${JSON.stringify(shown)}`);
  check(JSON.stringify(shown) === JSON.stringify(expected), `the page shows the summary's totals: ${JSON.stringify(shown)} vs ${JSON.stringify(expected)}`);
  const rate = await page.locator('[data-total=successRate]').textContent();
  check(rate === '60.0%', `login success rate 3 / (3 + 2): ${rate}`);
  // Every chart has its numbers beside it: a table whose total row holds the same sums.
  check((await page.locator('section.chart svg.plot').count()) >= 4, 'four charts');
  check((await page.locator('section.chart table').count()) === 4, 'a table beside each chart');
  const loginTotal = await page.locator('#chart-logins tfoot td').first().textContent();
  check(loginTotal === String(expected.logins), `the sign-ins table totals ${loginTotal}`);
  const failureFoot = await page.locator('#chart-failures tfoot td').allTextContents();
  check(failureFoot.map(Number).reduce((a, b) => a + b, 0) === expected.verificationFailures, `failures by reason: ${failureFoot}`);

  // The window picker: 7 days in 6-hour buckets.
  await page.getByLabel('last 7 days').check();
  await waitFor(async () => (await page.locator('#range').textContent()).includes('buckets of 6h'), 'the 7-day window');
  check(Number(await page.locator('[data-total=logins]').textContent()) === expected.logins, 'same totals over 7 days');
  await page.getByLabel('last 24 hours').check();
  await waitFor(async () => (await page.locator('#range').textContent()).includes('buckets of 1h'), 'back to 24 hours');

  // Screenshots at two widths.
  await page.screenshot({ path: path.join(outDir, 'dashboard-1280.png'), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(200);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `nothing is wider than a phone: ${overflow}px too wide`);
  await page.screenshot({ path: path.join(outDir, 'dashboard-390.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // Find bob, open him, disable him: his session ends.
  await page.fill('#query', 'dash-bob');
  await page.press('#query', 'Enter');
  await page.getByRole('button', { name: `Open ${bob}` }).click();
  await page.locator('#user').waitFor({ state: 'visible' });
  check((await page.locator('#sessions tbody tr').count()) === 1, 'bob has one live session');
  check((await page.locator('#userevents tbody').textContent()).includes('auth.login'), "bob's latest events are listed");
  await page.getByRole('button', { name: /Disable user/ }).click();
  await waitFor(async () => (await page.locator('#status').textContent()).startsWith('Disabled'), 'the disable');
  await waitFor(async () => (await page.locator('#sessions tbody tr').count()) === 0, 'no session left');
  const refused = await postJson(api, '/auth/refresh', { refreshToken: bobTokens.refreshToken });
  check(refused.status === 401, `bob's refresh token is refused after the disable: ${refused.status}`);
  await waitFor(async () => (await page.locator('#events tbody').textContent()).includes('admin.user.disabled'), 'the latest events show the disable', 12_000);

  // Nothing outside the admin listener, no token in any URL, no CSP violation.
  const outside = requests.filter((u) => new URL(u).origin !== new URL(admin).origin);
  check(outside.length === 0, `requests outside the admin listener: ${outside.join(', ')}`);
  check(!requests.some((u) => u.includes(adminToken)), 'the token is in no URL');
  check(requests.some((u) => u.includes('/admin/stats?')), 'the page read /admin/stats');
  check(violations.length === 0, `CSP violations: ${violations.join('; ')}`);
  check(chrome.blocked.length === 0, blockedReport(chrome));
  note(`${requests.length} requests, all to ${new URL(admin).origin}`);
  console.log('dashboard: ok');
} catch (err) {
  await page.screenshot({ path: path.join(outDir, 'dashboard-failed.png'), fullPage: true }).catch(() => {});
  console.error(log.join('\n'));
  throw err;
} finally {
  await browser.close();
}
