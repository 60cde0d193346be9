// sesame-client: a browser session manager for sesame. See README.md.
export { ApiError, type ErrorBody, SignedOutError } from './errors.js';
export type { components, paths } from './openapi.js';
export {
  type ChannelLike,
  type FetchLike,
  type LockManagerLike,
  SessionEvent,
  type SessionEventType,
  SessionManager,
  type SessionManagerOptions,
  type SignOutReason,
  type TokenPair,
  refreshMargin,
} from './session.js';
export {
  DEFAULT_KEY,
  memoryStore,
  type Session,
  type SessionStore,
  type User,
  type WebStorage,
  webStorageStore,
} from './storage.js';
