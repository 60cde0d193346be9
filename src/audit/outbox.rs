//! The JSON Lines file's outbox (`audit_file_pending`): a row per transaction
//! whose lines are not yet confirmed on disk, deleted once they are (one
//! `DELETE` per confirmed batch), and replayed by the next process after a crash
//! (`file` explains the position file that makes this exact).

use std::{
    collections::BTreeSet,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

use super::{AuditSink, file};
use crate::{state::AppState, store};

/// Rows replayed per query at start-up.
const REPLAY_PAGE: i64 = 1000;
/// The pause before retrying after a database error.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The file's outbox state, made when the sink opens the file output.
pub(super) struct FileState {
    pub(super) outbox: store::audit::FileOutbox,
    pub(super) tracking: file::Tracking,
    /// Row keys the position file recorded as written at start-up: their rows go first.
    recorded: Vec<i64>,
    confirmed: Mutex<Option<UnboundedReceiver<Vec<i64>>>>,
}

impl FileState {
    /// Repairs the file (`file::recover`) and prepares its outbox; `None` (with a
    /// log line) if the position file cannot be read, then the file is written
    /// as before, without crash repair.
    pub(super) fn open(path: &Path) -> Option<Self> {
        let (writer, recorded) = match file::recover(path) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the audit file's position file; lines lost in a crash are not appended again");
                return None;
            }
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Some(Self {
            outbox: store::audit::FileOutbox {
                writer,
                boot: Uuid::new_v4(),
            },
            tracking: file::Tracking {
                writer,
                unconfirmed: Arc::new(Mutex::new(recorded.iter().copied().collect::<BTreeSet<_>>())),
                confirmed: tx,
            },
            recorded,
            confirmed: Mutex::new(Some(rx)),
        })
    }

    fn forget(&self, keys: &[i64]) {
        let mut set = self
            .tracking
            .unconfirmed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in keys {
            set.remove(key);
        }
    }
}

/// Starts the task that deletes confirmed rows (all the batches confirmed
/// while the previous `DELETE` ran go in the next one); first it deletes the
/// rows the position file recorded and appends the events earlier processes
/// committed but never confirmed. `None` without a tracked file.
pub fn spawn(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let sink = state.audit.clone();
    let f = sink.inner.file_outbox.as_ref()?;
    let mut confirmed = f
        .confirmed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()?;
    Some(tokio::spawn(async move {
        let Some(f) = sink.inner.file_outbox.as_ref() else {
            return;
        };
        delete_until_done(&state, f, f.recorded.clone()).await;
        replay(&state, &sink, f).await;
        while let Some(mut keys) = confirmed.recv().await {
            while let Ok(more) = confirmed.try_recv() {
                keys.extend(more);
            }
            delete_until_done(&state, f, keys).await;
        }
    }))
}

async fn delete_until_done(state: &AppState, f: &FileState, keys: Vec<i64>) {
    if keys.is_empty() {
        return;
    }
    loop {
        let done = state
            .db
            .run(async |conn| store::audit_file::delete_written(conn, f.outbox.writer, &keys).await);
        match done.await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "cannot confirm audit file lines in the database; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
    f.forget(&keys);
}

/// Appends the events that earlier processes committed for this file and never confirmed.
async fn replay(state: &AppState, sink: &AuditSink, f: &FileState) {
    let mut after = 0;
    loop {
        let page = state.db.run(async |conn| {
            store::audit_file::pending_before(conn, f.outbox.writer, f.outbox.boot, after, REPLAY_PAGE).await
        });
        match page.await {
            Ok(rows) if rows.is_empty() => return,
            Ok(rows) => {
                let lines: usize = rows.iter().map(|t| t.events.len()).sum();
                tracing::info!(lines, "appending audit lines a crash left unwritten");
                // A row whose events are all gone (retention) is only deleted.
                for t in &rows {
                    sink.write_recovered(&t.events, t.key);
                    after = t.key;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the audit file's outbox; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}
