//! Access control at run time: who is calling (API key), what they may
//! call (role), and what they may see (team scope). Keys are cached in
//! memory and reloaded twice a second, so a revocation takes effect within
//! a second on every instance without a restart.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use sqlx::PgPool;
use tokio::sync::watch;

use crate::{
    domain::access::{Role, hash_secret, hashes_match, parse_token},
    store::keys as store,
};

/// How often the key cache is reloaded.
pub const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// The authenticated caller of an RPC, in the request's extensions.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub role: Role,
    /// For team-scoped read keys: the team and all its sub-teams.
    pub scope: Option<Arc<HashSet<String>>>,
}

impl Principal {
    /// Whether the caller may see `team_id`.
    pub fn sees_team(&self, team_id: &str) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|teams| teams.contains(team_id))
    }
}

struct Entry {
    role: Role,
    secret_hash: Vec<u8>,
    scope: Option<Arc<HashSet<String>>>,
}

/// Why a presented key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    Unknown,
}

pub struct AccessControl {
    keys: RwLock<HashMap<String, Entry>>,
    used: Mutex<HashSet<String>>,
    /// Bumped whenever a reload changes the set of keys (a revocation, a
    /// new key, a changed scope), so open streams re-check their key at
    /// once instead of at their next message.
    changes: watch::Sender<u64>,
}

impl Default for AccessControl {
    fn default() -> Self {
        Self {
            keys: RwLock::default(),
            used: Mutex::default(),
            changes: watch::Sender::new(0),
        }
    }
}

impl AccessControl {
    /// Notified on every change of the key set.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether the key `principal` authenticated with is still active with
    /// the same role and scope (from the cache: no query).
    pub fn still_valid(&self, principal: &Principal) -> bool {
        let Ok(keys) = self.keys.read() else {
            return false;
        };
        keys.get(&principal.key_id)
            .is_some_and(|entry| entry.role == principal.role && entry.scope == principal.scope)
    }

    /// Checks a bearer token against the cache.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Principal, Refusal> {
        let token = token.ok_or(Refusal::Missing)?;
        let (key_id, secret) = parse_token(token).ok_or(Refusal::Malformed)?;
        let keys = self.keys.read().map_err(|_| Refusal::Unknown)?;
        let entry = keys.get(key_id).ok_or(Refusal::Unknown)?;
        if !hashes_match(&hash_secret(secret), &entry.secret_hash) {
            return Err(Refusal::Unknown);
        }
        if let Ok(mut used) = self.used.lock() {
            used.insert(key_id.to_owned());
        }
        Ok(Principal {
            key_id: key_id.to_owned(),
            role: entry.role,
            scope: entry.scope.clone(),
        })
    }

    /// Reloads keys and team scopes from the database.
    pub async fn reload(&self, pool: &PgPool) -> Result<(), crate::Error> {
        let keys = store::active(pool).await?;
        let parents = store::team_parents(pool).await?;
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        for (team, parent) in parents {
            if let Some(parent) = parent {
                children.entry(parent).or_default().push(team);
            }
        }
        let subtree = |root: &str| {
            let mut seen = HashSet::from([root.to_owned()]);
            let mut stack = vec![root.to_owned()];
            while let Some(team) = stack.pop() {
                for child in children.get(&team).into_iter().flatten() {
                    if seen.insert(child.clone()) {
                        stack.push(child.clone());
                    }
                }
            }
            Arc::new(seen)
        };
        let fresh: HashMap<String, Entry> = keys
            .into_iter()
            .map(|key| {
                let scope = key.team_id.as_deref().map(&subtree);
                (
                    key.key_id,
                    Entry {
                        role: key.role,
                        secret_hash: key.secret_hash,
                        scope,
                    },
                )
            })
            .collect();
        let changed = match self.keys.write() {
            Ok(mut keys) => {
                let same = keys.len() == fresh.len()
                    && fresh.iter().all(|(id, entry)| {
                        keys.get(id).is_some_and(|old| {
                            old.role == entry.role
                                && old.secret_hash == entry.secret_hash
                                && old.scope == entry.scope
                        })
                    });
                *keys = fresh;
                !same
            }
            Err(_) => false,
        };
        if changed {
            self.changes.send_modify(|generation| *generation += 1);
        }
        Ok(())
    }

    /// Reloads every `REFRESH_EVERY` and records key use, until `stop`.
    pub async fn refresh_until(self: Arc<Self>, pool: PgPool, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(REFRESH_EVERY) => {}
                _ = stop.changed() => break,
            }
            if let Err(err) = self.reload(&pool).await {
                // Keep the last good cache: a database blip must not lock
                // everyone out (nor let anyone in).
                tracing::debug!(error = %err, "cannot reload API keys");
            }
            let used: Vec<String> = match self.used.lock() {
                Ok(mut used) => used.drain().collect(),
                Err(_) => Vec::new(),
            };
            if !used.is_empty()
                && let Err(err) = store::touch(&pool, &used).await
            {
                tracing::debug!(error = %err, "cannot record key use");
            }
        }
    }
}
