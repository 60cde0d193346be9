//! Start-up: reads the JWT key files the settings name and builds the
//! [`JwtKeys`] from their contents, so `auth::jwt` itself does no IO.

use std::path::Path;

use crate::{
    auth::jwt::{JwtKeys, KeyError},
    config::Config,
};

/// The keys the settings ask for: EdDSA when `JWT_PRIVATE_KEY_FILE` is set,
/// also accepting the keys of `JWT_PREVIOUS_PUBLIC_KEY_FILES`; else HS256 with `JWT_SECRET`.
pub fn load(config: &Config) -> Result<JwtKeys, KeyError> {
    let (iss, aud) = (&config.tokens.jwt_issuer, &config.tokens.jwt_audience);
    match &config.tokens.jwt_private_key_file {
        None => Ok(JwtKeys::hs256(config.tokens.jwt_secret.expose().as_bytes(), iss, aud)),
        Some(path) => {
            let private = read("JWT_PRIVATE_KEY_FILE", path)?;
            let previous = config
                .tokens
                .jwt_previous_public_key_files
                .iter()
                .map(|p| read("JWT_PREVIOUS_PUBLIC_KEY_FILES", p))
                .collect::<Result<Vec<_>, _>>()?;
            JwtKeys::eddsa(&private, &previous, iss, aud)
        }
    }
}

/// The text of the key file at `path`; an error names `setting` and the path.
fn read(setting: &'static str, path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|e| KeyError {
        setting,
        message: format!("cannot read {}: {e}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::auth::jwt::generate_ed25519;

    fn defaults() -> Config {
        Config::from_lookup(|_| None).expect("the defaults are valid")
    }

    /// A fresh empty folder under the system temp dir.
    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sesame-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("creates a temp dir");
        dir
    }

    #[test]
    fn without_a_private_key_file_the_keys_are_hs256_with_no_jwks() {
        let keys = load(&defaults()).expect("loads");
        assert_eq!(keys.jwks()["keys"].as_array().map(Vec::len), Some(0));
    }

    #[test]
    fn key_files_are_read_into_eddsa_keys_that_list_every_kid() {
        let dir = temp_dir();
        let (private, _, kid) = generate_ed25519().expect("keys");
        let (_, old_public, old_kid) = generate_ed25519().expect("keys");
        std::fs::write(dir.join("key.pem"), private).expect("writes");
        std::fs::write(dir.join("old.pub.pem"), old_public).expect("writes");
        let mut config = defaults();
        config.tokens.jwt_private_key_file = Some(dir.join("key.pem"));
        config.tokens.jwt_previous_public_key_files = vec![dir.join("old.pub.pem")];
        let keys = load(&config).expect("loads");
        let kids: Vec<&str> = keys.jwks()["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k["kid"].as_str())
            .collect();
        assert_eq!(kids, [kid.as_str(), old_kid.as_str()]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unreadable_key_file_is_refused_naming_the_setting_and_the_path() {
        let dir = temp_dir();
        let missing = dir.join("missing.pem");
        let mut config = defaults();
        config.tokens.jwt_private_key_file = Some(missing.clone());
        let err = load(&config).expect_err("no such file").to_string();
        assert!(
            err.starts_with(&format!("JWT_PRIVATE_KEY_FILE: cannot read {}: ", missing.display())),
            "{err}"
        );

        let (private, _, _) = generate_ed25519().expect("keys");
        std::fs::write(dir.join("key.pem"), private).expect("writes");
        config.tokens.jwt_private_key_file = Some(dir.join("key.pem"));
        config.tokens.jwt_previous_public_key_files = vec![missing.clone()];
        let err = load(&config).expect_err("no such file").to_string();
        assert!(
            err.starts_with(&format!(
                "JWT_PREVIOUS_PUBLIC_KEY_FILES: cannot read {}: ",
                missing.display()
            )),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
