-- otp_codes: the live one-time code of each address (a new code replaces the old one).
CREATE TABLE otp_codes (
    id          uuid        PRIMARY KEY,
    email       text        NOT NULL CHECK (email = lower(btrim(email))),
    -- Argon2id PHC string of the code; the code itself is never stored.
    code_hash   text        NOT NULL CHECK (code_hash LIKE '$argon2id$%'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    -- Failed tries against this address in the current window (kept across resends).
    attempts    integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    consumed_at timestamptz,
    CHECK (expires_at > created_at)
);

-- One row per address: sending a new code overwrites it (upsert on email).
CREATE UNIQUE INDEX otp_codes_email_key ON otp_codes (email);
CREATE INDEX otp_codes_expires_at_idx ON otp_codes (expires_at);

COMMENT ON TABLE otp_codes IS 'One-time email codes, Argon2id-hashed, one live code per address.';
