//! The audit table partitioned by month: the migration converts a populated
//! table without losing a row or changing an answer, and the cleanup job
//! creates months ahead and drops whole months past `AUDIT_RETENTION` (on an
//! injected clock), with their webhook deliveries and file-outbox rows.

use std::time::Duration;

use sesame::{
    app::AppState,
    audit::report,
    clock::Clock,
    store::audit::{PageFilter, list_page},
};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use time::OffsetDateTime;

use crate::{helpers::test_config, seed::run_seed};

/// The last migration before the audit table was partitioned.
const BEFORE_PARTITIONING: i64 = 20261201000014;

/// What audit_counts() answers with no rollups: the events since now() - since
/// by event, outcome and breakdown (as migration 19's view audit_counts_events).
const AUDIT_COUNTS_FROM_THE_TABLE: &str = r"
CREATE FUNCTION audit_counts(since interval)
RETURNS TABLE (event text, success boolean, detail text, events bigint)
LANGUAGE sql STABLE AS $$
    SELECT event, success,
           CASE
               WHEN event = 'auth.login' THEN metadata->>'method'
               WHEN event = 'rate_limit.exceeded' THEN metadata->>'limit'
               WHEN event IN ('otp.verification', 'magic_link.verification', 'otp.verification.detail') THEN error
           END,
           count(*)
    FROM audit_events
    WHERE created_at >= now() - since
    GROUP BY 1, 2, 3
$$";

/// A day, an event name, its outcome, error and login method, and how many.
type DayCount = (OffsetDateTime, String, bool, Option<String>, Option<String>, i64);

/// Everything the trail answers, to compare before and after the migration.
#[derive(Debug, PartialEq)]
struct Answers {
    /// (count, md5 of every row in id order) of audit_events, webhook_deliveries, audit_file_pending.
    tables: Vec<(i64, String)>,
    /// Each documented query over 400 days.
    queries: Vec<report::Table>,
    /// Ids of the admin listing's pages: unfiltered, by event, by user, by address, by time.
    pages: Vec<Vec<i64>>,
    /// What the dashboard counts, over the last 30 days, by day: events by name,
    /// outcome, error and login method (the statistics read them through a view
    /// that exists only from a later migration on).
    stats: Vec<DayCount>,
}

async fn answers(pool: &PgPool, now: OffsetDateTime) -> Answers {
    let mut tables = Vec::new();
    // The file outbox by the columns it had before the migrations: a later one
    // (one row per transaction) adds a column, NULL for the rows it keeps as they were.
    for (table, row, order) in [
        ("audit_events", "t", "id"),
        ("webhook_deliveries", "t", "id"),
        (
            "audit_file_pending",
            "(t.writer, t.event_id, t.boot)",
            "writer, event_id",
        ),
    ] {
        let sql = format!(
            "SELECT count(*), coalesce(md5(string_agg({row}::text, E'\\n' ORDER BY {order})), '') FROM {table} t"
        );
        tables.push(sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.unwrap());
    }
    let mut conn = pool.acquire().await.unwrap();
    let mut queries = Vec::new();
    // Over all the seeded year: a window with an edge among the rows could move by a row
    // between the two calls.
    for q in report::queries() {
        queries.push(
            report::run(&mut conn, &q, Duration::from_secs(400 * 24 * 3600))
                .await
                .unwrap(),
        );
    }
    let user: uuid::Uuid = sqlx::query_scalar("SELECT md5('seed-user-7')::uuid")
        .fetch_one(pool)
        .await
        .unwrap();
    let filters = [
        PageFilter::default(),
        PageFilter {
            event: Some("rate_limit.exceeded".into()),
            ..PageFilter::default()
        },
        PageFilter {
            user_id: Some(user),
            ..PageFilter::default()
        },
        PageFilter {
            email: Some("User7@Example.org ".into()),
            ..PageFilter::default()
        },
        PageFilter {
            since: Some(now - time::Duration::days(200)),
            until: Some(now - time::Duration::days(199)),
            ..PageFilter::default()
        },
    ];
    let mut pages = Vec::new();
    for filter in &filters {
        let first = list_page(&mut conn, filter, None, 50).await.unwrap();
        let before = first.last().map(|e| e.id);
        let second = list_page(&mut conn, filter, before, 50).await.unwrap();
        pages.push(first.iter().chain(&second).map(|e| e.id).collect());
    }
    let stats = sqlx::query_as(
        "SELECT date_bin('1 day', created_at, timestamptz 'epoch'), event, success, error, metadata->>'method', count(*)
         FROM audit_events WHERE created_at >= $1 AND created_at <= $2
         GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
    )
    .bind(now - time::Duration::days(30))
    .bind(now)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    Answers {
        tables,
        queries,
        pages,
        stats,
    }
}

