//! Real email transports for tests: an SMTP server that keeps what it is sent,
//! and a local HTTP server playing the Resend API.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
};

use base64::Engine as _;
use poem::{EndpointExt as _, IntoResponse as _, Route, handler, http::StatusCode, web::Data};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;

/// One message as the SMTP server received it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The DATA, headers and body, with dot-stuffing undone.
    pub raw: String,
}

impl Mail {
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next()?;
        let prefix = format!("{}:", name.to_ascii_lowercase());
        let mut lines = head.split("\r\n").peekable();
        while let Some(line) = lines.next() {
            if line.to_ascii_lowercase().starts_with(&prefix) {
                let mut value = line[prefix.len()..].trim().to_owned();
                while lines.peek().is_some_and(|l| l.starts_with([' ', '\t'])) {
                    value.push(' ');
                    value.push_str(lines.next().unwrap_or_default().trim());
                }
                return Some(value);
            }
        }
        None
    }

    /// The subject, with RFC 2047 encoded words (non-ASCII text) decoded.
    pub fn subject(&self) -> String {
        decode_words(&self.header("Subject").unwrap_or_default())
    }

    /// The decoded body of the part with this content type.
    pub fn part(&self, content_type: &str) -> Option<String> {
        self.raw.split("\r\n--").find_map(|part| {
            let (head, body) = part.split_once("\r\n\r\n")?;
            let head_lower = head.to_ascii_lowercase();
            if !head_lower.contains(&format!("content-type: {content_type}")) {
                return None;
            }
            let body = body.trim_end_matches("\r\n");
            Some(if head_lower.contains("content-transfer-encoding: quoted-printable") {
                decode_quoted_printable(body)
            } else if head_lower.contains("content-transfer-encoding: base64") {
                let joined: String = body.split_whitespace().collect();
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(joined).unwrap()).unwrap()
            } else {
                body.to_owned()
            })
        })
    }

    pub fn text(&self) -> String {
        self.part("text/plain").expect("a text/plain part")
    }

    pub fn html(&self) -> String {
        self.part("text/html").expect("a text/html part")
    }

    /// The code, read from the subject as a person would.
    pub fn code(&self) -> String {
        self.subject().rsplit(' ').next().unwrap_or_default().to_owned()
    }

    /// The first link in the text part.
    pub fn link(&self) -> String {
        link_in(&self.text())
    }
}

/// The first http(s) URL in `text`.
pub fn link_in(text: &str) -> String {
    text.split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .expect("a link")
        .to_owned()
}

/// The `token` query parameter of a link.
pub fn token_of(link: &str) -> String {
    let url = url::Url::parse(link).unwrap();
    url.query_pairs().find(|(k, _)| k == "token").unwrap().1.into_owned()
}

/// A header value with its `=?utf-8?b?…?=` / `=?utf-8?q?…?=` words decoded; the
/// space between two encoded words is dropped, as RFC 2047 says.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut last_encoded = false;
    for (i, word) in value.split(' ').enumerate() {
        let decoded = word
            .strip_prefix("=?")
            .and_then(|w| w.strip_suffix("?="))
            .and_then(|w| {
                let mut parts = w.splitn(3, '?');
                let (_charset, encoding, text) = (parts.next()?, parts.next()?, parts.next()?);
                match encoding.to_ascii_lowercase().as_str() {
                    "b" => String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text).ok()?).ok(),
                    "q" => Some(decode_quoted_printable(&text.replace('_', " "))),
                    _ => None,
                }
            });
        if i > 0 && !(last_encoded && decoded.is_some()) {
            out.push(' ');
        }
        last_encoded = decoded.is_some();
        out.push_str(decoded.as_deref().unwrap_or(word));
    }
    out
}

