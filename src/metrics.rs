//! Prometheus counters and histograms, served as text on `GET /metrics`.
//!
//! A small registry of our own rather than a global recorder: each app owns
//! one (tests run many apps in one process), and the handful of series we
//! keep does not need more.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::audit::Event;

/// Upper bounds of the request-latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`].
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Registry {
    /// (event, success) → count.
    events: BTreeMap<(String, bool), u64>,
    /// (operation, status) → count.
    requests: BTreeMap<(String, u16), u64>,
    /// operation → latency.
    latency: BTreeMap<String, Histogram>,
}

/// The metrics of one app; cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    audit_file_errors: Arc<AtomicU64>,
    webhooks: Arc<WebhookCounters>,
}

/// The webhook worker's counters and gauge.
#[derive(Default)]
struct WebhookCounters {
    delivered: AtomicU64,
    /// Attempts that failed and will be retried.
    retried: AtomicU64,
    /// Deliveries given up after `WEBHOOK_MAX_AGE`.
    failed: AtomicU64,
    /// Age in seconds of the oldest pending delivery, as of the worker's last pass.
    oldest_pending_seconds: AtomicU64,
}

/// The outcome of one webhook attempt, as counted.
#[derive(Debug, Clone, Copy)]
pub enum WebhookOutcome {
    Delivered,
    Retried,
    Failed,
}

impl Metrics {
    /// Counts one audit event, as [`as_counted`] names it.
    pub fn event(&self, event: &str, success: bool) {
        let (event, success) = as_counted(event, success);
        let mut r = self.lock();
        *r.events.entry((event.to_owned(), success)).or_default() += 1;
    }

    /// Counts one audit event the JSON Lines file lost.
    pub fn audit_file_error(&self) {
        self.audit_file_errors_add(1);
    }

    /// Counts `events` audit events the JSON Lines file lost at once.
    pub fn audit_file_errors_add(&self, events: u64) {
        self.audit_file_errors.fetch_add(events, Ordering::Relaxed);
    }

    pub fn audit_file_errors(&self) -> u64 {
        self.audit_file_errors.load(Ordering::Relaxed)
    }