#[sqlx::test(migrations = false)]
async fn partitioning_a_populated_audit_table_keeps_every_row_and_every_answer(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let migrator = sqlx::migrate!();
    migrator.run_to(BEFORE_PARTITIONING, &pool).await.unwrap();
    run_seed(
        &db,
        &[
            ("USERS", "2000"),
            ("SESSIONS", "2000"),
            ("TOKENS", "2000"),
            ("EVENTS", "30000"),
        ],
    );
    // Ids with holes, as rolled-back transactions leave them.
    sqlx::query("SELECT nextval('audit_events_id_seq') FROM generate_series(1, 5)")
        .execute(&pool)
        .await
        .unwrap();
    // The documented queries count through audit_counts(), which a later migration adds
    // (with hourly rollups, none yet here): before it, the same counts from the table alone.
    sqlx::query(AUDIT_COUNTS_FROM_THE_TABLE).execute(&pool).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let before = answers(&pool, now).await;
    sqlx::query("DROP FUNCTION audit_counts").execute(&pool).await.unwrap();
    assert_eq!(before.tables[0].0, 30_000);
    assert!(before.tables[1].0 > 500, "webhook deliveries: {:?}", before.tables[1]);
    assert_eq!(before.tables[2].0, 100);
    assert!(before.pages.iter().all(|p| !p.is_empty()), "{:?}", before.pages);
    let last_id: i64 = sqlx::query_scalar("SELECT max(id) FROM audit_events")
        .fetch_one(&pool)
        .await
        .unwrap();

    migrator.run(&pool).await.unwrap();

    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'audit_events'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kind, "p", "audit_events is partitioned");
    let stray: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events_default")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stray, 0, "every row has its month's partition");
    assert_eq!(answers(&pool, now).await, before);
    // The sequence goes on after the ids handed out before (the 5 holes included).
    let next: i64 =
        sqlx::query_scalar("INSERT INTO audit_events (event, success) VALUES ('auth.login', true) RETURNING id")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(next, last_id + 6);
}

