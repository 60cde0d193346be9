// Where the session (the token pair and the user) is kept: in memory by default, or in
// `localStorage` (opt-in), where every tab of the origin shares it and a reload keeps it.
import type { components } from './openapi.js';

/** A user as sesame shows it: `{id, email, createdAt}`. */
export type User = components['schemas']['UserBody'];

/** The session as the manager keeps it. */
export interface Session {
  /** The access token (a JWT), sent as `Authorization: Bearer …`. */
  token: string;
  /** The refresh token; single use, rotated by every refresh. */
  refreshToken: string;
  /**
   * When the access token expires, in milliseconds on the manager's clock (`now` option):
   * the time the pair arrived plus `expiresIn`, so a client clock that differs from the
   * server's does not matter.
   */
  expiresAt: number;
  /** The access token's lifetime in milliseconds (`expiresIn` × 1000). */
  lifetime: number;
  /** The signed-in user, or null when not known yet (a pair taken from a URL fragment). */
  user: User | null;
}

/** Keeps one session. */
export interface SessionStore {
  /** Names the session (the lock and the broadcast channel are named after it). */
  readonly key: string;
  /** True when other tabs read and write the same session (so refreshes are coordinated). */
  readonly shared: boolean;
  get(): Session | null;
  set(session: Session): void;
  clear(): void;
}

/** The part of the Web Storage API the manager uses (`localStorage`, `sessionStorage`…). */
export type WebStorage = Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>;

/** The default key: the session is kept under it in `localStorage`. */
export const DEFAULT_KEY = 'sesame.session';

/** A session kept by this manager alone; a reload forgets it. */
export function memoryStore(key = DEFAULT_KEY): SessionStore {
  let session: Session | null = null;
  return {
    key,
    shared: false,
    get: () => session,
    set: (s) => {
      session = s;
    },
    clear: () => {
      session = null;
    },
  };
}

/** A session kept as JSON in Web Storage under `key`, shared by every tab of the origin. */
export function webStorageStore(storage: WebStorage, key = DEFAULT_KEY): SessionStore {
  return {
    key,
    shared: true,
    get: () => parse(storage.getItem(key)),
    set: (s) => storage.setItem(key, JSON.stringify(s)),
    clear: () => storage.removeItem(key),
  };
}

/** The stored session, or null when absent or not of the expected shape. */
function parse(raw: string | null): Session | null {
  if (raw === null) return null;
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null) return null;
  const s = v as Record<string, unknown>;
  if (
    typeof s.token !== 'string' ||
    typeof s.refreshToken !== 'string' ||
    typeof s.expiresAt !== 'number' ||
    typeof s.lifetime !== 'number'
  ) {
    return null;
  }
  const user = typeof s.user === 'object' && s.user !== null ? (s.user as User) : null;
  return { token: s.token, refreshToken: s.refreshToken, expiresAt: s.expiresAt, lifetime: s.lifetime, user };
}
