// The session manager: signs in (code or magic link), keeps the token pair, refreshes it
// ahead of expiry and after a 401, coordinates the refresh across tabs, tells the app what
// happened (events), signs out, and wraps `fetch` for the app's own API calls.
//
// Why the care with refreshes: sesame rotates the refresh token on every refresh, and a
// rotated token presented again more than REFRESH_REUSE_INTERVAL (10 s) later is taken as
// theft and ends the whole session. Tabs that share a session must therefore not each
// refresh with the same token: within a tab, concurrent callers share one in-flight
// refresh; across tabs, a Web Lock lets one tab refresh while the others wait and then
// take its new pair from the shared storage, and a BroadcastChannel tells them it came.
import createClient, { type Client } from 'openapi-fetch';
import { ApiError, SignedOutError } from './errors.js';
import { SessionEvent, type SessionEventType, type SignOutReason } from './events.js';
import type { components, paths } from './openapi.js';
import { type ChannelLike, type FetchLike, type LockManagerLike, delay, fnv1a, sidOf, withBearer } from './platform.js';
import { type Session, type SessionStore, type User, memoryStore, webStorageStore } from './storage.js';

/** A token pair as sesame answers it (verify-code, verify-magic-link, refresh). */
export type TokenPair = components['schemas']['TokenPair'];

export interface SessionManagerOptions {
  /** sesame's base URL, e.g. `https://auth.example.com` (a path prefix is kept). */
  baseUrl: string;
  /**
   * Where the session is kept: `'memory'` (the default: this manager only, gone on reload),
   * `'local'` (`localStorage`, shared by the origin's tabs and kept across reloads), or a
   * store of your own (see `memoryStore`, `webStorageStore`).
   */
  storage?: 'memory' | 'local' | SessionStore;
  /** The key the session is kept under in `localStorage` (default `sesame.session`). */
  storageKey?: string;
  /** The `fetch` to use (default: the global one, looked up at each call). */
  fetch?: FetchLike;
  /** Web Locks (default `navigator.locks` where it exists); null turns the lock off. */
  locks?: LockManagerLike | null;
  /** Opens the channel to other tabs (default: `new BroadcastChannel(name)` where it exists); null turns it off. */
  channel?: ((name: string) => ChannelLike) | null;
  /** The clock, in milliseconds (default `Date.now`). */
  now?: () => number;
  /** Refresh by timer shortly before the access token expires (default true). */
  autoRefresh?: boolean;
}

/** How long before expiry to refresh: a quarter of the token's lifetime, at most a minute. */
export function refreshMargin(lifetime: number): number {
  return Math.min(60_000, lifetime / 4);
}

/** After a refresh that failed for another reason than a refused token (offline, 5xx), try again in: */
const RETRY_AFTER_FAILURE_MS = 5_000;
/** How long a tab that rotated a refresh token holds the lock that says so (see `rotate`). */
const ROTATED_MARK_MS = 5_000;
/** How long a tab waits for the pair another tab stored to reach its own storage. */
const WAIT_FOR_PAIR_MS = 3_000;

/** A message between tabs that share a session. */
interface TabMessage {
  type: SessionEventType;
  session: Session | null;
  reason: SignOutReason | null;
  /** The session that ended (`signed-out`), by its `sid`. */
  sid: string | null;
}

/** Options of `sendCode` and `sendLink`. */
export interface SendOptions {
  /** The email's language, a BCP 47 tag such as `de` or `pt-BR` (sesame falls back along it). */
  locale?: string;
}

export class SessionManager extends EventTarget {
  /**
   * A typed client (openapi-fetch) for sesame's own Bearer operations (`GET /auth/me`,
   * `GET /auth/sessions`, `DELETE /auth/sessions/{id}`…), through `fetch` below: the
   * token is added, refreshed first when it is about to expire, and a 401 is retried once.
   */
  readonly api: Client<paths>;
  /** The same, without a token: sign-in, refresh, logout. */
  private readonly anonymous: Client<paths>;
  private readonly store: SessionStore;
  private readonly send: FetchLike;
  private readonly locks: LockManagerLike | null;
  private readonly channel: ChannelLike | null;
  private readonly now: () => number;
  private readonly autoRefresh: boolean;
  private inflight: Promise<Session> | null = null;
  /**
   * The sessions (`sid`) that ended here or in another tab. A tab whose refresh was
   * answered just after another tab logged out may store that session again (it cannot see
   * the other tab's removal yet): a stored pair of an ended session counts as none.
   */
  private readonly ended = new Set<string>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly onVisible = (): void => {
    if (globalThis.document?.visibilityState === 'visible') this.schedule();
  };

