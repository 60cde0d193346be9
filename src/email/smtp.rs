//! SMTP: the transport for `SMTP_URL`, TLS with the CAs of `SMTP_CA_FILE`,
//! and our own pool of plain and STARTTLS connections, with one more try on a
//! fresh connection after a transient failure.

use lettre::{
    AsyncSmtpTransport, Tokio1Executor,
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, Certificate, Tls, TlsParameters},
        extension::ClientId,
    },
};
use url::Url;

use super::{Delivery, EmailError, ErrorKind, SEND_TIMEOUT, SMTP_ATTEMPTS, Transport};

/// TLS for `host`: the public certificate authorities, and those of `ca_file`
/// (`SMTP_CA_FILE`, PEM) for relays with a private one.
fn tls_parameters(host: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<TlsParameters> {
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("SMTP_CA_FILE {}: {e}", path.display()))?;
        let certs = Certificate::from_pem(&pem).map_err(|e| anyhow::anyhow!("SMTP_CA_FILE {}: {e}", path.display()))?;
        builder = builder.add_root_certificate(certs);
    }
    builder.build().map_err(|e| anyhow::anyhow!("SMTP TLS: {e}"))
}

/// The transport for `smtp://[user:pass@]host[:port][?tls=required|opportunistic|none]`
/// or `smtps://[user:pass@]host[:port]`.
pub(super) fn transport(raw: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<Transport> {
    let url = Url::parse(raw).map_err(|_| anyhow::anyhow!("SMTP_URL is not a URL"))?;
    let host = url
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("SMTP_URL has no host"))?
        .to_owned();
    let tls_mode = url.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
    let credentials = (!url.username().is_empty()).then(|| {
        Credentials::new(
            percent_decode(url.username()),
            percent_decode(url.password().unwrap_or_default()),
        )
    });
    let params = || tls_parameters(&host, ca_file);
    let starttls = match (url.scheme(), tls_mode.as_deref()) {
        ("smtps", _) => {
            let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
                .port(url.port().unwrap_or(465))
                .tls(Tls::Wrapper(params()?))
                .timeout(Some(SEND_TIMEOUT));
            if let Some(c) = credentials {
                builder = builder.credentials(c);
            }
            return Ok(Transport::Smtps(builder.build()));
        }
        ("smtp", Some("required")) => StartTls::Required(params()?),
        ("smtp", Some("none")) => StartTls::Never,
        ("smtp", None | Some("opportunistic")) => StartTls::WhenOffered(params()?),
        _ => anyhow::bail!("SMTP_URL: expected smtp:// or smtps:// with tls=required|opportunistic|none"),
    };
    let default_port = if matches!(starttls, StartTls::Required(_)) {
        587
    } else {
        25
    };
    Ok(Transport::Smtp(SmtpPool {
        host,
        port: url.port().unwrap_or(default_port),
        starttls,
        credentials,
        idle: std::sync::Mutex::new(Vec::new()),
    }))
}

/// When to upgrade a plain SMTP connection with STARTTLS.
enum StartTls {
    Never,
    WhenOffered(TlsParameters),
    Required(TlsParameters),
}

/// Connections kept open between messages, at most this many.
const MAX_IDLE_SMTP: usize = 8;

/// SMTP connections of our own, pooled, with `TCP_NODELAY`.
///
/// lettre writes a message and its closing `\r\n.\r\n` in two writes; with
/// Nagle's algorithm on, the second waits for the server's delayed ACK (40 ms
/// on Linux), which made every send ~40 ms slower (docs/BENCHMARKS.md). lettre's
/// pooled transport cannot take a socket of ours, so plain and STARTTLS
/// connections are made here and driven with lettre's `AsyncSmtpConnection`.
pub(super) struct SmtpPool {
    host: String,
    port: u16,
    starttls: StartTls,
    credentials: Option<Credentials>,
    idle: std::sync::Mutex<Vec<AsyncSmtpConnection>>,
}

impl SmtpPool {
    async fn connect(&self) -> Result<AsyncSmtpConnection, EmailError> {
        let smtp = |e: &lettre::transport::smtp::Error| EmailError::smtp(e);
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                // The host and port are the operator's own setting: kept as they are.
                let mut err = EmailError::new(ErrorKind::Smtp, None, &e.to_string());
                err.message = format!("connecting to {}:{}: {}", self.host, self.port, err.message);
                err
            })?;
        tcp.set_nodelay(true)
            .map_err(|e| EmailError::new(ErrorKind::Smtp, None, &e.to_string()))?;
        let hello = ClientId::default();
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
            .await
            .map_err(|e| smtp(&e))?;
        match &self.starttls {
            StartTls::Never => {}
            StartTls::WhenOffered(params) if conn.can_starttls() => {
                conn.starttls(params.clone(), &hello).await.map_err(|e| smtp(&e))?;
            }
            StartTls::WhenOffered(_) => {}
            StartTls::Required(params) => conn.starttls(params.clone(), &hello).await.map_err(|e| smtp(&e))?,
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| smtp(&e))?;
        }
        Ok(conn)
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        self.idle.lock().ok().and_then(|mut idle| idle.pop())
    }

    /// Sends on a kept connection if there is one, else on a new one; a
    /// transient failure is tried once more on a new connection
    /// ([`SMTP_ATTEMPTS`]).
    pub(super) async fn send(&self, message: &lettre::Message) -> Result<Delivery, EmailError> {
        let bytes = message.formatted();
        let mut attempts = 0;
        // A kept connection may have been closed by the server meanwhile:
        // failing without a reply, it was no try at delivering.
        if let Some(mut conn) = self.take_idle() {
            match conn.send(message.envelope(), &bytes).await {
                Ok(reply) => {
                    self.keep(conn);
                    return Ok(Delivery::first(Some(u16::from(reply.code()))));
                }
                Err(e) => {
                    conn.abort().await;
                    let err = EmailError::smtp(&e);
                    if err.code.is_some() {
                        attempts = 1;
                        if !err.is_transient() {
                            return Err(err);
                        }
                    }
                }
            }
        }
        loop {
            attempts += 1;
            match self.send_on_new(message, &bytes).await {
                Ok(code) => {
                    return Ok(Delivery {
                        attempts,
                        reply_code: Some(code),
                    });
                }
                Err(mut err) => {
                    err.attempts = attempts;
                    if attempts >= SMTP_ATTEMPTS || !err.is_transient() {
                        return Err(err);
                    }
                }
            }
        }
    }

    /// One try on a new connection; the reply code when it was accepted.
    async fn send_on_new(&self, message: &lettre::Message, bytes: &[u8]) -> Result<u16, EmailError> {
        let mut conn = self.connect().await?;
        match conn.send(message.envelope(), bytes).await {
            Ok(reply) => {
                self.keep(conn);
                Ok(u16::from(reply.code()))
            }
            Err(e) => {
                conn.abort().await;
                Err(EmailError::smtp(&e))
            }
        }
    }

    fn keep(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_SMTP
        {
            idle.push(conn);
        }
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
