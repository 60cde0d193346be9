-- rate_limits: one row per limit and subject; its window starts at the first hit and is reset in place.
ALTER TABLE rate_limits DROP CONSTRAINT rate_limits_pkey;
ALTER TABLE rate_limits ADD PRIMARY KEY (bucket, subject);

COMMENT ON TABLE rate_limits IS 'Rate-limit counters per limit and subject (hashed); a window opens at its first hit, and cleanup deletes expired rows.';
