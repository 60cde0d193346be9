-- audit_file_pending: a row per transaction instead of a row per event.
--
-- A transaction that commits N events wrote N outbox rows (and the file writer deleted N
-- rows): with the file on, that insert and delete were a large part of a sign-in's cost.
-- Now it writes one row: event_id is the smallest id the transaction's events took, and
-- more_ids the others, in order (NULL when it wrote one event; ids of one statement need
-- not be contiguous, the sequence being shared). The file writer keeps a transaction's
-- lines together, so the row is deleted once all of them are on disk, and the next start
-- after a crash appends every event of the rows left.
--
-- The existing rows are rows of one event each, which is what a row with more_ids NULL
-- means: nothing is converted, nothing is lost. The retention
-- (audit_events_partition_delete_dependents, store::cleanup) keeps deleting the rows whose
-- event_id belongs to the month it drops: a transaction's events share the request's
-- time, so at most one straddling a month's end keeps a row to the later month's events.
--
-- One index instead of two: the primary key becomes (event_id, writer), which serves the
-- writer's deletes (event_id = ANY), the replay (event_id order) and the retention's
-- lookups by event_id, so audit_file_pending_event_id_idx goes.
ALTER TABLE audit_file_pending ADD COLUMN more_ids bigint[];
ALTER TABLE audit_file_pending DROP CONSTRAINT audit_file_pending_pkey;
ALTER TABLE audit_file_pending ADD PRIMARY KEY (event_id, writer);
DROP INDEX audit_file_pending_event_id_idx;

COMMENT ON TABLE audit_file_pending IS 'Outbox of the JSON Lines file: a row per committing transaction (its events event_id and more_ids) until their lines are confirmed on disk.';
COMMENT ON COLUMN audit_file_pending.event_id IS 'The smallest id of the events the transaction committed.';
COMMENT ON COLUMN audit_file_pending.more_ids IS 'The ids of its other events, in order; NULL when it committed one.';
