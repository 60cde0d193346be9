// Unit tests of the session manager's logic against stubs of fetch (a fake sesame),
// Web Storage and Web Locks, with Node's own BroadcastChannel between "tabs".
// Run after `npm run build`: node --test test/*.test.mjs
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { ApiError, SessionManager, SignedOutError, refreshMargin, webStorageStore } from '../dist/index.js';
import { CODE, EMAIL, FakeSesame, LaggyOrigin, MemoryStorage, USER, lockManager, record, sleep } from './fake.mjs';

const BASE = 'http://sesame.test';

/** A manager on the fake sesame; `tab` options share a store, locks and a channel name. */
function manager(sesame, extra = {}) {
  return new SessionManager({ baseUrl: BASE, fetch: sesame.fetch, autoRefresh: false, ...extra });
}

/** `n` tabs of one origin: one localStorage, one lock manager, one channel name. */
function tabs(sesame, n, { locks = lockManager(), ...extra } = {}) {
  const storage = new MemoryStorage();
  const key = `test.${randomUUID()}`; // a channel of its own per test
  const list = Array.from({ length: n }, () =>
    manager(sesame, { storage: webStorageStore(storage, key), locks, ...extra }),
  );
  return { storage, key, locks, list };
}

async function signIn(m) {
  await m.sendCode(EMAIL);
  return m.verifyCode(EMAIL, CODE);
}

describe('signing in', () => {
  it('keeps the pair in memory by default and says signed in', async () => {
    const sesame = new FakeSesame({ expiresIn: 900 });
    const m = manager(sesame, { now: () => 1_000_000 });
    const events = record(m);
    const s = await signIn(m);
    assert.deepEqual(events, ['signed-in']);
    assert.ok(s.token.endsWith('.at-2'), s.token);
    assert.equal(s.refreshToken, 'rt-1');
    assert.equal(s.expiresAt, 1_000_000 + 900_000, 'expiresAt is the manager clock plus expiresIn');
    assert.equal(s.lifetime, 900_000);
    assert.deepEqual(s.user, USER);
    assert.deepEqual(m.session, s);
    assert.equal(sesame.count('POST', '/auth/send-code'), 1);
    // Another manager (a reload) does not see a memory session.
    assert.equal(manager(sesame).session, null);
    m.close();
  });

  it('keeps the pair in local storage when asked so a reload finds it', async () => {
    const sesame = new FakeSesame();
    const storage = new MemoryStorage();
    const m = manager(sesame, { storage: webStorageStore(storage, 'k1'), channel: null, locks: null });
    const s = await signIn(m);
    assert.deepEqual(JSON.parse(storage.getItem('k1')), s);
    const reloaded = manager(sesame, { storage: webStorageStore(storage, 'k1'), channel: null, locks: null });
    assert.deepEqual(reloaded.session, s);
    m.close();
    reloaded.close();
  });

  it('signs in by magic link, and sends in the language asked for', async () => {
    const sesame = new FakeSesame();
    const m = manager(sesame);
    await m.sendLink(EMAIL, 'https://app.example.com/after');
    assert.deepEqual(sesame.calls[0].body, { email: EMAIL, redirectTo: 'https://app.example.com/after' });
    await m.sendLink(EMAIL, undefined, { locale: 'de' });
    assert.deepEqual(sesame.calls[1].body, { email: EMAIL, locale: 'de' });
    await m.sendCode(EMAIL, { locale: 'pt-BR' });
    assert.deepEqual(sesame.calls[2].body, { email: EMAIL, locale: 'pt-BR' });
    const s = await m.verifyLink('good-link');
    assert.equal(s.user.email, EMAIL);
    await assert.rejects(m.verifyLink('bad-link'), (e) => e instanceof ApiError && e.status === 401 && e.code === 'invalid_link');
    m.close();
  });

  it('answers a refused code with an api error and no session', async () => {
    const sesame = new FakeSesame();
    const m = manager(sesame);
    const events = record(m);
    await assert.rejects(m.verifyCode(EMAIL, '000000'), (e) => e instanceof ApiError && e.status === 401 && e.code === 'invalid_code');
    assert.equal(m.session, null);
    assert.deepEqual(events, []);
    m.close();
  });

  it('ends the session it replaces on the server', async () => {
    const sesame = new FakeSesame();
    const m = manager(sesame);
    const first = await signIn(m);
    await signIn(m);
    await sleep(50);
    const logout = sesame.calls.find((c) => c.path === '/auth/logout');
    assert.equal(logout?.body.refreshToken, first.refreshToken);
    m.close();
  });

  it('takes the pair from the fragment of the sign in page', async () => {
    const sesame = new FakeSesame();
    const m = manager(sesame, { now: () => 5_000 });
    assert.equal(m.signInFromFragment('#nothing=here'), null);
    const s = m.signInFromFragment('#access_token=at-x&refresh_token=rt-x&token_type=bearer&expires_in=60');
    assert.deepEqual(s, { token: 'at-x', refreshToken: 'rt-x', expiresAt: 65_000, lifetime: 60_000, user: null });
    m.close();
  });
});

