-- audit_events: every authentication event, written in the transaction of the change it records.
CREATE TABLE audit_events (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event      text        NOT NULL CHECK (event ~ '^[a-z][a-z_]*(\.[a-z][a-z_]*)*$'),
    success    boolean     NOT NULL,
    -- No foreign key on purpose: the trail outlives the users it mentions.
    user_id    uuid,
    email      text        CHECK (email IS NULL OR length(email) <= 320),
    error      text        CHECK (error IS NULL OR length(error) <= 1000),
    metadata   jsonb       CHECK (metadata IS NULL OR jsonb_typeof(metadata) = 'object'),
    ip         inet,
    user_agent text        CHECK (user_agent IS NULL OR length(user_agent) <= 512),
    request_id text        CHECK (request_id IS NULL OR length(request_id) <= 128),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_events_created_at_idx ON audit_events (created_at);
CREATE INDEX audit_events_event_created_at_idx ON audit_events (event, created_at);
CREATE INDEX audit_events_user_id_created_at_idx ON audit_events (user_id, created_at) WHERE user_id IS NOT NULL;

COMMENT ON TABLE audit_events IS 'Append-only audit trail of authentication events, queried with SQL.';
