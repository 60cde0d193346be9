-- Storage of the two tables that churn with every refresh. A rotation updates its session
-- (last_used_at, expires_at) and retires one token (rotated_at, revoked_at, rotation_salt) for a
-- new one; the cleanup job deletes them by the million once they end.

-- Nothing looks sessions up by expires_at any more (the cleanup job sweeps the table by pages),
-- and with an index on it every refresh wrote a new entry in each of the table's indexes. Without
-- it, neither update touches an indexed column, so PostgreSQL can make both heap-only (HOT): the
-- new row version goes on the same page and no index changes, if the page has room. fillfactor
-- keeps that room on pages filled from now on: a session is updated at every refresh, a token
-- once, when it is retired.
DROP INDEX sessions_expires_at_idx;
ALTER TABLE sessions SET (fillfactor = 80);
ALTER TABLE refresh_tokens SET (fillfactor = 90);

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
