//! Faults: a killed server, a lost database, shutdown under load, several
//! instances under mixed traffic, and secrets that must never leak.

use std::{
    io::{BufRead as _, BufReader},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};

use crate::{
    helpers::{ServerProcess, TestApp, read_json_lines, set_database_reachable, smtp_config, temp_dir},
    mailbox::SmtpSink,
};

async fn post(url: String, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Signs in against a server process, reading the code from `sink`.
async fn sign_in(server: &ServerProcess, sink: &SmtpSink, email: &str) -> Value {
    let (status, _) = post(server.url("/auth/send-code"), json!({ "email": email })).await;
    assert_eq!(status, 200);
    let code = sink.last_to(email).code();
    let (status, pair) = post(server.url("/auth/verify-code"), json!({ "email": email, "code": code })).await;
    assert_eq!(status, 200, "{pair}");
    pair
}

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

/// Reads the log (stderr) of a server process line by line, as it is written.
fn follow_log(server: &mut ServerProcess) -> mpsc::UnboundedReceiver<String> {
    let stderr = server.child.stderr.take().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        // Reads to the end even when nobody listens, so the server never blocks on a full pipe.
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits (up to 10 s) for a line of `log` containing `needle`; `seen` keeps every line read.
async fn wait_for_line(log: &mut mpsc::UnboundedReceiver<String>, seen: &mut Vec<String>, needle: &str) {
    let wait = async {
        while let Some(line) = log.recv().await {
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return true;
            }
        }
        false
    };
    let found = tokio::time::timeout(Duration::from_secs(10), wait).await;
    assert!(
        matches!(found, Ok(true)),
        "the server did not log {needle:?}: {seen:#?}"
    );
}

/// How long the test's SMTP server holds every message: the time a request
/// stays in flight after its code is stored.
const SEND_DELAY: Duration = Duration::from_secs(2);

/// `sesame serve` gets `signal` (`TERM` or `INT`) while ten requests are in
/// flight: it refuses new connections at once (a connection error, not a
/// timeout) while it still runs, finishes the ten, drains the JSON Lines file
/// and exits 0.
async fn stop_under_load(opts: PgPoolOptions, db: PgConnectOptions, signal: &str) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    sink.delay(SEND_DELAY); // every send is in flight for a while
    let dir = temp_dir("shutdown");
    let file = dir.join("metrics.jsonl");
    let mut server = ServerProcess::start(
        &db,
        &dir,
        &[
            ("EMAIL_PROVIDER", "smtp"),
            ("SMTP_URL", &sink.url()),
            ("METRICS_FORMAT", "file"),
            ("METRICS_FILE_PATH", file.to_str().unwrap()),
            ("RATE_LIMIT_ENABLED", "false"),
        ],
    );
    let mut log = follow_log(&mut server);
    let mut seen = Vec::new();
    server.wait_ready().await;

    let mut in_flight = JoinSet::new();
    for i in 0..10 {
        in_flight.spawn(post(
            server.url("/auth/send-code"),
            json!({ "email": format!("u{i}@example.com") }),
        ));
    }
    // In flight means inside the handler (the code is stored, the send is delayed), not
    // merely spawned: on a loaded machine some requests may not have reached the server yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let generated: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'otp.generated'")
            .fetch_one(&pool)
            .await
            .unwrap();
        if generated == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{generated} of 10 requests reached the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = server.url("/health");
    let mut child = server.child;
    let signalled = std::process::Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    // Synchronised on the server's log, not a sleep: sesame says it is
    // stopping, then poem drops its listener and says it waits for the
    // connections still open (the ten in flight).
    wait_for_line(&mut log, &mut seen, "shutdown signal received").await;
    wait_for_line(&mut log, &mut seen, "wait for all connections to close").await;
    let refused = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    let delivered_by_then = sink.messages().len();
    let running = child.try_wait().unwrap().is_none();
    match refused {
        Err(e) if e.is_connect() => {}
        other => panic!("SIG{signal}: a new connection must be refused, not answered or left to time out: {other:?}"),
    }
    assert!(
        running,
        "SIG{signal}: refused while still stopping, not because it had exited"
    );
    assert!(
        delivered_by_then < 10,
        "SIG{signal}: requests were still in flight when the new one was refused"
    );

    let answers = in_flight.join_all().await;
    assert!(
        answers.iter().all(|(s, _)| *s == 200),
        "SIG{signal}: no request was cut: {answers:?}"
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "SIG{signal}: sesame did not stop within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    while let Ok(line) = log.try_recv() {
        seen.push(line);
    }
    assert!(status.success(), "SIG{signal}: exit 0, not {status}: {seen:#?}");
    assert_eq!(sink.messages().len(), 10);
    let sent = read_json_lines(&file)
        .iter()
        .filter(|l| l["event"] == "otp.sent")
        .count();
    assert_eq!(sent, 10, "SIG{signal}: the JSON Lines writer was drained");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'otp.sent'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 10);
}

