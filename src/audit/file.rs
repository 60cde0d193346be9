//! The JSON Lines writer: one thread owns the file, so lines are never
//! interleaved or torn, and a slow or failing disk never blocks a request.
//!
//! Requests hand complete lines to a bounded queue and move on. The thread
//! appends them, flushes whenever the queue runs dry (so a line is on disk well
//! within a second), reopens the file when it was rotated away (logrotate's
//! rename-and-create), and on failure counts every lost line (the failed one
//! and those still in the buffer) and logs at most once a minute. Closing
//! drains the queue before the thread exits.
//!
//! # As complete as the table, after a crash too
//!
//! With a [`Tracking`], every transaction that commits events also writes one
//! `audit_file_pending` row (with them), keyed by its smallest event id, and
//! hands its lines to the writer as one message, so a flush never splits them.
//! The file has a position file beside it (`METRICS_FILE_PATH.pos`: the file's
//! writer id, its length after the last recorded flush, and the keys of the
//! transactions whose lines are in the file while their rows may remain). At
//! most every [`CONFIRM_INTERVAL`] (and before the file is closed or rotated
//! away) the position file is replaced (write and rename), and only then are
//! the rows of the lines flushed since deleted, in one statement
//! (`audit::outbox`). After a `kill -9`, the next start cuts the file back to
//! the recorded length (lines written after it, a torn one included, are
//! unrecorded and their rows still there), deletes the rows of the recorded
//! keys, and appends the events of the rows that remain: each line once, none
//! torn. A power loss is not covered (the
//! file is not fsynced), nor a crash between a logrotate rename and the next
//! batch (the lines cut back would be in the rotated file).

use std::{
    collections::BTreeSet,
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::metrics::Metrics;

/// Lines waiting for the disk before new ones are dropped (and counted).
const QUEUE_CAPACITY: usize = 65_536;
/// How often the writer checks whether the file was rotated away.
const ROTATION_CHECK: Duration = Duration::from_secs(1);
/// At most one log line about file errors per this interval.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// At most one position-file write (and so one outbox `DELETE`) per this
/// interval: lines still reach the disk at each flush, their rows go later.
pub const CONFIRM_INTERVAL: Duration = Duration::from_millis(100);

enum Message {
    /// A transaction's lines (each without its newline), kept together, and
    /// the key of its outbox row when it has one.
    Lines(Vec<String>, Option<i64>),
    Close,
}

/// What ties the file to its outbox rows (see the module doc).
#[derive(Clone)]
pub struct Tracking {
    /// The file's id, kept in its position file.
    pub writer: Uuid,
    /// Keys of the rows whose lines are in the file while the rows may remain.
    pub unconfirmed: Arc<Mutex<BTreeSet<i64>>>,
    /// Batches of keys whose lines are in the file and in the position file: rows to delete.
    pub confirmed: tokio::sync::mpsc::UnboundedSender<Vec<i64>>,
}

/// The position file: what a crash leaves to repair.
#[derive(Debug, Serialize, Deserialize)]
struct Position {
    writer: Uuid,
    dev: u64,
    ino: u64,
    /// The file's length after the last recorded flush.
    offset: u64,
    /// Keys of the rows whose lines the file holds while the rows may remain.
    written: Vec<i64>,
}

/// `METRICS_FILE_PATH.pos`.
pub fn position_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pos");
    PathBuf::from(name)
}

