//! sesame's load generator: virtual users that sign in as people do (reading
//! their codes from an SMTP server inside this process), then chain refreshes,
//! call `/auth/me`, sign in again, and log out.
//!
//! Stock tools replay one request; rotation makes every refresh token single
//! use, so each virtual user here carries its own chain.
//!
//! ```text
//! cargo run --release --example loadgen -- --url http://127.0.0.1:3001 --smtp-port 2525 \
//!     --scenario refresh --concurrency 16 --duration 20 --max-ops 200000 --json out.json
//! ```
//! Scenarios: `refresh`, `me`, `login-code`, `login-link`, `mixed`, and
//! `signup-closed`: against a server with `ALLOW_SIGNUP=false`, each virtual user
//! alternates `POST /auth/send-code` to its account (`known<i>@bench.test`, which
//! must exist: `bench/signup-closed.sh` inserts them) and to a fresh address
//! without one, and the report gives the latency of each kind apart. The server
//! must send email to `smtp://127.0.0.1:<smtp-port>?tls=none` and should run with
//! rate limits off (the load comes from one IP). Loopback only; every run is
//! bounded by `--duration` seconds and `--max-ops` operations.
//!
//! `--measure-url`: the virtual users sign in at `--url` but send the measured
//! requests (`refresh`, `me`) there: how `bench/run.sh` drives the floor of the
//! stack (`bench/floor.rs`) on sesame's database.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::Notify,
};

/// A received message: its sequence number, the code (from the subject) and the link.
type Mail = (u64, String, Option<String>);

/// The latest message per recipient.
#[derive(Default)]
struct Inbox {
    latest: Mutex<HashMap<String, Mail>>,
    arrived: Notify,
    counter: AtomicU64,
}

impl Inbox {
    /// Waits for a message to `to` newer than `after`; returns (seq, code, link).
    async fn wait(&self, to: &str, after: u64) -> anyhow::Result<Mail> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.arrived.notified();
            if let Some(m) = self.latest.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.get(to)
                && m.0 > after
            {
                return Ok(m.clone());
            }
            if Instant::now() > deadline {
                bail!("no email to {to} within 10 s");
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    fn seq(&self) -> u64 {
        self.counter.load(Ordering::SeqCst)
    }
}

async fn smtp_server(listener: TcpListener, inbox: Arc<Inbox>) {
    while let Ok((stream, _)) = listener.accept().await {
        let inbox = inbox.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read);
            let mut line = String::new();
            let mut to = String::new();
            if write.write_all(b"220 loadgen ESMTP\r\n").await.is_err() {
                return;
            }
            loop {
                line.clear();
                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let upper = line.trim_end().to_ascii_uppercase();
                let reply: &[u8] = if upper.starts_with("EHLO") {
                    b"250-loadgen\r\n250 8BITMIME\r\n"
                } else if upper.starts_with("RCPT TO:") {
                    to = line
                        .split('<')
                        .nth(1)
                        .and_then(|r| r.split('>').next())
                        .unwrap_or("")
                        .to_owned();
                    b"250 OK\r\n"
                } else if upper == "DATA" {
                    let _ = write.write_all(b"354 go\r\n").await;
                    let mut raw = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == ".\r\n" {
                            break;
                        }
                        raw.push_str(&line);
                    }
                    let code = raw
                        .lines()
                        .find_map(|l| l.strip_prefix("Subject: "))
                        .and_then(|subject| subject.rsplit_once("code: "))
                        .map(|(_, code)| code.to_owned())
                        .unwrap_or_default();
                    let unfolded = raw.replace("=\r\n", "").replace("=3D", "=");
                    let link = unfolded
                        .split_whitespace()
                        .find(|w| w.starts_with("http") && w.contains("token="))
                        .map(str::to_owned);
                    let seq = inbox.counter.fetch_add(1, Ordering::SeqCst) + 1;
                    if let Ok(mut latest) = inbox.latest.lock() {
                        latest.insert(to.clone(), (seq, code, link));
                    }
                    inbox.arrived.notify_waiters();
                    b"250 OK\r\n"
                } else if upper.starts_with("QUIT") {
                    let _ = write.write_all(b"221 bye\r\n").await;
                    return;
                } else {
                    b"250 OK\r\n"
                };
                if write.write_all(reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    Refresh,
    Me,
    LoginCode,
    LoginLink,
    Mixed,
    SignupClosed,
}

struct Args {
    url: String,
    measure_url: Option<String>,
    smtp_port: u16,
    scenario: Scenario,
    concurrency: usize,
    duration: Duration,
    max_ops: u64,
    json: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        url: "http://127.0.0.1:3001".to_owned(),
        measure_url: None,
        smtp_port: 2525,
        scenario: Scenario::Refresh,
        concurrency: 16,
        duration: Duration::from_secs(20),
        max_ops: 1_000_000,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--measure-url" => a.measure_url = Some(value()?),
            "--smtp-port" => a.smtp_port = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--duration" => a.duration = Duration::from_secs(value()?.parse()?),
            "--max-ops" => a.max_ops = value()?.parse()?,
            "--json" => a.json = Some(value()?),
            "--scenario" => {
                a.scenario = match value()?.as_str() {
                    "refresh" => Scenario::Refresh,
                    "me" => Scenario::Me,
                    "login-code" => Scenario::LoginCode,
                    "login-link" => Scenario::LoginLink,
                    "mixed" => Scenario::Mixed,
                    "signup-closed" => Scenario::SignupClosed,
                    other => bail!("unknown scenario {other}"),
                }
            }
            other => bail!("unknown flag {other}"),
        }
    }
    for url in std::iter::once(&a.url).chain(&a.measure_url) {
        let host = url::Url::parse(url)?.host_str().unwrap_or_default().to_owned();
        if host != "127.0.0.1" && host != "localhost" && host != "[::1]" {
            bail!("loopback only: --url and --measure-url must be http://127.0.0.1:<port>");
        }
    }
    if a.measure_url.is_some() && !matches!(a.scenario, Scenario::Refresh | Scenario::Me) {
        bail!("--measure-url measures refresh or me only");
    }
    Ok(a)
}

