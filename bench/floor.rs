//! The floor of sesame's stack (docs/BENCHMARKS.md): a bare server on the same
//! runtime (tokio), HTTP server (poem, without the OpenAPI layer), pool
//! (`sesame::state::pool`, the settings sesame reads) and SQL (the very store
//! functions sesame calls), doing nothing else. `sesame / floor` is then what
//! sesame's own work costs: routing and parsing through the OpenAPI layer,
//! middleware (request ids, tracing, metrics), signing and verifying JWTs,
//! deriving refresh tokens, building and fanning out audit events.
//!
//! - `GET /auth/me`: the bearer's `sub` and `sid` read from the token's payload
//!   (not verified: that is sesame's work), then `store::sessions::find_live_owner`.
//! - `POST /auth/refresh`: `store::sessions::rotate_live`, sesame's one-statement
//!   rotation, with its three audit rows (no webhook or file outbox rows, as
//!   sesame's tuned configuration) and a random child; the answer has a
//!   `refreshToken` and a placeholder `token`.
//!
//! Run it on sesame's database with sesame's environment (`DATABASE_URL`,
//! `DATABASE_MAX_CONNECTIONS`, `REFRESH_TOKEN_EXPIRY`, …) and `FLOOR_PORT`;
//! sign in through sesame and send the measured requests here (`loadgen
//! --measure-url`). Loopback only.
//!
//! ```text
//! cargo run --release --example floor
//! ```

use std::net::SocketAddr;

use anyhow::Context as _;
use base64::Engine as _;
use poem::{
    EndpointExt as _, Request, Route, Server, get, handler,
    http::StatusCode,
    listener::TcpListener,
    post,
    web::{Data, Json},
};
use serde_json::{Value, json};
use sesame::{
    audit::{AuditEvent, Event, RequestContext},
    auth::refresh::{RefreshToken, RotationSalt},
    config::Config,
    store::{self, webhooks::Routes},
};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Clone)]
struct Floor {
    db: PgPool,
    config: Config,
    routes: Routes,
}

/// 401 with no body: the floor's only refusal.
fn refused() -> poem::Error {
    poem::Error::from_status(StatusCode::UNAUTHORIZED)
}

/// A database error: 503.
fn unavailable(e: sqlx::Error) -> poem::Error {
    poem::Error::from_string(e.to_string(), StatusCode::SERVICE_UNAVAILABLE)
}

/// `sub` and `sid` of a JWT's payload, unverified.
fn subject(req: &Request) -> Option<(Uuid, Uuid)> {
    let token = req.header("authorization")?.strip_prefix("Bearer ")?;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let id = |k: &str| claims[k].as_str().and_then(|v| Uuid::parse_str(v).ok());
    Some((id("sub")?, id("sid")?))
}

#[handler]
async fn me(req: &Request, floor: Data<&Floor>) -> poem::Result<Json<Value>> {
    let (sub, sid) = subject(req).ok_or_else(refused)?;
    let mut conn = floor.db.acquire().await.map_err(unavailable)?;
    let cap = floor.config.tokens.session_max_age.map(sesame::clock::span);
    let user = store::sessions::find_live_owner(&mut conn, sid.into(), sub.into(), OffsetDateTime::now_utc(), cap)
        .await
        .map_err(unavailable)?
        .ok_or_else(refused)?;
    Ok(Json(json!({
        "success": true,
        "user": { "id": user.id.as_uuid(), "email": user.email, "createdAt": user.created_at.unix_timestamp() },
    })))
}

#[handler]
async fn refresh(req: &Request, body: Json<Value>, floor: Data<&Floor>) -> poem::Result<Json<Value>> {
    let presented = body["refreshToken"]
        .as_str()
        .and_then(RefreshToken::parse)
        .ok_or_else(refused)?;
    let now = OffsetDateTime::now_utc();
    let expires_at = now + sesame::clock::span(floor.config.tokens.refresh_token_expiry);
    let ctx = RequestContext {
        ip: req.remote_addr().as_socket_addr().map(SocketAddr::ip),
        user_agent: req.header("user-agent").map(str::to_owned),
        request_id: None,
    };
    let generated = |kind: &str, expires_in: &str| {
        AuditEvent::success(Event::TokenGenerated, &ctx, now)
            .meta("tokenType", kind)
            .meta("source", "refresh")
            .meta("expiresIn", expires_in)
    };
    let events = [
        AuditEvent::success(Event::TokenRefresh, &ctx, now),
        generated("access", "1h"),
        generated("refresh", "30d"),
    ];
    let child = RefreshToken::generate();
    let salt = RotationSalt::generate();
    let rotation = store::sessions::Rotation {
        token_hash: presented.hash(),
        parent_salt: &salt,
        child_hash: child.hash(),
        now,
        expires_at,
        begun_at_or_after: None,
        events: &events,
        routes: &floor.routes,
        file: None,
    };
    let mut conn = floor.db.acquire().await.map_err(unavailable)?;
    store::sessions::rotate_live(&mut conn, &rotation)
        .await
        .map_err(unavailable)?
        .ok_or_else(refused)?;
    Ok(Json(
        json!({ "success": true, "token": "floor", "refreshToken": child.expose() }),
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let db = sesame::store::pool::connect_lazy(&config.database)?;
    let port: u16 = std::env::var("FLOOR_PORT")
        .context("FLOOR_PORT: the port to listen on")?
        .parse()
        .context("FLOOR_PORT: a port number")?;
    let floor = Floor {
        db,
        config,
        routes: Routes {
            endpoints: Vec::new(),
            all_events: false,
            events: Vec::new(),
        },
    };
    let app = Route::new()
        .at("/auth/me", get(me))
        .at("/auth/refresh", post(refresh))
        .data(floor);
    Server::new(TcpListener::bind(("127.0.0.1", port)))
        .run(app)
        .await
        .context("serving")
}
