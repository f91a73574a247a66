//! Where KPI reads go: the primary, or a PostgreSQL streaming replica that
//! has caught up with it.
//!
//! Never stale: a read goes to a replica only once the replica has
//! replayed the primary's WAL up to the position the primary reported when
//! the read began, and a standby's replay position only moves forward. The
//! position is the WAL insert position (`pg_current_wal_insert_lsn()`):
//! every commit visible on the primary at that moment lies below it, even
//! one committed with `synchronous_commit = off`, whose record may not be
//! written out yet (`pg_current_wal_lsn()`, the write position, could miss
//! it). The replica gets there once the primary has flushed that far: at
//! its next commit, or within `wal_writer_delay` when nothing commits. A replica that is behind is polled until
//! `max_wait` (each question may take 50 ms); then the read goes to the
//! primary. A replica that fails is
//! left alone for `RETRY_AFTER` and the reads go elsewhere meanwhile.
//!
//! The position is asked for when a read needs the database (a result
//! cache hit asks nothing), so it is at least as recent as the call's
//! start: an acknowledged write is in the next read, wherever it runs.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use sqlx::PgPool;
use tokio::time::Instant;

/// How often a replica that is behind is asked again while a read waits.
const POLL: Duration = Duration::from_millis(2);
/// The least time a replica has to answer where it stands.
const ANSWER_WITHIN: Duration = Duration::from_millis(50);
/// How long a replica that failed is skipped.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The primary's current WAL position, as a byte offset.
const PRIMARY_LSN: &str = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint";
/// A standby's replay position; NULL on a server that is not in recovery.
const REPLAY_LSN: &str = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint";

/// The pools KPI reads may use. Clones share the pools.
#[derive(Debug, Clone)]
pub struct Reads {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    primary: PgPool,
    replicas: Vec<Replica>,
    next: AtomicUsize,
    max_wait: Duration,
}

#[derive(Debug)]
struct Replica {
    pool: PgPool,
    /// Host, port and database, for logs (never a password).
    name: String,
    /// Skipped until then after a failure.
    down_until: Mutex<Option<Instant>>,
}

/// Why a read went where it went (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The replica had replayed the position when first asked.
    CaughtUp,
    /// The replica replayed it within the wait.
    Waited,
    /// No replica replayed it within the wait: the primary.
    Behind,
    /// Every replica failed or is not a standby: the primary.
    Unavailable,
    /// The primary's position could not be read: the primary.
    NoPosition,
}

impl Route {
    pub fn label(self) -> &'static str {
        match self {
            Route::CaughtUp => "caught_up",
            Route::Waited => "waited",
            Route::Behind => "behind",
            Route::Unavailable => "replica_unavailable",
            Route::NoPosition => "no_position",
        }
    }

    pub fn to_replica(self) -> bool {
        matches!(self, Route::CaughtUp | Route::Waited)
    }
}

impl Replica {
    fn is_down(&self) -> bool {
        let down = self.down_until.lock().map(|d| *d).unwrap_or(None);
        down.is_some_and(|until| Instant::now() < until)
    }

    fn mark_down(&self, why: &str) {
        let was_up = !self.is_down();
        if let Ok(mut down) = self.down_until.lock() {
            *down = Some(Instant::now() + RETRY_AFTER);
        }
        if was_up {
            tracing::warn!(replica = %self.name, reason = why, retry_in = ?RETRY_AFTER, "read replica skipped: reads go to the primary or another replica");
        }
    }

    /// The replay position, `None` when the server is not a standby.
    async fn replayed(&self) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(REPLAY_LSN).fetch_one(&self.pool).await
    }
}

impl Reads {
    /// Every read on the primary.
    pub fn primary_only(primary: PgPool) -> Self {
        Self::new(primary, Vec::new(), Duration::ZERO)
    }

    /// Reads on `replicas` (name for logs, pool) once caught up, waiting up
    /// to `max_wait` for one to catch up before using the primary.
    pub fn new(primary: PgPool, replicas: Vec<(String, PgPool)>, max_wait: Duration) -> Self {
        let replicas = replicas
            .into_iter()
            .map(|(name, pool)| Replica {
                pool,
                name,
                down_until: Mutex::new(None),
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                primary,
                replicas,
                next: AtomicUsize::new(0),
                max_wait,
            }),
        }
    }

    /// The primary's pool (writes, and reads that must see it directly).
    pub fn primary(&self) -> &PgPool {
        &self.inner.primary
    }

    pub fn replica_pools(&self) -> impl Iterator<Item = &PgPool> {
        self.inner.replicas.iter().map(|r| &r.pool)
    }

    /// The pool to run one read on: a replica that has replayed everything
    /// the primary had written when this was called, else the primary.
    pub async fn pool(&self) -> PgPool {
        if self.inner.replicas.is_empty() {
            return self.inner.primary.clone();
        }
        let started = Instant::now();
        let (route, pool) = self.route(started).await;
        crate::scrape::read_routed(route.label(), route.to_replica(), started.elapsed());
        pool
    }

    async fn route(&self, started: Instant) -> (Route, PgPool) {
        let inner = &*self.inner;
        let primary = || inner.primary.clone();
        let target: i64 = match sqlx::query_scalar(PRIMARY_LSN)
            .fetch_one(&inner.primary)
            .await
        {
            Ok(lsn) => lsn,
            Err(err) => {
                tracing::debug!(error = %err, "cannot read the primary's WAL position: reading from the primary");
                return (Route::NoPosition, primary());
            }
        };
        let deadline = started + inner.max_wait;
        let count = inner.replicas.len();
        let first = inner.next.fetch_add(1, Ordering::Relaxed) % count;
        let mut polls = 0u32;
        loop {
            let mut any_up = false;
            for k in 0..count {
                let Some(replica) = inner.replicas.get((first + k) % count) else {
                    continue;
                };
                if replica.is_down() {
                    continue;
                }
                // A question gets at least ANSWER_WITHIN, even at the end
                // of the wait: the wait is bounded by max_wait plus that.
                let bound = deadline
                    .saturating_duration_since(Instant::now())
                    .max(ANSWER_WITHIN);
                match tokio::time::timeout(bound, replica.replayed()).await {
                    Ok(Ok(Some(replayed))) => {
                        any_up = true;
                        if replayed >= target {
                            let route = if polls == 0 {
                                Route::CaughtUp
                            } else {
                                Route::Waited
                            };
                            return (route, replica.pool.clone());
                        }
                    }
                    Ok(Ok(None)) => replica.mark_down("the server is not a standby (promoted?)"),
                    Ok(Err(err)) => replica.mark_down(&format!("{err}")),
                    Err(_) => replica.mark_down("no answer to a one-row query in time"),
                }
            }
            if !any_up {
                return (Route::Unavailable, primary());
            }
            polls += 1;
            if Instant::now() + POLL >= deadline {
                return (Route::Behind, primary());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