fn decode_quoted_printable(s: &str) -> String {
    let joined = s.replace("=\r\n", "");
    let b = joined.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'=' && i + 3 <= b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// How an [`SmtpSink`] speaks TLS.
#[derive(Clone)]
pub enum SinkTls {
    /// Plain text only.
    None,
    /// Offers STARTTLS and refuses `MAIL FROM` before it (`530`), as a
    /// submission server on port 587 does.
    StartTls(TlsAcceptor),
    /// TLS from the first byte (`smtps://`).
    Wrapper(TlsAcceptor),
}

/// An SMTP server on 127.0.0.1 that accepts everything (or, when told to,
/// refuses the message or its recipients) and keeps what it receives.
#[derive(Clone)]
pub struct SmtpSink {
    pub addr: SocketAddr,
    messages: Arc<Mutex<Vec<Mail>>>,
    refuse: Arc<AtomicBool>,
    refuse_recipients: Arc<AtomicBool>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    tls: SinkTls,
    /// `MAIL FROM` commands received over plain text on a STARTTLS sink.
    plaintext_mail: Arc<std::sync::atomic::AtomicUsize>,
    /// Connections accepted.
    connections: Arc<std::sync::atomic::AtomicUsize>,
    /// How many of the next `MAIL FROM` get `421` and a closed connection.
    busy: Arc<std::sync::atomic::AtomicUsize>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_with(SinkTls::None).await
    }

    pub async fn start_with(tls: SinkTls) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = Self {
            addr: listener.local_addr().unwrap(),
            messages: Arc::default(),
            refuse: Arc::default(),
            refuse_recipients: Arc::default(),
            delay_ms: Arc::default(),
            tls,
            plaintext_mail: Arc::default(),
            connections: Arc::default(),
            busy: Arc::default(),
        };
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = s.serve(stream).await;
                });
            }
        });
        sink
    }

    /// The `MAIL FROM` commands that arrived before STARTTLS.
    pub fn plaintext_mail(&self) -> usize {
        self.plaintext_mail.load(Ordering::SeqCst)
    }

    /// The connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The next `times` `MAIL FROM` are answered `421` (service not
    /// available, closing), and the connection closed: a busy server.
    pub fn busy_for(&self, times: usize) {
        self.busy.store(times, Ordering::SeqCst);
    }

    async fn serve(&self, tcp: TcpStream) -> std::io::Result<()> {
        self.connections.fetch_add(1, Ordering::SeqCst);
        match self.tls.clone() {
            SinkTls::None => self.session(tcp, false).await.map(drop),
            SinkTls::Wrapper(acceptor) => self.session(acceptor.accept(tcp).await?, true).await.map(drop),
            SinkTls::StartTls(acceptor) => {
                if let Some(tcp) = self.session(tcp, false).await? {
                    let tls = acceptor.accept(tcp).await?;
                    self.session(tls, true).await?;
                }
                Ok(())
            }
        }
    }

    /// The `SMTP_URL` for this server.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The `SMTP_URL` for this server under the name its certificate carries
    /// (`localhost`), with `query` (e.g. `?tls=required`).
    pub fn url_for_tls(&self, scheme: &str, query: &str) -> String {
        format!("{scheme}://localhost:{}{query}", self.addr.port())
    }

    /// From now on, answer DATA with a permanent failure.
    pub fn refuse_messages(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }

    /// From now on, answer RCPT TO as Postfix does for an unknown mailbox,
    /// echoing the address: `550 5.1.1 <address>: Recipient address rejected: …`.
    pub fn refuse_recipients(&self, refuse: bool) {
        self.refuse_recipients.store(refuse, Ordering::SeqCst);
    }

    /// From now on, take this long to accept each message (a slow mail server).
    pub fn delay(&self, delay: std::time::Duration) {
        self.delay_ms
            .store(u64::try_from(delay.as_millis()).unwrap(), Ordering::SeqCst);
    }

    pub fn messages(&self) -> Vec<Mail> {
        self.messages.lock().unwrap().clone()
    }

    pub fn to(&self, address: &str) -> Vec<Mail> {
        self.messages()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == address))
            .collect()
    }

    /// The newest message to `address` (panics when there is none).
    pub fn last_to(&self, address: &str) -> Mail {
        self.to(address)
            .pop()
            .unwrap_or_else(|| panic!("no message to {address}"))
    }

    /// One SMTP conversation; `Some(stream)` when the client asked for
    /// STARTTLS, to go on over TLS (the greeting after the handshake is the
    /// client's new EHLO, so none is sent then).
    async fn session<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S, secure: bool) -> std::io::Result<Option<S>> {
        let starttls = matches!(self.tls, SinkTls::StartTls(_));
        let mut lines = BufReader::new(stream);
        if !(starttls && secure) {
            lines.get_mut().write_all(b"220 sink.test ESMTP\r\n").await?;
        }
        let (mut from, mut to) = (String::new(), Vec::new());
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(None);
            }
            let write = lines.get_mut();
            let cmd = line.trim_end().to_owned();
            let upper = cmd.to_ascii_uppercase();
            if upper.starts_with("EHLO") {
                let offer = if starttls && !secure { "250-STARTTLS\r\n" } else { "" };
                let reply = format!("250-sink.test\r\n{offer}250-8BITMIME\r\n250 SMTPUTF8\r\n");
                write.write_all(reply.as_bytes()).await?;
            } else if upper == "STARTTLS" && starttls && !secure {
                write.write_all(b"220 2.0.0 ready to start TLS\r\n").await?;
                return Ok(Some(lines.into_inner()));
            } else if upper.starts_with("HELO") || upper.starts_with("RSET") || upper.starts_with("NOOP") {
                write.write_all(b"250 OK\r\n").await?;
            } else if upper.starts_with("MAIL FROM:") && starttls && !secure {
                self.plaintext_mail.fetch_add(1, Ordering::SeqCst);
                write
                    .write_all(b"530 5.7.0 Must issue a STARTTLS command first\r\n")
                    .await?;
            } else if upper.starts_with("MAIL FROM:")
                && self
                    .busy
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                write.write_all(b"421 4.3.2 busy, try again later\r\n").await?;
                return Ok(None);
            } else if upper.starts_with("MAIL FROM:") {
                from = angle(&cmd);
                to.clear();
                write.write_all(b"250 OK\r\n").await?;
            } else if upper.starts_with("RCPT TO:") && self.refuse_recipients.load(Ordering::SeqCst) {
                let reply = format!(
                    "550 5.1.1 <{}>: Recipient address rejected: User unknown in virtual mailbox table\r\n",
                    angle(&cmd)
                );
                write.write_all(reply.as_bytes()).await?;
            } else if upper.starts_with("RCPT TO:") {
                to.push(angle(&cmd));
                write.write_all(b"250 OK\r\n").await?;
            } else if upper == "DATA" {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut raw = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(None);
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    raw.push_str(
                        line.strip_prefix('.')
                            .filter(|_| line.starts_with(".."))
                            .unwrap_or(&line),
                    );
                }
                let write = lines.get_mut();
                let delay = self.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                }
                if self.refuse.load(Ordering::SeqCst) {
                    write.write_all(b"554 5.7.1 refused by the test\r\n").await?;
                } else {
                    self.messages.lock().unwrap().push(Mail {
                        from: from.clone(),
                        to: to.clone(),
                        raw,
                    });
                    write.write_all(b"250 OK queued\r\n").await?;
                }
            } else if upper.starts_with("QUIT") {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(None);
            } else {
                write.write_all(b"502 not implemented\r\n").await?;
            }
        }
    }
}

