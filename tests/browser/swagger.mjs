// A: sesame's Swagger UI at /docs, used as a person would: "Try it out" on
// send_code, then Authorize with a bearer token and "Try it out" on GET /auth/me.
//
// Environment (set by run.sh): SESAME_URL, MAILDIR, OUT_DIR.
import path from 'node:path';
import { Mailbox, blockedReport, check, launch, need, postJson, watch } from './lib.mjs';

const base = need('SESAME_URL');
const mailbox = new Mailbox(need('MAILDIR'));
const outDir = need('OUT_DIR');
const email = `swagger-${Date.now()}@example.com`;

const chrome = await launch();
const { browser, context } = chrome;
const log = [];
const page = await context.newPage();
watch(page, log);
const origins = new Map(); // origin → requests the page made to it
page.on('request', (r) => {
  const o = new URL(r.url()).origin;
  origins.set(o, (origins.get(o) ?? 0) + 1);
});
try {
  await page.goto(new URL('/docs', base).href);
  await page.locator('.swagger-ui .info .title').waitFor();

  // --- send_code: Try it out, with our address ----------------------------------
  const sendCode = page.locator('#operations-Auth-send_code');
  await sendCode.locator('.opblock-summary').click();
  await sendCode.getByRole('button', { name: 'Try it out' }).click();
  const body = sendCode.locator('textarea.body-param__text');
  await body.fill(JSON.stringify({ email }, null, 2));
  const [sendRes] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/auth/send-code') && r.request().method() === 'POST'),
    sendCode.getByRole('button', { name: 'Execute' }).click(),
  ]);
  check(sendRes.status() === 200, `send-code answered ${sendRes.status()}`);
  // What the UI shows: the live response's status and body.
  const sendLive = sendCode.locator('.live-responses-table .response');
  await sendLive.locator('.response-col_status').filter({ hasText: '200' }).waitFor();
  const sendShown = await sendLive.locator('.response-col_description pre').first().innerText();
  check(/"success":\s*true/.test(sendShown), `the UI shows send-code's body: ${sendShown}`);
  console.error(`  send_code via UI: 200 ${sendShown.replace(/\s+/g, ' ')}`);

  // --- The code from the mail sink; tokens by a direct call ---------------------
  const code = await mailbox.nextCode(email);
  const verified = await postJson(base, '/auth/verify-code', { email, code });
  check(verified.status === 200 && verified.body.token, `verify-code: ${JSON.stringify(verified)}`);

  // --- Authorize with the bearer token --------------------------------------------
  await page.locator('.scheme-container button.authorize').click();
  const modal = page.locator('.dialog-ux .modal-ux');
  await modal.waitFor();
  await modal.getByLabel('auth-bearer-value').fill(verified.body.token);
  await modal.locator('button.modal-btn.authorize', { hasText: 'Authorize' }).click();
  // The scheme now shows as authorized: its button turns into Logout.
  await modal.locator('button.modal-btn', { hasText: 'Logout' }).waitFor();
  await modal.locator('button.btn-done', { hasText: 'Close' }).click();
  await modal.waitFor({ state: 'detached' });

  // --- get_me: Try it out ---------------------------------------------------------
  const me = page.locator('#operations-Sessions-get_me');
  await me.locator('.opblock-summary').click();
  await me.getByRole('button', { name: 'Try it out' }).click();
  const [meRes] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/auth/me') && r.request().method() === 'GET'),
    me.getByRole('button', { name: 'Execute' }).click(),
  ]);
  check(
    meRes.request().headers().authorization === `Bearer ${verified.body.token}`,
    'GET /auth/me carried the bearer token entered in Authorize',
  );
  check(meRes.status() === 200, `GET /auth/me answered ${meRes.status()}`);
  const meLive = me.locator('.live-responses-table .response');
  await meLive.locator('.response-col_status').filter({ hasText: '200' }).waitFor();
  const meShown = await meLive.locator('.response-col_description pre').first().innerText();
  check(meShown.includes(`"${email}"`), `the UI shows the user's email: ${meShown}`);
  // The curl line Swagger UI shows carries the token too.
  const curl = await me.locator('.curl-command').innerText();
  check(curl.includes('Authorization: Bearer'), `the curl line has the bearer header: ${curl}`);
  console.error(`  get_me via UI: 200 ${meShown.replace(/\s+/g, ' ')}`);

  // The picture a person would see: GET /auth/me's request and its live answer.
  await page.setViewportSize({ width: 1280, height: 1000 });
  await me.locator('.opblock-summary').evaluate((el) => el.scrollIntoView({ block: 'start' }));
  await page.screenshot({ path: path.join(outDir, 'swagger.png') });
  console.error(`  ${blockedReport(chrome)}`);
  console.error(`  page requests by origin: ${[...origins].map(([o, n]) => `${o} ×${n}`).join(', ')}`);
  console.log('swagger ui: ok');
} catch (e) {
  await page.screenshot({ path: path.join(outDir, 'swagger-failed.png'), fullPage: true }).catch(() => {});
  console.error(log.join('\n'));
  console.error(`  ${blockedReport(chrome)}`);
  console.error('swagger ui: FAILED');
  throw e;
} finally {
  await browser.close();
}
