-- rate_limits: fixed-window hit counters shared by every instance on this database.
CREATE TABLE rate_limits (
    -- Which limit, e.g. 'send_per_address_hour'.
    bucket       text        NOT NULL CHECK (length(bucket) BETWEEN 1 AND 64),
    -- Whom it counts: a SHA-256 of the address or client IP, never the raw value.
    subject      bytea       NOT NULL CHECK (length(subject) = 32),
    window_start timestamptz NOT NULL,
    hits         integer     NOT NULL CHECK (hits > 0),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (bucket, subject, window_start),
    CHECK (expires_at > window_start)
);

CREATE INDEX rate_limits_expires_at_idx ON rate_limits (expires_at);

COMMENT ON TABLE rate_limits IS 'Rate-limit counters per limit, subject and window; expired rows are deleted by cleanup.';
