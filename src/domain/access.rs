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

/// The policy: which RPC needs what, by gRPC path. Anything not listed
/// (including RPCs added later and not yet classified) needs admin.
pub fn need_for(path: &str) -> Need {
    if path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
    {
        return Need::Open;
    }
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return Need::Admin;
    };
    match (service, method) {
        ("kpi.v1.DirectoryService", m) if m.starts_with("Upsert") => Need::Role(Role::Ingest),
        ("kpi.v1.DirectoryService", m) if m.starts_with("Get") || m.starts_with("List") => {
            Need::Role(Role::Read)
        }
        ("kpi.v1.ActivityService", _) => Need::Role(Role::Ingest),
        ("kpi.v1.KpiService", _) => Need::Role(Role::Read),
        ("kpi.v1.TargetService", "ListTargets") => Need::Role(Role::Read),
        _ => Need::Admin,
    }
}

/// Whether `role` may call an RPC that needs `need`.
pub fn allows(role: Role, need: Need) -> bool {
    match need {
        Need::Open => true,
        Need::Admin => role == Role::Admin,
        Need::Role(needed) => role == Role::Admin || role == needed,
    }
}

/// RPCs whose calls are audit events (they change the directory, targets or
/// keys).
pub fn is_audited(path: &str) -> bool {
    path.starts_with("/kpi.v1.DirectoryService/Upsert")
        || path.starts_with("/kpi.v1.TargetService/Set")
        || path.starts_with("/kpi.v1.TargetService/Delete")
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

    #[test]
    fn roles_get_what_their_name_says() {
        let upsert = need_for("/kpi.v1.DirectoryService/UpsertRep");
        let read = need_for("/kpi.v1.DirectoryService/ListReps");
        let record = need_for("/kpi.v1.ActivityService/RecordActivities");
        let target = need_for("/kpi.v1.TargetService/SetTarget");
        let future = need_for("/kpi.v1.SomethingNew/DoIt");
        assert!(allows(Role::Ingest, upsert) && allows(Role::Ingest, record));
        assert!(!allows(Role::Ingest, read) && !allows(Role::Read, upsert));
        assert!(allows(Role::Read, read) && !allows(Role::Read, record));
        assert!(!allows(Role::Read, target) && allows(Role::Admin, target));
        assert!(!allows(Role::Read, future) && allows(Role::Admin, future));
        assert_eq!(need_for("/grpc.health.v1.Health/Check"), Need::Open);
    }
}
