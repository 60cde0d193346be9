//! The cleanup job: every `CLEANUP_INTERVAL`, one instance at a time (a
//! transaction-scoped PostgreSQL advisory lock, taken per batch) deletes
//! expired codes, links and rate-limit windows, sessions and refresh tokens expired or ended more than a day ago,
//! in batches so no statement holds locks for long (the sessions by sweeping
//! their table a range of pages at a time: there is no index to find them by). It also keeps the month
//! partitions of `audit_events`: it creates them ahead ([`PARTITIONS_AHEAD`])
//! and, with `AUDIT_RETENTION`, drops each month once all of it is older than
//! the retention (with the webhook deliveries and file-outbox rows of its
//! events), and deletes in batches the stray rows of the default partition
//! that are. Last, it brings the hourly rollups of the admin statistics up to
//! date (`store::audit_stats`). `sesame cleanup` runs it once.

use std::time::Duration;

use time::OffsetDateTime;

use crate::{state::AppState, store};

/// Rows deleted per statement.
const BATCH: i64 = 5_000;
/// Pages (8 KiB) of `sessions` one step of a sweep reads: about 9 000
/// sessions at most, about as many as a batch.
const SWEEP_PAGES: i64 = 128;
/// Ended sessions and expired tokens are kept this long (for support and forensics).
const ENDED_GRACE: time::Duration = time::Duration::days(1);
/// The first run after start-up waits at most this long (restarts are frequent).
const FIRST_RUN_DELAY: Duration = Duration::from_secs(30);
/// Months of `audit_events` partitions kept ready after the current one: two
/// months of runs that fail (or of a job not running) before rows of a new
/// month land in the default partition (they are moved out when it runs again).
pub const PARTITIONS_AHEAD: u8 = 2;

/// What one run deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub otp_codes: u64,
    pub magic_links: u64,
    pub rate_limits: u64,
    /// Sessions deleted (their tokens with them, not counted).
    pub sessions: u64,
    /// Refresh tokens deleted for having expired (before their session's delete).
    pub refresh_tokens: u64,
    /// Audit rows deleted, with those of dropped partitions.
    pub audit_events: u64,
    /// Month partitions of `audit_events` created.
    pub audit_partitions_created: u64,
    /// Month partitions of `audit_events` dropped past `AUDIT_RETENTION`.
    pub audit_partitions_dropped: u64,
    /// Webhook deliveries and file-outbox rows of the events of dropped partitions.
    pub audit_outbox_rows: u64,
}

/// Runs `$step` in a transaction of its own holding the cleanup lock; when
/// another instance has the lock, `run_once` returns what this one did so far
/// (`None` if nothing: it never held the lock).
macro_rules! locked {
    ($state:expr, $report:ident, $held:ident, |$conn:ident| $step:expr) => {{
        let mut tx = $state.db.begin().await?;
        if !store::cleanup::try_lock(&mut tx).await? {
            return Ok($held.then_some($report));
        }
        $held = true;
        let $conn = &mut *tx;
        let out = $step.await?;
        tx.commit().await?;
        out
    }};
}

/// Repeats a batched delete until a batch comes back short, adding to
/// `$report.$field`; each batch is a [`locked!`] step.
macro_rules! drain {
    ($state:expr, $report:ident . $field:ident, $held:ident, |$conn:ident| $delete:expr) => {{
        loop {
            let n = locked!($state, $report, $held, |$conn| $delete);
            $report.$field += n;
            if n < BATCH as u64 {
                break;
            }
        }
    }};
}

/// Sweeps a table page range by page range ([`store::cleanup::Swept`]) from
/// its first page to its last, adding what each step deleted to
/// `$report.$field`; each step is a [`locked!`] step.
macro_rules! sweep {
    ($state:expr, $report:ident . $field:ident, $held:ident, |$conn:ident, $from:ident| $delete:expr) => {{
        let mut $from = 0_i64;
        loop {
            let swept = locked!($state, $report, $held, |$conn| $delete);
            $report.$field += swept.deleted;
            match swept.next {
                Some(next) => $from = next,
                None => break,
            }
        }
    }};
}

/// The first instant of the month (UTC) `months` after the one holding `at`.
fn month_start(at: OffsetDateTime, months: u8) -> OffsetDateTime {
    let at = at.to_offset(time::UtcOffset::UTC);
    let index = i32::from(u8::from(at.month())) - 1 + i32::from(months);
    let year = at.year() + index / 12;
    let month = time::Month::January.nth_next(u8::try_from(index % 12).unwrap_or(0));
    time::Date::from_calendar_date(year, month, 1).map_or(at, |d| d.with_time(time::Time::MIDNIGHT).assume_utc())
}

