//! Access tokens: short-lived JWTs, HS256 with `JWT_SECRET` by default, or
//! EdDSA (Ed25519) with a `kid` when a private key is configured.
//!
//! The verifier pins the algorithm, the issuer and the audience, so `alg:
//! none` and algorithm confusion (an HS256 token "signed" with the public key)
//! are refused. In EdDSA mode the `kid` must name the current key or one of the
//! retired keys still listed in the JWKS, so rotating keys does not log anyone out.
//!
//! Keys come in as bytes and PEM text; reading the key files is start-up's job
//! (`crate::keys`).

use std::fmt;

use base64::Engine as _;
use ed25519_dalek::{
    SigningKey, VerifyingKey,
    pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::ids::{SessionId, UserId};

/// Clock skew tolerated between sesame and whoever checks its tokens, in seconds.
pub const LEEWAY_SECONDS: i64 = 5;

/// The claims of an access token (`docs/API.md`, "Access tokens").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: UserId,
    pub email: String,
    /// The session (refresh-token family) id.
    pub sid: SessionId,
    pub iat: i64,
    pub exp: i64,
    /// Not before: sesame issues none, but honours one in a token it verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: Uuid,
    pub iss: String,
    pub aud: String,
}

/// A public key that verifies tokens, with its id.
#[derive(Clone)]
struct Verifier {
    kid: Option<String>,
    key: DecodingKey,
}

/// Signs and verifies access tokens.
#[derive(Clone)]
pub struct JwtKeys {
    algorithm: Algorithm,
    encoding: EncodingKey,
    /// The `kid` put in the header of new tokens (EdDSA only).
    kid: Option<String>,
    verifiers: Vec<Verifier>,
    /// The JWK set served at `/.well-known/jwks.json`.
    jwks: Value,
    issuer: String,
    audience: String,
    /// What `verify_at` checks, built once: it allocates a few sets.
    validation: Validation,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
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

/// Why keys could not be loaded; names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct KeyError {
    pub setting: &'static str,
    pub message: String,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The JWK of an Ed25519 public key, with its RFC 7638 thumbprint as `kid`.
fn jwk(public: &VerifyingKey) -> (String, Value) {
    let x = b64(public.as_bytes());
    // RFC 7638: the required members, lexicographically ordered, no spaces.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let kid = b64(&Sha256::digest(canonical.as_bytes()));
    let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig" });
    (kid, jwk)
}

/// What a token of `algorithm` must be to verify: signed so, by `issuer`,
/// for `audience`, with every claim sesame reads.
fn validation(algorithm: Algorithm, issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    // Times are checked in `verify_at` against the injected clock, not the system's.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation
}

impl JwtKeys {
    /// HS256 with the shared `secret`.
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Self {
        Self {
            algorithm: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            kid: None,
            verifiers: vec![Verifier {
                kid: None,
                key: DecodingKey::from_secret(secret),
            }],
            jwks: json!({ "keys": [] }),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            validation: validation(Algorithm::HS256, issuer, audience),
        }
    }

    /// EdDSA with the private key in `private_pem`, also accepting tokens of
    /// the retired public keys in `previous_pems`.
    pub fn eddsa(private_pem: &str, previous_pems: &[String], issuer: &str, audience: &str) -> Result<Self, KeyError> {
        let signing = SigningKey::from_pkcs8_pem(private_pem).map_err(|e| KeyError {
            setting: "JWT_PRIVATE_KEY_FILE",
            message: format!("expected an Ed25519 private key in PKCS#8 PEM (`sesame keys generate`): {e}"),
        })?;
        let der = signing.to_pkcs8_der().map_err(|e| KeyError {
            setting: "JWT_PRIVATE_KEY_FILE",
            message: e.to_string(),
        })?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let mut keys = vec![signing.verifying_key()];
        for pem in previous_pems {
            keys.push(VerifyingKey::from_public_key_pem(pem).map_err(|e| KeyError {
                setting: "JWT_PREVIOUS_PUBLIC_KEY_FILES",
                message: format!("expected Ed25519 public keys in PEM: {e}"),
            })?);
        }
        let mut verifiers = Vec::new();
        let mut jwks = Vec::new();
        for public in &keys {
            let (kid, jwk) = jwk(public);
            verifiers.push(Verifier {
                kid: Some(kid),
                key: DecodingKey::from_ed_components(&b64(public.as_bytes())).map_err(|e| KeyError {
                    setting: "JWT_PRIVATE_KEY_FILE",
                    message: e.to_string(),
                })?,
            });
            jwks.push(jwk);
        }
        Ok(Self {
            algorithm: Algorithm::EdDSA,
            encoding,
            kid: verifiers.first().and_then(|v| v.kid.clone()),
            verifiers,
            jwks: json!({ "keys": jwks }),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            validation: validation(Algorithm::EdDSA, issuer, audience),
        })
    }

