//! The `sesame` command line.

mod users;

use std::{io::Write as _, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::{
    app::{self, AppState, Application},
    audit::{self, report},
    cleanup,
    clock::Clock,
    config::{Config, MetricsFormat},
    store, telemetry,
};

#[derive(Parser, Debug)]
#[command(name = "sesame", version, about = "Passwordless authentication server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply pending migrations, then serve HTTP until SIGTERM or SIGINT.
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Print the OpenAPI document (YAML by default); needs no database.
    Openapi {
        /// Print the admin API's document (served on the admin listener) instead.
        #[arg(long)]
        admin: bool,
        /// Print YAML (the default).
        #[arg(long, conflicts_with = "json")]
        yaml: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask the audit trail (the audit_events table) questions.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Run the cleanup job once (expired codes, links, sessions, rate-limit windows, old audit rows).
    Cleanup,
    /// See and retry webhook deliveries (the webhook_deliveries table).
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Find, create, disable, enable and erase users; end their sessions.
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// Manage the Ed25519 keys that sign access tokens.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Write a new Ed25519 key pair: `<dir>/jwt-ed25519.pem` (private, mode 0600)
    /// and `<dir>/jwt-ed25519.pub.pem`; prints its kid. Set JWT_PRIVATE_KEY_FILE to use it.
    Generate {
        /// The folder to write the keys into (created if missing).
        #[arg(long, default_value = "keys")]
        out: std::path::PathBuf,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Events by outcome, login success rate, OTP failures by reason, refresh rate, reuse detections.
    Summary {
        /// The window to summarise, ending now (e.g. 1h, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = parse_window)]
        since: Duration,
    },
    /// The latest events, oldest first; filters combine.
    Tail {
        /// Only this event, e.g. auth.login.
        #[arg(long)]
        event: Option<String>,
        /// Only events of this user id.
        #[arg(long, conflicts_with = "email")]
        user: Option<Uuid>,
        /// Only events of this email address.
        #[arg(long)]
        email: Option<String>,
        /// How many of the latest events to show first.
        #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        /// Print JSON Lines records (as in METRICS_FILE_PATH) instead of text.
        #[arg(long)]
        json: bool,
        /// Keep printing new events as they are recorded, until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    /// Deliveries per status, the age of the oldest pending one, and the deliveries in one status.
    Status {
        /// Which deliveries to list: failed, pending or delivered.
        #[arg(long, default_value = "failed", value_parser = ["failed", "pending", "delivered"])]
        status: String,
        /// How many to list, oldest first.
        #[arg(long, short = 'n', default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
    /// Retry one delivery now. A failed one becomes pending again, at the end of its
    /// endpoint's queue, with a fresh WEBHOOK_MAX_AGE and the same webhook-id.
    Retry {
        /// The delivery's id (the first column of `sesame webhooks status`).
        id: i64,
    },
}

fn parse_window(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("expected a duration such as 1h, 24h or 7d, got {s:?}"))
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Openapi { admin, json, .. } => {
            let state = AppState::offline();
            let doc = if admin {
                crate::api::document::admin(&state)
            } else {
                crate::api::document::public(&state)
            };
            if json {
                println!("{}", crate::api::document::to_json(&doc));
            } else {
                print!("{}", crate::api::document::to_yaml(&doc));
            }
            Ok(())
        }
        Command::Migrate => {
            let config = load_config()?;
            migrate(&config).await
        }
        Command::Audit { command } => audit(command).await,
        Command::Keys {
            command: KeysCommand::Generate { out, force },
        } => generate_keys(&out, force),
        Command::Cleanup => cleanup_once().await,
        Command::Webhooks { command } => webhooks(command).await,
        Command::Users { command } => {
            let state = AppState::new(no_console(load_config()?), Clock::system())?;
            let done = users::run(&state, command).await;
            state.audit.close().await;
            done
        }
        Command::Serve => {
            let config = load_config()?;
            migrate(&config).await?;
            let app = Application::build(config, Clock::system()).await?;
            app.run_until_stopped(app::shutdown_signal()).await
        }
    }
}

/// `sesame audit summary|tail`.
async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    let state = AppState::new(quiet(load_config()?), Clock::system())?;
    match command {
        AuditCommand::Summary { since } => summary(&state, since).await,
        AuditCommand::Tail {
            event,
            user,
            email,
            limit,
            json,
            follow,
        } => {
            let filter = store::audit::Filter {
                event,
                user_id: user,
                email,
            };
            tail(&state, &filter, limit, json, follow).await
        }
    }
}

/// `sesame webhooks status|retry`.
async fn webhooks(command: WebhooksCommand) -> anyhow::Result<()> {
    use store::webhooks::Status;
    let state = AppState::new(quiet(load_config()?), Clock::system())?;
    let mut out = std::io::stdout().lock();
    match command {
        WebhooksCommand::Status { status, limit } => {
            let status = Status::parse(&status).context("unknown status")?;
            let (counts, oldest, rows) = state
                .db
                .run(async |conn| {
                    let counts = store::webhooks::counts(conn).await?;
                    let oldest = store::webhooks::oldest_pending(conn).await?;
                    let rows = store::webhooks::list(conn, Some(status), 0, limit).await?;
                    Ok((counts, oldest, rows))
                })
                .await
                .context("reading the deliveries")?;
            let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            writeln!(
                out,
                "deliveries: {}",
                if counts.is_empty() {
                    "none".to_owned()
                } else {
                    counts.join(", ")
                }
            )?;
            if let Some(oldest) = oldest {
                let age = (state.clock.now() - oldest).whole_seconds().max(0);
                writeln!(
                    out,
                    "oldest pending: {} old",
                    crate::config::compact_duration(Duration::from_secs(age.unsigned_abs()))
                )?;
            }
            writeln!(out, "\n{} deliveries (oldest first):", status.as_str())?;
            let table = report::Table {
                columns: ["id", "event", "endpoint", "attempts", "created", "last error"]
                    .map(str::to_owned)
                    .to_vec(),
                rows: rows
                    .iter()
                    .map(|d| {
                        vec![
                            report::Cell::Int(d.id),
                            report::Cell::Text(d.event.clone()),
                            report::Cell::Text(d.endpoint.clone()),
                            report::Cell::Int(d.attempts.into()),
                            report::Cell::Text(audit::timestamp(d.created_at)),
                            d.last_error.clone().map_or(report::Cell::Null, report::Cell::Text),
                        ]
                    })
                    .collect(),
            };
            write!(out, "{table}")?;
        }
        WebhooksCommand::Retry { id } => {
            let ctx = audit::RequestContext::none();
            match crate::admin::retry_delivery(&state, crate::admin::Actor::Cli, &ctx, id).await? {
                crate::admin::Retried::Due(_) => writeln!(out, "delivery {id} is due now")?,
                crate::admin::Retried::Unknown | crate::admin::Retried::Delivered => {
                    anyhow::bail!("no failed or pending delivery {id}")
                }
            }
        }
    }
    Ok(())
}

/// `sesame cleanup`: one run of the cleanup job, and what it deleted.
async fn cleanup_once() -> anyhow::Result<()> {
    let state = AppState::new(quiet(load_config()?), Clock::system())?;
    match cleanup::run_once(&state).await.context("running the cleanup job")? {
        Some(r) => println!(
            "deleted: {} expired codes, {} expired links, {} rate-limit windows, {} ended sessions, {} expired refresh tokens, {} audit events ({} month partitions dropped, {} of their outbox rows); {} audit partitions created",
            r.otp_codes,
            r.magic_links,
            r.rate_limits,
            r.sessions,
            r.refresh_tokens,
            r.audit_events,
            r.audit_partitions_dropped,
            r.audit_outbox_rows,
            r.audit_partitions_created
        ),
        None => println!("skipped: another instance is running the cleanup job"),
    }
    Ok(())
}

fn load_config() -> anyhow::Result<Config> {
    let config = Config::from_env()?;
    telemetry::init(config.server.log_format, &config.server.rust_log);
    Ok(config)
}

fn generate_keys(dir: &std::path::Path, force: bool) -> anyhow::Result<()> {
    let (private, public, kid) = crate::auth::jwt::generate_ed25519()?;
    let (private_path, public_path) = (dir.join("jwt-ed25519.pem"), dir.join("jwt-ed25519.pub.pem"));
    if !force && (private_path.exists() || public_path.exists()) {
        anyhow::bail!("{} already exists; pass --force to replace it", private_path.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&private_path)
        .and_then(|mut f| f.write_all(private.as_bytes()))
        .with_context(|| format!("writing {}", private_path.display()))?;
    std::fs::write(&public_path, public).with_context(|| format!("writing {}", public_path.display()))?;
    println!("kid: {kid}");
    println!("private key: {} (keep it secret)", private_path.display());
    println!("public key:  {}", public_path.display());
    println!("Use it with JWT_PRIVATE_KEY_FILE={}", private_path.display());
    println!(
        "When rotating: switch JWT_PRIVATE_KEY_FILE to the new key and list the old public key in \
         JWT_PREVIOUS_PUBLIC_KEY_FILES until its tokens expire (see docs/DEPLOYMENT.md)."
    );
    Ok(())
}

/// Commands that print their own output keep the audit file but not the
/// console lines, which would mix with it.
fn no_console(mut config: Config) -> Config {
    config.audit.metrics_format = match config.audit.metrics_format {
        MetricsFormat::Both | MetricsFormat::File => MetricsFormat::File,
        MetricsFormat::Console | MetricsFormat::None => MetricsFormat::None,
    };
    config
}

/// Commands that only read the trail write no console or file output of their own.
fn quiet(mut config: Config) -> Config {
    config.audit.metrics_enabled = false;
    config
}

async fn summary(state: &AppState, since: Duration) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "sesame audit summary, last {}", humantime::format_duration(since))?;
    for q in report::queries() {
        let table = state
            .db
            .run(async |conn| report::run(conn, &q, since).await)
            .await
            .with_context(|| format!("running query {}", q.name))?;
        writeln!(out, "\n{} — {}", q.name, q.description)?;
        write!(out, "{table}")?;
    }
    Ok(())
}

