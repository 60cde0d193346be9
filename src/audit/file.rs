//! The JSON Lines writer: one thread owns the file, so lines are never
//! interleaved or torn, and a slow or failing disk never blocks a request.
//!
//! Requests hand complete lines to a bounded queue and move on. The thread
//! appends them, flushes whenever the queue runs dry (so a line is on disk well
//! within a second), reopens the file when it was rotated away (logrotate's
//! rename-and-create), and on failure counts every lost line (the failed one
//! and those still in the buffer) and logs at most once a minute. Closing
//! drains the queue before the thread exits.

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::metrics::Metrics;

/// Lines waiting for the disk before new ones are dropped (and counted).
const QUEUE_CAPACITY: usize = 65_536;
/// How often the writer checks whether the file was rotated away.
const ROTATION_CHECK: Duration = Duration::from_secs(1);
/// At most one log line about file errors per this interval.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

enum Message {
    Line(String),
    Close,
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
    pub fn start(path: PathBuf, metrics: Metrics) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let m = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("audit-jsonl".to_owned())
            .spawn(move || run(&path, &rx, &m))?;
        Ok(Self {
            tx,
            thread: std::sync::Mutex::new(Some(thread)),
            metrics,
        })
    }

    /// Queues one complete line (without its newline); never blocks.
    pub fn write(&self, line: String) {
        match self.tx.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.metrics.audit_file_error(),
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
    file: Option<Open>,
    /// Lines in the buffer since the last successful flush: lost if it fails.
    unflushed: u64,
    last_error_log: Option<Instant>,
    suppressed: u64,
    last_rotation_check: Instant,
}

fn run(path: &Path, rx: &mpsc::Receiver<Message>, metrics: &Metrics) {
    let mut w = Writer {
        path,
        metrics,
        file: None,
        unflushed: 0,
        last_error_log: None,
        suppressed: 0,
        last_rotation_check: Instant::now(),
    };
    loop {
        match rx.recv_timeout(ROTATION_CHECK) {
            Ok(Message::Line(line)) => {
                w.write(&line);
                // Drain what is already queued, then flush once.
                loop {
                    match rx.try_recv() {
                        Ok(Message::Line(line)) => w.write(&line),
                        Ok(Message::Close) => {
                            w.flush();
                            return;
                        }
                        Err(_) => break,
                    }
                }
                w.flush();
            }
            Ok(Message::Close) | Err(RecvTimeoutError::Disconnected) => {
                w.flush();
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if w.last_rotation_check.elapsed() >= ROTATION_CHECK {
            w.last_rotation_check = Instant::now();
            if w.rotated() {
                w.flush();
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

    fn write(&mut self, line: &str) {
        let result = self.open().and_then(|f| {
            f.out.write_all(line.as_bytes())?;
            f.out.write_all(b"\n")
        });
        match result {
            Ok(()) => self.unflushed += 1,
            // This line and every buffered one are lost.
            Err(e) => self.failed(&e, self.unflushed + 1),
        }
    }

    fn flush(&mut self) {
        let Some(f) = self.file.as_mut() else { return };
        match f.out.flush() {
            Ok(()) => self.unflushed = 0,
            Err(e) => self.failed(&e, self.unflushed),
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
