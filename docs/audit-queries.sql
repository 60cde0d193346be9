-- sesame audit queries: what operators ask of the audit trail, as SQL over the
-- audit_events table (the events and their fields are described in docs/API.md).
--
-- Run them all with psql over a window of your choice:
--   psql "$DATABASE_URL" -v since='24 hours' -f docs/audit-queries.sql
-- `sesame audit summary --since 24h` runs the same queries (this file is built
-- into the binary), and a test checks every answer on known events.
-- Each query starts with a `-- name:` line; keep that when adding one.

-- name: events_by_outcome
-- How many of each event, succeeded and failed.
SELECT event, success, count(*) AS events
FROM audit_events
WHERE created_at >= now() - :'since'::interval
GROUP BY event, success
ORDER BY event, success DESC;

-- name: login_success_rate
-- Code and link verifications: attempts, successes, failures and the success rate.
SELECT count(*) AS attempts,
       count(*) FILTER (WHERE success) AS succeeded,
       count(*) FILTER (WHERE NOT success) AS failed,
       round((100.0 * count(*) FILTER (WHERE success) / nullif(count(*), 0))::numeric, 1)::float8 AS success_rate_pct
FROM audit_events
WHERE event IN ('otp.verification', 'magic_link.verification')
  AND created_at >= now() - :'since'::interval;

-- name: logins_by_method
-- Successful sign-ins by method (otp or magic-link).
SELECT coalesce(metadata->>'method', 'unknown') AS method, count(*) AS logins
FROM audit_events
WHERE event = 'auth.login' AND success
  AND created_at >= now() - :'since'::interval
GROUP BY 1
ORDER BY logins DESC, method;

-- name: otp_failures_by_reason
-- Why code verifications failed, most frequent first.
SELECT error AS reason, count(*) AS failures
FROM audit_events
WHERE event = 'otp.verification.detail' AND NOT success
  AND created_at >= now() - :'since'::interval
GROUP BY error
ORDER BY failures DESC, reason;

-- name: refresh_rate
-- Token refreshes in the window, failed ones, and successful refreshes per hour.
SELECT count(*) FILTER (WHERE success) AS refreshes,
       count(*) FILTER (WHERE NOT success) AS failed,
       round((count(*) FILTER (WHERE success)
              / (extract(epoch FROM :'since'::interval) / 3600.0))::numeric, 2)::float8 AS per_hour
FROM audit_events
WHERE event = 'token.refresh'
  AND created_at >= now() - :'since'::interval;

-- name: reuse_detections
-- Refresh-token reuse: how often, and how many sessions were ended for it.
SELECT count(*) AS detections,
       count(DISTINCT metadata->>'sessionId') AS sessions_revoked
FROM audit_events
WHERE event = 'token.reuse_detected'
  AND created_at >= now() - :'since'::interval;

-- name: rate_limit_hits
-- Rate-limit refusals by limit.
SELECT coalesce(metadata->>'limit', 'unknown') AS "limit", count(*) AS hits
FROM audit_events
WHERE event = 'rate_limit.exceeded'
  AND created_at >= now() - :'since'::interval
GROUP BY 1
ORDER BY hits DESC, 1;