fn angle(cmd: &str) -> String {
    cmd.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(addr, _)| addr.to_owned())
        .unwrap_or_default()
}

/// A request the Resend stand-in received.
#[derive(Debug, Clone)]
pub struct ResendRequest {
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Value,
}

/// A local HTTP server playing `POST /emails` of the Resend API.
#[derive(Clone)]
pub struct ResendStandIn {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<ResendRequest>>>,
    status: Arc<AtomicU16>,
}

#[derive(Clone)]
struct ResendState {
    requests: Arc<Mutex<Vec<ResendRequest>>>,
    status: Arc<AtomicU16>,
}

#[handler]
async fn emails(req: &poem::Request, body: poem::Body, state: Data<&ResendState>) -> poem::Response {
    let body: Value = serde_json::from_slice(&body.into_bytes().await.unwrap()).unwrap_or(Value::Null);
    let to = body["to"][0].as_str().unwrap_or_default().to_owned();
    state.requests.lock().unwrap().push(ResendRequest {
        authorization: req.header("authorization").map(str::to_owned),
        content_type: req.header("content-type").map(str::to_owned),
        body,
    });
    let status = StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap();
    let answer = if status.is_success() {
        json!({ "id": uuid::Uuid::new_v4() })
    } else {
        // As providers do, the refusal names the recipient.
        json!({ "name": "application_error", "message": format!("the test refused <{to}>") })
    };
    poem::web::Json(answer).with_status(status).into_response()
}

impl ResendStandIn {
    pub async fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = ResendState {
            requests: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
        };
        let app = Route::new().at("/emails", poem::post(emails)).data(state.clone());
        let acceptor = poem::listener::TcpAcceptor::from_std(listener).unwrap();
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
        Self {
            addr,
            requests: state.requests,
            status: state.status,
        }
    }

    /// The `RESEND_API_URL` for this server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The status the next requests are answered with.
    pub fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<ResendRequest> {
        self.requests.lock().unwrap().clone()
    }
}
