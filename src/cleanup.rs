//! The cleanup job: every `CLEANUP_INTERVAL`, one instance at a time (a
//! transaction-scoped PostgreSQL advisory lock, taken per batch) deletes
//! expired codes, links and rate-limit windows, sessions and refresh tokens expired or ended more than a day ago,
//! and audit rows older than `AUDIT_RETENTION`, in batches so no
//! statement holds locks for long; then it brings the hourly rollups of the
//! admin statistics up to date (`store::audit_stats`). `sesame cleanup` runs it once.

use std::time::Duration;

use crate::{state::AppState, store};

/// Rows deleted per statement.
const BATCH: i64 = 5_000;
/// Ended sessions and expired tokens are kept this long (for support and forensics).
const ENDED_GRACE: time::Duration = time::Duration::days(1);
/// The first run after start-up waits at most this long (restarts are frequent).
const FIRST_RUN_DELAY: Duration = Duration::from_secs(30);

/// What one run deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub otp_codes: u64,
    pub magic_links: u64,
    pub rate_limits: u64,
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub audit_events: u64,
}

/// Repeats a batched delete until a batch comes back short, adding to
/// `$report.$field`; each batch is one transaction under the lock. When the lock
/// is taken, another instance is running the job: `run_once` returns what this
/// one did so far (`None` if nothing: it never held the lock).
macro_rules! drain {
    ($state:expr, $report:ident . $field:ident, $held:ident, |$conn:ident| $delete:expr) => {{
        loop {
            let mut tx = $state.db.begin().await?;
            if !store::cleanup::try_lock(&mut tx).await? {
                return Ok($held.then_some($report));
            }
            $held = true;
            let $conn = &mut *tx;
            let n = $delete.await?;
            tx.commit().await?;
            $report.$field += n;
            if n < BATCH as u64 {
                break;
            }
        }
    }};
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
    if let Some(keep) = state.config.audit.audit_retention {
        let cutoff = now - keep;
        drain!(state, report.audit_events, held, |conn| {
            store::cleanup::delete_audit_events_before(conn, cutoff, BATCH)
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
    drain!(state, report.sessions, held, |conn| {
        store::cleanup::delete_ended_sessions(conn, ended, BATCH)
    });
    drain!(state, report.refresh_tokens, held, |conn| {
        store::cleanup::delete_expired_refresh_tokens(conn, ended, BATCH)
    });
    // The statistics' hourly rollups: drop those retention left without
    // events, then count the hours that became final (a day per transaction).
    loop {
        let mut tx = state.db.begin().await?;
        if !store::cleanup::try_lock(&mut tx).await? {
            return Ok(held.then_some(report));
        }
        held = true;
        store::audit_stats::prune(&mut tx).await?;
        let more = store::audit_stats::roll_up(&mut tx, now).await?;
        tx.commit().await?;
        if !more {
            break;
        }
    }
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
