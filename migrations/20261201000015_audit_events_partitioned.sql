-- audit_events partitioned by month (UTC) of created_at: retention drops whole months instead of deleting rows.
--
-- The table is rebuilt in this migration's transaction: every row is copied with its id,
-- and the identity sequence goes on where it was. It holds an ACCESS EXCLUSIVE lock on
-- the table while it copies (audit writes, so sign-ins, wait) and needs free disk for a
-- second copy of the table: see docs/API.md, "Audit storage".
--
-- Foreign keys. webhook_deliveries.event_id and audit_file_pending.event_id referenced
-- audit_events (id) ON DELETE CASCADE. On a partitioned table a unique key must contain
-- the partition key, so a foreign key would have to be (event_id, event_created_at),
-- a column more in both tables and an integrity check per outbox row on the hot path;
-- and it would not do the retention's work anyway: dropping or detaching a partition
-- never runs ON DELETE CASCADE (PostgreSQL refuses it while rows reference it). So the
-- two foreign keys are dropped, and the retention deletes the referencing rows itself,
-- before it drops a partition (audit_events_partition_delete_dependents) and with every
-- row it deletes from the default partition (store::cleanup). No orphan can be written:
-- both tables get their rows only in the statement that inserts the event
-- (store::audit::insert_many), and the rows go when their event goes.
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_event_id_fkey;
ALTER TABLE audit_file_pending DROP CONSTRAINT audit_file_pending_event_id_fkey;

ALTER TABLE audit_events RENAME TO audit_events_unpartitioned;
ALTER SEQUENCE audit_events_id_seq RENAME TO audit_events_unpartitioned_id_seq;
-- Their names are taken again below; the old table goes at the end of this migration.
DROP INDEX audit_events_created_at_idx, audit_events_event_created_at_idx, audit_events_user_id_created_at_idx;
ALTER TABLE audit_events_unpartitioned RENAME CONSTRAINT audit_events_pkey TO audit_events_unpartitioned_pkey;

CREATE TABLE audit_events (
    -- Unique by the sequence: every row takes its id from it (the constraint cannot be
    -- enforced across partitions without created_at, hence the primary key below).
    id         bigint      GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME audit_events_id_seq),
    event      text        NOT NULL CONSTRAINT audit_events_event_check CHECK (event ~ '^[a-z][a-z_]*(\.[a-z][a-z_]*)*$'),
    success    boolean     NOT NULL,
    -- No foreign key on purpose: the trail outlives the users it mentions.
    user_id    uuid,
    email      text        CONSTRAINT audit_events_email_check CHECK (email IS NULL OR length(email) <= 320),
    error      text        CONSTRAINT audit_events_error_check CHECK (error IS NULL OR length(error) <= 1000),
    metadata   jsonb       CONSTRAINT audit_events_metadata_check CHECK (metadata IS NULL OR jsonb_typeof(metadata) = 'object'),
    ip         inet,
    user_agent text        CONSTRAINT audit_events_user_agent_check CHECK (user_agent IS NULL OR length(user_agent) <= 512),
    request_id text        CONSTRAINT audit_events_request_id_check CHECK (request_id IS NULL OR length(request_id) <= 128),
    created_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (created_at);

-- Rows of a month with no partition (a clock far off, a backfill, the cleanup job not run
-- for months) land here rather than fail the sign-in that wrote them. The job moves them
-- into their partition when it creates it, and deletes the ones past retention in batches.
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;

COMMENT ON TABLE audit_events IS
    'Append-only audit trail of authentication events, queried with SQL; one partition per month (UTC), audit_events_YYYY_MM, created ahead and dropped past AUDIT_RETENTION by the cleanup job.';

