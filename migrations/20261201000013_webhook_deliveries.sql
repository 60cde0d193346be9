-- webhook_deliveries: the outbox of webhooks, one row per audit event and endpoint, written in the event's transaction.
CREATE TABLE webhook_deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The Standard Webhooks message id: the same on every attempt.
    webhook_id      uuid        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    event_id        bigint      NOT NULL REFERENCES audit_events (id) ON DELETE CASCADE,
    endpoint        text        NOT NULL CHECK (length(endpoint) <= 2048),
    -- Delivery order: assigned by a worker, under a lock, to rows in the order it first
    -- sees them committed (ids are taken at insert time, not at commit). NULL until then.
    seq             bigint      UNIQUE,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    -- Start of the retry window (WEBHOOK_MAX_AGE): the event's time, or an operator's retry.
    retry_since     timestamptz NOT NULL,
    last_attempt_at timestamptz,
    last_error      text        CHECK (last_error IS NULL OR length(last_error) <= 1000),
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL
);

CREATE INDEX webhook_deliveries_unsequenced_idx ON webhook_deliveries (id) WHERE seq IS NULL;
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (endpoint, seq) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_failed_idx ON webhook_deliveries (id) WHERE status = 'failed';
CREATE INDEX webhook_deliveries_event_id_idx ON webhook_deliveries (event_id);

COMMENT ON TABLE webhook_deliveries IS 'Webhook outbox: one row per audit event and endpoint, delivered in seq order per endpoint.';
