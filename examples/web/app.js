// A minimal sesame client for the browser: sign in with a code or a magic link,
// keep the tokens in localStorage, refresh the access token shortly before it
// expires, retry a request once after a 401, show the user, log out.
//
// The first half is the client (no DOM); the second half is this page's UI.
// Both are plain ES2020, no build step, no dependencies.

// --- Settings -----------------------------------------------------------------

const DEFAULT_BASE_URL = 'http://127.0.0.1:3001';
const BASE_KEY = 'sesame.baseUrl';
const SESSION_KEY = 'sesame.session'; // {token, refreshToken, expiresAt, lifetime, user}
const LOCK_NAME = 'sesame.refresh';

/** The sesame server this page talks to: the saved one (see `?api=` below), else the default. */
export function baseUrl() {
  return localStorage.getItem(BASE_KEY) || DEFAULT_BASE_URL;
}

export function setBaseUrl(url) {
  const parsed = new URL(url); // throws on a malformed URL
  if (!/^https?:$/.test(parsed.protocol)) throw new Error(`not an http(s) URL: ${url}`);
  const clean = parsed.href.replace(/\/+$/, ''); // may keep a path prefix, e.g. behind a proxy
  localStorage.setItem(BASE_KEY, clean);
  return clean;
}

// --- Storage ------------------------------------------------------------------
// localStorage is the single source of truth, shared by every tab of the origin.

export function session() {
  try {
    return JSON.parse(localStorage.getItem(SESSION_KEY)) || null;
  } catch {
    return null;
  }
}

const listeners = new Set();
/** Calls `fn(session)` whenever the session changes, in this tab or another. */
export function onChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
function changed() {
  schedule();
  const s = session();
  for (const fn of listeners) fn(s);
}

function store(s) {
  localStorage.setItem(SESSION_KEY, JSON.stringify(s));
  changed();
  return s;
}

function forget() {
  localStorage.removeItem(SESSION_KEY);
  changed();
}

/**
 * Keeps a token pair answered by verify-code, verify-magic-link or refresh. The
 * user shown is the one GET /auth/me answers (see me()), kept across refreshes.
 */
function accept(pair, { signIn = false } = {}) {
  const lifetime = pair.expiresIn * 1000;
  return store({
    token: pair.token,
    refreshToken: pair.refreshToken,
    // Our own clock, not the JWT's `exp`: a skewed client clock does not matter.
    expiresAt: Date.now() + lifetime,
    lifetime,
    user: signIn ? null : (session()?.user ?? null),
  });
}

// Another tab signed in, refreshed or logged out.
window.addEventListener('storage', (e) => {
  if (e.key === SESSION_KEY || e.key === null) changed();
});
// Background tabs' timers are throttled: look again when the tab is shown.
document.addEventListener('visibilitychange', () => {
  if (!document.hidden) schedule();
});

// --- HTTP -----------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
    this.body = body;
  }
}

export class SignedOut extends Error {
  constructor() {
    super('not signed in');
  }
}