#[sqlx::test]
async fn sigterm_under_load_finishes_in_flight_requests_and_drains_the_file(opts: PgPoolOptions, db: PgConnectOptions) {
    stop_under_load(opts, db, "TERM").await;
}

/// Ctrl-C in a terminal: the same graceful stop as SIGTERM.
#[sqlx::test]
async fn sigint_under_load_finishes_in_flight_requests_and_drains_the_file(opts: PgPoolOptions, db: PgConnectOptions) {
    stop_under_load(opts, db, "INT").await;
}

/// How many clients present one refresh token at once in a race round.
const RACERS: usize = 6;

/// Presents `token` from [`RACERS`] clients at once, spread over `urls`, and
/// returns their answers. So that they really race, the test holds the
/// session's row lock (the one every refresh of a session takes) until all of
/// them are queued behind it, then lets them go together.
async fn race(pool: &PgPool, urls: &[String], token: &str) -> Vec<(u16, Value)> {
    let mut hold = pool.begin().await.unwrap();
    let holder: i32 = sqlx::query_scalar(
        "SELECT pg_backend_pid() FROM sessions
         WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = sha256(convert_to($1, 'UTF8')))
         FOR UPDATE",
    )
    .bind(token)
    .fetch_one(&mut *hold)
    .await
    .unwrap();
    let mut racers = JoinSet::new();
    for i in 0..RACERS {
        racers.spawn(post(
            format!("{}/auth/refresh", urls[i % urls.len()]),
            json!({ "refreshToken": token }),
        ));
    }
    // Queued: blocked by the holder, directly or behind another racer.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let queued: i64 = sqlx::query_scalar(
            "WITH RECURSIVE blocked(pid) AS (
                 SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))
                 UNION
                 SELECT a.pid FROM pg_stat_activity a JOIN blocked b ON b.pid = ANY(pg_blocking_pids(a.pid))
             ) SELECT count(*) FROM blocked",
        )
        .bind(holder)
        .fetch_one(pool)
        .await
        .unwrap();
        if queued == RACERS as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{queued} of {RACERS} racers reached the session lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hold.rollback().await.unwrap();
    racers.join_all().await
}

/// Asserts that no session has more than one live refresh token.
async fn assert_no_session_has_two_live_tokens(pool: &PgPool, when: &str) {
    let sessions: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT session_id FROM refresh_tokens WHERE rotated_at IS NULL AND revoked_at IS NULL
         GROUP BY session_id HAVING count(*) > 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        sessions.is_empty(),
        "{when}: sessions with two live tokens: {sessions:?}"
    );
}

/// Whether `token` is the one live refresh token of its session.
async fn is_the_live_token(pool: &PgPool, token: &str) -> bool {
    sqlx::query_scalar(
        "SELECT rotated_at IS NULL AND revoked_at IS NULL FROM refresh_tokens
         WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
    )
    .bind(token)
    .fetch_optional(pool)
    .await
    .unwrap()
    .unwrap_or(false)
}