  constructor(options: SessionManagerOptions) {
    super();
    const key = options.storageKey;
    const storage = options.storage ?? 'memory';
    if (storage === 'local') {
      if (typeof globalThis.localStorage === 'undefined') throw new Error("storage 'local': there is no localStorage here");
      this.store = webStorageStore(globalThis.localStorage, key);
    } else if (storage === 'memory') {
      this.store = memoryStore(key);
    } else {
      this.store = storage;
    }
    this.send = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.now = options.now ?? Date.now;
    this.autoRefresh = options.autoRefresh ?? true;
    // Only a shared session needs coordinating across tabs.
    const shared = this.store.shared;
    this.locks = shared ? (options.locks === undefined ? (globalThis.navigator?.locks ?? null) : options.locks) : null;
    const open =
      options.channel === undefined
        ? typeof BroadcastChannel === 'undefined'
          ? null
          : (name: string) => new BroadcastChannel(name)
        : options.channel;
    this.channel = shared && open ? open(`sesame-client:${this.store.key}`) : null;
    this.channel?.addEventListener('message', (e) => this.heard(e.data as TabMessage));
    // Node's BroadcastChannel would otherwise keep a process (a test) alive.
    (this.channel as { unref?: () => void } | null)?.unref?.();

    const baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.anonymous = createClient<paths>({ baseUrl, fetch: (request) => this.send(request) });
    this.api = createClient<paths>({ baseUrl, fetch: (request) => this.fetch(request) });

    globalThis.document?.addEventListener('visibilitychange', this.onVisible);
    this.schedule();
  }

  // --- The session ---------------------------------------------------------------------

  /** The stored session, unless it is one that ended (then it is removed). */
  private current(): Session | null {
    const s = this.store.get();
    if (s && this.ended.has(sidOf(s.token) ?? '')) {
      this.store.clear();
      return null;
    }
    return s;
  }

  /** The current session, or null when signed out. */
  get session(): Session | null {
    return this.current();
  }

  /** The signed-in user, or null. */
  get user(): User | null {
    return this.current()?.user ?? null;
  }

  /** Calls `listener` on each `type` event; returns a function that stops it. */
  on(type: SessionEventType, listener: (event: SessionEvent) => void): () => void {
    const l = (e: Event): void => listener(e as SessionEvent);
    this.addEventListener(type, l);
    return () => this.removeEventListener(type, l);
  }

