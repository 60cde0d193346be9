//! Sending email: one [`Mailer`] over three transports.
//!
//! - `console`: prints the message (code and link included) to stdout, for development;
//! - `smtp`: lettre over `SMTP_URL` (`smtp://` upgrades with STARTTLS when the
//!   server offers it, `?tls=required` insists, `smtps://` is TLS from the start);
//! - `resend`: the Resend HTTP API (`POST {RESEND_API_URL}/emails`).
//!
//! Every message has a plain-text and an HTML part (see [`templates`]).

pub mod templates;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::Credentials,
        client::{Tls, TlsParameters},
    },
};
use url::Url;

use crate::config::{Config, EmailProvider};

/// How long one delivery may take before it counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

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

/// Why a message was not delivered; the text goes to the audit event, so it
/// never contains the message itself.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("invalid address: {0}")]
    Address(String),
    #[error("SMTP: {0}")]
    Smtp(String),
    #[error("Resend API: {0}")]
    Resend(String),
    #[error("timed out after {}s", SEND_TIMEOUT.as_secs())]
    Timeout,
}

#[derive(Clone)]
enum Transport {
    Console,
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Resend {
        client: reqwest::Client,
        url: Url,
        key: String,
    },
}

/// Delivers messages; cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    transport: Arc<Transport>,
    from: String,
    /// Moving average of recent delivery times, in microseconds.
    typical_send_us: Arc<AtomicU64>,
}

impl Mailer {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let transport = match config.email_provider {
            EmailProvider::Console => Transport::Console,
            EmailProvider::Smtp => {
                let url = config
                    .smtp_url
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("SMTP_URL is required when EMAIL_PROVIDER=smtp"))?;
                Transport::Smtp(smtp_transport(url.expose())?)
            }
            EmailProvider::Resend => {
                let key = config
                    .resend_api_key
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("RESEND_API_KEY is required when EMAIL_PROVIDER=resend"))?;
                let client = reqwest::Client::builder().timeout(SEND_TIMEOUT).build()?;
                let url = config.resend_api_url.join("emails")?;
                Transport::Resend {
                    client,
                    url,
                    key: key.expose().to_owned(),
                }
            }
        };
        Ok(Self {
            transport: Arc::new(transport),
            from: config.from_email.clone(),
            typical_send_us: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Delivers `message`, or says why not.
    pub async fn send(&self, message: &Message) -> Result<(), EmailError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(SEND_TIMEOUT, self.deliver(message)).await {
            Ok(result) => result,
            Err(_) => Err(EmailError::Timeout),
        };
        if result.is_ok() {
            // Exponential moving average, weight 1/8 for the newest delivery.
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let old = self.typical_send_us.load(Ordering::Relaxed);
            let new = if old == 0 { took } else { old - old / 8 + took / 8 };
            self.typical_send_us.store(new, Ordering::Relaxed);
        }
        result
    }

    /// Takes about as long as a delivery does, without sending anything: for
    /// answers that must not reveal that no email went out.
    pub async fn imitate_send(&self) {
        let typical = self.typical_send_us.load(Ordering::Relaxed);
        if typical > 0 {
            let jitter = rand::random_range(0..=typical / 4);
            tokio::time::sleep(Duration::from_micros(typical - typical / 8 + jitter)).await;
        }
    }

    async fn deliver(&self, m: &Message) -> Result<(), EmailError> {
        match &*self.transport {
            Transport::Console => {
                println!(
                    "\n---- email (EMAIL_PROVIDER=console) ----\nFrom: {}\nTo: {}\nSubject: {}\n\n{}\n----------------------------------------",
                    self.from, m.to, m.subject, m.text
                );
                Ok(())
            }
            Transport::Smtp(smtp) => {
                let from: Mailbox = self
                    .from
                    .parse()
                    .map_err(|e| EmailError::Address(format!("FROM_EMAIL: {e}")))?;
                let to: Mailbox = m.to.parse().map_err(|e| EmailError::Address(format!("{e}")))?;
                let email = lettre::Message::builder()
                    .from(from)
                    .to(to)
                    .subject(&m.subject)
                    .multipart(MultiPart::alternative_plain_html(m.text.clone(), m.html.clone()))
                    .map_err(|e| EmailError::Smtp(e.to_string()))?;
                smtp.send(email)
                    .await
                    .map(|_| ())
                    .map_err(|e| EmailError::Smtp(e.to_string()))
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
                    .map_err(|e| EmailError::Resend(without_url(&e)))?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(EmailError::Resend(format!("HTTP {}", resp.status().as_u16())))
                }
            }
        }
    }
}

/// A reqwest error without its URL (harmless here, but keep events tidy).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_owned()
}

/// An SMTP transport for `smtp://[user:pass@]host[:port][?tls=required|none]`
/// or `smtps://[user:pass@]host[:port]`.
fn smtp_transport(raw: &str) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let url = Url::parse(raw).map_err(|_| anyhow::anyhow!("SMTP_URL is not a URL"))?;
    let host = url
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("SMTP_URL has no host"))?
        .to_owned();
    let tls_mode = url.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
    let params = || TlsParameters::new(host.clone()).map_err(|e| anyhow::anyhow!("SMTP TLS: {e}"));
    let (tls, default_port) = match (url.scheme(), tls_mode.as_deref()) {
        ("smtps", _) => (Tls::Wrapper(params()?), 465),
        ("smtp", Some("required")) => (Tls::Required(params()?), 587),
        ("smtp", Some("none")) => (Tls::None, 25),
        ("smtp", None | Some("opportunistic")) => (Tls::Opportunistic(params()?), 25),
        _ => anyhow::bail!("SMTP_URL: expected smtp:// or smtps:// with tls=required|opportunistic|none"),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(url.port().unwrap_or(default_port))
        .tls(tls)
        .timeout(Some(SEND_TIMEOUT));
    if !url.username().is_empty() {
        let user = percent_decode(url.username());
        let pass = percent_decode(url.password().unwrap_or_default());
        builder = builder.credentials(Credentials::new(user, pass));
    }
    Ok(builder.build())
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
