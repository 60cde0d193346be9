//! `sesame users …`: the admin API's operations for operators without HTTP
//! access, through the same functions ([`crate::admin`]) and audit events
//! (`metadata.actor = "cli"`).

use std::io::{BufRead as _, Write as _};

use anyhow::Context as _;
use clap::Subcommand;
use poem_openapi::types::ToJSON as _;
use uuid::Uuid;

use crate::{
    admin::{self, Actor},
    api::admin::users::AdminUserBody,
    audit::RequestContext,
    auth::{email_address::EmailAddress, ids::UserId},
    state::AppState,
    store::{self, users::UserFilter},
};

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Users, newest first: id, address, created, last sign-in, disabled, live sessions.
    List {
        /// Only the user of exactly this address.
        #[arg(long, conflicts_with = "query")]
        email: Option<String>,
        /// Only users whose address contains this text.
        #[arg(long)]
        query: Option<String>,
        /// At most this many users.
        #[arg(long, short = 'n', default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        /// Print one JSON object per line, as the admin API shows a user.
        #[arg(long)]
        json: bool,
    },
    /// A user (by id or address) and its live sessions.
    Show { user: String },
    /// Create a user without sending anything.
    Create { email: String },
    /// Disable a user: its sessions end at once and it cannot sign in.
    Disable { user: String },
    /// Enable a disabled user.
    Enable { user: String },
    /// A user's sessions.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Erase a user: its data is deleted, its audit rows pseudonymised.
    Delete {
        user: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SessionsCommand {
    /// End every session of a user (by id or address).
    Revoke { user: String },
}

/// Runs `sesame users …` against the database of `state`.
pub async fn run(state: &AppState, command: UsersCommand) -> anyhow::Result<()> {
    let ctx = RequestContext::none();
    let mut out = std::io::stdout().lock();
    match command {
        UsersCommand::List {
            email,
            query,
            limit,
            json,
        } => {
            let filter = UserFilter {
                email: email.as_deref(),
                query: query.as_deref(),
            };
            let now = state.clock.now();
            let users = state
                .db
                .run(async |conn| store::users::list(conn, &filter, None, limit, now).await)
                .await
                .context("listing users")?;
            for user in users {
                if json {
                    let body = AdminUserBody::from(user).to_json().unwrap_or_default();
                    writeln!(out, "{body}")?;
                } else {
                    writeln!(out, "{}", line(&user))?;
                }
            }
        }
        UsersCommand::Show { user } => {
            let id = resolve(state, &user).await?;
            let user = admin::find_user(state, id).await?;
            writeln!(out, "{}", line(&user))?;
            let (now, cap) = (state.clock.now(), state.session_cap());
            let sessions = state
                .db
                .run(async |conn| store::sessions::list_live(conn, id, now, cap).await)
                .await
                .context("listing the user's sessions")?;
            for s in sessions {
                let ip = s.ip.map(|n| n.ip().to_string()).unwrap_or_else(|| "-".to_owned());
                writeln!(
                    out,
                    "  session {}  started {}  last used {}  expires {}  ip {ip}  {}",
                    s.id,
                    crate::audit::timestamp(s.created_at),
                    crate::audit::timestamp(s.last_used_at),
                    crate::audit::timestamp(s.expires_at),
                    s.user_agent.as_deref().unwrap_or("-"),
                )?;
            }
        }
        UsersCommand::Create { email } => {
            let email = EmailAddress::parse(&email).context("not a valid email address")?;
            let user = admin::create_user(state, Actor::Cli, &ctx, &email).await?;
            writeln!(out, "created {}", line(&user))?;
        }
        UsersCommand::Disable { user } => {
            let user = admin::disable_user(state, Actor::Cli, &ctx, resolve(state, &user).await?).await?;
            writeln!(out, "disabled {}", line(&user))?;
        }
        UsersCommand::Enable { user } => {
            let user = admin::enable_user(state, Actor::Cli, &ctx, resolve(state, &user).await?).await?;
            writeln!(out, "enabled {}", line(&user))?;
        }
        UsersCommand::Sessions {
            command: SessionsCommand::Revoke { user },
        } => {
            let revoked = admin::revoke_sessions(state, Actor::Cli, &ctx, resolve(state, &user).await?).await?;
            writeln!(out, "revoked {revoked} sessions")?;
        }
        UsersCommand::Delete { user, yes } => {
            let id = resolve(state, &user).await?;
            let found = admin::find_user(state, id).await?;
            if !yes && !confirmed(&found.email)? {
                anyhow::bail!("not deleted: confirm by typing the address, or pass --yes");
            }
            let erased = admin::delete_user(state, Actor::Cli, &ctx, id).await?;
            writeln!(
                out,
                "deleted {id}: {} sessions, {} codes, {} links, {} rate-limit counters; {} audit rows pseudonymised",
                erased.sessions, erased.codes, erased.links, erased.rate_limits, erased.audit_rows
            )?;
        }
    }
    Ok(())
}

/// The user `user` names: a user id, or an address that has a user.
async fn resolve(state: &AppState, user: &str) -> anyhow::Result<UserId> {
    if let Ok(id) = user.parse::<Uuid>() {
        return Ok(UserId::from(id));
    }
    let email = EmailAddress::parse(user).context("expected a user id (UUID) or an email address")?;
    let id = state
        .db
        .run(async |conn| store::users::find_id_by_email(conn, &email).await)
        .await
        .context("looking the address up")?;
    id.context("no user has this address")
}

/// Asks on the terminal; true when the operator types the address.
fn confirmed(email: &str) -> anyhow::Result<bool> {
    eprint!("Erase {email} and all its data? Type the address to confirm: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim().eq_ignore_ascii_case(email))
}

/// One line about a user.
fn line(u: &store::users::UserRecord) -> String {
    let when = |t: Option<time::OffsetDateTime>| t.map_or_else(|| "-".to_owned(), crate::audit::timestamp);
    format!(
        "{}  {}  created {}  last sign-in {}  disabled {}  sessions {}",
        u.id,
        u.email,
        crate::audit::timestamp(u.created_at),
        when(u.last_login_at),
        when(u.disabled_at),
        u.sessions
    )
}
