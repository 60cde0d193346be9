//! Sending email: one [`Mailer`] over three transports.
//!
//! - `console`: prints the message (code and link included) to stdout, for development;
//! - `smtp`: lettre over `SMTP_URL` (`smtp://` upgrades with STARTTLS when the
//!   server offers it, `?tls=required` insists, `smtps://` is TLS from the start;
//!   `SMTP_CA_FILE` adds certificate authorities; a transient failure is tried
//!   once more on a fresh connection; see `smtp`);
//! - `resend`: the Resend HTTP API (`POST {RESEND_API_URL}/emails`).
//!
//! Every message has a subject, a plain-text and an HTML part, from the
//! templates of [`templates`], in the language [`locale`] picks. A delivery
//! says how many tries it took ([`Delivery`]); a failed one is an
//! [`EmailError`]: the reply code and the server's words, with addresses,
//! codes and tokens taken out ([`redact`]).

pub mod locale;
pub mod redact;
mod smtp;
pub mod templates;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor,
    message::{Mailbox, MultiPart},
};
use url::Url;

use self::templates::Templates;
use crate::config::{Config, ConfigError, EmailProvider};

/// How long one delivery may take before it counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// Tries of one SMTP delivery: a transient failure (a 4xx reply, a dropped
/// or refused connection) is tried once more on a fresh connection; a
/// permanent one (5xx) never is.
const SMTP_ATTEMPTS: u32 = 2;

/// A delivered message: how many tries it took and the final reply code
/// (SMTP) or HTTP status (Resend), for the `*.sent` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub attempts: u32,
    pub reply_code: Option<u16>,
}

impl Delivery {
    fn first(reply_code: Option<u16>) -> Self {
        Self {
            attempts: 1,
            reply_code,
        }
    }
}

/// One email to one recipient.
#[derive(Clone)]
pub struct Message {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Message {
    /// Without the bodies or the subject: they carry codes and links.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message").finish_non_exhaustive()
    }
}

/// Why a message was not delivered: what failed, the reply code (SMTP) or
/// HTTP status (Resend) when there was one, and what the server said, passed
/// through [`redact::redact`]. It is logged and recorded as the failure reason
/// of `otp.sent` / `magic_link.sent`, so it never holds the message, the
/// recipient's address, a code or a token; the only way to build one redacts.
#[derive(Debug)]
pub struct EmailError {
    kind: ErrorKind,
    code: Option<u16>,
    message: String,
    /// Tries made before giving up.
    attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Address,
    Smtp,
    Resend,
    Timeout,
}

impl EmailError {
    fn new(kind: ErrorKind, code: Option<u16>, message: &str) -> Self {
        Self {
            kind,
            code,
            message: redact::redact(message),
            attempts: 1,
        }
    }

    /// Worth another try on a fresh connection: an SMTP 4xx reply, or no
    /// reply at all (a dropped or refused connection, a failed handshake).
    fn is_transient(&self) -> bool {
        match self.code {
            Some(code) => (400..500).contains(&code),
            None => self.kind == ErrorKind::Smtp,
        }
    }

    /// How many tries were made.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// A failed SMTP conversation: a refusal carries its reply code, and the
    /// server's text; anything else lettre's description.
    fn smtp(e: &lettre::transport::smtp::Error) -> Self {
        let code = e.status().map(u16::from);
        let message = match (code, std::error::Error::source(e)) {
            (Some(_), Some(said)) => said.to_string(),
            _ => e.to_string(),
        };
        Self::new(ErrorKind::Smtp, code, &message)
    }

    /// The SMTP reply code or HTTP status of a refusal, when there was one.
    pub fn code(&self) -> Option<u16> {
        self.code
    }
}

impl std::fmt::Display for EmailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.message.is_empty() { "" } else { ": " };
        match (self.kind, self.code) {
            (ErrorKind::Address, _) => write!(f, "invalid address{sep}{}", self.message),
            (ErrorKind::Smtp, Some(code)) => write!(f, "SMTP {code}{sep}{}", self.message),
            (ErrorKind::Smtp, None) => write!(f, "SMTP{sep}{}", self.message),
            (ErrorKind::Resend, Some(status)) => write!(f, "Resend API: HTTP {status}{sep}{}", self.message),
            (ErrorKind::Resend, None) => write!(f, "Resend API{sep}{}", self.message),
            (ErrorKind::Timeout, _) => write!(f, "timed out after {}s", SEND_TIMEOUT.as_secs()),
        }
    }
}

impl std::error::Error for EmailError {}

enum Transport {
    Console,
    /// `smtp://`: our own connections with `TCP_NODELAY` (see [`smtp::SmtpPool`]).
    Smtp(smtp::SmtpPool),
    /// `smtps://`: lettre's pooled transport (TLS from the first byte).
    Smtps(AsyncSmtpTransport<Tokio1Executor>),
    Resend {
        client: reqwest::Client,
        url: Url,
        key: String,
    },
}

/// How many recent delivery durations [`Mailer::imitate_send`] draws from.
const RECENT_DELIVERIES: usize = 64;