    /// The public keys as a JWK set (empty for HS256).
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// A token for `user` in `session`, valid `ttl` from `now`.
    pub fn issue(
        &self,
        user: UserId,
        email: &str,
        session: SessionId,
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
            nbf: None,
            jti: Uuid::new_v4(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let mut header = Header::new(self.algorithm);
        header.kid.clone_from(&self.kid);
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)?;
        Ok(AccessToken { token, claims })
    }

    /// [`verify_at`](Self::verify_at) the system's current time.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        self.verify_at(token, OffsetDateTime::now_utc())
    }

    /// The claims of a valid token: the pinned algorithm, a known key, a good
    /// signature, our issuer and audience, and at `now` (the injected clock)
    /// neither expired nor not yet valid, with [`LEEWAY_SECONDS`] of tolerance
    /// (the same rule as jsonwebtoken's own checks).
    pub fn verify_at(&self, token: &str, now: OffsetDateTime) -> Result<Claims, jsonwebtoken::errors::Error> {
        use jsonwebtoken::errors::ErrorKind;
        // With one key, `decode` checks the header's algorithm itself (it is
        // the only one `validation` allows); with several, the header's `kid`
        // picks the key.
        let verifier = match (self.algorithm, self.verifiers.as_slice()) {
            (_, [only]) if only.kid.is_none() => only,
            (Algorithm::EdDSA, verifiers) => {
                let header = jsonwebtoken::decode_header(token)?;
                if header.alg != self.algorithm {
                    return Err(ErrorKind::InvalidAlgorithm.into());
                }
                verifiers
                    .iter()
                    .find(|v| v.kid.is_some() && v.kid == header.kid)
                    .ok_or(ErrorKind::InvalidKeyFormat)?
            }
            (_, verifiers) => verifiers.first().ok_or(ErrorKind::InvalidKeyFormat)?,
        };
        let claims = jsonwebtoken::decode::<Claims>(token, &verifier.key, &self.validation)?.claims;
        let now = now.unix_timestamp();
        if claims.exp.saturating_add(LEEWAY_SECONDS) < now {
            return Err(ErrorKind::ExpiredSignature.into());
        }
        // A token "issued" in the future, or not valid before a future time, is not valid yet.
        let not_before = claims.nbf.unwrap_or(claims.iat).max(claims.iat);
        if not_before > now.saturating_add(LEEWAY_SECONDS) {
            return Err(ErrorKind::ImmatureSignature.into());
        }
        Ok(claims)
    }
}

