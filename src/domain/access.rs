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

/// One RPC's entry in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The gRPC path, `/package.Service/Method`.
    pub path: &'static str,
    pub need: Need,
    /// Calls are audit events (they change the directory or targets).
    pub audited: bool,
}

const fn rule(path: &'static str, need: Need, audited: bool) -> Rule {
    Rule {
        path,
        need,
        audited,
    }
}

const READ: Need = Need::Role(Role::Read);
const INGEST: Need = Need::Role(Role::Ingest);

/// The policy, one entry per RPC, spelled out: no wildcard, so an RPC
/// added later is closed (admin only) until it is classified here. A test
/// checks that every method of the descriptor set has an entry.
pub const POLICY: &[Rule] = &[
    rule("/kpi.v1.DirectoryService/UpsertTeam", INGEST, true),
    rule("/kpi.v1.DirectoryService/GetTeam", READ, false),
    rule("/kpi.v1.DirectoryService/ListTeams", READ, false),
    rule("/kpi.v1.DirectoryService/UpsertRep", INGEST, true),
    rule("/kpi.v1.DirectoryService/GetRep", READ, false),
    rule("/kpi.v1.DirectoryService/ListReps", READ, false),
    rule("/kpi.v1.ActivityService/RecordActivities", INGEST, false),
    rule("/kpi.v1.ActivityService/StreamActivities", INGEST, false),
    rule("/kpi.v1.KpiService/ListKpis", READ, false),
    rule("/kpi.v1.KpiService/GetScorecard", READ, false),
    rule("/kpi.v1.KpiService/GetKpiSeries", READ, false),
    rule("/kpi.v1.KpiService/GetLeaderboard", READ, false),
    rule("/kpi.v1.KpiService/WatchScorecard", READ, false),
    rule("/kpi.v1.KpiService/WatchLeaderboard", READ, false),
    rule("/kpi.v1.KpiService/ExplainKpi", READ, false),
    rule("/kpi.v1.TargetService/SetTarget", Need::Admin, true),
    rule("/kpi.v1.TargetService/ListTargets", READ, false),
    rule("/kpi.v1.TargetService/DeleteTarget", Need::Admin, true),
    rule("/kpi.v1.ExchangeRateService/SetExchangeRates", INGEST, true),
    rule("/kpi.v1.ExchangeRateService/ListExchangeRates", READ, false),
];

/// Services anyone may call without a key (probes and tooling).
const OPEN_SERVICES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// What the RPC at `path` needs: its policy entry, open for health and
/// reflection, admin for anything else.
pub fn need_for(path: &str) -> Need {
    if OPEN_SERVICES.iter().any(|open| path.starts_with(open)) {
        return Need::Open;
    }
    POLICY
        .iter()
        .find(|r| r.path == path)
        .map_or(Need::Admin, |r| r.need)
}

/// Whether `role` may call an RPC that needs `need`.
pub fn allows(role: Role, need: Need) -> bool {
    match need {
        Need::Open => true,
        Need::Admin => role == Role::Admin,
        Need::Role(needed) => role == Role::Admin || role == needed,
    }
}

/// Whether calls of `path` are audit events (they change the directory or
/// targets; an RPC without a policy entry is audited too).
pub fn is_audited(path: &str) -> bool {
    if OPEN_SERVICES.iter().any(|open| path.starts_with(open)) {
        return false;
    }
    POLICY
        .iter()
        .find(|r| r.path == path)
        .is_none_or(|r| r.audited)
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
        let new_method = need_for("/kpi.v1.KpiService/DeleteEverything");
        assert!(!allows(Role::Read, new_method) && allows(Role::Admin, new_method));
        assert!(is_audited("/kpi.v1.KpiService/DeleteEverything"));
        assert!(allows(Role::Ingest, upsert) && allows(Role::Ingest, record));
        assert!(!allows(Role::Ingest, read) && !allows(Role::Read, upsert));
        assert!(allows(Role::Read, read) && !allows(Role::Read, record));
        assert!(!allows(Role::Read, target) && allows(Role::Admin, target));
        assert!(!allows(Role::Read, future) && allows(Role::Admin, future));
        assert_eq!(need_for("/grpc.health.v1.Health/Check"), Need::Open);
    }
}