/// One virtual user.
struct User {
    email: String,
    token: String,
    refresh: String,
}

struct Ctx {
    http: reqwest::Client,
    url: String,
    /// Where `refresh` and `me` go (`--measure-url`, else `url`).
    measure_url: String,
    inbox: Arc<Inbox>,
    latencies: Mutex<Vec<Duration>>,
    errors: Mutex<HashMap<String, u64>>,
}

impl Ctx {
    /// POSTs JSON, records the latency, and returns the body of a 200.
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let (took, body) = self.timed_post(path, body).await?;
        self.latency(took);
        body
    }

    /// POSTs JSON; returns how long the answer took and the body of a 200.
    async fn timed_post(&self, path: &str, body: Value) -> anyhow::Result<(Duration, anyhow::Result<Value>)> {
        self.timed_post_to(&self.url, path, body).await
    }

    /// [`Ctx::timed_post`] to the server at `url`.
    async fn timed_post_to(
        &self,
        url: &str,
        path: &str,
        body: Value,
    ) -> anyhow::Result<(Duration, anyhow::Result<Value>)> {
        let started = Instant::now();
        let resp = self.http.post(format!("{url}{path}")).json(&body).send().await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let took = started.elapsed();
        if !status.is_success() {
            return Ok((took, Err(anyhow::anyhow!("{path} {}", status.as_u16()))));
        }
        Ok((took, Ok(body)))
    }

    fn latency(&self, d: Duration) {
        if let Ok(mut l) = self.latencies.lock() {
            l.push(d);
        }
    }

    fn error(&self, e: &anyhow::Error) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(e.to_string()).or_default() += 1;
        }
    }

    async fn login_code(&self, email: &str) -> anyhow::Result<User> {
        let after = self.inbox.seq();
        self.post("/auth/send-code", json!({ "email": email })).await?;
        let (_, code, _) = self.inbox.wait(email, after).await?;
        let pair = self
            .post("/auth/verify-code", json!({ "email": email, "code": code }))
            .await?;
        user(email, &pair)
    }

    async fn login_link(&self, email: &str) -> anyhow::Result<User> {
        let after = self.inbox.seq();
        self.post("/auth/send-magic-link", json!({ "email": email })).await?;
        let (_, _, link) = self.inbox.wait(email, after).await?;
        let link = link.context("no link in the email")?;
        let token = url::Url::parse(&link)?
            .query_pairs()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .context("no token in the link")?;
        let pair = self.post("/auth/verify-magic-link", json!({ "token": token })).await?;
        user(email, &pair)
    }

    async fn refresh(&self, u: &mut User) -> anyhow::Result<()> {
        let (took, pair) = self
            .timed_post_to(&self.measure_url, "/auth/refresh", json!({ "refreshToken": u.refresh }))
            .await?;
        self.latency(took);
        let fresh = user(&u.email, &pair?)?;
        if self.measure_url == self.url {
            *u = fresh;
        } else {
            // The floor signs no access token: keep the one signed in with.
            u.refresh = fresh.refresh;
        }
        Ok(())
    }

    async fn me(&self, u: &User) -> anyhow::Result<()> {
        let started = Instant::now();
        let resp = self
            .http
            .get(format!("{}/auth/me", self.measure_url))
            .bearer_auth(&u.token)
            .send()
            .await?;
        let status = resp.status();
        let _ = resp.bytes().await;
        self.latency(started.elapsed());
        if !status.is_success() {
            bail!("/auth/me {}", status.as_u16());
        }
        Ok(())
    }

    async fn logout(&self, u: &User) -> anyhow::Result<()> {
        self.post("/auth/logout", json!({ "refreshToken": u.refresh }))
            .await
            .map(|_| ())
    }
}

