// sesame-client: a browser session manager for sesame. See README.md.
export { ApiError, type ErrorBody, SignedOutError } from './errors.js';
export type { components, paths } from './openapi.js';
export { SessionEvent, type SessionEventType, type SignOutReason } from './events.js';
export type { ChannelLike, FetchLike, LockManagerLike } from './platform.js';
export { type SendOptions, SessionManager, type SessionManagerOptions, type TokenPair, refreshMargin } from './session.js';
export {
  DEFAULT_KEY,
  memoryStore,
  type Session,
  type SessionStore,
  type User,
  type WebStorage,
  webStorageStore,
} from './storage.js';
