-- sessions.revoke_reason 'expired': a session refreshed past a SESSION_MAX_AGE set or lowered since it began is ended.
ALTER TABLE sessions DROP CONSTRAINT sessions_revoke_reason_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_revoke_reason_check
    CHECK (revoke_reason IN ('logout', 'logout_all', 'revoked', 'reuse_detected', 'expired'));
