//! sesame: a passwordless authentication server.
//!
//! A person proves they own an email address (a one-time code or a magic link)
//! and receives a short-lived JWT access token and a rotating, single-use
//! refresh token. Every step is an audit event in PostgreSQL.
//!
//! The contract (endpoints, rules, events, settings) is `docs/API.md`.
//!
//! Map of the crate, in the direction data flows:
//! - [`cli`]: the `sesame` subcommands (`serve`, `migrate`, `openapi`, `audit`, `cleanup`, `users`, `keys`).
//! - [`config`]: every setting, typed and validated at start-up.
//! - [`keys`]: reads the JWT key files at start-up into [`auth::jwt::JwtKeys`].
//! - [`app`]: [`app::Application`] (bind, serve, shut down) and the routes.
//! - [`state`]: [`state::AppState`], what handlers, jobs and commands share.
//! - [`admin`]: what operators do to users, shared by the admin API and `sesame users`.
//! - [`api`]: the HTTP operations, one module per flow, and the middleware.
//! - [`auth`]: the rules as pure functions (codes, links, refresh, session expiry),
//!   tokens and hashing; no HTTP, no SQL, no IO.
//! - [`hash_queue`]: the threads that hash one-time codes, with a bounded queue.
//! - [`email`]: the [`email::Mailer`] (console, SMTP, Resend) and the message templates.
//! - [`store`]: all SQL, as small functions that compose inside one transaction.
//! - [`audit`]: audit events: recorded in the transaction of their change, then fanned out.
//! - [`webhooks`]: the delivery worker POSTing selected events, signed, from the outbox
//!   rows written with them.
//! - [`rate_limit`]: per-address and per-client limits, counted in PostgreSQL.
//! - [`metrics`]: Prometheus counters and histograms for `/metrics`.
//! - [`error`]: the one error envelope every response uses, and every [`error::ErrorCode`].
//! - [`telemetry`]: the tracing subscriber.

pub mod admin;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cleanup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod email;
pub mod error;
pub mod hash_queue;
pub mod keys;
pub mod metrics;
pub mod rate_limit;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod webhooks;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Installs the process-wide TLS crypto provider (ring) that reqwest and
/// lettre use; idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
