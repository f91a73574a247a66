//! Where KPI reads go: the primary, or a PostgreSQL streaming replica that
//! has caught up with it.
//!
//! Never stale: a read goes to a replica only once the replica has
//! replayed the primary's WAL up to the position the primary had flushed
//! when the read began (`pg_current_wal_flush_lsn()`), and a standby's
//! replay position only moves forward. Every write the service
//! acknowledged before that moment was flushed before its acknowledgment
//! (the service refuses to start with replicas when the primary's
//! `synchronous_commit` is `off`: `Reads::check_primary`), so it lies below
//! that position. The flush position, not the insert position: WAL that
//! reads themselves write (pruning) may stay unflushed, and a replica could
//! never reach an insert position on a quiet primary.
//!
//! A replica that is behind is asked again every 2 ms, up to `max_wait`;
//! then the read goes to the primary. The questions go over one connection
//! of the replica's own (never waiting behind the pool's KPI queries), and
//! reads that wait at the same time share them: a read takes the answer of
//! a question asked after it began. A replica that fails, does not answer
//! in time or is no longer in recovery (promoted) is skipped for
//! `RETRY_AFTER` and the reads go elsewhere meanwhile.
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

use sqlx::{Connection as _, PgConnection, PgPool, postgres::PgConnectOptions};

use crate::config::DatabaseArgs;
use tokio::time::Instant;

/// How often a replica that is behind is asked again while a read waits.
const POLL: Duration = Duration::from_millis(2);
/// The least time a replica has to answer where it stands (connecting
/// included).
const ANSWER_WITHIN: Duration = Duration::from_millis(250);
/// How long a replica that failed is skipped.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The primary's flushed WAL position, as a byte offset.
const PRIMARY_LSN: &str = "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint";
/// Whether a server is a standby, and how far it has replayed.
const REPLAY_LSN: &str =
    "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint";

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
    /// How to open the probe connection.
    options: PgConnectOptions,
    /// Host, port and database, for logs (never a password).
    name: String,
    /// Skipped until then after a failure.
    down_until: Mutex<Option<Instant>>,
    /// The questions "how far have you replayed", one at a time.
    probe: tokio::sync::Mutex<Probe>,
}

#[derive(Debug, Default)]
struct Probe {
    connection: Option<PgConnection>,
    /// The last answer, and when its question was asked.
    last: Option<(Instant, i64)>,
}

/// What a replica said.
enum Answer {
    Replayed(i64),
    NotStandby,
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

    /// Skips the replica for `RETRY_AFTER`; logs when it was up.
    fn mark_down(&self, why: &str) {
        let now = Instant::now();
        let was_up = match self.down_until.lock() {
            Ok(mut down) => {
                let was_up = down.is_none_or(|until| until <= now);
                *down = Some(now + RETRY_AFTER);
                was_up
            }
            Err(_) => false,
        };
        if was_up {
            tracing::warn!(replica = %self.name, reason = why, retry_in = ?RETRY_AFTER, "read replica skipped: reads go to the primary or another replica");
        }
    }

    /// How far the replica had replayed at some moment after `since`:
    /// shares the question of another read when it was asked after
    /// `since`, else asks (within `bound`).
    async fn replayed_since(&self, since: Instant, bound: Duration) -> Result<Answer, String> {
        let asked = tokio::time::timeout(bound, async {
            let mut probe = self.probe.lock().await;
            if let Some((asked, lsn)) = probe.last
                && asked >= since
            {
                return Ok(Answer::Replayed(lsn));
            }
            let asked = Instant::now();
            let answer = probe.ask(&self.options).await;
            if let Ok(Answer::Replayed(lsn)) = &answer {
                probe.last = Some((asked, *lsn));
            }
            answer
        })
        .await;
        match asked {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {bound:?}")),
        }
    }
}

impl Probe {
    async fn ask(&mut self, options: &PgConnectOptions) -> Result<Answer, String> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => self.connection.insert(
                PgConnection::connect_with(options)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
        };
        let answered: Result<(bool, Option<i64>), sqlx::Error> =
            sqlx::query_as(REPLAY_LSN).fetch_one(connection).await;
        match answered {
            Ok((true, Some(lsn))) => Ok(Answer::Replayed(lsn)),
            Ok(_) => Ok(Answer::NotStandby),
            Err(err) => {
                // A broken connection is opened again next time.
                self.connection = None;
                self.last = None;
                Err(err.to_string())
            }
        }
    }
}

