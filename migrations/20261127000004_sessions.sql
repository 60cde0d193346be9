-- sessions and refresh_tokens: every login starts a session, a family of rotating refresh tokens.
CREATE TABLE sessions (
    id            uuid        PRIMARY KEY,
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    revoke_reason text        CHECK (revoke_reason IN ('logout', 'logout_all', 'revoked', 'reuse_detected')),
    user_agent    text        CHECK (user_agent IS NULL OR length(user_agent) <= 512),
    ip            inet,
    CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL)),
    CHECK (expires_at > created_at)
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

COMMENT ON TABLE sessions IS 'Sign-in sessions: each is one refresh-token family, revoked as a whole.';

CREATE TABLE refresh_tokens (
    id         uuid        PRIMARY KEY,
    -- SHA-256 of the token; the token itself is never stored.
    token_hash bytea       NOT NULL CHECK (length(token_hash) = 32),
    session_id uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    parent_id  uuid        REFERENCES refresh_tokens (id) ON DELETE SET NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at timestamptz,
    revoked_at timestamptz,
    expires_at timestamptz NOT NULL,
    CHECK (expires_at > issued_at)
);

CREATE UNIQUE INDEX refresh_tokens_token_hash_key ON refresh_tokens (token_hash);
-- A token has at most one child: two racing rotations cannot both insert one.
CREATE UNIQUE INDEX refresh_tokens_parent_id_key ON refresh_tokens (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);

COMMENT ON TABLE refresh_tokens IS 'Single-use refresh tokens (SHA-256 hashes), chained parent to child within a session.';