/// The month partitions, oldest first, with the end of their month.
async fn partitions(pool: &PgPool) -> Vec<(String, OffsetDateTime)> {
    sqlx::query_as("SELECT partition_name, ends_at FROM audit_events_partitions()")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// An app state whose clock reads `at`, keeping audit rows `retention`.
fn state_at(db: &PgConnectOptions, at: OffsetDateTime, retention: Option<Duration>) -> AppState {
    let mut config = test_config(db.clone());
    config.audit.audit_retention = retention;
    let clock = Clock::system();
    clock.advance((at - OffsetDateTime::now_utc()).try_into().expect("a time ahead"));
    AppState::new(config, clock).unwrap()
}

/// Inserts an event at `at`, with a webhook delivery and a file-outbox row; returns its id.
async fn insert_event(pool: &PgPool, at: OffsetDateTime) -> i64 {
    sqlx::query_scalar(
        "WITH e AS (INSERT INTO audit_events (event, success, created_at) VALUES ('user.created', true, $1) RETURNING id, created_at),
              d AS (INSERT INTO webhook_deliveries (event_id, endpoint, next_attempt_at, retry_since, created_at)
                    SELECT id, 'https://hooks.example', created_at, created_at, created_at FROM e),
              f AS (INSERT INTO audit_file_pending (writer, event_id, boot) SELECT gen_random_uuid(), id, gen_random_uuid() FROM e)
         SELECT id FROM e",
    )
    .bind(at)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Whether event `id` is still there, and how many outbox rows refer to it.
async fn event_and_outbox(pool: &PgPool, id: i64) -> (bool, i64) {
    sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM audit_events WHERE id = $1),
                (SELECT count(*) FROM webhook_deliveries WHERE event_id = $1) + (SELECT count(*) FROM audit_file_pending WHERE event_id = $1)",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn cleanup_creates_months_ahead_and_moves_in_the_rows_that_had_none(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    // The migration made this month and the next two.
    let made = partitions(&pool).await;
    assert_eq!(made.len(), 3, "{made:?}");

    // 100 days on, a sign-in writes a row in a month without a partition: it
    // lands in the default partition rather than failing.
    let later = OffsetDateTime::now_utc() + time::Duration::days(100);
    let id = insert_event(&pool, later).await;
    let home: String = sqlx::query_scalar("SELECT tableoid::regclass::text FROM audit_events WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(home, "audit_events_default");

    let state = state_at(&db, later, None);
    let report = sesame::cleanup::run_once(&state)
        .await
        .unwrap()
        .expect("the lock was free");
    assert_eq!(report.audit_partitions_created, 3, "that month and the two after it");
    let names: Vec<String> = partitions(&pool).await.into_iter().map(|(n, _)| n).collect();
    let month = |at: OffsetDateTime| format!("audit_events_{}_{:02}", at.year(), u8::from(at.month()));
    assert!(names.contains(&month(later)), "{names:?}");
    let home: String = sqlx::query_scalar("SELECT tableoid::regclass::text FROM audit_events WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(home, month(later), "moved into its month's partition");
    assert_eq!(event_and_outbox(&pool, id).await, (true, 2));

    // The next run finds them made.
    let again = sesame::cleanup::run_once(&state).await.unwrap().unwrap();
    assert_eq!(again.audit_partitions_created, 0);
    // New rows of that month go straight to its partition.
    let next = insert_event(&pool, later + time::Duration::hours(1)).await;
    let home: String = sqlx::query_scalar("SELECT tableoid::regclass::text FROM audit_events WHERE id = $1")
        .bind(next)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(home, month(later));
}

#[sqlx::test]
async fn retention_drops_a_month_once_all_of_it_is_past_and_deletes_stray_rows_in_batches(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let (this_month, month_end) = partitions(&pool).await[0].clone();
    let current = insert_event(&pool, now).await;
    let next_month = insert_event(&pool, month_end + time::Duration::hours(1)).await;
    // A row from long before any partition: in the default partition.
    let stray = insert_event(&pool, now - time::Duration::days(400)).await;
    let day = Duration::from_secs(24 * 3600);

    // Half a day after the month ended, with a retention of a day: the month
    // is not all past the retention yet, so it stays, with rows older than a
    // day in it. The stray row is deleted, with its outbox rows.
    let state = state_at(&db, month_end + time::Duration::hours(12), Some(day));
    let report = sesame::cleanup::run_once(&state).await.unwrap().unwrap();
    assert_eq!(report.audit_partitions_dropped, 0);
    assert_eq!(report.audit_events, 1, "the stray row");
    assert_eq!(event_and_outbox(&pool, stray).await, (false, 0));
    assert_eq!(event_and_outbox(&pool, current).await, (true, 2));

    // A day and a half after: the whole month is past a day old. It is dropped
    // with its rows' outbox rows; the next month and its rows stay.
    let state = state_at(&db, month_end + time::Duration::hours(36), Some(day));
    let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {this_month}")))
        .fetch_one(&pool)
        .await
        .unwrap();
    let report = sesame::cleanup::run_once(&state).await.unwrap().unwrap();
    assert_eq!(report.audit_partitions_dropped, 1);
    assert_eq!(report.audit_events, u64::try_from(rows).unwrap());
    assert_eq!(report.audit_outbox_rows, 2);
    assert_eq!(event_and_outbox(&pool, current).await, (false, 0));
    assert_eq!(event_and_outbox(&pool, next_month).await, (true, 2));
    let names: Vec<String> = partitions(&pool).await.into_iter().map(|(n, _)| n).collect();
    assert!(!names.contains(&this_month), "{names:?}");
    assert_eq!(names.len(), 3, "the next month and two ahead of it: {names:?}");

    // Without a retention nothing is dropped, however old.
    let forever = state_at(&db, month_end + time::Duration::days(400), None);
    let report = sesame::cleanup::run_once(&forever).await.unwrap().unwrap();
    assert_eq!((report.audit_partitions_dropped, report.audit_events), (0, 0));
    assert_eq!(event_and_outbox(&pool, next_month).await, (true, 2));
}

#[sqlx::test]
async fn a_busy_table_makes_the_job_give_up_within_seconds_and_finish_next_run(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (this_month, month_end) = partitions(&pool).await[0].clone();
    insert_event(&pool, OffsetDateTime::now_utc()).await;
    // A long report over the whole table: it holds every partition, the
    // default one included, until it ends.
    let mut report_tx = pool.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM audit_events")
        .execute(&mut *report_tx)
        .await
        .unwrap();

    // The month is past retention and a new month is due: both need a lock the
    // report holds. Each waits at most 2 s, then the job goes on without it.
    let state = state_at(
        &db,
        month_end + time::Duration::hours(36),
        Some(Duration::from_secs(24 * 3600)),
    );
    let started = std::time::Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(20), sesame::cleanup::run_once(&state))
        .await
        .expect("the job does not wait for the report to end")
        .unwrap()
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(3), "it waited for both locks: {waited:?}");
    assert!(waited < Duration::from_secs(10), "and gave up: {waited:?}");
    assert_eq!(
        (report.audit_partitions_created, report.audit_partitions_dropped),
        (0, 0)
    );
    let names: Vec<String> = partitions(&pool).await.into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&this_month), "{names:?}");

    // Once the report is done, the next run does both.
    report_tx.rollback().await.unwrap();
    let report = sesame::cleanup::run_once(&state).await.unwrap().unwrap();
    assert_eq!(
        (report.audit_partitions_created, report.audit_partitions_dropped),
        (1, 1)
    );
}
