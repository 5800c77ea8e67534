//! Credentials: probe tokens and the admin token.
//!
//! A token is 32 random bytes from the OS (`ring::rand::SystemRandom`), shown
//! once as `cutover_<64 hex>` (probe) or `cutover_admin_<64 hex>` (admin).
//! Only its SHA-256 is stored, so a leaked database does not leak credentials.

use std::io::Write;
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

/// Prefix of probe tokens.
pub const PROBE_TOKEN_PREFIX: &str = "cutover_";
/// Prefix of the admin token (distinct so a pasted token's purpose is visible).
pub const ADMIN_TOKEN_PREFIX: &str = "cutover_admin_";
/// File name of the admin token inside `data_dir`.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// SHA-256 of a token as presented.
pub type TokenHash = [u8; 32];

/// Failures creating or reading credentials.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The OS random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// The admin token file could not be created or read.
    #[error("cannot {action} admin token file {}: {source}", path.display())]
    TokenFile {
        /// `create` or `read`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The admin token file exists but holds no token.
    #[error("admin token file {} is empty; delete it and restart `cutover serve` to create a new one", path.display())]
    EmptyTokenFile {
        /// The file.
        path: PathBuf,
    },
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| AuthError::Random)?;
    Ok(buf)
}

/// A new probe token (returned to the operator once).
pub fn new_probe_token() -> Result<String, AuthError> {
    Ok(format!(
        "{PROBE_TOKEN_PREFIX}{}",
        hex(&random_bytes::<32>()?)
    ))
}

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> TokenHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Extracts the token from an `authorization: Bearer <token>` value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Returns the admin token in `data_dir/admin.token`, creating it (mode 0600)
/// when missing. Returns the token and whether it was created now.
pub fn ensure_admin_token(data_dir: &Path) -> Result<(String, bool), AuthError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match read_token_file(&path) {
        Ok(t) => return Ok((t, false)),
        Err(AuthError::TokenFile { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = format!("{ADMIN_TOKEN_PREFIX}{}", hex(&random_bytes::<32>()?));
    let create_err = |source| AuthError::TokenFile {
        action: "create",
        path: path.clone(),
        source,
    };
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        // create_new: never overwrite a token someone else just wrote.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(create_err)?
    };
    f.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(create_err)?;
    Ok((token, true))
}

/// Reads a token file (first line, trimmed).
pub fn read_token_file(path: &Path) -> Result<String, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::TokenFile {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(AuthError::EmptyTokenFile {
            path: path.to_path_buf(),
        });
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_probe_token().unwrap();
        let b = new_probe_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("cutover_") && a.len() == 8 + 64);
        assert_eq!(hash_token(&a), hash_token(&format!(" {a}\n")));
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn admin_token_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (t1, created) = ensure_admin_token(dir.path()).unwrap();
        assert!(created);
        assert!(t1.starts_with(ADMIN_TOKEN_PREFIX));
        let mode = std::fs::metadata(dir.path().join(ADMIN_TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (t2, created) = ensure_admin_token(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(t1, t2);
    }
}