/// A new Ed25519 key pair as (private PKCS#8 PEM, public SPKI PEM, kid).
pub fn generate_ed25519() -> Result<(String, String, String), KeyError> {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let signing = SigningKey::from_bytes(&seed);
    let err = |e: &dyn fmt::Display| KeyError {
        setting: "keys generate",
        message: e.to_string(),
    };
    let private = signing
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| err(&e))?;
    let public = signing
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| err(&e))?;
    let (kid, _) = jwk(&signing.verifying_key());
    Ok((private.to_string(), public, kid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour() -> std::time::Duration {
        std::time::Duration::from_secs(3600)
    }

    #[test]
    fn issued_tokens_verify_with_the_documented_claims() {
        let keys = JwtKeys::hs256(b"0123456789abcdef0123456789abcdef", "sesame", "app");
        let (user, session) = (UserId::generate(), SessionId::generate());
        let now = OffsetDateTime::now_utc();
        let t = keys
            .issue(user, "ada@example.com", session, now, hour())
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
        let future = keys
            .issue(user, "a@example.com", session, now + time::Duration::hours(1), hour())
            .expect("signs");
        assert!(
            keys.verify(&future.token).is_err(),
            "a token from the future is not valid yet"
        );
    }

    #[test]
    fn only_the_configured_algorithm_verifies() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let keys = JwtKeys::hs256(secret, "sesame", "app");
        let claims = keys
            .issue(
                UserId::generate(),
                "ada@example.com",
                SessionId::generate(),
                OffsetDateTime::now_utc(),
                hour(),
            )
            .expect("signs")
            .claims;
        // The same claims under the same secret, but HS512 in the header.
        let other = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("signs");
        assert!(keys.verify(&other).is_err(), "another HMAC algorithm is refused");
        // `alg: none` with no signature.
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let payload = serde_json::to_string(&claims).expect("serializes");
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&payload));
        assert!(keys.verify(&none).is_err(), "an unsigned token is refused");
    }

    #[test]
    fn times_are_checked_at_the_given_instant_with_five_seconds_of_leeway() {
        let keys = JwtKeys::hs256(b"0123456789abcdef0123456789abcdef", "sesame", "app");
        let issued = time::macros::datetime!(2030-01-01 00:00 UTC);
        let t = keys
            .issue(
                UserId::generate(),
                "a@example.com",
                SessionId::generate(),
                issued,
                hour(),
            )
            .expect("signs");
        let at = |secs: i64| keys.verify_at(&t.token, issued + time::Duration::seconds(secs));
        // Expiry: valid up to and including exp + 5 s, refused one second later.
        assert!(at(3600 + LEEWAY_SECONDS).is_ok());
        assert!(at(3600 + LEEWAY_SECONDS + 1).is_err());
        // Issued in the future: tolerated up to 5 s of skew, refused beyond.
        assert!(at(-LEEWAY_SECONDS).is_ok());
        assert!(at(-LEEWAY_SECONDS - 1).is_err());
        // The injected instant decides, not the system clock (this token is from 2030).
        assert!(keys.verify(&t.token).is_err());
    }

    #[test]
    fn eddsa_tokens_carry_a_kid_and_old_keys_keep_verifying() {
        let (old_private, old_public, old_kid) = generate_ed25519().expect("keys");
        let (new_private, _, new_kid) = generate_ed25519().expect("keys");
        let old = JwtKeys::eddsa(&old_private, &[], "sesame", "app").expect("old keys");
        let new = JwtKeys::eddsa(&new_private, &[old_public], "sesame", "app").expect("new keys");
        let now = OffsetDateTime::now_utc();
        let t = old
            .issue(UserId::generate(), "a@example.com", SessionId::generate(), now, hour())
            .expect("signs");
        assert_eq!(
            jsonwebtoken::decode_header(&t.token).expect("header").kid,
            Some(old_kid.clone())
        );
        assert!(
            new.verify(&t.token).is_ok(),
            "a token of the retired key still verifies"
        );
        let kids: Vec<&str> = new.jwks()["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k["kid"].as_str())
            .collect();
        assert_eq!(kids, [new_kid.as_str(), old_kid.as_str()]);

        // HS256 "signed" with the public key material: algorithm confusion is refused.
        let x = new.jwks()["keys"][0]["x"].as_str().expect("x").to_owned();
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &t.claims,
            &EncodingKey::from_secret(x.as_bytes()),
        )
        .expect("encodes");
        assert!(new.verify(&forged).is_err());
        let hs = JwtKeys::hs256(b"0123456789abcdef0123456789abcdef", "sesame", "app");
        assert!(hs.verify(&t.token).is_err(), "an HS256 verifier refuses EdDSA tokens");
    }
}