describe('refreshing', () => {
  it('shares one request among concurrent callers in a tab', async () => {
    const sesame = new FakeSesame();
    const m = manager(sesame);
    await signIn(m);
    const ps = [m.refresh(), m.refresh(), m.refresh()];
    assert.ok(ps[0] === ps[1] && ps[1] === ps[2], 'one promise');
    const pairs = await Promise.all(ps);
    assert.equal(sesame.count('POST', '/auth/refresh'), 1);
    assert.equal(new Set(pairs.map((p) => p.refreshToken)).size, 1);
    assert.notEqual(pairs[0].refreshToken, 'rt-1', 'the refresh token rotated');
    // A later call makes a new request.
    await m.refresh();
    assert.equal(sesame.count('POST', '/auth/refresh'), 2);
    m.close();
  });

  it('refreshes ahead of expiry and not before the margin', async () => {
    const sesame = new FakeSesame({ expiresIn: 200 }); // margin: a quarter, 50 s
    let now = 0;
    const m = manager(sesame, { now: () => now });
    const events = record(m);
    const s = await signIn(m);
    assert.equal(refreshMargin(s.lifetime), 50_000);
    now = 149_000; // 51 s left: no refresh
    assert.equal(await m.accessToken(), s.token);
    assert.equal((await m.fetch(`${BASE}/api/thing`)).status, 200);
    assert.equal(sesame.count('POST', '/auth/refresh'), 0);
    now = 150_000; // 50 s left: refresh first
    const token = await m.accessToken();
    assert.notEqual(token, s.token);
    assert.equal(sesame.count('POST', '/auth/refresh'), 1);
    assert.deepEqual(events, ['signed-in', 'refreshed']);
    // The margin is at most a minute for long tokens.
    assert.equal(refreshMargin(3_600_000), 60_000);
    m.close();
  });

  it('refreshes by timer before the token expires', async () => {
    const sesame = new FakeSesame({ expiresIn: 1 }); // refresh after 750 ms
    const m = manager(sesame, { autoRefresh: true });
    const events = record(m);
    const s = await signIn(m);
    await sleep(500);
    assert.equal(sesame.count('POST', '/auth/refresh'), 0, 'not before three quarters of the lifetime');
    await sleep(450);
    assert.equal(sesame.count('POST', '/auth/refresh'), 1, 'one refresh by 950 ms');
    assert.notEqual(m.session.token, s.token);
    assert.deepEqual(events, ['signed-in', 'refreshed']);
    m.close();
  });

  it('signs out when sesame refuses the refresh token', async () => {
    const sesame = new FakeSesame();
    const m = manager(sesame);
    const events = record(m);
    const s = await signIn(m);
    sesame.sessions.get('s1').ended = true; // logged out elsewhere
    await assert.rejects(m.refresh(), SignedOutError);
    assert.equal(m.session, null);
    assert.deepEqual(events, ['signed-in', 'signed-out:session-ended']);
    await assert.rejects(m.fetch(`${BASE}/api/thing`), SignedOutError);
    assert.ok(s);
    m.close();
  });

  it('keeps the session when the refresh fails for another reason', async () => {
    const sesame = new FakeSesame();
    const m = manager(sesame);
    const events = record(m);
    const s = await signIn(m);
    sesame.failRefreshWith = 503;
    await assert.rejects(m.refresh(), (e) => e instanceof ApiError && e.status === 503);
    assert.deepEqual(m.session, s);
    assert.deepEqual(events, ['signed-in']);
    m.close();
  });
});

