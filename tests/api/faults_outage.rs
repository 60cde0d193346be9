//! Outages: a server killed right after a 200 lost nothing it answered, and a
//! lost database (closed, or cut off by a partition) is a quick 503 that heals
//! without a restart.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::sync::watch;

use crate::{
    faults_support::{post, sign_in},
    helpers::{ServerProcess, TestApp, set_database_reachable, smtp_config, temp_dir},
    mailbox::SmtpSink,
};

fn kill_9(server: ServerProcess) {
    let mut child = server.child;
    child.kill().unwrap(); // SIGKILL: no shutdown code runs
    child.wait().unwrap();
}

async fn events(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT event FROM audit_events ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_server_killed_right_after_a_200_lost_nothing_it_answered(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let dir = temp_dir("crash");
    let vars = [
        ("EMAIL_PROVIDER", "smtp"),
        ("SMTP_URL", &*sink.url()),
        ("JWT_SECRET", "crash-test-secret-0123456789abcdef"),
    ];

    let server = ServerProcess::start(&db, &dir, &vars);
    server.wait_ready().await;
    let pair = sign_in(&server, &sink, "ada@example.com").await;
    kill_9(server);
    assert_eq!(
        events(&pool).await,
        [
            "otp.generated",
            "otp.sent",
            "otp.verification",
            "user.created",
            "auth.login",
            "token.generated",
            "token.generated"
        ],
        "every event of the answered requests was committed"
    );

    let server = ServerProcess::start(&db, &dir, &vars);
    server.wait_ready().await;
    let (status, next) = post(
        server.url("/auth/refresh"),
        json!({ "refreshToken": pair["refreshToken"] }),
    )
    .await;
    assert_eq!(status, 200, "the session survived the crash: {next}");
    kill_9(server);
    let refreshes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'token.refresh' AND success")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(refreshes, 1);

    let server = ServerProcess::start(&db, &dir, &vars);
    server.wait_ready().await;
    let (status, _) = post(
        server.url("/auth/refresh"),
        json!({ "refreshToken": next["refreshToken"] }),
    )
    .await;
    assert_eq!(status, 200, "the rotated token is the live one after the restart");
    server.terminate().await;
}

/// `DATABASE_ACQUIRE_TIMEOUT` in the outage test: how long a request may wait
/// for a connection before its 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a request may take beyond the acquire timeout on a loaded machine
/// (the HTTP round trip, the handler, the error body).
const SLACK: Duration = Duration::from_millis(500);

/// A TCP relay between an app and PostgreSQL that can go silent, as in a
/// network partition: new connections are accepted and never answered, so
/// only the acquire timeout ends the wait for one. Open connections are closed
/// when it goes silent. (One that stayed open but silent would not be bounded
/// by the acquire timeout: a query on it waits until TCP gives up.)
struct Relay {
    port: u16,
    silent: Arc<watch::Sender<bool>>,
}

impl Relay {
    async fn start(db: &PgConnectOptions) -> Self {
        let upstream = format!("{}:{}", db.get_host(), db.get_port());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = Arc::new(watch::channel(false).0);
        let state = silent.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut silent = state.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if *silent.borrow_and_update() {
                        // Accepted and never answered, until the partition heals.
                        let _ = silent.wait_for(|s| !*s).await;
                        return;
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        // The partition starts: open connections are lost.
                        _ = silent.wait_for(|s| *s) => {}
                    }
                });
            }
        });
        Self { port, silent }
    }

    /// `db` reached through this relay.
    fn options(&self, db: &PgConnectOptions) -> PgConnectOptions {
        db.clone().host("127.0.0.1").port(self.port)
    }

    fn set_silent(&self, silent: bool) {
        self.silent.send_replace(silent);
    }
}

