-- sesame audit queries: what operators ask of the audit trail, as SQL over the
-- audit_events table and its hourly counts (the events and their fields are described in
-- docs/API.md).
--
-- Run them all with psql over a window of your choice:
--   psql "$DATABASE_URL" -v since='24 hours' -f docs/audit-queries.sql
-- `sesame audit summary --since 24h` runs the same queries (this file is built
-- into the binary), and a test checks every answer on known events.
-- Each query starts with a `-- name:` line; keep that when adding one.
--
-- The counts come from audit_counts(since) (migrations/…_audit_counts_hourly.sql): the events
-- from now() - since on, by event, success and detail (the method of an auth.login, the limit of
-- a rate_limit.exceeded, the error of a verification), counted from the hourly rollups the
-- cleanup job keeps (audit_counts_hourly) for the whole hours it has rolled up and from
-- audit_events for the rest, so a week or a month reads a few rows an hour instead of every
-- event (docs/BENCHMARKS.md: under 40 ms over a day, a week or a month on 30 M events; a year,
-- 86-156 ms). The same counts from the table alone, for any question the rollups do not break down:
--   SELECT event, success, count(*) FROM audit_events
--   WHERE created_at >= now() - interval '7 days' GROUP BY 1, 2;

-- name: events_by_outcome
-- How many of each event, succeeded and failed.
SELECT event, success, sum(events)::bigint AS events
FROM audit_counts(:'since'::interval)
GROUP BY event, success
ORDER BY event, success DESC;

-- name: login_success_rate
-- Code and link verifications: attempts, successes, failures and the success rate.
SELECT coalesce(sum(events), 0)::bigint AS attempts,
       coalesce(sum(events) FILTER (WHERE success), 0)::bigint AS succeeded,
       coalesce(sum(events) FILTER (WHERE NOT success), 0)::bigint AS failed,
       round((100.0 * sum(events) FILTER (WHERE success) / nullif(sum(events), 0))::numeric, 1)::float8 AS success_rate_pct
FROM audit_counts(:'since'::interval)
WHERE event IN ('otp.verification', 'magic_link.verification');

-- name: logins_by_method
-- Successful sign-ins by method (otp or magic-link).
SELECT coalesce(detail, 'unknown') AS method, sum(events)::bigint AS logins
FROM audit_counts(:'since'::interval)
WHERE event = 'auth.login' AND success
GROUP BY 1
ORDER BY logins DESC, method;

-- name: otp_failures_by_reason
-- Why code verifications failed, most frequent first.
SELECT detail AS reason, sum(events)::bigint AS failures
FROM audit_counts(:'since'::interval)
WHERE event = 'otp.verification.detail' AND NOT success
GROUP BY detail
ORDER BY failures DESC, reason;

-- name: refresh_rate
-- Token refreshes in the window, failed ones, and successful refreshes per hour.
SELECT coalesce(sum(events) FILTER (WHERE success), 0)::bigint AS refreshes,
       coalesce(sum(events) FILTER (WHERE NOT success), 0)::bigint AS failed,
       round((coalesce(sum(events) FILTER (WHERE success), 0)
              / (extract(epoch FROM :'since'::interval) / 3600.0))::numeric, 2)::float8 AS per_hour
FROM audit_counts(:'since'::interval)
WHERE event = 'token.refresh';

-- name: reuse_detections
-- Refresh-token reuse: how often, and how many sessions were ended for it.
SELECT count(*) AS detections,
       count(DISTINCT metadata->>'sessionId') AS sessions_revoked
FROM audit_events
WHERE event = 'token.reuse_detected'
  AND created_at >= now() - :'since'::interval;

-- name: rate_limit_hits
-- Rate-limit refusals by limit.
SELECT coalesce(detail, 'unknown') AS "limit", sum(events)::bigint AS hits
FROM audit_counts(:'since'::interval)
WHERE event = 'rate_limit.exceeded'
GROUP BY 1
ORDER BY hits DESC, 1;