describe('the fetch wrapper', () => {
  it('adds the bearer token and keeps the callers headers and body', async () => {
    const sesame = new FakeSesame();
    const m = manager(sesame);
    const s = await signIn(m);
    const res = await m.fetch(`${BASE}/api/thing`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-app': '1' },
      body: JSON.stringify({ a: 1 }),
    });
    assert.equal(res.status, 200);
    assert.deepEqual((await res.json()).body, { a: 1 });
    const call = sesame.calls.at(-1);
    assert.equal(call.auth, `Bearer ${s.token}`);
    m.close();
  });

  it('retries a 401 once after one refresh', async () => {
    const sesame = new FakeSesame();
    const m = manager(sesame);
    await signIn(m);
    sesame.revokeAccessTokens(); // sesame no longer takes the access token; the refresh token is fine
    const before = sesame.calls.length;
    const res = await m.fetch(new Request(`${BASE}/api/thing`, { method: 'POST', body: '{"b":2}', headers: { 'content-type': 'application/json' } }));
    assert.equal(res.status, 200);
    assert.deepEqual((await res.json()).body, { b: 2 }, 'the retried request carried its body again');
    const seq = sesame.calls.slice(before).map((c) => `${c.method} ${c.path}`);
    assert.deepEqual(seq, ['POST /api/thing', 'POST /auth/refresh', 'POST /api/thing']);
    m.close();
  });

  it('retries only once and hands back the second 401', async () => {
    const sesame = new FakeSesame();
    let tries = 0;
    // An app API that refuses every token.
    const appRefusing = async (input, init) => {
      const r = new Request(input, init);
      if (!r.url.endsWith('/api/no')) return sesame.fetch(r);
      tries += 1;
      return new Response('{}', { status: 401 });
    };
    const m = manager({ fetch: appRefusing });
    await signIn(m);
    const res = await m.fetch(`${BASE}/api/no`);
    assert.equal(res.status, 401);
    assert.equal(tries, 2, 'the request was sent twice, not more');
    assert.equal(sesame.count('POST', '/auth/refresh'), 1, 'one refresh');
    assert.ok(m.session, 'a 401 from the app does not sign out while the refresh works');
    m.close();
  });

  it('serves the typed client for sesame bearer operations', async () => {
    const sesame = new FakeSesame();
    const m = manager(sesame);
    const s = await signIn(m);
    const user = await m.me();
    assert.deepEqual(user, USER);
    const me = sesame.calls.find((c) => c.path === '/auth/me');
    assert.equal(me.auth, `Bearer ${s.token}`);
    const { data } = await m.api.GET('/auth/me');
    assert.equal(data.user.email, EMAIL);
    m.close();
  });
});

