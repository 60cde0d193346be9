-- Storage of the two tables that churn with every refresh. A rotation updates its session
-- (last_used_at, expires_at) and retires one token (rotated_at, revoked_at, rotation_salt) for a
-- new one; the cleanup job deletes them by the million once they end.

-- Nothing looks sessions up by expires_at any more (the cleanup job sweeps the table by pages),
-- and with an index on it every refresh wrote a new entry in each of the table's indexes. Without
-- it, neither update touches an indexed column, so PostgreSQL can make both heap-only (HOT): the
-- new row version goes on the same page and no index changes, if the page has room. A session is
-- updated at every refresh: fillfactor keeps room on the pages filled from now on. A token is
-- updated once, when it is retired, and its page almost always has room already (97.6 % of
-- retirements were heap-only without a fillfactor in docs/BENCHMARKS.md's measurement, while a
-- fillfactor of 90 made the table 60 % larger): none is set for it.
DROP INDEX sessions_expires_at_idx;
ALTER TABLE sessions SET (fillfactor = 80);

-- Autovacuum: PostgreSQL's defaults wait for a fifth of a table to be dead (600 000 session
-- versions at 3 M sessions, 4 M tokens at 20 M) before vacuuming it, and the table grows
-- meanwhile; at 2 % the dead rows of a day of refreshes are made reusable within the day, and the
-- statistics follow the tables as they turn over.
ALTER TABLE sessions SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);
ALTER TABLE refresh_tokens SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);

-- A token's parent_id names the token it was rotated from; it is read from parent to child only
-- (by its unique index). Its foreign key's ON DELETE SET NULL made every deleted token update
-- its child first (a new row version, an entry in each index) for each of the millions of
-- tokens the cleanup job deletes: at a year's scale, 1.10 s of a 1.14 s statement deleting
-- 4 600 tokens went to that trigger. Without the key, a child may name a parent that is gone,
-- which nothing reads.
ALTER TABLE refresh_tokens DROP CONSTRAINT refresh_tokens_parent_id_fkey;

-- The cleanup job finds expired tokens by their expiry: a rotation's new token goes at the
-- index's right end (expiries grow with time), the job deletes from its left end, and a run with
-- nothing to delete reads a page of it instead of the whole table (4.3 GB at a year's scale).
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);
