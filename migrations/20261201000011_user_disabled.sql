-- users.disabled_at: an operator blocked the account; operator-ended sessions get their own reasons.
ALTER TABLE users ADD COLUMN disabled_at timestamptz;

COMMENT ON COLUMN users.disabled_at IS 'When an operator disabled the account (admin API or `sesame users disable`); NULL while it may sign in.';

-- The admin user list pages newest first by (created_at, id).
CREATE INDEX users_created_at_id_idx ON users (created_at DESC, id DESC);

-- 'disabled': the user was disabled; 'admin': an operator ended all its sessions.
ALTER TABLE sessions DROP CONSTRAINT sessions_revoke_reason_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_revoke_reason_check
    CHECK (revoke_reason IN ('logout', 'logout_all', 'revoked', 'reuse_detected', 'expired', 'disabled', 'admin'));
