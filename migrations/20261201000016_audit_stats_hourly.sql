-- audit_stats_hourly: hourly counts of the events GET /admin/stats shows, kept behind the audit
-- table by the cleanup job, so a wide window reads a few rows an hour instead of every event.

-- What each audit event counts for in the statistics (kind), and its breakdown (detail: the
-- method of a login, the reason of a failed verification). One definition for the raw rows and
-- the rollups; a view, so the planner still uses the indexes of audit_events.
CREATE VIEW audit_stats_events AS
SELECT created_at, kind, detail
FROM (
    SELECT created_at,
           CASE
               WHEN event = 'otp.sent' AND success THEN 'codesSent'
               WHEN event = 'magic_link.sent' AND success THEN 'linksSent'
               WHEN event = 'auth.login' THEN 'logins'
               WHEN event IN ('otp.verification', 'magic_link.verification') AND NOT success
                   THEN 'verificationFailures'
               WHEN event = 'token.refresh' AND success THEN 'refreshes'
               WHEN event = 'token.reuse_detected' THEN 'reuseDetected'
               WHEN event = 'rate_limit.exceeded' THEN 'rateLimited'
               WHEN event = 'user.created' THEN 'newUsers'
           END AS kind,
           CASE
               WHEN event = 'auth.login' THEN coalesce(metadata->>'method', 'unknown')
               WHEN event IN ('otp.verification', 'magic_link.verification') THEN coalesce(error, 'unknown')
           END AS detail
    FROM audit_events
    WHERE event IN ('otp.sent', 'magic_link.sent', 'auth.login', 'otp.verification',
                    'magic_link.verification', 'token.refresh', 'token.reuse_detected',
                    'rate_limit.exceeded', 'user.created')
) classified
WHERE kind IS NOT NULL;

CREATE TABLE audit_stats_hourly (
    -- The hour's start, binned from the Unix epoch (independent of the session's time zone).
    hour   timestamptz NOT NULL,
    kind   text        NOT NULL,
    -- '' when the kind has no breakdown (a primary key column cannot be NULL).
    detail text        NOT NULL DEFAULT '',
    count  bigint      NOT NULL CHECK (count > 0),
    PRIMARY KEY (hour, kind, detail)
);

-- How far the rollups reach: every hour before rolled_until is in audit_stats_hourly.
CREATE TABLE audit_stats_progress (
    only_row     boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    rolled_until timestamptz NOT NULL
);

COMMENT ON TABLE audit_stats_hourly IS 'Hourly counts of audit_stats_events, complete before audit_stats_progress.rolled_until.';
