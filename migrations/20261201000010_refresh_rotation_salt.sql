-- refresh_tokens.rotation_salt: 32 random bytes mixed into the derivation of the token's child; NULL on tokens issued before it existed (derived as then).
ALTER TABLE refresh_tokens
    ADD COLUMN rotation_salt bytea CHECK (rotation_salt IS NULL OR length(rotation_salt) = 32);

COMMENT ON COLUMN refresh_tokens.rotation_salt IS
    'Random value for deriving this token''s child: HMAC(key, rotation_salt || token). Not a token; useless without the key and the token. NULL: issued before the column existed.';
