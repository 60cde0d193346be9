// Shared helpers of the browser tests: the mailbox the SMTP sink fills, a
// Chromium that can reach nothing but 127.0.0.1, and small assertions.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

export { sleep };

export function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run tests/browser/run.sh)`);
  return v;
}

export function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

/** Polls `fn` until it returns a truthy value or `ms` pass. */
export async function waitFor(fn, what, ms = 10_000, every = 100) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(every);
  }
}

// --- Mail ---------------------------------------------------------------------

function decodeQuotedPrintable(s) {
  const bytes = Buffer.from(
    s.replace(/=\r?\n/g, '').replace(/=([0-9A-Fa-f]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16))),
    'latin1',
  );
  return bytes.toString('utf8');
}

function headerOf(head, name) {
  const unfolded = head.replace(/\r\n[ \t]+/g, ' ');
  const m = unfolded.match(new RegExp(`^${name}:[ \\t]*(.*)$`, 'im'));
  return m ? m[1].trim() : undefined;
}

/** One message as the sink kept it. */
export class Mail {
  constructor(file, raw) {
    this.file = file;
    this.raw = raw;
    this.head = raw.split('\r\n\r\n', 1)[0];
  }
  header(name) {
    return headerOf(this.head, name);
  }
  get to() {
    return this.header('X-Sink-To') ?? '';
  }
  get subject() {
    return this.header('Subject') ?? '';
  }
  /** The decoded body of the first part with this content type. */
  part(type) {
    for (const part of this.raw.split(/\r\n--/)) {
      const at = part.indexOf('\r\n\r\n');
      if (at < 0) continue;
      const head = part.slice(0, at);
      const ct = (headerOf(head, 'Content-Type') ?? '').toLowerCase();
      if (!ct.startsWith(type)) continue;
      const body = part.slice(at + 4).replace(/(\r\n)+$/, '');
      const cte = (headerOf(head, 'Content-Transfer-Encoding') ?? '').toLowerCase();
      if (cte === 'quoted-printable') return decodeQuotedPrintable(body);
      if (cte === 'base64') return Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
      return Buffer.from(body, 'latin1').toString('utf8');
    }
    return undefined;
  }
  /** The code, read from the subject as a person would. */
  get code() {
    const m = this.subject.match(/Your sign-in code: (\d+)/);
    return m?.[1];
  }
  /** The magic link, read from the text part. */
  get link() {
    const m = (this.part('text/plain') ?? '').match(/https?:\/\/\S+\/auth\/verify\?token=[A-Za-z0-9_-]+/);
    return m?.[0];
  }
}

export class Mailbox {
  constructor(dir) {
    this.dir = dir;
    this.seen = new Set();
  }
  all() {
    return fs
      .readdirSync(this.dir)
      .filter((f) => f.endsWith('.eml') && !f.startsWith('.'))
      .sort()
      .map((f) => new Mail(f, fs.readFileSync(path.join(this.dir, f), 'latin1')));
  }
  /** Waits for a message not returned before, to `email`, that `pred` accepts. */
  async next(email, pred = () => true, ms = 15_000) {
    const mail = await waitFor(
      () => this.all().find((m) => !this.seen.has(m.file) && m.to.includes(`<${email}>`) && pred(m)),
      `an email to ${email}`,
      ms,
    );
    this.seen.add(mail.file);
    return mail;
  }
  nextCode(email) {
    return this.next(email, (m) => m.code !== undefined).then((m) => m.code);
  }
  nextLink(email) {
    return this.next(email, (m) => m.link !== undefined).then((m) => m.link);
  }
}

// --- Browser --------------------------------------------------------------------

/**
 * A fence for Chromium's own traffic (component updates, sign-in probes…), which
 * page.route never sees: every request the browser would send off this machine
 * goes to this local "proxy" instead, which notes it and refuses it.
 */
async function fence() {
  const seen = [];
  const server = net.createServer((sock) => {
    sock.once('data', (d) => {
      const [method, target] = d.toString('latin1').split('\r\n', 1)[0].split(' ');
      seen.push(`${method} ${target}`);
      sock.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    });
    sock.on('error', () => {});
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return { seen, port: server.address().port, close: () => server.close() };
}

/**
 * Headless Debian Chromium that reaches nothing but 127.0.0.1. Page requests to
 * any other host are aborted with page routing (listed in `blocked`); as a second
 * fence, host names other than 127.0.0.1 do not resolve and the browser's own
 * traffic goes to a local proxy that refuses it (listed in `fenced`).
 */
export async function launch() {
  const guard = await fence();
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', // we run as root
      '--disable-dev-shm-usage',
      '--no-first-run',
      '--no-default-browser-check',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-domain-reliability',
      '--disable-sync',
      '--disable-client-side-phishing-detection',
      '--safebrowsing-disable-auto-update',
      '--disable-features=AutofillServerCommunication,OptimizationHints,Translate,MediaRouter,CertificateTransparencyComponentUpdater',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
      `--proxy-server=http://127.0.0.1:${guard.port}`,
      '--proxy-bypass-list=127.0.0.1',
    ],
  });
  browser.on('disconnected', guard.close);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const blocked = [];
  await context.route(
    (url) => url.protocol !== 'data:' && url.protocol !== 'blob:' && url.hostname !== '127.0.0.1',
    (route) => {
      blocked.push(`${route.request().method()} ${route.request().url()}`);
      return route.abort('blockedbyclient');
    },
  );
  return { browser, context, blocked, fenced: guard.seen };
}

/** One line on what was kept from leaving 127.0.0.1. */
export function blockedReport({ blocked, fenced }) {
  const uniq = (xs) => [...new Set(xs.map((x) => x.replace(/\?.*$/, '')))];
  return (
    `page requests blocked: ${blocked.length}${blocked.length ? ` (${uniq(blocked).join(', ')})` : ''}; ` +
    `browser's own requests refused by the fence: ${fenced.length}${fenced.length ? ` (${uniq(fenced).join(', ')})` : ''}`
  );
}

/** Collects console errors and page errors, to show when a test fails. */
export function watch(page, log) {
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') log.push(`console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
}

export async function postJson(base, p, body, headers = {}) {
  const res = await fetch(new URL(p, base), {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}
