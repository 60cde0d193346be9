-- magic_links: sign-in links; only the SHA-256 of the random token is kept.
CREATE TABLE magic_links (
    id          uuid        PRIMARY KEY,
    email       text        NOT NULL CHECK (email = lower(btrim(email))),
    token_hash  bytea       NOT NULL CHECK (length(token_hash) = 32),
    -- The allow-listed redirect the link was sent for, if any.
    redirect_to text        CHECK (redirect_to IS NULL OR length(redirect_to) <= 2048),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    consumed_at timestamptz,
    CHECK (expires_at > created_at)
);

CREATE UNIQUE INDEX magic_links_token_hash_key ON magic_links (token_hash);
CREATE INDEX magic_links_email_idx ON magic_links (email);
CREATE INDEX magic_links_expires_at_idx ON magic_links (expires_at);

COMMENT ON TABLE magic_links IS 'Single-use sign-in links, stored as SHA-256 hashes of their tokens.';
