// A page that signs a person in against sesame with the sesame-client package
// (clients/typescript): a code or a magic link, tokens in localStorage shared by the
// tabs, refreshed before they expire and after a 401, the user shown, log out.
//
// The package does the session work; this file is the page's UI. Plain ES2022 modules,
// no build step: index.html's import map points `sesame-client` at the package's dist/
// (vendor/ links to it; build it first, see README.md).
import { ApiError, SessionManager, SignedOutError } from 'sesame-client';

// --- Settings -----------------------------------------------------------------

const DEFAULT_BASE_URL = 'http://127.0.0.1:3001';
const BASE_KEY = 'sesame.baseUrl';

/** The sesame server this page talks to: the saved one (see `?api=` below), else the default. */
function baseUrl() {
  return localStorage.getItem(BASE_KEY) || DEFAULT_BASE_URL;
}

function setBaseUrl(url) {
  const parsed = new URL(url); // throws on a malformed URL
  if (!/^https?:$/.test(parsed.protocol)) throw new Error(`not an http(s) URL: ${url}`);
  const clean = parsed.href.replace(/\/+$/, ''); // may keep a path prefix, e.g. behind a proxy
  localStorage.setItem(BASE_KEY, clean);
  connect();
  return clean;
}

// --- The session ----------------------------------------------------------------
// One manager for the page, on the chosen server; the session is kept in localStorage
// (`sesame.session`), so every tab of the page shares it and a reload keeps it.

let auth = null;
function connect() {
  auth?.close();
  auth = new SessionManager({ baseUrl: baseUrl(), storage: 'local' });
  auth.on('signed-in', () => render());
  auth.on('refreshed', () => render());
  auth.on('signed-out', (e) => {
    render();
    if (e.reason === 'session-ended') say('Your session ended: sign in again.', 'error');
    else if (e.fromOtherTab) say('Signed out in another tab.');
  });
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
  if (e instanceof SignedOutError) return 'You are signed out.';
  if (e instanceof ApiError) {
    switch (e.code) {
      case 'invalid_code':
        return 'That code is wrong or has expired.';
      case 'invalid_link':
        return 'That link is invalid, used or expired: ask for a new one.';
      case 'invalid_email':
        return 'That does not look like an email address.';
      case 'rate_limited':
        return 'Too many tries; wait a little.';
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

function render() {
  const s = auth.session;
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
  const s = auth.session;
  $('expires').textContent = s ? `${Math.max(0, Math.round((s.expiresAt - Date.now()) / 1000))} s` : '';
}

/** GET /auth/me (through the package: Bearer, refreshed, a 401 retried once). */
async function showUser() {
  const user = await auth.me();
  render();
  say(`Signed in as ${user.email}.`, 'ok');
}

/**
 * Signing in from the address bar: a magic link lands on FRONTEND_URL/auth/verify?token=…
 * (forwarded here as ?token=…), and sesame's own sign-in page hands the pair over in the
 * fragment (#access_token=…). Either is removed from the address bar and history first.
 */
async function signInFromAddress() {
  const params = new URLSearchParams(location.search);
  const token = params.get('token');
  const fragment = location.hash.includes('access_token=') ? location.hash : '';
  if (!token && !fragment) return false;
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', location.pathname.replace(/auth\/verify\/?$/, '') + (rest ? `?${rest}` : ''));
  say('Signing you in…');
  await guard(async () => {
    if (token) await auth.verifyLink(token);
    else if (!auth.signInFromFragment(fragment)) throw new Error('the address held no usable tokens');
    await showUser();
  });
  return true;
}

function start() {
  const api = new URLSearchParams(location.search).get('api');
  if (api) setBaseUrl(api);
  else connect();
  $('base').value = baseUrl();

  $('server-form').addEventListener('submit', (e) => {
    e.preventDefault();
    guard(async () => {
      $('base').value = setBaseUrl($('base').value);
      render();
      say(`Using ${baseUrl()}.`);
    });
  });

  $('email-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const email = $('email').value.trim();
    const how = e.submitter?.value ?? 'code';
    guard(async () => {
      if (how === 'link') {
        await auth.sendLink(email);
        say(`Check ${email}: the link signs you in.`, 'ok');
      } else {
        await auth.sendCode(email);
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
      await auth.verifyCode(pendingEmail || $('email').value.trim(), $('code').value);
      $('code').value = '';
      await showUser();
    });
  });

  $('reload').addEventListener('click', () => guard(showUser));
  $('refresh').addEventListener('click', () =>
    guard(async () => {
      await auth.refresh();
      say('Access token refreshed.', 'ok');
    }),
  );
  $('logout').addEventListener('click', () =>
    guard(async () => {
      await auth.logout();
      say('Signed out.', 'ok');
    }),
  );

  render();
  setInterval(tick, 1000);

  signInFromAddress().then((took) => {
    if (!took && auth.session) guard(showUser);
  });
}

// For the console (and the browser test): window.sesame.manager is the SessionManager;
// sesame.refresh(), sesame.authed('/auth/me') (a Bearer call to sesame, parsed), …
window.sesame = {
  get manager() {
    return auth;
  },
  baseUrl,
  setBaseUrl,
  session: () => auth.session,
  refresh: () => auth.refresh(),
  authed: async (path) => {
    const res = await auth.fetch(baseUrl() + path);
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    return res.json();
  },
  me: () => auth.me(),
  logout: () => auth.logout(),
};

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