/// Races one session across `urls` for `rounds` rounds with the default
/// `REFRESH_REUSE_INTERVAL`: every racer of a round gets the same child, which
/// is the session's one live token and the token of the next round.
async fn race_one_session(pool: &PgPool, urls: &[String], first: &str, rounds: usize) {
    let mut token = first.to_owned();
    for round in 0..rounds {
        let answers = race(pool, urls, &token).await;
        assert_no_session_has_two_live_tokens(pool, &format!("round {round}")).await;
        assert!(
            answers.iter().all(|(s, _)| *s == 200),
            "round {round}: every racing presenter is answered: {answers:?}"
        );
        let child = answers[0].1["refreshToken"].as_str().unwrap().to_owned();
        assert!(
            answers.iter().all(|(_, b)| b["refreshToken"] == child.as_str()),
            "round {round}: all with the same child: {answers:?}"
        );
        assert!(
            is_the_live_token(pool, &child).await,
            "round {round}: the child is the live token"
        );
        token = child;
    }
}

#[sqlx::test]
async fn three_instances_under_mixed_traffic_behave_as_one(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db.clone(), &sink);
    config.rate_limits.enabled = true;
    config.rate_limits.send_per_ip_per_hour = 1000;
    config.rate_limits.verify_per_ip_per_minute = 1000;
    config.rate_limits.refresh_per_ip_per_minute = 1000;
    let apps = [
        TestApp::spawn_with(config.clone()).await,
        TestApp::spawn_with(config.clone()).await,
        TestApp::spawn_with(config.clone()).await,
    ];
    let urls: Vec<String> = apps.iter().map(|a| a.url("")).collect();
    let mut pairs = Vec::new();
    for i in 0..6 {
        pairs.push(apps[i % 3].sign_in(&sink, &format!("user{i}@example.com")).await);
    }
    let raced = apps[0].sign_in(&sink, "raced@example.com").await;

    let mut traffic = JoinSet::new();
    for (i, pair) in pairs.iter().enumerate() {
        let urls = urls.clone();
        let first = pair["refreshToken"].as_str().unwrap().to_owned();
        traffic.spawn(async move {
            // A chain of refreshes hopping between instances...
            let mut token = first.clone();
            for step in 0..5 {
                let (status, next) = post(
                    format!("{}/auth/refresh", urls[(i + step) % 3]),
                    json!({ "refreshToken": token }),
                )
                .await;
                assert_eq!(status, 200, "{next}");
                token = next["refreshToken"].as_str().unwrap().to_owned();
            }
            // ...then half of the users replay their first token: a theft.
            if i % 2 == 0 {
                let (status, _) = post(
                    format!("{}/auth/refresh", urls[i % 3]),
                    json!({ "refreshToken": first }),
                )
                .await;
                assert_eq!(status, 401);
            }
            // And everyone sends codes to one shared address from every instance.
            let (status, _) = post(
                format!("{}/auth/send-code", urls[i % 3]),
                json!({ "email": "shared@example.com" }),
            )
            .await;
            (i, status, token)
        });
    }
    // Meanwhile one session is raced across the instances, round after round,
    // and every session is checked after each round.
    race_one_session(&pool, &urls, raced["refreshToken"].as_str().unwrap(), 5).await;
    let results = traffic.join_all().await;
    let sends_ok = results.iter().filter(|(_, s, _)| *s == 200).count();
    assert_eq!(
        sends_ok, 1,
        "one send per address per minute, across instances: {results:?}"
    );
    assert_eq!(sink.to("shared@example.com").len(), 1, "one email");

    for (i, _, token) in &results {
        let resp = apps[0].refresh(token).await;
        let expected = if i % 2 == 0 { 401 } else { 200 };
        assert_eq!(resp.status, expected, "user {i}: reuse ends the session; others go on");
    }
    assert_no_session_has_two_live_tokens(&pool, "after the traffic").await;
    let reuse: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'token.reuse_detected'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(reuse, 3);

    // With REFRESH_REUSE_INTERVAL=0, racing presenters are reuse: one wins,
    // the next ends the session. A fresh session per round.
    config.tokens.refresh_reuse_interval = Duration::ZERO;
    let strict = [
        TestApp::spawn_with(config.clone()).await,
        TestApp::spawn_with(config.clone()).await,
        TestApp::spawn_with(config).await,
    ];
    let strict_urls: Vec<String> = strict.iter().map(|a| a.url("")).collect();
    for (round, app) in strict.iter().enumerate() {
        let pair = app.sign_in(&sink, &format!("strict{round}@example.com")).await;
        let answers = race(&pool, &strict_urls, pair["refreshToken"].as_str().unwrap()).await;
        assert_no_session_has_two_live_tokens(&pool, &format!("strict round {round}")).await;
        let ok = answers.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(ok, 1, "strict round {round}: exactly one racer wins: {answers:?}");
        assert!(
            answers
                .iter()
                .all(|(s, b)| *s == 200 || (*s == 401 && b["code"] == "invalid_refresh_token")),
            "strict round {round}: the others are refused: {answers:?}"
        );
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NULL AND revoked_at IS NULL
             AND session_id = (SELECT session_id FROM refresh_tokens WHERE token_hash = sha256(convert_to($1, 'UTF8')))",
        )
        .bind(pair["refreshToken"].as_str().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(live, 0, "strict round {round}: the reuse ended the session");
    }

    // Every instance runs the cleanup job at once: none fails, at least one gets the
    // lock (that only one holds it at a time is audit::cleanup_runs_on_one_instance_at_a_time).
    let mut cleanups = JoinSet::new();
    for app in &apps {
        let state = app.state.clone();
        cleanups.spawn(async move { sesame::cleanup::run_once(&state).await });
    }
    let reports = cleanups.join_all().await;
    assert!(reports.iter().all(Result::is_ok), "{reports:?}");
    assert!(reports.iter().any(|r| matches!(r, Ok(Some(_)))), "{reports:?}");
}