/// Runs the job once; `None` when another instance holds the lock.
///
/// The lock is taken per batch, in the batch's own transaction: one batch at
/// a time across instances, no transaction longer than a batch, and no
/// session state (a transaction-mode pooler may hand each transaction to
/// another server connection).
pub async fn run_once(state: &AppState) -> Result<Option<Report>, sqlx::Error> {
    let now = state.clock.now();
    let ended = now - ENDED_GRACE;
    let mut report = Report::default();
    let mut held = false;
    for months in 0..=PARTITIONS_AHEAD {
        let at = month_start(now, months);
        let created = locked!(state, report, held, |conn| {
            store::cleanup::create_audit_partition(conn, at)
        });
        match created {
            Some(true) => report.audit_partitions_created += 1,
            Some(false) => {}
            None => tracing::warn!(month = %at.date(), "audit_events busy: its partition is created next run"),
        }
    }
    if let Some(keep) = state.config.audit.audit_retention {
        let cutoff = now - keep;
        while let Some(partition) = locked!(state, report, held, |conn| {
            store::cleanup::oldest_audit_partition_before(conn, cutoff)
        }) {
            drain!(state, report.audit_outbox_rows, held, |conn| {
                store::cleanup::delete_audit_partition_dependents(conn, &partition, BATCH)
            });
            let dropped = locked!(state, report, held, |conn| {
                store::cleanup::drop_audit_partition(conn, &partition)
            });
            let Some(rows) = dropped else {
                tracing::warn!(partition, "audit_events busy: the partition is dropped next run");
                break;
            };
            report.audit_events += rows;
            report.audit_partitions_dropped += 1;
        }
        drain!(state, report.audit_events, held, |conn| {
            store::cleanup::delete_stray_audit_events_before(conn, cutoff, BATCH)
        });
    }
    drain!(state, report.otp_codes, held, |conn| {
        store::cleanup::delete_expired_otp_codes(conn, now, BATCH)
    });
    drain!(state, report.magic_links, held, |conn| {
        store::cleanup::delete_expired_magic_links(conn, now, BATCH)
    });
    drain!(state, report.rate_limits, held, |conn| {
        store::cleanup::delete_expired_rate_limits(conn, now, BATCH)
    });
    // Expired tokens first, those of ended sessions among them: a session's
    // delete then cascades to the few tokens left (its unexpired ones).
    drain!(state, report.refresh_tokens, held, |conn| {
        store::cleanup::delete_expired_refresh_tokens(conn, ended, BATCH)
    });
    sweep!(state, report.sessions, held, |conn, from| {
        store::cleanup::sweep_ended_sessions(conn, ended, from, SWEEP_PAGES)
    });
    // The statistics' hourly rollups: drop those retention left without
    // events, then count the hours that became final (a day per transaction).
    locked!(state, report, held, |conn| store::audit_stats::prune(conn));
    while locked!(state, report, held, |conn| store::audit_stats::roll_up(conn, now)) {}
    Ok(Some(report))
}

/// Runs the job every `CLEANUP_INTERVAL` until the task is aborted.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = state.config.audit.cleanup_interval;
        tokio::time::sleep(interval.min(FIRST_RUN_DELAY)).await;
        loop {
            match run_once(&state).await {
                Ok(Some(report)) => tracing::info!(?report, "cleanup done"),
                Ok(None) => tracing::debug!("cleanup skipped: another instance is running it"),
                Err(e) => tracing::warn!(error = %e, "cleanup failed; retrying next interval"),
            }
            tokio::time::sleep(interval).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::month_start;

    #[test]
    fn month_start_counts_months_in_utc_across_years() {
        let cases = [
            (datetime!(2026-11-30 21:00 UTC), 0, datetime!(2026-11-01 00:00 UTC)),
            (datetime!(2026-11-30 21:00 UTC), 2, datetime!(2027-01-01 00:00 UTC)),
            (datetime!(2027-01-31 23:59 UTC), 1, datetime!(2027-02-01 00:00 UTC)),
            (datetime!(2026-12-15 00:00 UTC), 13, datetime!(2028-01-01 00:00 UTC)),
            // 01:30 on Dec 1 at +02:00 is still November in UTC.
            (datetime!(2026-12-01 01:30 +2), 0, datetime!(2026-11-01 00:00 UTC)),
        ];
        for (at, months, want) in cases {
            assert_eq!(month_start(at, months), want, "{at} + {months}");
        }
    }
}
