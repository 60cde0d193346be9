//! Audit events: what happened, to whom, and how it ended.
//!
//! A flow records its events through an [`AuditTx`], the database transaction
//! of the state change they describe: each event is inserted into
//! `audit_events` inside that transaction, so the row commits or rolls back
//! with the change, together with its webhook deliveries (`webhook_deliveries`
//! rows for the events `WEBHOOK_EVENTS` selects; see `webhooks`). Only after the commit does the [`AuditSink`] fan the events
//! out, in order: Prometheus counters, the console, the JSON Lines file. An
//! event with no state change of its own goes through [`record_alone`]. The
//! table is always written; `METRICS_ENABLED` and `METRICS_FORMAT` only govern
//! the console and the file.

pub mod event;
pub mod file;
mod names;
pub mod outbox;
pub mod report;

pub use event::{AuditEvent, RequestContext};
pub use names::Event;

use std::{
    fmt::Write as _,
    io::IsTerminal as _,
    ops::{Deref, DerefMut},
    sync::Arc,
};

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{PgConnection, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    config::{Config, MetricsFormat, WebhookEvents},
    metrics::Metrics,
    store,
};
/// A database transaction that records audit events and publishes them once it commits.
///
/// Derefs to the connection, so `store` functions run inside it.
pub struct AuditTx {
    tx: Transaction<'static, Postgres>,
    pending: Vec<AuditEvent>,
    sink: AuditSink,
}

impl AuditTx {
    pub async fn begin(db: &store::Db, sink: &AuditSink) -> Result<Self, sqlx::Error> {
        Ok(Self {
            tx: db.begin().await?,
            pending: Vec::new(),
            sink: sink.clone(),
        })
    }

    /// Records `event` in this transaction: it is inserted, with the others,
    /// in one statement just before the commit, and published only if the
    /// transaction commits.
    pub async fn record(&mut self, event: AuditEvent) -> Result<(), sqlx::Error> {
        self.pending.push(event);
        Ok(())
    }

    /// Inserts the recorded events, commits, then fans them out. Dropping an
    /// `AuditTx` without committing rolls back and publishes nothing.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let ids = self.sink.insert(&mut self.tx, &self.pending).await?;
        self.tx.commit().await?;
        self.sink.publish(&self.pending, &ids);
        Ok(())
    }
}

impl Deref for AuditTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for AuditTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// Records an event that has no state change of its own (a failed
/// verification, a rate-limit hit) in its own short transaction.
pub async fn record_alone(db: &store::Db, sink: &AuditSink, event: AuditEvent) -> Result<(), sqlx::Error> {
    let ids = db
        .run(async |conn| sink.insert(conn, std::slice::from_ref(&event)).await)
        .await?;
    sink.publish(std::slice::from_ref(&event), &ids);
    Ok(())
}

/// Where committed events go besides the table; cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    metrics: Metrics,
    console: Option<Console>,
    file: Option<file::FileWriter>,
    /// Which events get webhook deliveries, written with them (`store::webhooks`).
    routes: store::webhooks::Routes,
    /// Wakes this instance's webhook worker when a delivery committed.
    webhooks_wake: Arc<tokio::sync::Notify>,
    /// The file's outbox rows and crash repair, when the file output is on.
    file_outbox: Option<outbox::FileState>,
}

#[derive(Clone, Copy)]
struct Console {
    color: bool,
}