describe('tabs sharing a session', () => {
  it('make one refresh request between three tabs and all take its pair', async () => {
    const sesame = new FakeSesame({ delay: 30 });
    const { list, locks } = tabs(sesame, 3);
    const [a, b, c] = list;
    const events = list.map(record);
    const first = await signIn(a);
    assert.deepEqual(b.session, first, 'the other tabs see the shared session');
    const results = await Promise.all(list.map((t) => t.refresh()));
    assert.equal(sesame.count('POST', '/auth/refresh'), 1, 'exactly one POST /auth/refresh');
    assert.equal(locks.requests, 3, 'each tab asked for the lock');
    assert.equal(new Set(results.map((r) => r.refreshToken)).size, 1, 'all three have the same pair');
    assert.notEqual(results[0].refreshToken, first.refreshToken);
    await sleep(50); // the broadcast
    assert.deepEqual(events[0], ['signed-in', 'refreshed']);
    for (const e of events.slice(1)) assert.deepEqual(e, ['signed-in (other tab)', 'refreshed (other tab)']);
    for (const t of list) assert.equal((await t.fetch(`${BASE}/api/thing`)).status, 200);
    assert.ok(list.every((t) => t.session), 'no tab signed out');
    list.forEach((t) => t.close());
    assert.ok(c);
  });

  it('wait for the pair another tab stored when the lock comes before the pair', async () => {
    // The lock passes from tab a to tab b before a's write to localStorage reaches b (50 ms
    // later): b finds a's mark on the token and waits for the pair instead of sending it.
    const sesame = new FakeSesame({ delay: 5 });
    const origin = new LaggyOrigin(50);
    const locks = lockManager();
    const key = `test.${randomUUID()}`;
    const [a, b] = [0, 1].map(() => manager(sesame, { storage: webStorageStore(origin.tab(), key), locks }));
    const events = [a, b].map(record);
    await signIn(a);
    await sleep(100); // b sees the session
    const [pa, pb] = await Promise.all([a.refresh(), b.refresh()]);
    assert.equal(sesame.count('POST', '/auth/refresh'), 1, 'exactly one POST /auth/refresh');
    assert.equal(pb.refreshToken, pa.refreshToken, 'b took the pair a stored');
    assert.ok(!events.flat().some((e) => e.startsWith('signed-out')), `no sign-out: ${events}`);
    // The mark names a hash of the token, never the token itself.
    const { held } = await locks.query();
    assert.ok(held.some((l) => l.name.startsWith(`sesame-client.rotated:${key}:`)), 'a marked the token it rotated');
    assert.ok(!held.some((l) => l.name.includes('rt-')), 'no token in a lock name');
    a.close();
    b.close();
  });

  it('take the pair another tab stored when their refresh is refused without locks', async () => {
    // Without Web Locks both tabs send the same refresh token; this sesame refuses the
    // second (as with no reuse interval), after the first tab has stored its new pair.
    const sesame = new FakeSesame({ delay: 30, refuseParent: true });
    const { list } = tabs(sesame, 2, { locks: null });
    const [a, b] = list;
    const events = list.map(record);
    await signIn(a);
    const [pa, pb] = await Promise.all([a.refresh(), b.refresh()]);
    assert.equal(sesame.count('POST', '/auth/refresh'), 2, 'both tabs sent a refresh');
    assert.equal(pb.refreshToken, pa.refreshToken, 'the refused tab took the stored pair');
    assert.ok(a.session && b.session, 'neither tab signed out');
    assert.ok(!events.flat().some((e) => e.startsWith('signed-out')), `no sign-out: ${events}`);
    list.forEach((t) => t.close());
  });

  it('stay signed out when a refresh is answered after another tab logged out', async () => {
    // b's refresh is answered after a logged out, before a's removal reaches b's storage
    // (50 ms): b must not store the pair again, nor may a take it for a session.
    const sesame = new FakeSesame({ delay: 20 });
    const origin = new LaggyOrigin(50);
    const key = `test.${randomUUID()}`;
    const [a, b] = [0, 1].map(() => manager(sesame, { storage: webStorageStore(origin.tab(), key), locks: null }));
    const events = [a, b].map(record);
    await signIn(a);
    await sleep(100);
    const refreshing = b.refresh().catch((e) => e);
    await sleep(1); // b's refresh reaches sesame first
    await a.logout();
    const outcome = await refreshing;
    await sleep(200); // every write and message has arrived
    assert.equal(sesame.count('POST', '/auth/refresh'), 1);
    assert.equal(sesame.calls.find((c) => c.path === '/auth/refresh').body.refreshToken, 'rt-1', 'b refreshed before the logout');
    assert.equal(a.session, null, 'a stays signed out');
    assert.equal(b.session, null, 'b is signed out');
    assert.ok(outcome instanceof SignedOutError || outcome?.refreshToken, `b's refresh: ${outcome}`);
    assert.equal(events[1].at(-1), 'signed-out:logout (other tab)', `b heard the logout last: ${events[1]}`);
    a.close();
    b.close();
  });

  it('sign out together on logout', async () => {
    const sesame = new FakeSesame();
    const { list } = tabs(sesame, 2);
    const [a, b] = list;
    const events = list.map(record);
    const s = await signIn(a);
    await b.logout();
    await sleep(50);
    const logout = sesame.calls.find((c) => c.path === '/auth/logout');
    assert.equal(logout.body.refreshToken, s.refreshToken);
    assert.equal(a.session, null);
    assert.equal(b.session, null);
    assert.deepEqual(events[1], ['signed-in (other tab)', 'signed-out:logout']);
    assert.deepEqual(events[0], ['signed-in', 'signed-out:logout (other tab)']);
    list.forEach((t) => t.close());
  });

  it('sign out everywhere on logout all', async () => {
    const sesame = new FakeSesame();
    const { list } = tabs(sesame, 2);
    const [a, b] = list;
    const events = list.map(record);
    const s = await signIn(a);
    assert.equal(await a.logoutAll(), 1);
    await sleep(50);
    const call = sesame.calls.find((c) => c.path === '/auth/logout-all');
    assert.equal(call.auth, `Bearer ${s.token}`);
    assert.equal(b.session, null);
    assert.deepEqual(events[1], ['signed-in (other tab)', 'signed-out:logout-all (other tab)']);
    await assert.rejects(b.fetch(`${BASE}/api/thing`), SignedOutError);
    list.forEach((t) => t.close());
  });
});
