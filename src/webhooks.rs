//! Webhooks: audit events POSTed to `WEBHOOK_URLS`, signed the Standard Webhooks
//! way, at least once, in commit order per endpoint, from the audit table.
//!
//! # Design: an outbox written with the event, ordered when first seen
//!
//! `store::audit::insert_many` writes one `webhook_deliveries` row per selected
//! event and endpoint in the same statement, so in the same transaction, as the
//! event: a delivery exists exactly when its event committed, and a rolled-back
//! change sends nothing. No cursor over `audit_events` is kept, so none can skip
//! an event whose transaction commits late (row ids are taken at insert time,
//! not at commit: an id can become visible after larger ones).
//!
//! Order comes from `seq`, which a worker assigns under an advisory lock to the
//! rows it sees committed for the first time, oldest id first
//! (`store::webhooks::sequence`). A row committed after that pass gets a later
//! place, so the order is commit order between passes; within one pass it is
//! id order, which respects causality (a transaction that began after another
//! committed takes larger ids).
//!
//! Each endpoint's queue is delivered strictly one at a time, in `seq` order:
//! only its first pending row may be claimed (`SELECT … FOR UPDATE SKIP
//! LOCKED`); the worker holding it then locks the rows behind it (up to
//! [`BATCH`]) and attempts them one after the other, the row locks held, in
//! one open transaction, until the outcomes are recorded. Several instances
//! therefore share the work safely with no leader: each endpoint's head is
//! held by at most one of them, a retrying head holds back the rows behind it
//! (nothing overtakes it), and different endpoints are delivered in parallel.
//! If an instance dies mid-batch its transaction rolls back, the locks go, and
//! the batch's deliveries are attempted again with the same `webhook-id`s (at
//! least once; duplicates only after a crash or a lost answer). A failed
//! attempt ends its batch and is retried with exponential backoff and jitter
//! (`backoff`) until `WEBHOOK_MAX_AGE` after the event, then marked failed;
//! the queue behind it moves on. Batching keeps the database work per
//! delivery small (five statements a batch instead of four a delivery), so a
//! single endpoint keeps up with a burst of sign-ups.
//!
//! The worker runs as a task of the app ([`spawn`]): woken by this instance's
//! commits and at least every [`POLL`] (for the other instances' events and
//! for retries), it stops between attempts on shutdown and, when the database
//! is unreachable, logs and tries again with growing pauses.

pub mod backoff;
pub mod signature;

use std::{sync::Arc, time::Duration};

use rand::RngExt as _;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::{sync::watch, task::JoinSet};

use crate::{
    audit::{json_line, timestamp},
    metrics::WebhookOutcome,
    state::AppState,
    store::{self, webhooks::Claimed},
};

/// How often the worker looks for due deliveries without being woken.
pub const POLL: Duration = Duration::from_secs(1);
/// The most deliveries of one endpoint attempted in one transaction.
const BATCH: i64 = 64;
/// After this long, a batch attempts no further rows (those claimed are left
/// pending, unchanged): row locks are not held for long.
const BATCH_TIME: Duration = Duration::from_secs(1);
/// The longest pause after a database error.
const MAX_ERROR_PAUSE: Duration = Duration::from_secs(30);

/// The body of a delivery: `{"type","timestamp","data"}`, `data` being the
/// event's JSON Lines record.
pub fn payload(c: &Claimed) -> String {
    let data: Value = serde_json::from_str(&json_line(&c.event)).unwrap_or(Value::Null);
    json!({
        "type": c.event.event,
        "timestamp": timestamp(c.event.timestamp),
        "data": data,
    })
    .to_string()
}

/// The `webhook-id` of a delivery: the same on every attempt.
pub fn message_id(c: &Claimed) -> String {
    format!("msg_{}", c.webhook_id.simple())
}

/// The worker's handle: stop it with [`Worker::stop`].
pub struct Worker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Lets an attempt in flight finish (at most `WEBHOOK_TIMEOUT` and its
    /// bookkeeping), then ends the task; an attempt cut short is repeated later.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Starts the delivery worker, unless no endpoint is configured.
pub fn spawn(state: AppState) -> Option<Worker> {
    let w = &state.config.webhooks;
    let key = w.secret.as_ref().and_then(|s| signature::secret_key(s.expose()))?;
    if w.urls.is_empty() {
        return None;
    }
    let client = match reqwest::Client::builder()
        .timeout(w.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("sesame-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are not delivered");
            return None;
        }
    };
    let (stop, stopped) = watch::channel(false);
    let deliverer = Arc::new(Deliverer { state, client, key });
    let task = tokio::spawn(deliverer.run(stopped));
    Some(Worker { stop, task })
}

struct Deliverer {
    state: AppState,
    client: reqwest::Client,
    key: Vec<u8>,
}