async function call(path, { method = 'GET', body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(baseUrl() + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try {
    data = await res.json();
  } catch {
    // no JSON body
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// --- Refresh ---------------------------------------------------------------------

/** How long before expiry to refresh: a quarter of the lifetime, at most a minute. */
function margin(s) {
  return Math.min(60_000, (s.lifetime || 60_000) / 4);
}
function expiringSoon(s) {
  return s.expiresAt - Date.now() <= margin(s);
}

let inflight = null;

/**
 * Exchanges the refresh token for a new pair. Concurrent callers in this tab get
 * the same promise, so one request is made. Across tabs a Web Lock (where the
 * browser has it) lets one tab refresh while the others wait and then take its
 * tokens from storage; without it, the server answers the same new refresh
 * token to a parent presented again within REFRESH_REUSE_INTERVAL (10 s), so
 * racing tabs still converge on one session.
 */
export function refresh() {
  if (!inflight) {
    const seen = session()?.refreshToken;
    inflight = exclusive(() => rotate(seen)).finally(() => {
      inflight = null;
    });
  }
  return inflight;
}

function exclusive(fn) {
  return navigator.locks ? navigator.locks.request(LOCK_NAME, fn) : fn();
}

async function rotate(seen) {
  const current = session();
  if (!current) throw new SignedOut();
  // Another tab rotated the token while we waited for the lock: use its pair.
  if (current.refreshToken !== seen && !expiringSoon(current)) return current;
  try {
    const pair = await call('/auth/refresh', { method: 'POST', body: { refreshToken: current.refreshToken } });
    // Logged out (here or in another tab) while the refresh was on its way: that ended
    // the whole session, this new pair included.
    if (!session()) throw new SignedOut();
    return accept(pair);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      const now = session();
      if (now && now.refreshToken !== current.refreshToken) return now; // a tab without locks won the race
      forget(); // used, revoked or expired: the session is over
      throw new SignedOut();
    }
    throw e;
  }
}

/** A usable access token, refreshed first when it is about to expire. */
export async function accessToken() {
  const s = session();
  if (!s) throw new SignedOut();
  return expiringSoon(s) ? (await refresh()).token : s.token;
}

/** A request with the bearer token; a 401 is retried once after a refresh. */
export async function authed(path, opts = {}) {
  const token = await accessToken();
  try {
    return await call(path, { ...opts, token });
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) throw e;
    const now = session();
    // Someone refreshed meanwhile: retry with their token; else refresh now.
    const fresh = now && now.token !== token ? now : await refresh();
    return call(path, { ...opts, token: fresh.token });
  }
}

// Refresh shortly before expiry while the page is open.
let timer = null;
function schedule(delay) {
  clearTimeout(timer);
  const s = session();
  if (!s) return;
  const wait = delay ?? Math.max(0, s.expiresAt - margin(s) - Date.now());
  timer = setTimeout(async () => {
    const now = session();
    if (!now) return;
    if (!expiringSoon(now)) return schedule(); // another tab already refreshed
    try {
      await refresh();
    } catch (e) {
      if (!(e instanceof SignedOut)) schedule(5_000); // offline or 5xx: try again soon
    }
  }, Math.min(wait, 2 ** 31 - 1));
}

// --- Signing in and out ------------------------------------------------------------

export function sendCode(email) {
  return call('/auth/send-code', { method: 'POST', body: { email } });
}

/** Keeps a new session's pair; a session this browser had before is ended on the server. */
function signedIn(pair) {
  const previous = session();
  const s = accept(pair, { signIn: true });
  if (previous && previous.refreshToken !== s.refreshToken) {
    call('/auth/logout', { method: 'POST', body: { refreshToken: previous.refreshToken } }).catch(() => {});
  }
  return s;
}

export async function verifyCode(email, code) {
  return signedIn(await call('/auth/verify-code', { method: 'POST', body: { email, code } }));
}

export function sendMagicLink(email) {
  return call('/auth/send-magic-link', { method: 'POST', body: { email } });
}

export async function verifyMagicLink(token) {
  return signedIn(await call('/auth/verify-magic-link', { method: 'POST', body: { token } }));
}

/** GET /auth/me; the answer's user is kept with the session. */
export async function me() {
  const { user } = await authed('/auth/me');
  const s = session();
  if (s) store({ ...s, user });
  return user;
}

/** Ends the session on the server, then forgets it here (even if the server is unreachable). */
export async function logout() {
  if (inflight) await inflight.catch(() => {}); // log out the token a refresh is about to hand us
  const s = session();
  try {
    if (s) await call('/auth/logout', { method: 'POST', body: { refreshToken: s.refreshToken } });
  } finally {
    forget();
  }
}

// --- The page ---------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
let pendingEmail = '';

function say(text, kind = 'info') {
  const el = $('status');
  el.textContent = text;
  el.dataset.kind = kind;
}

function explain(e) {
  if (e instanceof SignedOut) return 'You are signed out.';
  if (e instanceof ApiError) {
    switch (e.code) {
      case 'invalid_code':
        return 'That code is wrong or has expired.';
      case 'invalid_link':
        return 'That link is invalid, used or expired: ask for a new one.';
      case 'invalid_email':
        return 'That does not look like an email address.';
      case 'rate_limited':
        return `Too many tries; wait ${e.body?.retryAfter ?? 'a few'} seconds.`;
      default:
        return e.message;
    }
  }
  return `Cannot reach sesame at ${baseUrl()} (${e.message}).`;
}

async function guard(fn) {
  try {
    await fn();
  } catch (e) {
    say(explain(e), 'error');
    console.error(e);
  }
}

function render(s) {
  $('signed-in').hidden = !s;
  $('signed-out').hidden = !!s;
  if (s) {
    $('who').textContent = s.user?.email ?? '…';
    $('user-id').textContent = s.user?.id ?? '…';
    $('user-created').textContent = s.user?.createdAt ?? '…';
    $('token-tail').textContent = `…${s.token.slice(-12)}`;
  } else {
    $('code-form').hidden = true;
  }
  tick();
}

function tick() {
  const s = session();
  $('expires').textContent = s ? `${Math.max(0, Math.round((s.expiresAt - Date.now()) / 1000))} s` : '';
}

async function showUser() {
  const user = await me();
  say(`Signed in as ${user.email}.`, 'ok');
}

/** The magic link lands on FRONTEND_URL/auth/verify?token=… (forwarded here) or ?token=…. */
async function takeMagicLink() {
  const params = new URLSearchParams(location.search);
  const token = params.get('token');
  if (!token) return false;
  // Drop the token from the address bar and history before using it.
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', location.pathname.replace(/auth\/verify\/?$/, '') + (rest ? `?${rest}` : ''));
  say('Signing you in…');
  await guard(async () => {
    await verifyMagicLink(token);
    await showUser();
  });
  return true;
}

function start() {
  const api = new URLSearchParams(location.search).get('api');
  if (api) setBaseUrl(api);
  $('base').value = baseUrl();

  $('server-form').addEventListener('submit', (e) => {
    e.preventDefault();
    guard(async () => {
      $('base').value = setBaseUrl($('base').value);
      say(`Using ${baseUrl()}.`);
    });
  });

  $('email-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const email = $('email').value.trim();
    const how = e.submitter?.value ?? 'code';
    guard(async () => {
      if (how === 'link') {
        await sendMagicLink(email);
        say(`Check ${email}: the link signs you in.`, 'ok');
      } else {
        await sendCode(email);
        pendingEmail = email;
        $('code-form').hidden = false;
        $('code').focus();
        say(`Check ${email} for your code.`, 'ok');
      }
    });
  });

  $('code-form').addEventListener('submit', (e) => {
    e.preventDefault();
    guard(async () => {
      await verifyCode(pendingEmail || $('email').value.trim(), $('code').value);
      $('code').value = '';
      await showUser();
    });
  });

  $('reload').addEventListener('click', () => guard(showUser));
  $('refresh').addEventListener('click', () =>
    guard(async () => {
      await refresh();
      say('Access token refreshed.', 'ok');
    }),
  );
  $('logout').addEventListener('click', () =>
    guard(async () => {
      await logout();
      say('Signed out.', 'ok');
    }),
  );

  onChange(render);
  render(session());
  setInterval(tick, 1000);
  schedule();

  takeMagicLink().then((took) => {
    if (!took && session()) guard(showUser);
  });
}

// For the console (and the browser test): window.sesame.refresh(), .authed('/auth/me'), …
window.sesame = {
  baseUrl,
  setBaseUrl,
  session,
  refresh,
  accessToken,
  authed,
  me,
  logout,
  sendCode,
  verifyCode,
  sendMagicLink,
  verifyMagicLink,
};

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
