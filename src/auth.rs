//! Secrets: API keys and the admin token. Keys are random (190 bits), shown once, stored only as a
//! SHA-256 hash and compared in constant time. Nothing here ever logs or formats a secret.

use std::fmt;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::vendor::{ApiId, random_alphanumeric};

/// A secret string whose `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// SHA-256 of a presented key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Constant-time equality of two byte strings (digests, a connection's remembered key): a time
/// that depends on their lengths only. Every byte's difference is OR-ed into one (no early exit;
/// the compiler makes it a few vector instructions), and only that byte goes through `subtle`'s
/// optimization barrier: it runs on every request, and byte by byte through the barrier it was
/// the costliest part of the key check (callgrind).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    bool::from(difference.ct_eq(&0))
}

/// A fresh key: `sk_{api}_` + 32 characters of `[A-Za-z0-9]` (≈190 bits).
pub fn new_key(api: ApiId) -> Secret {
    Secret(format!("sk_{api}_{}", random_alphanumeric(32)))
}

/// A fresh key id (not secret): `key_` + 20 characters.
pub fn new_key_id() -> String {
    format!("key_{}", random_alphanumeric(20))
}

/// The fixed key of an api's demo tenant (documented in the README; only for `serve --demo`).
pub fn demo_key(api: ApiId) -> Secret {
    Secret(format!("sk_{api}_demo"))
}

/// The admin token: given, or read from `data_dir/admin-token`, or generated there (mode 0600).
/// Returns the token and whether it was generated now (so the caller prints it once).
pub fn admin_token(given: Option<Secret>, data_dir: &Path) -> anyhow::Result<(Secret, bool)> {
    if let Some(t) = given {
        anyhow::ensure!(!t.expose().is_empty(), "the admin token must not be empty");
        return Ok((t, false));
    }
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok((Secret(s.trim().to_owned()), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let token = Secret(format!("adm_{}", random_alphanumeric(40)));
    write_private(&path, token.expose())?;
    Ok((token, true))
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("creating {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_differing_in_any_byte_are_unequal() {
        let a = hash_key("sk_anam_x");
        assert!(ct_eq(&a, &a));
        for i in 0..32 {
            for bit in [0x01, 0x80] {
                let mut b = a;
                b[i] ^= bit;
                assert!(!ct_eq(&a, &b), "byte {i}, bit {bit:#x}");
            }
        }
    }

    #[test]
    fn byte_strings_of_other_lengths_are_unequal() {
        let key = b"sk_anam_0123456789abcdefghijklmnopqrstuv";
        assert!(ct_eq(key, key));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(key, &key[..key.len() - 1]));
        assert!(!ct_eq(b"", b"a"));
    }

    #[test]
    fn keys_are_random_and_hashed() {
        let a = new_key(ApiId::Anam);
        let b = new_key(ApiId::Anam);
        assert_ne!(a, b);
        assert!(a.expose().starts_with("sk_anam_") && a.expose().len() == "sk_anam_".len() + 32);
        assert!(ct_eq(&hash_key(a.expose()), &hash_key(a.expose())));
        assert!(!ct_eq(&hash_key(a.expose()), &hash_key(b.expose())));
        assert_eq!(format!("{a:?}"), "Secret([REDACTED])");
    }

    #[test]
    fn admin_token_is_generated_once_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, fresh1) = admin_token(None, dir.path()).unwrap();
        let (t2, fresh2) = admin_token(None, dir.path()).unwrap();
        assert!(fresh1 && !fresh2);
        assert_eq!(t1, t2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("admin-token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
