//! How many round trips to PostgreSQL a refresh and `/auth/me` take, counted on
//! the wire by a proxy between the app and the database: a refresh of a live
//! token is one statement (docs/BENCHMARKS.md counts the steps it replaced).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use reqwest::Method;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::{
    helpers::{TestApp, at, rt, smtp_config},
    mailbox::SmtpSink,
};

/// The protocol code of an `SSLRequest`, after which the client sends one more
/// message without a type byte (the startup message).
const SSL_REQUEST: u32 = 80_877_103;

/// A TCP proxy to PostgreSQL that counts the statements the client runs, each
/// one request and its answer once the connection has prepared it: an
/// `Execute` (extended protocol) or a `Query` (simple protocol). (sqlx also
/// sends a `Sync` after a statement whose answer it has, and reads the reply
/// before the next statement: no wait of its own.)
struct Proxy {
    port: u16,
    round_trips: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(db: &PgConnectOptions) -> Self {
        let upstream = format!("{}:{}", db.get_host(), db.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let round_trips = Arc::new(AtomicU64::new(0));
        let counter = round_trips.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(relay(client, server, counter.clone()));
            }
        });
        Self { port, round_trips }
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::SeqCst)
    }
}

/// Copies both ways, counting the client's `Execute` and `Query` messages.
async fn relay(client: TcpStream, server: TcpStream, round_trips: Arc<AtomicU64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    let mut pending = Vec::new();
    let mut untyped = 1;
    let mut chunk = [0u8; 8192];
    loop {
        let n = match client_read.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        // Whole messages: [type byte,] a length that counts itself, the body.
        loop {
            let head = usize::from(untyped == 0);
            let Some(len) = pending.get(head..head + 4) else { break };
            let end = head + u32::from_be_bytes(len.try_into().unwrap()) as usize;
            if pending.len() < end {
                break;
            }
            if untyped > 0 {
                let code = u32::from_be_bytes(pending[4..8].try_into().unwrap());
                untyped = if code == SSL_REQUEST { 1 } else { 0 };
            } else if matches!(pending[0], b'E' | b'Q') {
                round_trips.fetch_add(1, Ordering::SeqCst);
            }
            pending.drain(..end);
        }
        if server_write.write_all(&chunk[..n]).await.is_err() {
            return;
        }
    }
}

#[sqlx::test]
async fn a_refresh_of_a_live_token_is_one_statement_and_me_is_one(_: PgPoolOptions, db: PgConnectOptions) {
    let proxy = Proxy::start(&db).await;
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db.clone().host("127.0.0.1").port(proxy.port), &sink);
    // One connection: its statements are prepared by the first refresh, so the
    // counted one is what every later refresh costs (rate limits are off).
    config.database.max_connections = 1;
    // Connected directly (the counts differ behind a transaction-mode pooler: docs/DEPLOYMENT.md).
    config.database.statement_cache = 100;
    let app = TestApp::spawn_with(config).await;
    let first = app.sign_in(&sink, "ada@example.com").await;
    let second = app.refresh(rt(&first)).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(app.bearer(Method::GET, "/auth/me", at(&second.json)).await.status, 200);

    let before = proxy.round_trips();
    let third = app.refresh(rt(&second.json)).await;
    assert_eq!(third.status, 200, "{}", third.text);
    assert_eq!(
        proxy.round_trips() - before,
        1,
        "rotate, extend the session and record the three events in one statement"
    );

    let before = proxy.round_trips();
    assert_eq!(app.bearer(Method::GET, "/auth/me", at(&third.json)).await.status, 200);
    assert_eq!(
        proxy.round_trips() - before,
        1,
        "the session and its user in one SELECT"
    );

    // The slow path still answers a replay within the interval with the same child.
    let again = app.refresh(rt(&second.json)).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(rt(&again.json), rt(&third.json));
}