/// The known `JWT_SECRET` of the hygiene test's runs (it also keys the
/// refresh-token chain and the code pepper, in both runs).
const HYGIENE_JWT_SECRET: &str = "hygiene-jwt-secret-9f3c2a71e5b84d06";

/// The `alg` in the header of access token `jwt`.
fn alg_of(jwt: &str) -> String {
    use base64::Engine as _;
    let header = jwt.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap();
    serde_json::from_slice::<Value>(&header).unwrap()["alg"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// One run of the hygiene test: a server at debug level with JSON logs, the
/// console and the file, with `vars` added, through every flow that handles a
/// secret; then none of those secrets, nor `key_secrets`, may appear in its
/// logs (stdout and stderr), the JSON Lines file or the audit table.
async fn no_secret_reaches_the_logs(
    pool: &PgPool,
    db: &PgConnectOptions,
    run: &str,
    alg: &str,
    vars: &[(&str, &str)],
    key_secrets: &[String],
) {
    let sink = SmtpSink::start().await;
    let dir = temp_dir("hygiene");
    let file = dir.join("metrics.jsonl");
    let mut all_vars = vec![
        ("EMAIL_PROVIDER", "smtp"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "debug"),
        ("METRICS_FORMAT", "both"),
        ("JWT_SECRET", HYGIENE_JWT_SECRET),
    ];
    all_vars.extend_from_slice(vars);
    let (smtp_url, file_path) = (sink.url(), file.to_str().unwrap().to_owned());
    all_vars.extend([("SMTP_URL", &*smtp_url), ("METRICS_FILE_PATH", &*file_path)]);
    let server = ServerProcess::start(db, &dir, &all_vars);
    server.wait_ready().await;
    let mut secrets: Vec<String> = vec![HYGIENE_JWT_SECRET.to_owned()];
    secrets.extend_from_slice(key_secrets);

    let (ada, bob) = (format!("ada-{run}@example.com"), format!("bob-{run}@example.com"));
    let pair = sign_in(&server, &sink, &ada).await;
    assert_eq!(
        alg_of(pair["token"].as_str().unwrap()),
        alg,
        "{run}: signed with the key under test"
    );
    secrets.push(sink.last_to(&ada).code());
    let (status, _) = post(server.url("/auth/send-magic-link"), json!({ "email": bob })).await;
    assert_eq!(status, 200);
    let link_token = crate::mailbox::token_of(&sink.last_to(&bob).link());
    // The page a link opens carries the token in its query string.
    let page = reqwest::get(server.url(&format!("/auth/verify-magic-link?token={link_token}")))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text().await.unwrap().contains(&link_token),
        "{run}: the page holds the real token"
    );
    let (status, link_pair) = post(server.url("/auth/verify-magic-link"), json!({ "token": link_token })).await;
    assert_eq!(status, 200, "{link_pair}");
    secrets.push(link_token);
    let (status, refreshed) = post(
        server.url("/auth/refresh"),
        json!({ "refreshToken": pair["refreshToken"] }),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let me = reqwest::Client::new()
        .get(server.url("/auth/me"))
        .bearer_auth(refreshed["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let (status, _) = post(
        server.url("/auth/logout"),
        json!({ "refreshToken": refreshed["refreshToken"] }),
    )
    .await;
    assert_eq!(status, 200);
    for p in [&pair, &link_pair, &refreshed] {
        for key in ["token", "refreshToken"] {
            secrets.push(p[key].as_str().unwrap().to_owned());
        }
    }
    let out = server.terminate().await;
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(logs.lines().count() > 20, "{run}: debug logs were written");
    assert!(
        logs.contains("/auth/verify-magic-link"),
        "{run}: the page request is in the logs"
    );
    let jsonl = std::fs::read_to_string(&file).unwrap();
    let table: String = sqlx::query_scalar("SELECT string_agg(audit_events::text, E'\\n') FROM audit_events")
        .fetch_one(pool)
        .await
        .unwrap();
    for secret in &secrets {
        assert!(secret.len() >= 6);
        for (what, text) in [("logs", &logs), ("JSON Lines file", &jsonl), ("audit table", &table)] {
            assert!(
                !text.contains(secret.as_str()),
                "{run}: a secret reached the {what}: {secret}"
            );
        }
    }
}

#[sqlx::test]
async fn no_code_link_token_secret_or_key_reaches_the_logs_the_file_or_the_table(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    use base64::Engine as _;
    let pool = opts.connect_with(db.clone()).await.unwrap();
    no_secret_reaches_the_logs(&pool, &db, "hs256", "HS256", &[], &[]).await;

    // EdDSA, with a key made as the README says.
    let keys = temp_dir("hygiene-keys");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(["keys", "generate", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let private_key = keys.join("jwt-ed25519.pem");
    let pem = std::fs::read_to_string(&private_key).unwrap();
    let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body.concat()).unwrap();
    // PKCS#8 Ed25519: 14 bytes of header, then OCTET STRING (04 20) holding the 32-byte seed.
    assert_eq!(der[14..16], [0x04, 0x20], "a PKCS#8 Ed25519 private key");
    let seed = &der[16..48];
    let key_secrets = [
        // The PEM body, whole and its first line (which holds the seed; the
        // rest is the public key), and the seed as a JWK would carry it (`d`)
        // and in hex.
        body.concat(),
        body[0].to_owned(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed),
        seed.iter().map(|b| format!("{b:02x}")).collect(),
    ];
    let private_key = private_key.to_str().unwrap().to_owned();
    no_secret_reaches_the_logs(
        &pool,
        &db,
        "eddsa",
        "EdDSA",
        &[("JWT_PRIVATE_KEY_FILE", &private_key)],
        &key_secrets,
    )
    .await;
}