-- The month partition holding `at`, e.g. audit_events_2026_12; all month arithmetic in UTC.
CREATE FUNCTION audit_events_partition_name(at timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 'audit_events_' || to_char(at AT TIME ZONE 'UTC', 'YYYY_MM');

-- Creates the partition of the month (UTC) that holds `at`, unless it exists, moving
-- into it the rows of that month that sit in the default partition. Returns true when
-- it created one, false when it existed, NULL when a lock could not be had within
-- `lock_wait` (another transaction held the table; the next run retries).
--
-- CREATE TABLE + ATTACH PARTITION rather than CREATE TABLE … PARTITION OF: attaching
-- takes SHARE UPDATE EXCLUSIVE on audit_events, so inserts and reads go on meanwhile;
-- only the default partition is locked exclusively (it is scanned, normally empty).
CREATE FUNCTION audit_events_partition_create(at timestamptz, lock_wait interval DEFAULT '2 seconds')
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamp := date_trunc('month', at AT TIME ZONE 'UTC');
    lo timestamptz := month_start AT TIME ZONE 'UTC';
    hi timestamptz := (month_start + interval '1 month') AT TIME ZONE 'UTC';
    part text := audit_events_partition_name(lo);
    wait_before text := current_setting('lock_timeout');
BEGIN
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM set_config('lock_timeout', (extract(epoch FROM lock_wait) * 1000)::bigint::text, true);
    EXECUTE format('CREATE TABLE %I (LIKE audit_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (created_at >= %L AND created_at < %L)',
                   part, part || '_month', lo, hi);
    EXECUTE format(
        'WITH moved AS (DELETE FROM audit_events_default WHERE created_at >= %L AND created_at < %L RETURNING *)
         INSERT INTO %I SELECT * FROM moved', lo, hi, part);
    EXECUTE format('ALTER TABLE audit_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    -- The check proved the range to ATTACH (no scan); the partition bound keeps it now.
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', part, part || '_month');
    PERFORM set_config('lock_timeout', wait_before, true);
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    RETURN NULL;
END
$$;

-- The month partitions, oldest first, with the end of their month (exclusive).
CREATE FUNCTION audit_events_partitions()
RETURNS TABLE (partition_name text, ends_at timestamptz) LANGUAGE sql STABLE AS $$
    SELECT c.relname::text,
           (to_date(substring(c.relname FROM '^audit_events_(\d{4}_\d{2})$'), 'YYYY_MM') + interval '1 month')
               AT TIME ZONE 'UTC'
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'audit_events'::regclass AND c.relname ~ '^audit_events_\d{4}_\d{2}$'
    ORDER BY c.relname
$$;

-- Deletes up to `batch` rows of webhook_deliveries and audit_file_pending that refer to
-- events of `part` (a month partition); returns how many. Run until short before the
-- partition is dropped.
CREATE FUNCTION audit_events_partition_delete_dependents(part text, batch integer)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    lo bigint;
    hi bigint;
    n bigint;
    m bigint;
BEGIN
    EXECUTE format('SELECT min(id), max(id) FROM %I', part) INTO lo, hi;
    IF lo IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format(
        'DELETE FROM webhook_deliveries WHERE id IN (
             SELECT d.id FROM webhook_deliveries d JOIN %I e ON e.id = d.event_id
             WHERE d.event_id BETWEEN %s AND %s LIMIT %s)', part, lo, hi, batch);
    GET DIAGNOSTICS n = ROW_COUNT;
    EXECUTE format(
        'DELETE FROM audit_file_pending WHERE (writer, event_id) IN (
             SELECT p.writer, p.event_id FROM audit_file_pending p JOIN %I e ON e.id = p.event_id
             WHERE p.event_id BETWEEN %s AND %s LIMIT %s)', part, lo, hi, batch);
    GET DIAGNOSTICS m = ROW_COUNT;
    RETURN n + m;
END
$$;

-- Drops the month partition `part`, returning how many rows it held; NULL when a lock
-- could not be had within `lock_wait` (the next run retries). DROP takes ACCESS
-- EXCLUSIVE on audit_events: it waits for the transactions using the table, and new
-- ones wait behind it, so it gives up quickly rather than stall sign-ins.
CREATE FUNCTION audit_events_partition_drop(part text, lock_wait interval DEFAULT '2 seconds')
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    wait_before text := current_setting('lock_timeout');
BEGIN
    IF part !~ '^audit_events_\d{4}_\d{2}$' THEN
        RAISE EXCEPTION 'not a month partition of audit_events: %', part;
    END IF;
    EXECUTE format('SELECT count(*) FROM %I', part) INTO n;
    PERFORM set_config('lock_timeout', (extract(epoch FROM lock_wait) * 1000)::bigint::text, true);
    EXECUTE format('DROP TABLE %I', part);
    PERFORM set_config('lock_timeout', wait_before, true);
    RETURN n;
EXCEPTION WHEN lock_not_available THEN
    RETURN NULL;
END
$$;

-- One partition per month from the oldest row's to two months ahead (as the cleanup job
-- keeps it), so every existing row has a month of its own and none lands in the default.
SELECT audit_events_partition_create(month)
FROM generate_series(
    date_trunc('month', coalesce((SELECT min(created_at) FROM audit_events_unpartitioned), now()) AT TIME ZONE 'UTC'),
    date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months',
    interval '1 month'
) AS months(month_start), LATERAL (SELECT month_start AT TIME ZONE 'UTC' AS month) m;

INSERT INTO audit_events (id, event, success, user_id, email, error, metadata, ip, user_agent, request_id, created_at)
OVERRIDING SYSTEM VALUE
SELECT id, event, success, user_id, email, error, metadata, ip, user_agent, request_id, created_at
FROM audit_events_unpartitioned;

-- The sequence goes on where the old one was: no id is ever handed out twice.
SELECT setval('audit_events_id_seq', last_value, is_called) FROM audit_events_unpartitioned_id_seq;

DROP TABLE audit_events_unpartitioned;

-- Indexes after the copy (built once per partition, faster than row by row). Each is
-- created on every partition, present and future. What each one serves is listed in
-- docs/API.md, "Audit storage".
-- By id (the admin listing's and `sesame audit tail`'s order, the outboxes' joins):
-- one probe per partition.
ALTER TABLE audit_events ADD PRIMARY KEY (id, created_at);
-- Time windows: docs/audit-queries.sql's events_by_outcome.
CREATE INDEX audit_events_created_at_idx ON audit_events (created_at);
-- One event over a time window: the other docs/audit-queries.sql queries, the dashboard.
CREATE INDEX audit_events_event_created_at_idx ON audit_events (event, created_at);
-- One person's events: the listings' userId filter, erasure.
CREATE INDEX audit_events_user_id_created_at_idx ON audit_events (user_id, created_at) WHERE user_id IS NOT NULL;
-- One address's events: the listings' email filter, erasure (which had to read every row).
-- Not partial: the planner estimates an expression from its index's statistics only when
-- the index has no predicate (with one, it guessed 0.5 % of the rows per address and
-- scanned the id index instead).
CREATE INDEX audit_events_email_idx ON audit_events (lower(email));