/// One request of each kind during an outage, each timed: every one is a 503
/// within the acquire timeout plus [`SLACK`]. Returns the longest.
async fn requests_during_an_outage(app: &TestApp, refresh_token: &str, outage: &str) -> Duration {
    let mut longest = Duration::ZERO;
    for round in 0..3 {
        let started = Instant::now();
        app.refresh(refresh_token)
            .await
            .assert_error(503, "database_unavailable");
        let refresh = started.elapsed();
        let started = Instant::now();
        app.send_code("bob@example.com")
            .await
            .assert_error(503, "database_unavailable");
        let send = started.elapsed();
        let started = Instant::now();
        app.health().await.assert_error(503, "database_unavailable");
        let health = started.elapsed();
        for (what, took) in [("refresh", refresh), ("send-code", send), ("health", health)] {
            assert!(
                took <= ACQUIRE_TIMEOUT + SLACK,
                "{outage}, round {round}: the 503 of {what} took {took:?}, more than the acquire timeout \
                 ({ACQUIRE_TIMEOUT:?}) and {SLACK:?}"
            );
            longest = longest.max(took);
        }
    }
    longest
}

#[sqlx::test]
async fn a_database_outage_is_503_quickly_and_heals_without_a_restart(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let name = db.get_database().unwrap().to_owned();
    let sink = SmtpSink::start().await;
    let relay = Relay::start(&db).await;
    let mut config = smtp_config(relay.options(&db), &sink);
    config.database.acquire_timeout = ACQUIRE_TIMEOUT;
    let app = TestApp::spawn_with(config).await;
    let pair = app.sign_in(&sink, "ada@example.com").await;
    let token = pair["refreshToken"].as_str().unwrap();
    drop(pool);

    // The database is closed: open connections are cut, new ones refused at once.
    set_database_reachable(&name, false).await;
    requests_during_an_outage(&app, token, "database closed").await;
    set_database_reachable(&name, true).await;
    assert_eq!(app.health().await.status, 200, "healed without a restart");

    // A partition: open connections are closed, new ones never answered.
    // Here the acquire timeout is what ends the wait.
    relay.set_silent(true);
    let longest = requests_during_an_outage(&app, token, "partition").await;
    assert!(
        longest >= ACQUIRE_TIMEOUT,
        "some request waited for the acquire timeout ({longest:?})"
    );
    relay.set_silent(false);
    assert_eq!(app.health().await.status, 200, "healed without a restart");

    // The refreshes that failed during the outages did not half-rotate anything.
    let next = app.refresh(token).await;
    assert_eq!(next.status, 200, "{}", next.text);
    assert_eq!(app.sign_in(&sink, "bob@example.com").await["success"], true);
}

/// Makes new sessions of the test database start read-only (or not), and ends
/// every other session of it so that pools open new ones.
async fn set_read_only(pool: &PgPool, on: bool) {
    let sql = if on {
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database()); END $$"
    } else {
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET default_transaction_read_only', current_database()); END $$"
    };
    let mut conn = pool.acquire().await.unwrap();
    // This session may have started read-only itself.
    sqlx::query("SET default_transaction_read_only = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut *conn).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
}

#[sqlx::test]
async fn a_database_that_turned_read_only_is_a_503_not_a_500(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(smtp_config(db.clone(), &sink)).await;
    assert_eq!(app.send_code("ada@example.com").await.status, 200);

    // What a primary demoted under sesame looks like: every write is refused
    // with SQLSTATE 25006 (read-only transaction).
    set_read_only(&pool, true).await;
    // Reads work: once /health answers, the pool holds read-only sessions only.
    let mut healthy = 0;
    for _ in 0..100 {
        healthy = if app.get("/health").await.status == 200 {
            healthy + 1
        } else {
            0
        };
        if healthy == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(healthy, 5, "reads work on a read-only database");
    app.send_code("ada@example.com")
        .await
        .assert_error(503, "database_unavailable");

    set_read_only(&pool, false).await;
    let mut status = 0;
    for _ in 0..50 {
        status = app.send_code("bob@example.com").await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "writes work again once the database does");
}