impl Reads {
    /// Reads on the `replicas` (with the session settings of the primary's
    /// connections; pools that connect on first use) once caught up,
    /// waiting up to `max_wait` for one to catch up before using the
    /// primary.
    pub fn new(
        primary: PgPool,
        replicas: Vec<PgConnectOptions>,
        settings: &DatabaseArgs,
        max_wait: Duration,
    ) -> Self {
        let replicas = replicas
            .into_iter()
            .map(|options| {
                let name = super::describe(&options);
                tracing::info!(replica = %name, ?max_wait, "KPI reads may use this read replica once it has caught up");
                Replica {
                    pool: super::connect_lazy(options.clone(), settings),
                    options,
                    name,
                    down_until: Mutex::new(None),
                    probe: tokio::sync::Mutex::new(Probe::default()),
                }
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

    /// With replicas, refuses a primary whose commits are acknowledged
    /// before they are flushed (`synchronous_commit = off`): a replica's
    /// reads could then miss an acknowledged write.
    pub async fn check_primary(&self) -> anyhow::Result<()> {
        if self.inner.replicas.is_empty() {
            return Ok(());
        }
        let setting: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
            .fetch_one(&self.inner.primary)
            .await?;
        if setting == "off" {
            anyhow::bail!(
                "read replicas need the primary's synchronous_commit to be local, on, \
                 remote_write or remote_apply, and it is off for the service's sessions: a \
                 write would be acknowledged before it is flushed, and a read on a replica \
                 could miss it"
            );
        }
        Ok(())
    }

    /// The primary's pool (writes, and reads that must see it directly).
    pub fn primary(&self) -> &PgPool {
        &self.inner.primary
    }

    /// Closes the replicas' pools (the primary's belongs to its owner).
    pub async fn close_replicas(&self) {
        for replica in &self.inner.replicas {
            replica.pool.close().await;
        }
    }

    /// The pool to run one read on: a replica that has replayed everything
    /// the primary had flushed when this was called, else the primary.
    pub async fn pool(&self) -> PgPool {
        if self.inner.replicas.is_empty() {
            return self.inner.primary.clone();
        }
        let started = Instant::now();
        let (route, pool) = self.route(started).await;
        crate::observe::metrics::read_routed(route.label(), route.to_replica(), started.elapsed());
        pool
    }

    async fn route(&self, started: Instant) -> (Route, PgPool) {
        let inner = &*self.inner;
        let primary = || inner.primary.clone();
        let asked = tokio::time::timeout(
            inner.max_wait.max(ANSWER_WITHIN),
            sqlx::query_scalar::<_, i64>(PRIMARY_LSN).fetch_one(&inner.primary),
        )
        .await;
        let target = match asked {
            Ok(Ok(lsn)) => lsn,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "cannot read the primary's WAL position: reading from the primary");
                return (Route::NoPosition, primary());
            }
            Err(_) => return (Route::NoPosition, primary()),
        };
        let deadline = started + inner.max_wait;
        let count = inner.replicas.len();
        let first = inner.next.fetch_add(1, Ordering::Relaxed) % count;
        let mut rounds = 0u32;
        loop {
            let mut any_up = false;
            for k in 0..count {
                let Some(replica) = inner.replicas.get((first + k) % count) else {
                    continue;
                };
                if replica.is_down() {
                    continue;
                }
                // Every question may take ANSWER_WITHIN, even at the end of
                // the wait: a read waits at most max_wait plus that per
                // replica asked.
                let now = Instant::now();
                let bound = deadline.saturating_duration_since(now).max(ANSWER_WITHIN);
                // At first any answer given since the read began will do;
                // later only a new one.
                let since = if rounds == 0 { started } else { now };
                match replica.replayed_since(since, bound).await {
                    Ok(Answer::Replayed(replayed)) => {
                        any_up = true;
                        if replayed >= target {
                            let route = if rounds == 0 {
                                Route::CaughtUp
                            } else {
                                Route::Waited
                            };
                            return (route, replica.pool.clone());
                        }
                    }
                    Ok(Answer::NotStandby) => {
                        replica.mark_down("the server is not in recovery (promoted?)");
                    }
                    Err(why) => replica.mark_down(&why),
                }
            }
            if !any_up {
                return (Route::Unavailable, primary());
            }
            rounds += 1;
            if Instant::now() + POLL >= deadline {
                return (Route::Behind, primary());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