/// How far one imitation moves the overshoot estimate: small against the
/// overshoot (tens to hundreds of microseconds), reached within a few hundred sends.
const OVERSHOOT_STEP_US: u64 = 4;

/// The durations of the last [`RECENT_DELIVERIES`] delivery steps, in
/// microseconds, in a ring (0 = no delivery yet in that slot).
struct RecentDeliveries {
    micros: [AtomicU64; RECENT_DELIVERIES],
    /// How many have been noted; the next slot is this modulo the ring's size.
    noted: AtomicU64,
    /// How much longer than asked an imitation takes (a running median), in microseconds.
    overshoot_us: AtomicU64,
}

impl Default for RecentDeliveries {
    fn default() -> Self {
        Self {
            micros: std::array::from_fn(|_| AtomicU64::new(0)),
            noted: AtomicU64::new(0),
            overshoot_us: AtomicU64::new(0),
        }
    }
}

impl RecentDeliveries {
    fn note(&self, took: Duration) {
        let slot = self.noted.fetch_add(1, Ordering::Relaxed) % RECENT_DELIVERIES as u64;
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        if let Some(m) = self.micros.get(usize::try_from(slot).unwrap_or_default()) {
            m.store(micros, Ordering::Relaxed);
        }
    }

    fn overshoot(&self) -> Duration {
        Duration::from_micros(self.overshoot_us.load(Ordering::Relaxed))
    }

    /// Moves the overshoot estimate one step towards how late an imitation that
    /// `took` for a `wait` was: a running median (each imitation moves it by
    /// [`OVERSHOOT_STEP_US`] up or down), as the median, not the mean, is what
    /// the real deliveries are drawn at; an average of late wake-ups would aim
    /// too short.
    fn note_overshoot(&self, took: Duration, wait: Duration) {
        let over = u64::try_from(took.saturating_sub(wait).as_micros()).unwrap_or(u64::MAX);
        let old = self.overshoot_us.load(Ordering::Relaxed);
        let new = match over.cmp(&old) {
            std::cmp::Ordering::Greater => old + OVERSHOOT_STEP_US,
            std::cmp::Ordering::Less => old.saturating_sub(OVERSHOOT_STEP_US),
            std::cmp::Ordering::Equal => old,
        };
        self.overshoot_us.store(new, Ordering::Relaxed);
    }

    /// One of the noted durations, at random; `None` before the first.
    fn draw(&self) -> Option<Duration> {
        let filled = self.noted.load(Ordering::Relaxed).min(RECENT_DELIVERIES as u64);
        if filled == 0 {
            return None;
        }
        let slot = usize::try_from(rand::random_range(0..filled)).unwrap_or_default();
        let micros = self.micros.get(slot)?.load(Ordering::Relaxed);
        (micros > 0).then(|| Duration::from_micros(micros))
    }
}

/// Delivers messages; cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    transport: Arc<Transport>,
    from: String,
    /// The messages, checked at start-up.
    templates: Templates,
    /// How long recent delivery steps took (see [`Mailer::note_delivery`]).
    recent: Arc<RecentDeliveries>,
}

