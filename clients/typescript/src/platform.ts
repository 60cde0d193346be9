// What the manager needs from the platform (fetch, Web Locks, BroadcastChannel), as small
// interfaces that tests can stub, and the helpers that touch it.

/** What `fetch` the manager uses: the global one by default. */
export type FetchLike = (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;

/** The part of the Web Locks API the manager uses (`navigator.locks`). */
export interface LockManagerLike {
  request<T>(name: string, callback: () => Promise<T>): Promise<T>;
  /** The locks held (Web Locks' `query`): tells a tab that another one rotated its token. */
  query?(): Promise<{ held?: { name?: string }[] }>;
}

/** The part of BroadcastChannel the manager uses. */
export interface ChannelLike {
  postMessage(message: unknown): void;
  addEventListener(type: 'message', listener: (event: MessageEvent) => void): void;
  close(): void;
}

/** Resolves after `ms`; `unref`: without keeping a Node process alive for it. */
export function delay(ms: number, unref = false): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (unref) (t as { unref?: () => void }).unref?.();
  });
}

/** A 32-bit FNV-1a hash, hex: names a token in a lock without showing it. */
export function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i += 1) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}

/** The arguments of `fetch` with the bearer token set. */
export function withBearer(input: RequestInfo | URL, init: RequestInit | undefined, token: string): [RequestInfo | URL, RequestInit?] {
  if (input instanceof Request) {
    const request = new Request(input, init);
    request.headers.set('authorization', `Bearer ${token}`);
    return [request];
  }
  const headers = new Headers(init?.headers);
  headers.set('authorization', `Bearer ${token}`);
  return [input, { ...init, headers }];
}

/**
 * The session id (`sid` claim) of an access token, read without verifying it (sesame
 * verifies; this only tells sessions apart); null when the token is not such a JWT.
 */
export function sidOf(token: string): string | null {
  const payload = token.split('.')[1];
  if (!payload) return null;
  try {
    const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/'));
    const sid = (JSON.parse(json) as { sid?: unknown }).sid;
    return typeof sid === 'string' ? sid : null;
  } catch {
    return null;
  }
}
