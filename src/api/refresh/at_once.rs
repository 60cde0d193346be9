//! A refresh's common path in one round trip: see [`rotate`].

use crate::{
    api::{
        bodies::TokenPair,
        sign_in::{SessionOf, Source, TokenKind, token_events, token_pair},
    },
    audit::{AuditEvent, Event, RequestContext},
    auth::refresh::{RefreshToken, RotationSalt},
    error::ApiError,
    state::AppState,
    store,
};

/// The common refresh in one round trip ([`store::sessions::rotate_live`]):
/// the token is live, its session live and not cut short by `SESSION_MAX_AGE`
/// (the `Rotate` branch of `refresh_decision`, checked by the SQL). The child
/// is derived under a fresh salt, which the statement stores on the token as it
/// retires it, so a replay within the reuse interval derives the same child.
/// The events are those the slow path's `Refresh::answer` records, written by the same
/// statement. `None` when the statement changed nothing: the slow path decides.
pub(super) async fn rotate(
    state: &AppState,
    ctx: &RequestContext,
    token: &RefreshToken,
) -> Result<Option<TokenPair>, ApiError> {
    let tokens = &state.config.tokens;
    let now = state.clock.now();
    let expires_at = now + crate::clock::span(tokens.refresh_token_expiry);
    let begun_at_or_after = tokens
        .session_max_age
        .and_then(|age| expires_at.checked_sub(crate::clock::span(age)));
    let salt = RotationSalt::generate();
    let child = state.refresh_chain.child(token, Some(&salt));
    let mut events = vec![AuditEvent::success(Event::TokenRefresh, ctx, now)];
    events.extend(token_events(
        state,
        ctx,
        expires_at,
        Source::Refresh,
        &[TokenKind::Access, TokenKind::Refresh],
        now,
    ));
    let (routes, file) = state.audit.outboxes();
    let rotation = store::sessions::Rotation {
        token_hash: token.hash(),
        parent_salt: &salt,
        child_hash: child.hash(),
        now,
        expires_at,
        begun_at_or_after,
        events: &events,
        routes,
        file,
    };
    let rotated = state
        .db
        .run(async |conn| store::sessions::rotate_live(conn, &rotation).await)
        .await?;
    let Some(done) = rotated else {
        return Ok(None);
    };
    let session = SessionOf {
        user: &done.user,
        session_id: done.session_id,
        expires_at,
    };
    let events: Vec<AuditEvent> = events.into_iter().map(|e| session.mark(e)).collect();
    state.audit.publish(&events, &done.event_ids);
    token_pair(state, session, &child, now).map(Some)
}
