// The events a manager dispatches, and why a session ends.
import type { Session } from './storage.js';

/** Why a session ended here. */
export type SignOutReason =
  /** `logout()` (here or, with `fromOtherTab`, in another tab). */
  | 'logout'
  /** `logoutAll()`. */
  | 'logout-all'
  /** sesame refused the refresh token: the session was ended elsewhere, or expired. */
  | 'session-ended';

export type SessionEventType = 'signed-in' | 'signed-out' | 'refreshed';

/** The event the manager dispatches: `signed-in`, `refreshed` (with the session) or `signed-out`. */
export class SessionEvent extends Event {
  constructor(
    type: SessionEventType,
    /** The new session (null for `signed-out`). */
    readonly session: Session | null,
    /** Why the session ended (`signed-out` only). */
    readonly reason: SignOutReason | null = null,
    /** True when another tab did it and this tab learned of it. */
    readonly fromOtherTab = false,
  ) {
    super(type);
  }
}
