//! What operators do to users and webhook deliveries: the flows shared by the
//! admin API (`api::admin`) and the `sesame users` and `sesame webhooks`
//! commands. Each runs in one transaction with its audit event (`admin.*`,
//! `metadata.actor` naming where it came from); reads are not audited.

use time::OffsetDateTime;

use crate::{
    audit::{AuditEvent, AuditTx, Event, RequestContext},
    auth::{email_address::EmailAddress, ids::UserId},
    state::AppState,
    store::{self, sessions::RevokeReason},
};

/// Where an operator's change came from: `metadata.actor` of its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The admin API (`ADMIN_TOKEN`).
    Admin,
    /// The `sesame users` and `sesame webhooks` commands.
    Cli,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Cli => "cli",
        }
    }
}

/// Why an operator's change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no such user")]
    NotFound,
    #[error("a user with this address already exists")]
    UserExists,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The event of an operator's change to a user.
fn event(name: Event, actor: Actor, ctx: &RequestContext, now: OffsetDateTime) -> AuditEvent {
    AuditEvent::success(name, ctx, now).meta("actor", actor.as_str())
}

/// Creates a user for `email` without sending anything (imports, invitations).
/// Recorded as `user.created` (`metadata.method`: the actor, so the team's app
/// learns of every new user from one event, however it was made) and
/// `admin.user.created`, in the transaction of the user row.
pub async fn create_user(
    state: &AppState,
    actor: Actor,
    ctx: &RequestContext,
    email: &EmailAddress,
) -> Result<store::users::UserRecord, AdminError> {
    let now = state.clock.now();
    let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
    let id = store::users::create(&mut tx, email, now)
        .await?
        .ok_or(AdminError::UserExists)?;
    tx.record(
        AuditEvent::success(Event::UserCreated, ctx, now)
            .user(id)
            .email(email.as_str())
            .meta("method", actor.as_str()),
    )
    .await?;
    tx.record(
        event(Event::AdminUserCreated, actor, ctx, now)
            .user(id)
            .email(email.as_str()),
    )
    .await?;
    let user = store::users::find(&mut tx, id, now)
        .await?
        .ok_or(AdminError::NotFound)?;
    tx.commit().await?;
    Ok(user)
}

/// The user `id`, for reads.
pub async fn find_user(state: &AppState, id: UserId) -> Result<store::users::UserRecord, AdminError> {
    let now = state.clock.now();
    let user = state
        .db
        .run(async |conn| store::users::find(conn, id, now).await)
        .await?;
    user.ok_or(AdminError::NotFound)
}