    /// Counts one webhook attempt by its outcome.
    pub fn webhook_attempt(&self, outcome: WebhookOutcome) {
        let w = &self.webhooks;
        let counter = match outcome {
            WebhookOutcome::Delivered => &w.delivered,
            WebhookOutcome::Retried => &w.retried,
            WebhookOutcome::Failed => &w.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the age of the oldest pending webhook delivery (0: none).
    pub fn webhook_oldest_pending(&self, age: Duration) {
        self.webhooks
            .oldest_pending_seconds
            .store(age.as_secs(), Ordering::Relaxed);
    }

    /// Counts one HTTP request of `operation` and its latency.
    pub fn request(&self, operation: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut r = self.lock();
        *r.requests.entry((operation.to_owned(), status)).or_default() += 1;
        let h = r.latency.entry(operation.to_owned()).or_default();
        h.count += 1;
        h.sum += secs;
        for (bucket, le) in h.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if secs <= le {
                *bucket += 1;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the counters inconsistent
        // in a way that matters; keep serving them.
        self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let r = self.lock();
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP sesame_events_total Audit events recorded, by event and outcome; a send withheld for want of an account counts as generated and sent."
        );
        let _ = writeln!(out, "# TYPE sesame_events_total counter");
        for ((event, success), n) in &r.events {
            let _ = writeln!(
                out,
                "sesame_events_total{{event=\"{}\",success=\"{success}\"}} {n}",
                escape(event)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sesame_audit_file_errors_total Audit events that could not be written to the JSON Lines file."
        );
        let _ = writeln!(out, "# TYPE sesame_audit_file_errors_total counter");
        let _ = writeln!(out, "sesame_audit_file_errors_total {}", self.audit_file_errors());
        let _ = writeln!(
            out,
            "# HELP sesame_http_requests_total HTTP requests, by operation and status."
        );
        let _ = writeln!(out, "# TYPE sesame_http_requests_total counter");
        for ((op, status), n) in &r.requests {
            let _ = writeln!(
                out,
                "sesame_http_requests_total{{operation=\"{}\",status=\"{status}\"}} {n}",
                escape(op)
            );
        }
        render_latency(&mut out, &r.latency);
        render_webhooks(&mut out, &self.webhooks);
        out
    }
}

/// The series an audit event counts in: its own, except for a send withheld
/// from an address without an account (`ALLOW_SIGNUP=false`), which counts as the
/// `*.generated` a send to an account records at that step (the `*.sent` follows
/// after the imitated delivery). Whoever reads `/metrics` then cannot tell an
/// address with an account from one without; the audit trail keeps the truth.
pub fn as_counted(event: &str, success: bool) -> (&str, bool) {
    match event {
        e if e == Event::OtpWithheld.as_str() => (Event::OtpGenerated.as_str(), true),
        e if e == Event::MagicLinkWithheld.as_str() => (Event::MagicLinkGenerated.as_str(), true),
        e => (e, success),
    }
}

/// The webhook counters and the oldest pending delivery's age.
fn render_webhooks(out: &mut String, w: &WebhookCounters) {
    let _ = writeln!(
        out,
        "# HELP sesame_webhook_attempts_total Webhook delivery attempts of this instance, by result \
         (delivered; retry: failed, tried again later; failed: given up after WEBHOOK_MAX_AGE)."
    );
    let _ = writeln!(out, "# TYPE sesame_webhook_attempts_total counter");
    for (result, n) in [
        ("delivered", &w.delivered),
        ("retry", &w.retried),
        ("failed", &w.failed),
    ] {
        let _ = writeln!(
            out,
            "sesame_webhook_attempts_total{{result=\"{result}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP sesame_webhook_oldest_pending_age_seconds Age of the oldest pending webhook delivery (0: none)."
    );
    let _ = writeln!(out, "# TYPE sesame_webhook_oldest_pending_age_seconds gauge");
    let _ = writeln!(
        out,
        "sesame_webhook_oldest_pending_age_seconds {}",
        w.oldest_pending_seconds.load(Ordering::Relaxed)
    );
}

/// The latency histograms, one per operation.
fn render_latency(out: &mut String, latency: &BTreeMap<String, Histogram>) {
    let _ = writeln!(
        out,
        "# HELP sesame_http_request_duration_seconds HTTP request latency, by operation."
    );
    let _ = writeln!(out, "# TYPE sesame_http_request_duration_seconds histogram");
    for (op, h) in latency {
        let op = escape(op);
        for (le, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
            let _ = writeln!(
                out,
                "sesame_http_request_duration_seconds_bucket{{operation=\"{op}\",le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "sesame_http_request_duration_seconds_bucket{{operation=\"{op}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "sesame_http_request_duration_seconds_sum{{operation=\"{op}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "sesame_http_request_duration_seconds_count{{operation=\"{op}\"}} {}",
            h.count
        );
    }
}

/// Escapes a label value per the exposition format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_exposition_format() {
        let m = Metrics::default();
        m.event("auth.login", true);
        m.event("auth.login", true);
        m.event("otp.verification", false);
        m.audit_file_error();
        m.request("logout", 200, Duration::from_millis(3));
        m.request("logout", 400, Duration::from_secs(20));
        let text = m.render();
        assert!(
            text.contains("sesame_events_total{event=\"auth.login\",success=\"true\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("sesame_events_total{event=\"otp.verification\",success=\"false\"} 1\n"));
        assert!(text.contains("sesame_audit_file_errors_total 1\n"));
        assert!(text.contains("sesame_http_requests_total{operation=\"logout\",status=\"400\"} 1\n"));
        assert!(text.contains("sesame_http_request_duration_seconds_bucket{operation=\"logout\",le=\"0.0025\"} 0\n"));
        assert!(text.contains("sesame_http_request_duration_seconds_bucket{operation=\"logout\",le=\"0.005\"} 1\n"));
        assert!(text.contains("sesame_http_request_duration_seconds_bucket{operation=\"logout\",le=\"10\"} 1\n"));
        assert!(text.contains("sesame_http_request_duration_seconds_bucket{operation=\"logout\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("sesame_http_request_duration_seconds_count{operation=\"logout\"} 2\n"));
    }

    #[test]
    fn a_withheld_send_counts_as_the_generated_one_it_stands_for() {
        let m = Metrics::default();
        m.event("otp.withheld", false);
        m.event("magic_link.withheld", false);
        m.event("otp.sent", false);
        let text = m.render();
        assert!(
            text.contains("sesame_events_total{event=\"otp.generated\",success=\"true\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("sesame_events_total{event=\"magic_link.generated\",success=\"true\"} 1\n"));
        assert!(text.contains("sesame_events_total{event=\"otp.sent\",success=\"false\"} 1\n"));
        assert!(!text.contains("withheld\""), "{text}");
    }
}