fn user(email: &str, pair: &Value) -> anyhow::Result<User> {
    Ok(User {
        email: email.to_owned(),
        token: pair["token"].as_str().context("no token")?.to_owned(),
        refresh: pair["refreshToken"].as_str().context("no refreshToken")?.to_owned(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sesame::install_crypto_provider();
    let a = args()?;
    let inbox = Arc::new(Inbox::default());
    let listener = TcpListener::bind(("127.0.0.1", a.smtp_port))
        .await
        .with_context(|| format!("binding the SMTP sink on 127.0.0.1:{}", a.smtp_port))?;
    tokio::spawn(smtp_server(listener, inbox.clone()));
    let ctx = Arc::new(Ctx {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(a.concurrency)
            .build()?,
        url: a.url.trim_end_matches('/').to_owned(),
        measure_url: a
            .measure_url
            .as_deref()
            .unwrap_or(&a.url)
            .trim_end_matches('/')
            .to_owned(),
        inbox,
        latencies: Mutex::new(Vec::new()),
        errors: Mutex::new(HashMap::new()),
    });

    if a.scenario == Scenario::SignupClosed {
        return report(&signup_closed(ctx, &a).await?, a.json.as_deref());
    }

    // Every virtual user signs in first (not measured).
    let mut users = Vec::new();
    for i in 0..a.concurrency {
        users.push(ctx.login_code(&format!("vu{i}@bench.test")).await?);
    }
    ctx.latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clear();

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut u) in users.into_iter().enumerate() {
        let (ctx, stop, ops, scenario, max_ops) = (ctx.clone(), stop.clone(), ops.clone(), a.scenario, a.max_ops);
        tasks.spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && ops.fetch_add(1, Ordering::Relaxed) < max_ops {
                n += 1;
                let pick = match scenario {
                    Scenario::Mixed => match n % 50 {
                        0 => Scenario::LoginLink,
                        1..=4 => Scenario::LoginCode,
                        5..=14 => Scenario::Refresh,
                        _ => Scenario::Me,
                    },
                    s => s,
                };
                let result = match pick {
                    Scenario::Refresh => ctx.refresh(&mut u).await,
                    Scenario::Me => ctx.me(&u).await,
                    Scenario::LoginCode | Scenario::LoginLink => {
                        let email = format!("vu{i}-{n}@bench.test");
                        let fresh = if pick == Scenario::LoginCode {
                            ctx.login_code(&email).await
                        } else {
                            ctx.login_link(&email).await
                        };
                        match fresh {
                            // In the mixed blend, people also log out.
                            Ok(fresh) if scenario == Scenario::Mixed => ctx.logout(&fresh).await,
                            Ok(_) => Ok(()),
                            Err(e) => Err(e),
                        }
                    }
                    Scenario::Mixed | Scenario::SignupClosed => Ok(()),
                };
                if let Err(e) = result {
                    ctx.error(&e);
                    // A broken chain cannot go on: sign in again.
                    if pick == Scenario::Refresh
                        && let Ok(fresh) = ctx.login_code(&u.email).await
                    {
                        u = fresh;
                    }
                }
            }
        });
    }
    run_for(&mut tasks, a.duration, &stop).await;
    let elapsed = started.elapsed();

    let lat = ctx.latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let done = ops.load(Ordering::Relaxed).min(a.max_ops);
    let errors = ctx.errors.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let report_ = json!({
        "scenario": format!("{:?}", a.scenario).to_lowercase(),
        "concurrency": a.concurrency,
        "seconds": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
        "operations": done,
        "operationsPerSecond": (done as f64 / elapsed.as_secs_f64()).round(),
        "requests": lat.len(),
        "requestsPerSecond": (lat.len() as f64 / elapsed.as_secs_f64()).round(),
        "latencyMs": percentiles(lat),
        "errors": errors.values().sum::<u64>(),
        "errorKinds": errors,
    });
    report(&report_, a.json.as_deref())
}