impl AuditSink {
    /// The outputs `config` asks for. The file is opened lazily by its writer thread.
    pub fn new(config: &Config, metrics: Metrics) -> std::io::Result<Self> {
        let (console, file) = match (config.audit.metrics_enabled, config.audit.metrics_format) {
            (false, _) | (_, MetricsFormat::None) => (false, false),
            (true, MetricsFormat::Console) => (true, false),
            (true, MetricsFormat::File) => (false, true),
            (true, MetricsFormat::Both) => (true, true),
        };
        let file_outbox = file
            .then(|| outbox::FileState::open(&config.audit.metrics_file_path))
            .flatten();
        let file = if file {
            Some(file::FileWriter::start(
                config.audit.metrics_file_path.clone(),
                metrics.clone(),
                file_outbox.as_ref().map(|f| f.tracking.clone()),
            )?)
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(SinkInner {
                metrics,
                console: console.then(|| Console {
                    color: std::io::stdout().is_terminal(),
                }),
                file,
                routes: webhook_routes(config),
                webhooks_wake: Arc::new(tokio::sync::Notify::new()),
                file_outbox,
            }),
        })
    }

    /// Inserts `events` with their outbox rows; their ids, in order.
    async fn insert(&self, conn: &mut PgConnection, events: &[AuditEvent]) -> Result<Vec<i64>, sqlx::Error> {
        let file = self.inner.file_outbox.as_ref().map(|f| f.outbox);
        store::audit::insert_many(conn, events, &self.inner.routes, file).await
    }

    /// Which rows a statement inserting events itself must write with them
    /// (as [`AuditTx::commit`] does): the webhook routes and the file's outbox.
    pub fn outboxes(&self) -> (&store::webhooks::Routes, Option<store::audit::FileOutbox>) {
        (&self.inner.routes, self.inner.file_outbox.as_ref().map(|f| f.outbox))
    }

    /// Resolves when a committed event of this instance has webhook deliveries
    /// (or has had since the last call).
    pub async fn webhooks_committed(&self) {
        self.inner.webhooks_wake.notified().await;
    }

    /// Fans committed events out, in order, with their ids (as `insert` returned
    /// them). Never blocks on the disk.
    pub fn publish(&self, events: &[AuditEvent], ids: &[i64]) {
        if events.iter().any(|e| self.inner.routes.sends(&e.event)) {
            self.inner.webhooks_wake.notify_one();
        }
        for e in events {
            self.inner.metrics.event(&e.event, e.success);
            if let Some(console) = self.inner.console {
                // One println! is one locked write: lines never interleave.
                println!("{}", console_line(e, console.color));
            }
        }
        if let Some(file) = &self.inner.file {
            // The transaction's outbox row is keyed by its smallest event id.
            let key = ids.iter().min().copied().filter(|_| self.inner.file_outbox.is_some());
            file.write(events.iter().map(json_line).collect(), key);
        }
    }

    /// Writes the lines of a recovered outbox row to the file (`outbox`).
    fn write_recovered(&self, events: &[AuditEvent], key: i64) {
        if let Some(file) = &self.inner.file {
            file.write(events.iter().map(json_line).collect(), Some(key));
        }
    }

    /// Drains pending lines to the file and stops its writer (at shutdown).
    pub async fn close(&self) {
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(file) = &inner.file {
                file.close();
            }
        })
        .await;
    }
}

fn webhook_routes(config: &Config) -> store::webhooks::Routes {
    let w = &config.webhooks;
    let (all_events, events) = match &w.events {
        WebhookEvents::All => (true, Vec::new()),
        WebhookEvents::Only(names) => (false, names.clone()),
    };
    store::webhooks::Routes {
        endpoints: w.urls.iter().map(ToString::to_string).collect(),
        all_events,
        events,
    }
}

