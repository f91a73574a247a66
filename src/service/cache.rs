//! Answers kept in memory and never stale.
//!
//! Each entry remembers the scopes it read (`rep:<id>` of every rep it
//! counted, `directory`, `targets`, `rates`) and the sum of their versions
//! read *before* it was computed (see `store::changes`). A lookup reads the
//! current sum of those scopes in PostgreSQL (one indexed query): equal
//! means no transaction touching them committed since, so the entry holds
//! every write acknowledged before the call began, whichever replica took
//! it. Otherwise the entry is dropped and the caller computes afresh.
//!
//! Memory is bounded by a byte budget over the entries' estimated sizes;
//! the least recently used go first.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use sqlx::PgPool;
use tokio::sync::oneshot;

use crate::{Error, domain::tally::TallyQuery, store::changes};

type Waiter = (Arc<[String]>, oneshot::Sender<Option<i64>>);

/// The version checks of concurrent calls, one query for many: a call
/// waits for the first query that *starts* after it asked, which sees every
/// transaction committed before the call began, so sharing it loses
/// nothing. Under load this turns one query per call into one per round
/// trip.
#[derive(Debug)]
pub struct VersionChecks {
    pool: PgPool,
    pending: Mutex<(bool, Vec<Waiter>)>,
}

impl VersionChecks {
    pub fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            pending: Mutex::new((false, Vec::new())),
        })
    }

    /// The sum of the versions of `scopes`, as of some moment after this
    /// call began.
    pub async fn version(self: &Arc<Self>, scopes: Arc<[String]>) -> Result<i64, Error> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut pending = lock(&self.pending);
            pending.1.push((scopes.clone(), tx));
            !std::mem::replace(&mut pending.0, true)
        };
        if start {
            tokio::spawn(self.clone().rounds());
        }
        match rx.await {
            Ok(Some(version)) => Ok(version),
            // The shared query failed: ask alone, for the real error.
            _ => changes::version(&self.pool, &scopes).await,
        }
    }

    /// Runs rounds until nobody waits.
    async fn rounds(self: Arc<Self>) {
        loop {
            let waiters = {
                let mut pending = lock(&self.pending);
                if pending.1.is_empty() {
                    pending.0 = false;
                    return;
                }
                std::mem::take(&mut pending.1)
            };
            let mut all: Vec<String> = waiters
                .iter()
                .flat_map(|(scopes, _)| scopes.iter().cloned())
                .collect();
            all.sort_unstable();
            all.dedup();
            let versions = changes::versions(&self.pool, &all).await.ok();
            for (scopes, tx) in waiters {
                let sum = versions
                    .as_ref()
                    .map(|versions| scopes.iter().filter_map(|s| versions.get(s)).sum::<i64>());
                let _ = tx.send(sum);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The scopes every KPI answer depends on besides its reps' records.
pub fn global_scopes() -> Vec<String> {
    [changes::DIRECTORY, changes::TARGETS, changes::RATES]
        .map(str::to_owned)
        .to_vec()
}

/// The scopes of the reps `queries` read.
pub fn rep_scopes(queries: &[TallyQuery]) -> Vec<String> {
    let mut reps: Vec<&str> = queries
        .iter()
        .flat_map(|q| {
            q.segments.iter().map(|s| &*s.rep).chain(
                q.retention
                    .iter()
                    .flat_map(|r| r.reps.iter().map(|rep| &**rep)),
            )
        })
        .collect();
    reps.sort_unstable();
    reps.dedup();
    reps.into_iter().map(changes::rep_scope).collect()
}

/// One cache per kind of answer, sharing the budget.
#[derive(Debug)]
pub struct Caches {
    pub scorecards: ResultCache<crate::domain::report::Scorecard>,
    pub series: ResultCache<crate::domain::report::Series>,
    pub leaderboards: ResultCache<crate::domain::report::Leaderboard>,
}

impl Caches {
    /// `budget` estimated bytes: a quarter for scorecards, half for
    /// series (the largest answers), a quarter for leaderboards.
    pub fn new(budget: usize, pool: PgPool) -> Self {
        let checks = VersionChecks::new(pool);
        Self {
            scorecards: ResultCache::new(budget / 4, Some(checks.clone())),
            series: ResultCache::new(budget / 2, Some(checks.clone())),
            leaderboards: ResultCache::new(budget / 4, Some(checks)),
        }
    }
}

struct Entry<T> {
    scopes: Arc<[String]>,
    version: i64,
    value: Arc<T>,
    bytes: usize,
    used: u64,
}

struct Inner<T> {
    entries: HashMap<String, Entry<T>>,
    bytes: usize,
    tick: u64,
}

/// A cache of one kind of answer.
pub struct ResultCache<T> {
    inner: Mutex<Inner<T>>,
    budget: usize,
    checks: Option<Arc<VersionChecks>>,
    /// One computation per key at a time (see `computing`).
    computing: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl<T> std::fmt::Debug for ResultCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultCache")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// What a lookup found.
pub enum Lookup<T> {
    /// The answer and the scopes it read.
    Hit(Arc<T>, Arc<[String]>),
    Miss(Miss),
}

/// A miss: the stamp to complete (`stamp.read` the reps before reading
/// their records) and the hold on the key until `insert`.
pub struct Miss {
    pub stamp: Stamp,
    _gate: tokio::sync::OwnedMutexGuard<()>,
}

/// The versions an answer is computed at: read before each part of it is.
#[derive(Debug, Default, Clone)]
pub struct Stamp {
    scopes: Vec<String>,
    version: i64,
}

impl Stamp {
    /// Adds `scopes` at their current versions. Call it before reading
    /// what depends on them.
    pub async fn read(&mut self, pool: &PgPool, scopes: Vec<String>) -> Result<(), Error> {
        let scopes: Vec<String> = scopes
            .into_iter()
            .filter(|s| !self.scopes.contains(s))
            .collect();
        if scopes.is_empty() {
            return Ok(());
        }
        self.version += changes::version(pool, &scopes).await?;
        self.scopes.extend(scopes);
        Ok(())
    }
}

impl<T> ResultCache<T> {
    /// A cache of at most `budget` estimated bytes (0: caches nothing),
    /// checking versions through `checks` (`None`: one query per lookup).
    pub fn new(budget: usize, checks: Option<Arc<VersionChecks>>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                bytes: 0,
                tick: 0,
            }),
            budget,
            checks,
            computing: Mutex::new(HashMap::new()),
        }
    }

    /// The valid entry of `key`, or the right to compute it.
    ///
    /// A call that misses waits until no other call computes `key`, then
    /// looks again: when the entry another call just computed is valid for
    /// it (the version check of that second look starts after this call
    /// began), it is taken; otherwise this call computes, holding the key
    /// until it `insert`s (or gives up), with the global scopes already read
    /// into the miss's stamp. So an invalidated answer wanted by many calls
    /// at once is computed once, not once per call.
    pub async fn lookup(&self, pool: &PgPool, key: &str) -> Result<Lookup<T>, Error> {
        if let Some((value, scopes)) = self.get(pool, key).await? {
            crate::observe::metrics::cache_lookup(true);
            return Ok(Lookup::Hit(value, scopes));
        }
        let gate = self.computing(key).await;
        if let Some((value, scopes)) = self.get(pool, key).await? {
            crate::observe::metrics::cache_lookup(true);
            return Ok(Lookup::Hit(value, scopes));
        }
        crate::observe::metrics::cache_lookup(false);
        let mut stamp = Stamp::default();
        stamp.read(pool, global_scopes()).await?;
        Ok(Lookup::Miss(Miss { stamp, _gate: gate }))
    }

    /// Holds `key` for this call until the guard drops.
    async fn computing(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let gate = {
            let mut gates = lock(&self.computing);
            match gates.get(key).and_then(Weak::upgrade) {
                Some(gate) if self.enabled() => gate,
                _ => {
                    let gate = Arc::new(tokio::sync::Mutex::new(()));
                    if self.enabled() {
                        if gates.len() >= 1024 {
                            gates.retain(|_, g| g.strong_count() > 0);
                        }
                        gates.insert(key.to_owned(), Arc::downgrade(&gate));
                    }
                    gate
                }
            }
        };
        gate.lock_owned().await
    }

    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// The entry of `key` and its scopes, if no scope it read changed since.
    async fn get(
        &self,
        pool: &PgPool,
        key: &str,
    ) -> Result<Option<(Arc<T>, Arc<[String]>)>, Error> {
        if !self.enabled() {
            return Ok(None);
        }
        let Some(scopes) =
            self.with_inner(|inner| inner.entries.get(key).map(|e| e.scopes.clone()))
        else {
            return Ok(None);
        };
        let now = match &self.checks {
            Some(checks) => checks.version(scopes.clone()).await?,
            None => changes::version(pool, &scopes).await?,
        };
        Ok(self.with_inner(|inner| {
            inner.tick += 1;
            let tick = inner.tick;
            match inner.entries.get_mut(key) {
                Some(entry) if entry.version == now => {
                    entry.used = tick;
                    Some((entry.value.clone(), scopes))
                }
                Some(entry) if entry.version < now => {
                    let bytes = entry.bytes;
                    inner.entries.remove(key);
                    inner.bytes -= bytes;
                    None
                }
                // Replaced meanwhile by a newer entry, or gone.
                _ => None,
            }
        }))
    }

    /// Keeps `value` under `key`, computed under `miss` (whose stamp the
    /// caller completed with the reps it read), and lets the calls waiting
    /// for the key look again. Returns the scopes the value read.
    pub fn insert(&self, key: String, miss: Miss, value: Arc<T>, bytes: usize) -> Arc<[String]> {
        self.keep(key, miss.stamp, value, bytes)
    }

    /// Keeps `value` under `key`, computed at `stamp`, evicting the least
    /// recently used entries beyond the budget; returns the stamp's scopes.
    fn keep(&self, key: String, stamp: Stamp, value: Arc<T>, bytes: usize) -> Arc<[String]> {
        let scopes: Arc<[String]> = stamp.scopes.into();
        if !self.enabled() || bytes > self.budget / 4 {
            return scopes; // one answer may not crowd out the others
        }
        self.with_inner(|inner| {
            inner.tick += 1;
            let entry = Entry {
                scopes: scopes.clone(),
                version: stamp.version,
                value,
                bytes,
                used: inner.tick,
            };
            if let Some(old) = inner.entries.insert(key, entry) {
                inner.bytes -= old.bytes;
            }
            inner.bytes += bytes;
            while inner.bytes > self.budget {
                let Some(oldest) = inner
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.used)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                if let Some(gone) = inner.entries.remove(&oldest) {
                    inner.bytes -= gone.bytes;
                }
            }
        });
        scopes
    }

    /// Entries and estimated bytes held.
    pub fn size(&self) -> (usize, usize) {
        self.with_inner(|inner| (inner.entries.len(), inner.bytes))
    }

    fn with_inner<R>(&self, f: impl FnOnce(&mut Inner<T>) -> R) -> R {
        // A panic while holding the lock cannot leave the map half-updated
        // in a way that matters (sizes are recomputed on use): go on.
        f(&mut lock(&self.inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(version: i64) -> Stamp {
        Stamp {
            scopes: vec!["rep:anna".into()],
            version,
        }
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used() {
        let cache = ResultCache::<u32>::new(1000, None);
        cache.keep("a".into(), stamp(1), Arc::new(1), 200);
        cache.keep("b".into(), stamp(1), Arc::new(2), 200);
        cache.keep("c".into(), stamp(1), Arc::new(3), 200);
        assert_eq!(cache.size(), (3, 600));
        // Too big for a quarter of the budget: not kept.
        cache.keep("huge".into(), stamp(1), Arc::new(4), 300);
        assert_eq!(cache.size(), (3, 600));
        // Replacing an entry counts its new size only.
        cache.keep("a".into(), stamp(2), Arc::new(5), 250);
        assert_eq!(cache.size(), (3, 650));
        cache.keep("d".into(), stamp(1), Arc::new(6), 250);
        cache.keep("e".into(), stamp(1), Arc::new(7), 250);
        // 1150 bytes: b goes, the least recently used (a was replaced
        // after it, so it counts as used later).
        assert_eq!(cache.size(), (4, 950));
        cache.with_inner(|inner| {
            let mut keys: Vec<_> = inner.entries.keys().cloned().collect();
            keys.sort();
            assert_eq!(keys, ["a", "c", "d", "e"]);
        });
        let off = ResultCache::<u32>::new(0, None);
        off.keep("a".into(), stamp(1), Arc::new(1), 1);
        assert_eq!(off.size(), (0, 0));
    }
}
