//! The cleanup job: every `CLEANUP_INTERVAL`, one instance at a time (a
//! PostgreSQL advisory lock) deletes expired codes, links and rate-limit
//! windows, sessions and refresh tokens expired or ended more than a day ago,
//! and audit rows older than `AUDIT_RETENTION`, in batches so no
//! statement holds locks for long. `sesame cleanup` runs it once.

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

/// Repeats a batched delete until a batch comes back short; evaluates to the total.
macro_rules! drain {
    ($delete:expr) => {{
        let mut total = 0u64;
        loop {
            let n = $delete.await?;
            total += n;
            if n < BATCH as u64 {
                break total;
            }
        }
    }};
}

/// Runs the job once; `None` when another instance holds the lock.
pub async fn run_once(state: &AppState) -> Result<Option<Report>, sqlx::Error> {
    // The lock belongs to a session: take it and do the work on one connection.
    let mut conn = state.db.acquire().await?;
    if !store::cleanup::try_lock(&mut conn).await? {
        return Ok(None);
    }
    let result = async {
        let now = state.clock.now();
        let audit_events = match state.config.audit.audit_retention {
            Some(keep) => drain!(store::cleanup::delete_audit_events_before(&mut conn, now - keep, BATCH)),
            None => 0,
        };
        let report = Report {
            otp_codes: drain!(store::cleanup::delete_expired_otp_codes(&mut conn, now, BATCH)),
            magic_links: drain!(store::cleanup::delete_expired_magic_links(&mut conn, now, BATCH)),
            rate_limits: drain!(store::cleanup::delete_expired_rate_limits(&mut conn, now, BATCH)),
            sessions: drain!(store::cleanup::delete_ended_sessions(
                &mut conn,
                now - ENDED_GRACE,
                BATCH
            )),
            refresh_tokens: drain!(store::cleanup::delete_expired_refresh_tokens(
                &mut conn,
                now - ENDED_GRACE,
                BATCH
            )),
            audit_events,
        };
        Ok::<_, sqlx::Error>(report)
    }
    .await;
    store::cleanup::unlock(&mut conn).await?;
    result.map(Some)
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
