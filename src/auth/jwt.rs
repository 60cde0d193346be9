//! Access tokens: short-lived JWTs, HS256 with `JWT_SECRET`.
//!
//! The verifier pins the algorithm, the issuer and the audience, so `alg:
//! none` and algorithm confusion are refused.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// The claims of an access token (SPEC "Rules").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    pub email: String,
    /// The session (refresh-token family) id.
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
    pub iss: String,
    pub aud: String,
}

/// Signs and verifies access tokens.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    audience: String,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("algorithm", &"HS256")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// What an access token says, for the issuer to log and answer.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: String,
    pub claims: Claims,
}

impl JwtKeys {
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// A token for `user` in `session`, valid `ttl` from `now`.
    pub fn issue(
        &self,
        user: Uuid,
        email: &str,
        session: Uuid,
        now: OffsetDateTime,
        ttl: std::time::Duration,
    ) -> Result<AccessToken, jsonwebtoken::errors::Error> {
        let iat = now.unix_timestamp();
        let claims = Claims {
            sub: user,
            email: email.to_owned(),
            sid: session,
            iat,
            exp: iat.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            jti: Uuid::new_v4(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok(AccessToken { token, claims })
    }

    /// The claims of a valid token: right algorithm, signature, issuer,
    /// audience, and not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_with_the_spec_claims() {
        let keys = JwtKeys::hs256(b"0123456789abcdef0123456789abcdef", "sesame", "app");
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let now = OffsetDateTime::now_utc();
        let t = keys
            .issue(
                user,
                "ada@example.com",
                session,
                now,
                std::time::Duration::from_secs(3600),
            )
            .expect("signs");
        let claims = keys.verify(&t.token).expect("verifies");
        assert_eq!(claims, t.claims);
        assert_eq!(
            (claims.sub, claims.sid, claims.iss.as_str(), claims.aud.as_str()),
            (user, session, "sesame", "app")
        );
        assert_eq!(claims.exp - claims.iat, 3600);

        let other_aud = JwtKeys::hs256(b"0123456789abcdef0123456789abcdef", "sesame", "other");
        assert!(other_aud.verify(&t.token).is_err(), "audience is pinned");
        let other_key = JwtKeys::hs256(b"another-secret-another-secret-xx", "sesame", "app");
        assert!(other_key.verify(&t.token).is_err(), "signature is checked");
        let expired = keys
            .issue(
                user,
                "a@example.com",
                session,
                now - time::Duration::hours(2),
                std::time::Duration::from_secs(60),
            )
            .expect("signs");
        assert!(keys.verify(&expired.token).is_err(), "expiry is checked");
    }
}
