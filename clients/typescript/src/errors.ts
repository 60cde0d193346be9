// The two errors a caller branches on: sesame refused a request (ApiError, with the stable
// `code` of sesame's error envelope), or there is no session (SignedOutError).
import type { components } from './openapi.js';

/** sesame's error envelope: `{success: false, error, code}` (a 429 also has a `Retry-After` header). */
export type ErrorBody = components['schemas']['ErrorBody'];

/** A request sesame answered with an error status. */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    /** The HTTP status. */
    readonly status: number,
    /** The parsed error body, when sesame sent one. */
    readonly body: ErrorBody | undefined,
  ) {
    super(body?.error ?? `HTTP ${status}`);
  }
  /** The stable error code (`invalid_code`, `rate_limited`…), when sesame sent one. */
  get code(): string | undefined {
    return this.body?.code;
  }
}

/** There is no session (never signed in, logged out, or its refresh token was refused). */
export class SignedOutError extends Error {
  override readonly name = 'SignedOutError';
  constructor() {
    super('not signed in');
  }
}