/// Prints the report and writes it to `json` if given.
fn report(report: &Value, json: Option<&str>) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(report)?);
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(report)?)?;
    }
    Ok(())
}

/// Lets `tasks` run until they finish or `duration` passes, then stops and awaits them.
async fn run_for(tasks: &mut tokio::task::JoinSet<()>, duration: Duration, stop: &AtomicBool) {
    let deadline = tokio::time::sleep(duration);
    tokio::pin!(deadline);
    tokio::select! {
        () = &mut deadline => stop.store(true, Ordering::Relaxed),
        () = async { while tasks.join_next().await.is_some() {} } => {}
    }
    while tasks.join_next().await.is_some() {}
}

/// p50, p90, p99 and max of `lat`, in milliseconds to two decimals.
fn percentiles(mut lat: Vec<Duration>) -> Value {
    lat.sort_unstable();
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    json!({ "p50": ms(pct(0.5)), "p90": ms(pct(0.9)), "p99": ms(pct(0.99)), "max": ms(lat.last().copied().unwrap_or_default()) })
}

/// `signup-closed`: each virtual user alternates `send-code` to an address
/// without an account (a fresh one each time) and to its own account, timing
/// the two kinds apart. Every answer must be the same 200, and no email may
/// reach an address without an account.
async fn signup_closed(ctx: Arc<Ctx>, a: &Args) -> anyhow::Result<Value> {
    let send = |email: String| json!({ "email": email });
    // Not measured: connections open, and the server learns how long a delivery takes.
    for i in 0..a.concurrency {
        for _ in 0..3 {
            ctx.post("/auth/send-code", send(format!("known{i}@bench.test")))
                .await?;
        }
    }
    let first = ctx
        .post("/auth/send-code", send("known0@bench.test".to_owned()))
        .await?;
    let known = Arc::new(Mutex::new(Vec::new()));
    let unknown = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..a.concurrency {
        let (ctx, stop, ops, max_ops) = (ctx.clone(), stop.clone(), ops.clone(), a.max_ops);
        let (known, unknown, first) = (known.clone(), unknown.clone(), first.clone());
        tasks.spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && ops.fetch_add(1, Ordering::Relaxed) < max_ops {
                n += 1;
                let member = n.is_multiple_of(2);
                let email = match member {
                    true => format!("known{i}@bench.test"),
                    false => format!("stranger{i}-{n}@bench.test"),
                };
                match ctx.timed_post("/auth/send-code", send(email)).await {
                    Ok((took, Ok(body))) => {
                        let kind = if member { &known } else { &unknown };
                        if let Ok(mut l) = kind.lock() {
                            l.push(took);
                        }
                        if body != first {
                            ctx.error(&anyhow::anyhow!("an answer differs from the first"));
                        }
                    }
                    Ok((_, Err(e))) | Err(e) => ctx.error(&e),
                }
            }
        });
    }
    run_for(&mut tasks, a.duration, &stop).await;
    let elapsed = started.elapsed();
    let strangers_mailed = ctx
        .inbox
        .latest
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .keys()
        .filter(|to| to.starts_with("stranger"))
        .count();
    for _ in 0..strangers_mailed {
        ctx.error(&anyhow::anyhow!("an address without an account was sent an email"));
    }
    let known = known.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let unknown = unknown.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let (known_n, unknown_n) = (known.len(), unknown.len());
    let (known, unknown) = (percentiles(known), percentiles(unknown));
    let diff = |p: &str| {
        let d = unknown[p].as_f64().unwrap_or_default() - known[p].as_f64().unwrap_or_default();
        (d * 100.0).round() / 100.0
    };
    let errors = ctx.errors.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    Ok(json!({
        "scenario": "signup-closed",
        "concurrency": a.concurrency,
        "seconds": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
        "requests": known_n + unknown_n,
        "requestsPerSecond": ((known_n + unknown_n) as f64 / elapsed.as_secs_f64()).round(),
        "known": { "requests": known_n, "latencyMs": known },
        "unknown": { "requests": unknown_n, "latencyMs": unknown },
        "unknownMinusKnownMs": { "p50": diff("p50"), "p90": diff("p90") },
        "errors": errors.values().sum::<u64>(),
        "errorKinds": errors,
    }))
}
