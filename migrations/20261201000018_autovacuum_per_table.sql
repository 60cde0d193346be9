-- Autovacuum per table, for the two tables that churn with every refresh: a rotation updates its
-- session (a new row version: expires_at is indexed) and retires one token for a new one, and the
-- cleanup job deletes them by the million once they end. PostgreSQL's defaults wait for a fifth
-- of a table to be dead (600 000 session versions at 3 M sessions, 4 M tokens at 20 M) before
-- vacuuming it, and the table grows meanwhile; at 2 % the dead rows of a day of refreshes are
-- made reusable within the day, and the statistics follow the tables as they turn over.
ALTER TABLE sessions SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);
ALTER TABLE refresh_tokens SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);