impl Mailer {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let transport = match config.email.provider {
            EmailProvider::Console => Transport::Console,
            EmailProvider::Smtp => {
                let url = config
                    .email
                    .smtp_url
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("SMTP_URL is required when EMAIL_PROVIDER=smtp"))?;
                smtp::transport(url.expose(), config.email.smtp_ca_file.as_deref())?
            }
            EmailProvider::Resend => {
                let key = config
                    .email
                    .resend_api_key
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("RESEND_API_KEY is required when EMAIL_PROVIDER=resend"))?;
                let client = reqwest::Client::builder().timeout(SEND_TIMEOUT).build()?;
                let url = config.email.resend_api_url.join("emails")?;
                Transport::Resend {
                    client,
                    url,
                    key: key.expose().to_owned(),
                }
            }
        };
        let email = &config.email;
        let templates = Templates::load(email.templates_dir.as_deref(), &email.app_name, &email.default_locale)
            .map_err(|problems| ConfigError {
                problems: problems
                    .into_iter()
                    .map(|p| format!("EMAIL_TEMPLATES_DIR: {p}"))
                    .collect(),
            })?;
        Ok(Self {
            transport: Arc::new(transport),
            from: config.email.from_email.clone(),
            templates,
            recent: Arc::new(RecentDeliveries::default()),
        })
    }

    /// The messages and their languages.
    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// Delivers `message`, or says why not.
    pub async fn send(&self, message: &Message) -> Result<Delivery, EmailError> {
        match tokio::time::timeout(SEND_TIMEOUT, self.deliver(message)).await {
            Ok(result) => result,
            Err(_) => Err(EmailError::new(ErrorKind::Timeout, None, "")),
        }
    }

    /// Notes how long a successful delivery step took, from handing the message
    /// to the transport to recording that it was sent: what [`Mailer::imitate_send`]
    /// imitates.
    pub fn note_delivery(&self, took: Duration) {
        self.recent.note(took);
    }

    /// Takes as long as a recent delivery step did (one of the last
    /// [`RECENT_DELIVERIES`], drawn at random), without sending anything: for
    /// answers that must not reveal that no email went out. Drawing from real
    /// durations gives the imitation the same spread as the real thing: its
    /// median, its tail; an average would sit above the median of a skewed
    /// distribution.
    pub async fn imitate_send(&self) {
        let Some(wanted) = self.recent.draw() else {
            return;
        };
        let started = tokio::time::Instant::now();
        // Waking up takes time of its own (more on a busy machine): aim short by
        // how late recent imitations typically were.
        let wait = wanted.saturating_sub(self.recent.overshoot());
        let deadline = started + wait;
        // tokio's timer ticks in whole milliseconds and rounds every sleep up to
        // the next tick: a local mail server answers in well under one, so sleeping
        // there alone would make the imitation the slower path. Sleep on the timer
        // for all but the last two ticks, then the rest on a blocking thread,
        // whose sleep is precise to tens of microseconds.
        if let Some(coarse) = wait.checked_sub(Duration::from_millis(2)) {
            tokio::time::sleep(coarse).await;
        }
        let rest = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !rest.is_zero() {
            let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
        }
        self.recent.note_overshoot(started.elapsed(), wait);
    }

    /// The MIME message: plain text and HTML alternatives.
    fn mime(&self, m: &Message) -> Result<lettre::Message, EmailError> {
        let from: Mailbox = self
            .from
            .parse()
            .map_err(|e| EmailError::new(ErrorKind::Address, None, &format!("FROM_EMAIL: {e}")))?;
        let to =
            m.to.parse::<Mailbox>()
                .map_err(|e| EmailError::new(ErrorKind::Address, None, &e.to_string()))?;
        lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(&m.subject)
            .multipart(MultiPart::alternative_plain_html(m.text.clone(), m.html.clone()))
            .map_err(|e| EmailError::new(ErrorKind::Smtp, None, &e.to_string()))
    }

    async fn deliver(&self, m: &Message) -> Result<Delivery, EmailError> {
        match &*self.transport {
            Transport::Console => {
                println!(
                    "\n---- email (EMAIL_PROVIDER=console) ----\nFrom: {}\nTo: {}\nSubject: {}\n\n{}\n----------------------------------------",
                    self.from, m.to, m.subject, m.text
                );
                Ok(Delivery::first(None))
            }
            Transport::Smtp(pool) => pool.send(&self.mime(m)?).await,
            Transport::Smtps(smtp) => {
                let message = self.mime(m)?;
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match smtp.send(message.clone()).await {
                        Ok(reply) => {
                            return Ok(Delivery {
                                attempts,
                                reply_code: Some(u16::from(reply.code())),
                            });
                        }
                        Err(e) => {
                            let mut err = EmailError::smtp(&e);
                            err.attempts = attempts;
                            if attempts >= SMTP_ATTEMPTS || !err.is_transient() {
                                return Err(err);
                            }
                        }
                    }
                }
            }
            Transport::Resend { client, url, key } => {
                let body = serde_json::json!({
                    "from": self.from,
                    "to": [m.to],
                    "subject": m.subject,
                    "text": m.text,
                    "html": m.html,
                });
                let resp = client
                    .post(url.clone())
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| EmailError::new(ErrorKind::Resend, None, without_url(&e)))?;
                let status = resp.status();
                if status.is_success() {
                    return Ok(Delivery::first(Some(status.as_u16())));
                }
                // Resend explains a refusal in `message`, which may name the recipient.
                let said = resp
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|body| body["message"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                Err(EmailError::new(ErrorKind::Resend, Some(status.as_u16()), &said))
            }
        }
    }
}

/// A reqwest error without its URL (harmless here, but keep events tidy).
fn without_url(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_imitation_draws_only_from_the_latest_deliveries() {
        let recent = RecentDeliveries::default();
        assert_eq!(recent.draw(), None, "nothing to imitate before the first delivery");
        recent.note(Duration::from_micros(700));
        assert_eq!(recent.draw(), Some(Duration::from_micros(700)));
        // A full ring later, the first duration is gone.
        for _ in 0..RECENT_DELIVERIES {
            recent.note(Duration::from_millis(3));
        }
        for _ in 0..1000 {
            assert_eq!(recent.draw(), Some(Duration::from_millis(3)));
        }
    }

    #[test]
    fn the_imitation_learns_how_late_it_wakes_up() {
        let recent = RecentDeliveries::default();
        assert_eq!(recent.overshoot(), Duration::ZERO);
        // Mostly 100 µs late, now and then 2 ms: the median, not the mean, is learnt.
        for i in 0..1_000 {
            let late = if i % 5 == 0 { 2_000 } else { 100 };
            recent.note_overshoot(Duration::from_micros(1_000 + late), Duration::from_micros(1_000));
        }
        let learnt = recent.overshoot().as_micros();
        assert!((96..=104).contains(&learnt), "{learnt} µs");
    }
}
