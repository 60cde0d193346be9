-- audit_file_pending: committed events not yet confirmed written to the JSON Lines file of their writer (replayed after a crash).
CREATE TABLE audit_file_pending (
    -- The random id of a JSON Lines file, kept in its position file (METRICS_FILE_PATH.pos).
    writer   uuid   NOT NULL,
    event_id bigint NOT NULL REFERENCES audit_events (id) ON DELETE CASCADE,
    -- The process that committed the event: a later process replays only earlier ones' rows.
    boot     uuid   NOT NULL,
    PRIMARY KEY (writer, event_id)
);

CREATE INDEX audit_file_pending_event_id_idx ON audit_file_pending (event_id);

COMMENT ON TABLE audit_file_pending IS 'Outbox of the JSON Lines file: a row per event until its line is confirmed on disk.';
