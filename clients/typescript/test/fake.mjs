// Stand-ins for the unit tests: a fake sesame behind a stub `fetch` (with sesame's refresh
// rules: rotation, the parent answered the same child within the reuse interval, anything
// older ends the session), a Web Storage stub, and a Web Locks stub (one holder per name,
// shared by every "tab" given the same instance, as a browser's lock manager is per origin).
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

export const EMAIL = 'ada@example.com';
export const CODE = '123456';
export const USER = { id: '00000000-0000-4000-8000-000000000001', email: EMAIL, createdAt: '2026-01-01T00:00:00Z' };

export class FakeSesame {
  constructor({ expiresIn = 3600, delay = 10, refuseParent = false } = {}) {
    this.expiresIn = expiresIn;
    this.refuseParent = refuseParent; // refuse the parent of the live token (no reuse interval)
    this.delay = delay; // ms each answer takes, so that concurrent calls overlap
    this.n = 0;
    this.sessions = new Map(); // session id -> {live, parent, ended}
    this.accessTokens = new Map(); // token -> session id
    this.calls = []; // {method, path, auth, body}
    this.failRefreshWith = null; // a status to answer POST /auth/refresh with
    this.fetch = (input, init) => this.handle(new Request(input, init));
  }

  count(method, path) {
    return this.calls.filter((c) => c.method === method && c.path === path).length;
  }

  /** The live access tokens stop working (as after a restart with a new JWT_SECRET). */
  revokeAccessTokens() {
    this.accessTokens.clear();
  }

  pair(sid) {
    this.n += 1;
    // Shaped like sesame's JWT as far as the client reads it: the payload's `sid`.
    const payload = Buffer.from(JSON.stringify({ sid, n: this.n })).toString('base64url');
    const token = `h.${payload}.at-${this.n}`;
    this.accessTokens.set(token, sid);
    return { success: true, token, refreshToken: this.sessions.get(sid).live, tokenType: 'Bearer', expiresIn: this.expiresIn, user: USER };
  }

  start() {
    const sid = `s${this.sessions.size + 1}`;
    this.n += 1;
    this.sessions.set(sid, { live: `rt-${this.n}`, parent: null, ended: false });
    return this.pair(sid);
  }

  findByRefresh(rt) {
    for (const [sid, s] of this.sessions) if (s.live === rt || s.parent === rt) return [sid, s];
    return [null, null];
  }

  async handle(req) {
    const url = new URL(req.url);
    const body = req.method === 'POST' && req.headers.get('content-type')?.includes('json') ? await req.json() : undefined;
    const auth = req.headers.get('authorization');
    this.calls.push({ method: req.method, path: url.pathname, auth, body });
    await sleep(this.delay);
    const json = (status, b) => new Response(JSON.stringify(b), { status, headers: { 'content-type': 'application/json; charset=utf-8' } });
    const fail = (status, code) => json(status, { success: false, error: code, code });
    const bearer = () => {
      const sid = this.accessTokens.get(auth?.replace(/^Bearer /, ''));
      return sid && !this.sessions.get(sid).ended ? sid : null;
    };
    const route = `${req.method} ${url.pathname}`;
    switch (route) {
      case 'POST /auth/send-code':
      case 'POST /auth/send-magic-link':
        return json(200, { success: true, message: 'sent' });
      case 'POST /auth/verify-code':
        return body.code === CODE ? json(200, this.start()) : fail(401, 'invalid_code');
      case 'POST /auth/verify-magic-link':
        return body.token === 'good-link' ? json(200, this.start()) : fail(401, 'invalid_link');
      case 'POST /auth/refresh': {
        if (this.failRefreshWith) return fail(this.failRefreshWith, 'unavailable');
        const [sid, s] = this.findByRefresh(body.refreshToken);
        if (!s || s.ended) return fail(401, 'invalid_refresh_token');
        if (s.live !== body.refreshToken && this.refuseParent) {
          await sleep(this.delay); // answered after the winner's pair is stored
          return fail(401, 'invalid_refresh_token');
        }
        if (s.live === body.refreshToken) {
          this.n += 1;
          s.parent = s.live;
          s.live = `rt-${this.n}`;
        }
        return json(200, this.pair(sid)); // the parent: the same live child (reuse interval)
      }
      case 'POST /auth/logout': {
        const [, s] = this.findByRefresh(body.refreshToken);
        if (s) s.ended = true;
        return json(200, { success: true });
      }
      case 'POST /auth/logout-all': {
        if (!bearer()) return fail(401, 'invalid_token');
        let revoked = 0;
        for (const s of this.sessions.values()) if (!s.ended) (s.ended = true), (revoked += 1);
        return json(200, { success: true, revoked });
      }
      case 'GET /auth/me':
        return bearer() ? json(200, { success: true, user: USER }) : fail(401, 'invalid_token');
      case 'GET /api/thing':
      case 'POST /api/thing':
        return bearer() ? json(200, { ok: true, body: body ?? null }) : fail(401, 'invalid_token');
      default:
        return fail(404, 'not_found');
    }
  }
}

/** A Web Storage stub (one per "origin": give the same one to every tab). */
export class MemoryStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}

/**
 * A Web Locks stub: callbacks for one name run one after another; `query()` lists the
 * locks held (by name), as navigator.locks.query() does.
 */
export function lockManager() {
  const tails = new Map();
  const held = [];
  return {
    requests: 0, // for the refresh lock
    request(name, callback) {
      if (name.startsWith('sesame-client.refresh:')) this.requests += 1;
      const prev = tails.get(name) ?? Promise.resolve();
      const run = prev.then(async () => {
        const lock = { name };
        held.push(lock);
        try {
          return await callback();
        } finally {
          held.splice(held.indexOf(lock), 1);
        }
      });
      tails.set(name, run.catch(() => {}));
      return run;
    },
    async query() {
      return { held: held.map((l) => ({ name: l.name })) };
    },
  };
}

/**
 * One origin's localStorage as a browser's tabs see it: each tab reads its own copy, and
 * a write reaches the other tabs `lag` ms later (Chromium hands it over asynchronously).
 */
export class LaggyOrigin {
  constructor(lag) {
    this.lag = lag;
    this.views = [];
  }
  tab() {
    const mine = new Map();
    this.views.push(mine);
    const spread = (apply) => {
      apply(mine);
      for (const v of this.views) if (v !== mine) setTimeout(() => apply(v), this.lag);
    };
    return {
      getItem: (k) => (mine.has(k) ? mine.get(k) : null),
      setItem: (k, v) => spread((m) => m.set(k, String(v))),
      removeItem: (k) => spread((m) => m.delete(k)),
    };
  }
}

/** Records a manager's events as "type" or "type:reason", with "(other tab)" when heard. */
export function record(manager) {
  const seen = [];
  for (const type of ['signed-in', 'refreshed', 'signed-out']) {
    manager.on(type, (e) => seen.push(`${type}${e.reason ? `:${e.reason}` : ''}${e.fromOtherTab ? ' (other tab)' : ''}`));
  }
  return seen;
}
