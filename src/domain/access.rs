//! API keys, roles and which role may call which RPC. Pure: the key format,
//! hashing and the policy; storage and the transport layer live elsewhere.

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Record activity, upsert teams and reps.
    Ingest,
    /// Directory and KPI queries (optionally limited to one team's subtree).
    Read,
    /// Everything, targets included.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "ingest" => Ok(Role::Ingest),
            "read" => Ok(Role::Read),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role '{other}': ingest, read or admin")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every key starts with this, so a leaked one is recognisable (and
/// greppable by secret scanners).
pub const KEY_PREFIX: &str = "kpi_";
/// Length of the public id part (hex).
const ID_CHARS: usize = 12;
/// Bytes of the secret part (256 bits).
const SECRET_BYTES: usize = 32;

/// A freshly made key: the full text is shown once, only the hash is kept.
pub struct NewKey {
    pub key_id: String,
    /// `kpi_<id>_<secret>`.
    pub token: String,
    pub secret_hash: Vec<u8>,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Random bytes a key is made of (`access::generate_key` draws them from
/// the operating system).
pub type KeyBytes = ([u8; ID_CHARS / 2], [u8; SECRET_BYTES]);

/// Makes a key from random bytes: the id in hex, the secret in base64url.
pub fn key_from(bytes: KeyBytes) -> NewKey {
    let (id, secret) = bytes;
    let key_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret = URL_SAFE_NO_PAD.encode(secret);
    NewKey {
        token: format!("{KEY_PREFIX}{key_id}_{secret}"),
        secret_hash: hash_secret(&secret),
        key_id,
    }
}

pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Splits a presented key into its id and secret; `None` if it is not in
/// the service's format.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(KEY_PREFIX)?;
    let id = rest.get(..ID_CHARS)?;
    let secret = rest.get(ID_CHARS..)?.strip_prefix('_')?;
    (id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty()).then_some((id, secret))
}

/// Compares two hashes in time that does not depend on where they differ.
pub fn hashes_match(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone, without a key (health, reflection).
    Open,
    /// One of these roles (admin always qualifies).
    Role(Role),
    /// Admin only.
    Admin,
}

/// Whether `role` may call an RPC that needs `need`.
pub fn allows(role: Role, need: Need) -> bool {
    match need {
        Need::Open => true,
        Need::Admin => role == Role::Admin,
        Need::Role(needed) => role == Role::Admin || role == needed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_back_and_matches_its_hash() {
        let key = key_from(([0xab; 6], [7; 32]));
        assert_eq!(key.key_id, "abababababab");
        assert!(key.token.starts_with("kpi_"));
        let (id, secret) = parse_token(&key.token).unwrap_or_default();
        assert_eq!(id, key.key_id);
        assert!(secret.len() >= 43, "256 bits in base64");
        assert!(hashes_match(&hash_secret(secret), &key.secret_hash));
        assert!(!hashes_match(&hash_secret("other"), &key.secret_hash));
        let other = key_from(([0xab; 6], [8; 32]));
        assert_ne!(other.token, key.token);
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in [
            "",
            "kpi_",
            "kpi_0123456789ab",
            "kpi_0123456789ab_",
            "xyz_0123456789ab_s",
            "kpi_zzzzzzzzzzzz_s",
        ] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }
}