impl Deliverer {
    async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut pause = POLL;
        while !*stopped.borrow() {
            match self.pass(&stopped).await {
                Ok(busy) => {
                    pause = POLL;
                    if busy {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook delivery paused: database error; retrying");
                    pause = (pause * 2).min(MAX_ERROR_PAUSE);
                }
            }
            tokio::select! {
                _ = stopped.changed() => {}
                () = self.state.audit.webhooks_committed() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Orders new rows, then delivers every due head of every endpoint, the
    /// endpoints in parallel; whether anything was attempted.
    async fn pass(self: &Arc<Self>, stopped: &watch::Receiver<bool>) -> Result<bool, sqlx::Error> {
        let mut tx = self.state.db.begin().await?;
        store::webhooks::sequence(&mut tx).await?;
        let oldest = store::webhooks::oldest_pending(&mut tx).await?;
        tx.commit().await?;
        let age = oldest.map_or(0, |t| (self.state.clock.now() - t).whole_seconds().max(0));
        self.state
            .metrics
            .webhook_oldest_pending(Duration::from_secs(age.unsigned_abs()));
        let mut endpoints = JoinSet::new();
        for url in &self.state.config.webhooks.urls {
            let (this, stopped, endpoint) = (self.clone(), stopped.clone(), url.to_string());
            endpoints.spawn(async move {
                let mut any = false;
                while !*stopped.borrow() && this.deliver_batch(&endpoint, &stopped).await? {
                    any = true;
                }
                Ok::<_, sqlx::Error>(any)
            });
        }
        let mut busy = false;
        let mut failure = None;
        while let Some(done) = endpoints.join_next().await {
            match done {
                Ok(Ok(any)) => busy |= any,
                Ok(Err(e)) => failure = Some(e),
                Err(e) => tracing::error!(error = %e, "a webhook endpoint task ended abnormally"),
            }
        }
        failure.map_or(Ok(busy), Err)
    }

    /// Attempts at `endpoint`'s due head and the due rows behind it, in order,
    /// in one transaction (at most [`BATCH`] rows and about [`BATCH_TIME`] of
    /// attempts), stopping at the first failure; whether there was a head.
    async fn deliver_batch(&self, endpoint: &str, stopped: &watch::Receiver<bool>) -> Result<bool, sqlx::Error> {
        let mut tx = self.state.db.begin().await?;
        let now = self.state.clock.now();
        let Some(head) = store::webhooks::claim_head(&mut tx, endpoint, now).await? else {
            return Ok(false);
        };
        let mut batch = vec![head];
        let behind = store::webhooks::claim_following(&mut tx, endpoint, batch[0].seq, BATCH - 1, now).await?;
        batch.extend(behind);
        let started = tokio::time::Instant::now();
        let mut delivered = Vec::new();
        let mut failed = None;
        for claimed in &batch {
            // The first attempt always runs; later ones only while the batch is young.
            if !delivered.is_empty() && (*stopped.borrow() || started.elapsed() >= BATCH_TIME) {
                break;
            }
            match self.attempt(claimed).await {
                Ok(()) => delivered.push(claimed.id),
                Err(error) => {
                    failed = Some((claimed, error));
                    break;
                }
            }
        }
        let now = self.state.clock.now();
        if !delivered.is_empty() {
            store::webhooks::mark_delivered(&mut tx, &delivered, now).await?;
        }
        let failure = match failed {
            Some((claimed, error)) => Some(self.record_failure(&mut tx, claimed, &error, now).await?),
            None => None,
        };
        tx.commit().await?;
        for _ in &delivered {
            self.state.metrics.webhook_attempt(WebhookOutcome::Delivered);
        }
        if let Some(outcome) = failure {
            self.state.metrics.webhook_attempt(outcome);
        }
        Ok(true)
    }

    /// Schedules the retry of a failed attempt, or fails the delivery for good
    /// past `WEBHOOK_MAX_AGE`; the outcome to count once committed.
    async fn record_failure(
        &self,
        tx: &mut sqlx::PgConnection,
        claimed: &Claimed,
        error: &str,
        now: OffsetDateTime,
    ) -> Result<WebhookOutcome, sqlx::Error> {
        let jitter = rand::rng().random::<f64>();
        let next = backoff::after_failure(
            claimed.attempts + 1,
            claimed.retry_since,
            now,
            self.state.config.webhooks.max_age,
            jitter,
        );
        let next = match next {
            backoff::Next::RetryAt(at) => Some(at),
            backoff::Next::GiveUp => None,
        };
        tracing::info!(
            delivery = claimed.id,
            attempts = claimed.attempts + 1,
            failed = next.is_none(),
            error = %error,
            "webhook attempt failed"
        );
        store::webhooks::mark_attempt_failed(tx, claimed.id, now, error, next).await?;
        Ok(if next.is_some() {
            WebhookOutcome::Retried
        } else {
            WebhookOutcome::Failed
        })
    }

    /// POSTs the delivery; `Err` with the reason unless the answer is 2xx.
    async fn attempt(&self, c: &Claimed) -> Result<(), String> {
        let body = payload(c);
        let id = message_id(c);
        // Real time, not the app's clock: receivers compare it with their own clock.
        let sent_at = OffsetDateTime::now_utc().unix_timestamp();
        let resp = self
            .client
            .post(&c.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", sent_at.to_string())
            .header("webhook-signature", signature::sign(&self.key, &id, sent_at, &body))
            .body(body)
            .send()
            .await
            .map_err(describe)?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

/// A transport error in a few words, without the URL (it may carry credentials).
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        e.without_url().to_string()
    }
}
