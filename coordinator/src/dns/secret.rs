//! Reading provider secrets (TSIG keys, API tokens) from a file or the
//! environment — never from the plan itself.

use std::path::Path;

use super::SecretRef;

impl SecretRef {
    /// Reads the secret named `key` (e.g. `dns.cloudflare.token`, used in
    /// errors). A relative `file` is resolved against `base`, the plan's
    /// directory; a file that group or others may read is accepted with a
    /// warning. Surrounding whitespace (a trailing newline) is dropped.
    pub fn read(&self, key: &str, base: &Path) -> Result<String, String> {
        let value = match (&self.file, &self.env) {
            (Some(_), Some(_)) => {
                return Err(format!("{key}: give either `file` or `env`, not both"));
            }
            (None, None) => {
                return Err(format!(
                    "{key}: missing secret; set `{key} = {{ file = \"…\" }}` or `{{ env = \"…\" }}`"
                ));
            }
            (Some(file), None) => {
                let path = if file.is_absolute() {
                    file.clone()
                } else {
                    base.join(file)
                };
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!("{key}: cannot read secret file {}: {e}", path.display())
                })?;
                warn_if_readable_by_others(key, &path);
                text
            }
            (None, Some(var)) => std::env::var(var).map_err(|e| {
                format!("{key}: environment variable {var} is not set or not UTF-8 ({e})")
            })?,
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            let whence = match (&self.file, &self.env) {
                (Some(f), _) => format!("file {}", base.join(f).display()),
                (_, Some(v)) => format!("environment variable {v}"),
                _ => unreachable!("checked above: one source is set"),
            };
            return Err(format!("{key}: the secret in {whence} is empty"));
        }
        Ok(value)
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(key: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                key,
                path = %path.display(),
                mode = %format!("{:o}", mode & 0o777),
                "secret file is readable by group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_key: &str, _path: &Path) {}

/// Standard base64 (RFC 4648, with padding) decoding, for TSIG secrets.
/// Whitespace is ignored.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    fn val(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let body = clean
        .strip_suffix(b"==")
        .or_else(|| clean.strip_suffix(b"="))
        .unwrap_or(&clean);
    if !clean.len().is_multiple_of(4) || body.len() % 4 == 1 {
        return Err("not valid base64 (length)".to_string());
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v =
                val(c).ok_or_else(|| format!("not valid base64 (character `{}`)", c as char))?;
            n |= v << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

/// Standard base64 encoding with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn base64_round_trips_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes());
        }
        assert!(base64_decode("Zm9").is_err());
        assert!(base64_decode("Zm9v!A==").is_err());
    }

    #[test]
    fn secrets_come_from_files_relative_to_the_plan_or_env() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
        let r = SecretRef {
            file: Some(PathBuf::from("token")),
            env: None,
        };
        assert_eq!(r.read("dns.x.token", dir.path()).unwrap(), "s3cret");

        let missing = SecretRef {
            file: Some(PathBuf::from("nope")),
            env: None,
        };
        let err = missing.read("dns.x.token", dir.path()).unwrap_err();
        assert!(err.contains("dns.x.token") && err.contains("nope"), "{err}");

        let var = "CUTOVER_TEST_SECRET_THAT_IS_NOT_SET_0xdead";
        let env = SecretRef {
            file: None,
            env: Some(var.into()),
        };
        let err = env.read("dns.x.token", dir.path()).unwrap_err();
        assert!(err.contains("dns.x.token") && err.contains(var), "{err}");

        let err = SecretRef::default()
            .read("dns.x.token", dir.path())
            .unwrap_err();
        assert!(
            err.contains("dns.x.token") && err.contains("missing"),
            "{err}"
        );
    }
}