/// Disables the user `id`: its sessions end at once (so its refresh tokens
/// and, at sesame, its access tokens stop working) and it cannot sign in
/// until enabled. Idempotent: `admin.user.disabled` is recorded only when it
/// was enabled.
pub async fn disable_user(
    state: &AppState,
    actor: Actor,
    ctx: &RequestContext,
    id: UserId,
) -> Result<store::users::UserRecord, AdminError> {
    let now = state.clock.now();
    let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
    let changed = store::users::set_disabled(&mut tx, id, true, now)
        .await?
        .ok_or(AdminError::NotFound)?;
    let revoked = store::sessions::revoke_all(&mut tx, id, RevokeReason::Disabled, now).await?;
    let user = store::users::find(&mut tx, id, now)
        .await?
        .ok_or(AdminError::NotFound)?;
    if changed || revoked > 0 {
        tx.record(
            event(Event::AdminUserDisabled, actor, ctx, now)
                .user(id)
                .email(&user.email)
                .meta("revoked", revoked),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(user)
}

/// Enables the user `id` again: it may sign in (its ended sessions stay
/// ended). Idempotent: `admin.user.enabled` is recorded only when it was disabled.
pub async fn enable_user(
    state: &AppState,
    actor: Actor,
    ctx: &RequestContext,
    id: UserId,
) -> Result<store::users::UserRecord, AdminError> {
    let now = state.clock.now();
    let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
    let changed = store::users::set_disabled(&mut tx, id, false, now)
        .await?
        .ok_or(AdminError::NotFound)?;
    let user = store::users::find(&mut tx, id, now)
        .await?
        .ok_or(AdminError::NotFound)?;
    if changed {
        tx.record(
            event(Event::AdminUserEnabled, actor, ctx, now)
                .user(id)
                .email(&user.email),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(user)
}

/// Ends every session of the user `id`; returns how many were live.
/// Recorded as `admin.sessions.revoked` (`metadata.revoked`).
pub async fn revoke_sessions(
    state: &AppState,
    actor: Actor,
    ctx: &RequestContext,
    id: UserId,
) -> Result<i64, AdminError> {
    let now = state.clock.now();
    let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
    // Lock the user, so that its deletion cannot interleave.
    let user = store::users::lock(&mut tx, id).await?.ok_or(AdminError::NotFound)?;
    let revoked = store::sessions::revoke_all(&mut tx, id, RevokeReason::Admin, now).await?;
    tx.record(
        event(Event::AdminSessionsRevoked, actor, ctx, now)
            .user(id)
            .email(&user)
            .meta("revoked", revoked),
    )
    .await?;
    tx.commit().await?;
    Ok(revoked)
}

/// What erasing a person removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    pub sessions: u64,
    pub codes: u64,
    pub links: u64,
    pub rate_limits: u64,
    /// Audit rows kept, with the address and IPs removed.
    pub audit_rows: u64,
}

/// Erases the user `id`, in one transaction: the user, its sessions and
/// refresh tokens, the codes and links of its address, the rate-limit
/// counters of its address and of the IPs it used; its audit rows are kept
/// for the record but pseudonymised (address and IPs removed, user id kept).
/// Recorded as `admin.user.deleted`, which names the user id only.
pub async fn delete_user(
    state: &AppState,
    actor: Actor,
    ctx: &RequestContext,
    id: UserId,
) -> Result<Erased, AdminError> {
    let now = state.clock.now();
    let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
    let email = store::users::lock(&mut tx, id).await?.ok_or(AdminError::NotFound)?;
    let mut ips = store::sessions::ips_of_user(&mut tx, id).await?;
    ips.extend(store::audit::ips_of(&mut tx, id.as_uuid(), &email).await?);
    ips.sort_unstable();
    ips.dedup();
    let subjects = crate::rate_limit::person_subjects(&email, &ips, state.config.rate_limits.ipv6_prefix);
    let erased = Erased {
        sessions: store::sessions::delete_of_user(&mut tx, id).await?,
        codes: store::otp::delete_for_email(&mut tx, &email).await?,
        links: store::magic_links::delete_for_email(&mut tx, &email).await?,
        rate_limits: store::rate_limits::delete_subjects(&mut tx, &subjects).await?,
        audit_rows: store::audit::pseudonymise(&mut tx, id.as_uuid(), &email).await?,
    };
    store::users::delete(&mut tx, id).await?;
    tx.record(
        event(Event::AdminUserDeleted, actor, ctx, now)
            .user(id)
            .meta("sessions", erased.sessions)
            .meta("auditRows", erased.audit_rows),
    )
    .await?;
    tx.commit().await?;
    Ok(erased)
}

/// What an operator's retry of a webhook delivery found.
#[derive(Debug)]
pub enum Retried {
    /// It was failed or pending and is now pending and due: the delivery after the change.
    Due(store::webhooks::Delivery),
    /// No delivery has this id.
    Unknown,
    /// It was delivered already; nothing changed.
    Delivered,
}

/// Retries the webhook delivery `id` now (`store::webhooks::retry`: a failed
/// one is replayed at the end of its endpoint's queue with a fresh
/// `WEBHOOK_MAX_AGE`; a pending one is made due). Recorded as
/// `admin.webhook.retried` (`metadata`: `actor`, `deliveryId`, `eventId`,
/// `event`, and `status`, the status it had). Nothing happens to a delivered one.
pub async fn retry_delivery(
    state: &AppState,
    actor: Actor,
    ctx: &RequestContext,
    id: i64,
) -> Result<Retried, sqlx::Error> {
    let now = state.clock.now();
    let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
    let Some(before) = store::webhooks::find_for_update(&mut tx, id).await? else {
        return Ok(Retried::Unknown);
    };
    if !store::webhooks::retry(&mut tx, id, now).await? {
        return Ok(Retried::Delivered);
    }
    tx.record(
        event(Event::AdminWebhookRetried, actor, ctx, now)
            .meta("deliveryId", id)
            .meta("eventId", before.event_id)
            .meta("event", before.event.clone())
            .meta("status", before.status.clone()),
    )
    .await?;
    let after = store::webhooks::find_for_update(&mut tx, id).await?;
    tx.commit().await?;
    Ok(after.map_or(Retried::Unknown, Retried::Due))
}