async fn tail(
    state: &AppState,
    filter: &store::audit::Filter,
    limit: i64,
    json: bool,
    follow: bool,
) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let color = !json && std::io::stdout().is_terminal();
    let (mut after, mut page) = (0, limit);
    loop {
        // A connection per page: following holds none between pages.
        let events = state
            .db
            .run(async |conn| store::audit::list(conn, filter, after, page).await)
            .await
            .context("reading the audit trail")?;
        // After the first page, follow everything new, not only the latest few.
        page = 10_000;
        let mut out = std::io::stdout().lock();
        for e in &events {
            if json {
                writeln!(out, "{}", audit::json_line(&e.event))?;
            } else {
                writeln!(
                    out,
                    "{} {}",
                    audit::timestamp(e.event.timestamp),
                    audit::console_line(&e.event, color)
                )?;
            }
            after = e.id;
        }
        out.flush()?;
        drop(out);
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let hosts = config.database.hosts()?;
    let mut conn = store::pool::connect_primary(&hosts, config.database.acquire_timeout)
        .await
        .context("connecting to the database at DATABASE_URL")?;
    // All pending migrations in one transaction under a transaction-scoped
    // lock (see store::migrations::lock): safe behind a transaction-mode pooler.
    let mut migrator = sqlx::migrate!();
    migrator.set_locking(false);
    let mut tx = store::db::begin_on(&mut conn, config.database.transaction_pooling()).await?;
    store::migrations::lock(&mut tx)
        .await
        .context("waiting for the migration lock")?;
    migrator.run(&mut *tx).await.context("applying migrations")?;
    tx.commit().await.context("committing the migrations")?;
    conn.close().await?;
    tracing::info!("migrations applied");
    Ok(())
}