  /** Stops the timer, the channel and the listeners (the session stays where it is kept). */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.channel?.close();
    globalThis.document?.removeEventListener('visibilitychange', this.onVisible);
  }

  // --- Signing in ------------------------------------------------------------------------

  /**
   * Emails a one-time code to `email` (`POST /auth/send-code`), in `options.locale` (a BCP 47
   * tag such as `de`) when given, else in the language sesame picks from the browser's
   * `Accept-Language`.
   */
  async sendCode(email: string, options: SendOptions = {}): Promise<void> {
    const body = options.locale === undefined ? { email } : { email, locale: options.locale };
    const { data, error, response } = await this.anonymous.POST('/auth/send-code', { body });
    if (!data) throw new ApiError(response.status, error);
  }

  /** Exchanges the emailed code for a session (`POST /auth/verify-code`). */
  async verifyCode(email: string, code: string): Promise<Session> {
    const { data, error, response } = await this.anonymous.POST('/auth/verify-code', { body: { email, code } });
    if (!data) throw new ApiError(response.status, error);
    return this.signedIn(data);
  }

  /**
   * Emails a magic link to `email` (`POST /auth/send-magic-link`); `redirectTo` must be allowed
   * by sesame; `options.locale` as for `sendCode`.
   */
  async sendLink(email: string, redirectTo?: string, options: SendOptions = {}): Promise<void> {
    const body = {
      email,
      ...(redirectTo === undefined ? {} : { redirectTo }),
      ...(options.locale === undefined ? {} : { locale: options.locale }),
    };
    const { data, error, response } = await this.anonymous.POST('/auth/send-magic-link', { body });
    if (!data) throw new ApiError(response.status, error);
  }

  /** Exchanges a magic link's `token` (its `?token=` parameter) for a session (`POST /auth/verify-magic-link`). */
  async verifyLink(token: string): Promise<Session> {
    const { data, error, response } = await this.anonymous.POST('/auth/verify-magic-link', { body: { token } });
    if (!data) throw new ApiError(response.status, error);
    return this.signedIn(data);
  }

  /**
   * Takes the pair that sesame's own sign-in page hands to FRONTEND_URL in the fragment
   * (`#access_token=…&refresh_token=…&token_type=bearer&expires_in=…`); null when the
   * fragment has none. The user is not in the fragment: call `me()` next. Remove the
   * fragment from the address bar afterwards (`history.replaceState`).
   */
  signInFromFragment(hash: string): Session | null {
    const p = new URLSearchParams(hash.replace(/^#/, ''));
    const token = p.get('access_token');
    const refreshToken = p.get('refresh_token');
    const expiresIn = Number(p.get('expires_in'));
    if (!token || !refreshToken || !(expiresIn > 0)) return null;
    return this.signedIn({ token, refreshToken, expiresIn, user: null });
  }

  /** Keeps a new session; a different session this store held before is ended on the server. */
  private signedIn(pair: Pick<TokenPair, 'token' | 'refreshToken' | 'expiresIn'> & { user: User | null }): Session {
    const previous = this.current();
    const session = this.keep(pair);
    if (previous && previous.refreshToken !== session.refreshToken) {
      // Best effort: the old session would otherwise stay live until it expires.
      void this.anonymous.POST('/auth/logout', { body: { refreshToken: previous.refreshToken } }).catch(() => {});
    }
    this.announce('signed-in', session);
    return session;
  }

  private keep(pair: Pick<TokenPair, 'token' | 'refreshToken' | 'expiresIn'> & { user: User | null }): Session {
    const lifetime = pair.expiresIn * 1000;
    const session: Session = {
      token: pair.token,
      refreshToken: pair.refreshToken,
      expiresAt: this.now() + lifetime,
      lifetime,
      user: pair.user,
    };
    this.store.set(session);
    this.schedule();
    return session;
  }

  // --- Refreshing --------------------------------------------------------------------------

  /**
   * Exchanges the refresh token for a new pair. Concurrent callers in this manager share
   * one request; with a shared store, one tab at a time refreshes (Web Locks) and a tab
   * that waited takes the pair the other tab stored instead of refreshing again. Throws
   * SignedOutError (and signs out) when sesame refuses the refresh token.
   */
  refresh(): Promise<Session> {
    if (!this.inflight) {
      const seen = this.current()?.refreshToken;
      const rotate = (): Promise<Session> => this.rotate(seen);
      const run = this.locks ? this.locks.request(`sesame-client.refresh:${this.store.key}`, rotate) : rotate();
      this.inflight = run.finally(() => {
        this.inflight = null;
      });
    }
    return this.inflight;
  }

  private async rotate(seen: string | undefined): Promise<Session> {
    const current = this.current();
    if (!current) throw new SignedOutError();
    // Another tab refreshed while this one waited for the lock: take its pair.
    if (current.refreshToken !== seen && !this.expiringSoon(current)) return current;
    // A browser hands a write to localStorage to its other tabs asynchronously, so the lock
    // can come here before the pair its last holder stored does. That holder marked the
    // token it rotated with a lock of its own, taken before it let the refresh lock go:
    // seeing the mark, wait for the pair instead of presenting the token again.
    if (await this.rotatedElsewhere(current.refreshToken)) {
      const stored = await this.storedAfter(current.refreshToken);
      if (stored) return stored;
    }
    const { data, error, response } = await this.anonymous.POST('/auth/refresh', {
      body: { refreshToken: current.refreshToken },
    });
    if (data) {
      // Logged out (here or in another tab) while the refresh was on its way: that ended
      // the whole session, this pair included.
      if (!this.current() || this.ended.has(sidOf(data.token) ?? '')) throw new SignedOutError();
      const session = this.keep(data);
      this.markRotated(current.refreshToken);
      this.announce('refreshed', session);
      return session;
    }
    if (response.status === 401) {
      const now = this.current();
      // A tab without the lock refreshed first: its pair is the live one.
      if (now && now.refreshToken !== current.refreshToken) return now;
      this.end('session-ended');
      throw new SignedOutError();
    }
    throw new ApiError(response.status, error);
  }

  /** The name of the lock that says a refresh token was rotated (a hash, not the token). */
  private rotatedMark(refreshToken: string): string {
    return `sesame-client.rotated:${this.store.key}:${fnv1a(refreshToken)}`;
  }

  /** Holds the mark for a few seconds; requested now, so before the refresh lock is released. */
  private markRotated(refreshToken: string): void {
    if (!this.locks?.query) return;
    void this.locks.request(this.rotatedMark(refreshToken), () => delay(ROTATED_MARK_MS, true)).catch(() => {});
  }

  private async rotatedElsewhere(refreshToken: string): Promise<boolean> {
    if (!this.locks?.query) return false;
    const name = this.rotatedMark(refreshToken);
    const { held = [] } = await this.locks.query();
    return held.some((lock) => lock.name === name);
  }

  /** The stored pair once it replaces `refreshToken`; null if it has not within WAIT_FOR_PAIR_MS. */
  private async storedAfter(refreshToken: string): Promise<Session | null> {
    const end = this.now() + WAIT_FOR_PAIR_MS;
    for (;;) {
      const s = this.current();
      if (!s) throw new SignedOutError();
      if (s.refreshToken !== refreshToken) return s;
      // Then refresh after all: within the reuse interval sesame answers the same pair.
      if (this.now() > end) return null;
      await delay(10);
    }
  }

  private expiringSoon(s: Session): boolean {
    return s.expiresAt - this.now() <= refreshMargin(s.lifetime);
  }

  /** A usable access token: refreshed first when it expires within the margin. */
  async accessToken(): Promise<string> {
    const s = this.current();
    if (!s) throw new SignedOutError();
    return this.expiringSoon(s) ? (await this.refresh()).token : s.token;
  }

  /** Refreshes by timer shortly before the access token expires. */
  private schedule(delay?: number): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const s = this.current();
    if (!s || !this.autoRefresh) return;
    const wait = delay ?? Math.max(0, s.expiresAt - refreshMargin(s.lifetime) - this.now());
    this.timer = setTimeout(() => void this.onTimer(), Math.min(wait, 2 ** 31 - 1));
    // In Node (tests, server-side rendering) the timer must not keep the process alive.
    (this.timer as { unref?: () => void }).unref?.();
  }

  private async onTimer(): Promise<void> {
    const s = this.current();
    if (!s) return;
    if (!this.expiringSoon(s)) return this.schedule(); // another tab refreshed already
    try {
      await this.refresh();
      this.schedule(); // also when the pair came from another tab
    } catch (e) {
      if (!(e instanceof SignedOutError)) this.schedule(RETRY_AFTER_FAILURE_MS);
    }
  }

  // --- Calling APIs ------------------------------------------------------------------------

  /**
   * `fetch` with `Authorization: Bearer <access token>`, for the app's own API (and
   * sesame's Bearer operations). The token is refreshed first when it is about to expire;
   * a 401 answer is retried once after a refresh (or with the token another tab just got).
   * Throws SignedOutError when there is no session or the refresh was refused. A request
   * whose body is a stream cannot be retried: send strings, blobs or form data.
   */
  async fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    const again = input instanceof Request ? input.clone() : input;
    const token = await this.accessToken();
    const first = await this.send(...withBearer(input, init, token));
    if (first.status !== 401) return first;
    const now = this.current();
    const fresh = now && now.token !== token ? now : await this.refresh();
    return this.send(...withBearer(again, init, fresh.token));
  }

  /** The signed-in user (`GET /auth/me`), kept with the session. */
  async me(): Promise<User> {
    const { data, error, response } = await this.api.GET('/auth/me');
    if (!data) throw new ApiError(response.status, error);
    const s = this.current();
    if (s) this.store.set({ ...s, user: data.user });
    return data.user;
  }

  // --- Signing out -------------------------------------------------------------------------

  /**
   * Ends this session on the server (`POST /auth/logout`), then forgets it here and in the
   * other tabs, even when the server cannot be reached (the error is thrown after).
   */
  async logout(): Promise<void> {
    // Log out with the token a refresh under way is about to hand us.
    if (this.inflight) await this.inflight.catch(() => {});
    const s = this.current();
    if (!s) return;
    try {
      const { data, error, response } = await this.anonymous.POST('/auth/logout', {
        body: { refreshToken: s.refreshToken },
      });
      if (!data) throw new ApiError(response.status, error);
    } finally {
      this.end('logout');
    }
  }

  /** Ends every session of the user (`POST /auth/logout-all`), this one included; answers how many. */
  async logoutAll(): Promise<number> {
    const { data, error, response } = await this.api.POST('/auth/logout-all');
    if (!data) throw new ApiError(response.status, error);
    this.end('logout-all');
    return data.revoked;
  }

  private end(reason: SignOutReason): void {
    const had = this.current();
    const sid = had ? sidOf(had.token) : null;
    if (sid) this.ended.add(sid);
    this.store.clear();
    this.schedule();
    if (had) this.announce('signed-out', null, reason, sid);
  }

  // --- Events, here and in the other tabs ----------------------------------------------------

  private announce(
    type: SessionEventType,
    session: Session | null,
    reason: SignOutReason | null = null,
    sid: string | null = null,
  ): void {
    this.dispatchEvent(new SessionEvent(type, session, reason));
    const message: TabMessage = { type, session, reason, sid };
    this.channel?.postMessage(message);
  }

  /** Another tab signed in, refreshed or signed out; the shared store holds the result. */
  private heard(m: TabMessage): void {
    if (m?.type !== 'signed-in' && m?.type !== 'refreshed' && m?.type !== 'signed-out') return;
    if (m.type === 'signed-out' && m.sid) this.ended.add(m.sid);
    // A pair of a session that ended (a refresh answered after the logout) is no news.
    if (m.session && this.ended.has(sidOf(m.session.token) ?? '')) return;
    this.schedule();
    this.dispatchEvent(new SessionEvent(m.type, m.session, m.reason, true));
  }
}