/// The JSON Lines record (`docs/API.md`):
/// `{"event","timestamp","email"?,"userId"?,"success","error"?,"metadata"?}`.
pub fn json_line(e: &AuditEvent) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Line<'a> {
        event: &'a str,
        timestamp: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        email: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<Uuid>,
        success: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<&'a Map<String, Value>>,
    }
    let line = Line {
        event: &e.event,
        timestamp: timestamp(e.timestamp),
        email: e.email.as_deref(),
        user_id: e.user_id,
        success: e.success,
        error: e.error.as_deref(),
        metadata: e.metadata.as_ref(),
    };
    serde_json::to_string(&line).unwrap_or_else(|_| format!(r#"{{"event":"{}","success":{}}}"#, e.event, e.success))
}

/// `2025-01-15T10:30:00.000Z`: UTC, milliseconds, as the TypeScript design sesame reimplements wrote it.
pub fn timestamp(t: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.to_offset(time::UtcOffset::UTC).format(FORMAT).unwrap_or_default()
}

/// `[METRIC] ✅ auth.login                   | userId=…, email=…, method=otp`.
pub fn console_line(e: &AuditEvent, color: bool) -> String {
    let mark = if e.success { "✅" } else { "❌" };
    let mut fields = Vec::new();
    if let Some(id) = e.user_id {
        fields.push(format!("userId={id}"));
    }
    if let Some(email) = &e.email {
        fields.push(format!("email={email}"));
    }
    if let Some(error) = &e.error {
        fields.push(format!("error={error}"));
    }
    for (k, v) in e.metadata.iter().flatten() {
        match v {
            Value::String(s) => fields.push(format!("{k}={s}")),
            other => fields.push(format!("{k}={other}")),
        }
    }
    let mut line = String::new();
    let _ = write!(line, "[METRIC] {mark} {:<28} | {}", e.event, fields.join(", "));
    if color {
        let code = if e.success { "32" } else { "31" };
        line = format!("\x1b[{code}m{line}\x1b[0m");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(success: bool) -> AuditEvent {
        let at = OffsetDateTime::from_unix_timestamp(1_736_937_005).expect("valid") + time::Duration::milliseconds(10);
        let ctx = RequestContext::none();
        let e = if success {
            AuditEvent::success(Event::AuthLogin, &ctx, at)
        } else {
            AuditEvent::failure(Event::OtpVerification, crate::auth::Reason::WrongCode, &ctx, at)
        };
        e.user(crate::auth::ids::UserId::from(Uuid::nil()))
            .email("user@example.com")
            .meta("method", "otp")
    }

    #[test]
    fn console_lines_have_the_documented_metric_format() {
        assert_eq!(
            console_line(&sample(true), false),
            "[METRIC] ✅ auth.login                   | userId=00000000-0000-0000-0000-000000000000, email=user@example.com, method=otp"
        );
        let failed = console_line(&sample(false), false);
        assert!(
            failed.starts_with("[METRIC] ❌ otp.verification             | "),
            "{failed}"
        );
        assert!(failed.contains("error=Invalid code"), "{failed}");
        assert_eq!(
            console_line(&sample(false), true),
            format!("\x1b[31m{failed}\x1b[0m"),
            "red on a terminal"
        );
        assert!(
            console_line(&sample(true), true).starts_with("\x1b[32m"),
            "green on a terminal"
        );
    }

    #[test]
    fn json_lines_follow_the_spec_record() {
        assert_eq!(
            json_line(&sample(true)),
            r#"{"event":"auth.login","timestamp":"2025-01-15T10:30:05.010Z","email":"user@example.com","userId":"00000000-0000-0000-0000-000000000000","success":true,"metadata":{"method":"otp"}}"#
        );
        let failed: Value = serde_json::from_str(&json_line(&sample(false))).expect("valid JSON");
        assert_eq!(failed["error"], "Invalid code");
        assert_eq!(failed["success"], false);
    }

    /// As the TypeScript design prints `tokenType=access, expiresIn=1h`: in the order
    /// written, not sorted.
    #[test]
    fn metadata_keys_keep_the_order_they_are_written_in() {
        let at = OffsetDateTime::from_unix_timestamp(1_736_937_005).expect("valid");
        let e = AuditEvent::success(Event::TokenGenerated, &RequestContext::none(), at)
            .meta("tokenType", "access")
            .meta("expiresIn", "1h");
        assert!(
            console_line(&e, false).ends_with("| tokenType=access, expiresIn=1h"),
            "{}",
            console_line(&e, false)
        );
        assert!(
            json_line(&e).ends_with(r#""metadata":{"tokenType":"access","expiresIn":"1h"}}"#),
            "{}",
            json_line(&e)
        );
    }
}
