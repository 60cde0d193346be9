-- users: one row per person, created on their first successful verification.
CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    -- Stored trimmed and lower-cased by the application; the check keeps it that way.
    email         text        NOT NULL CHECK (email = lower(btrim(email)) AND length(email) BETWEEN 3 AND 254),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz
);

-- Case-insensitive uniqueness, even if a future writer forgets to lower-case.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

COMMENT ON TABLE users IS 'People who have signed in at least once; sign-up is sign-in.';