/// Repairs the file after a crash, before anything is written to it: cuts it
/// back to its last recorded length. Returns the file's writer id (a new one
/// for a file without a position file) and the row keys recorded as written.
pub fn recover(path: &Path) -> std::io::Result<(Uuid, Vec<i64>)> {
    let pos = match std::fs::read(position_path(path)) {
        Ok(bytes) => serde_json::from_slice::<Position>(&bytes).ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let Some(pos) = pos else {
        return Ok((Uuid::new_v4(), Vec::new()));
    };
    #[cfg(unix)]
    if let Ok(file) = OpenOptions::new().write(true).open(path) {
        use std::os::unix::fs::MetadataExt as _;
        let m = file.metadata()?;
        if (m.dev(), m.ino()) == (pos.dev, pos.ino) && m.len() > pos.offset {
            tracing::warn!(
                path = %path.display(),
                cut = m.len() - pos.offset,
                "the audit JSON Lines file has unconfirmed bytes from a crash; cutting them (their events are appended again)"
            );
            file.set_len(pos.offset)?;
        }
    }
    Ok((pos.writer, pos.written))
}

/// The sending side; cloned into the audit sink.
pub struct FileWriter {
    tx: SyncSender<Message>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    metrics: Metrics,
}

impl FileWriter {
    /// Starts the writer thread for `path`. The file is opened lazily, so a bad
    /// path is a counted, logged error rather than a failed start-up.
    pub fn start(path: PathBuf, metrics: Metrics, tracking: Option<Tracking>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let m = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("audit-jsonl".to_owned())
            .spawn(move || run(&path, &rx, &m, tracking.as_ref()))?;
        Ok(Self {
            tx,
            thread: std::sync::Mutex::new(Some(thread)),
            metrics,
        })
    }

    /// Queues a transaction's complete lines (without their newlines), with the
    /// key of its outbox row when it has one; never blocks.
    pub fn write(&self, lines: Vec<String>, key: Option<i64>) {
        let n = lines.len() as u64;
        match self.tx.try_send(Message::Lines(lines, key)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.metrics.audit_file_errors_add(n),
        }
    }

    /// Writes every queued line, flushes and stops the thread. Blocking.
    pub fn close(&self) {
        let _ = self.tx.send(Message::Close);
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

struct Open {
    out: BufWriter<File>,
    #[cfg(unix)]
    ino: (u64, u64),
}

struct Writer<'a> {
    path: &'a Path,
    metrics: &'a Metrics,
    tracking: Option<&'a Tracking>,
    /// Keys of the lines in the buffer since the last flush.
    batch: Vec<i64>,
    /// Keys of the lines flushed since the last position-file write.
    flushed: Vec<i64>,
    last_confirm: Instant,
    file: Option<Open>,
    /// Lines in the buffer since the last successful flush: lost if it fails.
    unflushed: u64,
    last_error_log: Option<Instant>,
    suppressed: u64,
    last_rotation_check: Instant,
}

fn run(path: &Path, rx: &mpsc::Receiver<Message>, metrics: &Metrics, tracking: Option<&Tracking>) {
    let mut w = Writer {
        path,
        metrics,
        tracking,
        batch: Vec::new(),
        flushed: Vec::new(),
        last_confirm: Instant::now(),
        file: None,
        unflushed: 0,
        last_error_log: None,
        suppressed: 0,
        last_rotation_check: Instant::now(),
    };
    loop {
        // Wake for the rotation check, or sooner when flushed lines await their record.
        let wait = if w.flushed.is_empty() {
            ROTATION_CHECK
        } else {
            CONFIRM_INTERVAL.saturating_sub(w.last_confirm.elapsed())
        };
        match rx.recv_timeout(wait) {
            Ok(Message::Lines(lines, key)) => {
                w.write(&lines, key);
                // Drain what is already queued, then flush once.
                loop {
                    match rx.try_recv() {
                        Ok(Message::Lines(lines, key)) => w.write(&lines, key),
                        Ok(Message::Close) => {
                            w.flush();
                            w.confirm();
                            return;
                        }
                        Err(_) => break,
                    }
                }
                w.flush();
            }
            Ok(Message::Close) | Err(RecvTimeoutError::Disconnected) => {
                w.flush();
                w.confirm();
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if !w.flushed.is_empty() && w.last_confirm.elapsed() >= CONFIRM_INTERVAL {
            w.confirm();
        }
        if w.last_rotation_check.elapsed() >= ROTATION_CHECK {
            w.last_rotation_check = Instant::now();
            if w.rotated() {
                w.flush();
                w.confirm();
                w.file = None;
            }
        }
    }
}

impl Writer<'_> {
    fn open(&mut self) -> std::io::Result<&mut Open> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new().create(true).append(true).open(self.path)?;
            #[cfg(unix)]
            let ino = {
                use std::os::unix::fs::MetadataExt as _;
                let m = file.metadata()?;
                (m.dev(), m.ino())
            };
            self.file = Some(Open {
                out: BufWriter::new(file),
                #[cfg(unix)]
                ino,
            });
        }
        self.file.as_mut().ok_or_else(|| std::io::Error::other("file not open"))
    }

    fn write(&mut self, lines: &[String], key: Option<i64>) {
        let n = lines.len() as u64;
        let result = self.open().and_then(|f| {
            for line in lines {
                f.out.write_all(line.as_bytes())?;
                f.out.write_all(b"\n")?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                self.unflushed += n;
                self.batch.extend(key);
            }
            // These lines and every buffered one are lost.
            Err(e) => self.failed(&e, self.unflushed + n),
        }
    }

    fn flush(&mut self) {
        let Some(f) = self.file.as_mut() else { return };
        match f.out.flush() {
            Ok(()) => {
                self.unflushed = 0;
                self.flushed.append(&mut self.batch);
            }
            Err(e) => self.failed(&e, self.unflushed),
        }
    }

    /// Records the lines flushed so far in the position file, then hands their
    /// keys over for their rows to be deleted. If the position file cannot be
    /// written the rows stay, and the next start appends those lines again.
    fn confirm(&mut self) {
        self.last_confirm = Instant::now();
        let (Some(tracking), Some(open)) = (self.tracking, self.file.as_ref()) else {
            return;
        };
        if self.flushed.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.flushed);
        let written: Vec<i64> = {
            let mut set = tracking
                .unconfirmed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            set.extend(&batch);
            set.iter().copied().collect()
        };
        let saved = open.out.get_ref().metadata().and_then(|m| {
            #[cfg(unix)]
            let (dev, ino) = open.ino;
            #[cfg(not(unix))]
            let (dev, ino) = (0, 0);
            let pos = Position {
                writer: tracking.writer,
                dev,
                ino,
                offset: m.len(),
                written,
            };
            let target = position_path(self.path);
            let tmp = target.with_extension("pos.tmp");
            std::fs::write(&tmp, serde_json::to_vec(&pos).unwrap_or_default())?;
            std::fs::rename(&tmp, &target)
        });
        match saved {
            Ok(()) => {
                let _ = tracking.confirmed.send(batch);
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot write the audit file's position file; its lines are appended again after a restart"
            ),
        }
    }

    /// Whether the path now names another file (or none): rotated away.
    fn rotated(&self) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            match (&self.file, std::fs::metadata(self.path)) {
                (Some(open), Ok(m)) => (m.dev(), m.ino()) != open.ino,
                (Some(_), Err(_)) => true,
                (None, _) => false,
            }
        }
        #[cfg(not(unix))]
        {
            self.file.is_some() && !self.path.exists()
        }
    }

    /// Counts `lost` lines and closes the file, discarding its buffer (not
    /// written later by the drop); the next line retries opening the file.
    fn failed(&mut self, e: &std::io::Error, lost: u64) {
        if let Some(open) = self.file.take() {
            drop(open.out.into_parts());
        }
        self.unflushed = 0;
        // Flushed lines stay in the file: their keys are still recorded later.
        self.batch.clear();
        self.metrics.audit_file_errors_add(lost);
        let due = self.last_error_log.is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL);
        if due {
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                suppressed = self.suppressed,
                "cannot write the audit JSON Lines file; events are still in the audit_events table"
            );
            self.last_error_log = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}
