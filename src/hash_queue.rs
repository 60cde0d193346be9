//! The threads that run Argon2 hashing of one-time codes, off the async
//! runtime, behind a bounded queue that sheds load when full.

use std::{fmt, sync::Arc};

/// Runs CPU-bound hashing on a few dedicated threads (one per core), with a
/// bounded queue: when more than `max_waiting` jobs wait, new ones are refused
/// at once (the caller answers 503) instead of piling up memory and latency.
///
/// Dedicated, long-lived threads matter for memory, not only for CPU: each
/// Argon2 job allocates `OTP_HASH_MEMORY_KIB` (4 MiB when measured), and on the blocking
/// pool those allocations landed in many threads' malloc arenas, which kept
/// them (peak RSS 237 MiB under login load); a few threads reuse a few arenas.
#[derive(Clone)]
pub struct HashQueue {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

impl fmt::Debug for HashQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashQueue")
    }
}

/// The hash queue is full: shed load.
#[derive(Debug, thiserror::Error)]
#[error("too many codes are being hashed; retry shortly")]
pub struct Overloaded;

impl HashQueue {
    /// `workers` threads, at most `max_waiting` queued jobs.
    pub fn new(workers: usize, max_waiting: usize) -> Self {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(max_waiting);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for n in 0..workers.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("otp-hash-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while taking the next job.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // every sender is gone
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a hashing thread");
            }
        }
        Self { jobs }
    }

    /// One thread per core, 64 waiting jobs per core.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self::new(cores, cores * 64)
    }

    /// Runs `job` on a hashing thread, or refuses at once when the queue is full.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, Overloaded> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(job());
        });
        self.jobs.try_send(job).map_err(|_| Overloaded)?;
        rx.await.map_err(|_| Overloaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hash_queue_runs_one_job_per_worker_and_sheds_the_excess() {
        let queue = HashQueue::new(1, 2);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        // One job holds the only worker until told to finish.
        let held = {
            let (queue, rx) = (queue.clone(), rx.clone());
            tokio::spawn(async move { queue.run(move || rx.lock().map(|r| r.recv()).is_ok()).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.run(|| 1).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(queue.run(|| 1).await.is_err(), "a third waiter is refused at once");
        tx.send(()).expect("the held job listens");
        assert!(held.await.expect("joins").is_ok());
        for w in waiting {
            assert_eq!(w.await.expect("joins").ok(), Some(1), "the queued jobs run");
        }
    }
}
