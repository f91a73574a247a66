//! Recording activity: one transaction per batch, idempotent by id and
//! version (see `domain::activity`), safe against concurrent retries.
//!
//! Per batch: check that every rep exists (reps already seen are
//! remembered: reps are never deleted); per record type, lock the stored
//! versions of the batch's ids (in id order, so racing batches cannot
//! deadlock), classify each record, write the new ones with one plain
//! `INSERT … SELECT unnest(…)` and the newer ones with one `… ON CONFLICT DO
//! UPDATE … WHERE newer`, then add their contributions to the rollups. Any
//! violation rolls the whole batch back; a batch that races a concurrent one
//! inserting the same new ids fails with a unique violation and is retried
//! (it then finds their versions).

use std::collections::{HashMap, HashSet};

use sqlx::{PgConnection, PgPool};

use super::{
    changes, rates,
    records::{self, Table},
    rollup,
};
use crate::{
    Error,
    domain::{
        activity::{Batch, BatchPlan, Counts, History, KindCounts, Outcome, Version, classify},
        money::RateBook,
        rollup::Deltas,
    },
    error::RecordViolation,
};

/// Every statement of a batch looks rows up by key, with plain index
/// scans. Without this, a generic plan PostgreSQL caches while a table
/// looks empty (a fresh install, emptied tables) can be a sequential scan
/// that it keeps using at millions of rows until the next ANALYZE:
/// measured, the id lookup went from 1 ms to 110 ms per batch. A bitmap
/// scan would read the whole range of the lookup's gate instead of
/// stopping at its first row. One round trip with the BEGIN.
const BEGIN_BATCH: &str =
    "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off";

/// How often a batch is retried after a deadlock or serialization failure
/// before the error reaches the caller.
pub(super) const MAX_ATTEMPTS: u32 = 5;

/// Reps known to exist. Reps are never deleted, so once seen they need no
/// further lookup: a batch queries only the reps it names that are not
/// here yet (most batches: none, one round trip fewer).
#[derive(Debug, Default)]
pub struct KnownReps(std::sync::RwLock<HashSet<String>>);

impl KnownReps {
    /// The distinct reps of `reps` not known yet.
    fn unknown<'a>(&self, reps: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
        let known = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut unknown: Vec<&str> = reps.filter(|rep| !known.contains(*rep)).collect();
        unknown.sort_unstable();
        unknown.dedup();
        unknown
    }

    fn learn(&self, reps: impl Iterator<Item = String>) {
        let mut known = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        known.extend(reps);
    }
}

/// Records a validated batch atomically and says what happened to each
/// record. With violations found while parsing (`batch.invalid`) or by the
/// database (unknown reps, a stored version with the same `updated_at` but
/// other content), nothing is written and all of them are returned
/// together, in request order.
pub async fn record_batch(
    pool: &PgPool,
    known_reps: &KnownReps,
    reporting: &str,
    batch: Batch,
) -> Result<Counts, Error> {
    let plan = BatchPlan::new(batch);
    let mut attempt = 1;
    loop {
        let span = tracing::info_span!("batch_transaction", attempt);
        match tracing::Instrument::instrument(apply(pool, known_reps, reporting, &plan), span).await
        {
            Ok(Ok(mut counts)) => {
                counts.merge(&plan.counts);
                for (kind, counts) in counts.iter() {
                    crate::observe::metrics::ingested(kind, counts);
                }
                crate::observe::metrics::batch("committed");
                return Ok(counts.total());
            }
            Ok(Err(mut violations)) => {
                crate::observe::metrics::batch("rejected");
                violations.extend(plan.violations.iter().cloned());
                violations.sort_by_key(|v| v.index);
                return Err(Error::InvalidRecords(violations));
            }
            Err(err) if is_retryable(&err) && attempt < MAX_ATTEMPTS => {
                let pause = backoff(attempt, rand::random::<f64>());
                tracing::info!(attempt, ?pause, error = %err, "batch raced a concurrent one (deadlock, serialization failure or an id inserted meanwhile); retrying");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(err) if is_retryable(&err) => {
                crate::observe::metrics::batch("failed");
                return Err(Error::Aborted(err.into()));
            }
            Err(err) => {
                crate::observe::metrics::batch("failed");
                return Err(err.into());
            }
        }
    }
}

/// The pause before retry `attempt` + 1: "full jitter", a uniformly random
/// share (`unit`, in [0, 1)) of 10 ms doubling per attempt, at most 320 ms,
/// so that batches that collided do not collide again in lockstep.
pub fn backoff(attempt: u32, unit: f64) -> std::time::Duration {
    let ceiling_ms = 10.0 * f64::from(1u32 << attempt.clamp(1, 6).saturating_sub(1));
    std::time::Duration::from_secs_f64(ceiling_ms * unit.clamp(0.0, 1.0) / 1000.0)
}

/// Deadlocks, serialization failures, and unique violations: a concurrent
/// batch inserted one of our new ids first (the insert waited for it to
/// commit); the retry finds its version and classifies against it.
pub(super) fn is_retryable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Database(db)
            if matches!(db.code().as_deref(), Some("40P01" | "40001" | "23505"))
    )
}

async fn apply(
    pool: &PgPool,
    known_reps: &KnownReps,
    reporting: &str,
    plan: &BatchPlan,
) -> Result<Result<KindCounts, Vec<RecordViolation>>, sqlx::Error> {
    let mut tx = pool.begin_with(BEGIN_BATCH).await?;
    let mut violations = Vec::new();

    let unknown = known_reps.unknown(plan.reps().map(|(_, _, rep)| rep));
    if !unknown.is_empty() {
        let found: HashSet<String> =
            sqlx::query_scalar("SELECT rep_id FROM reps WHERE rep_id = ANY($1)")
                .bind(&unknown)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let missing: HashSet<&str> = unknown
            .into_iter()
            .filter(|rep| !found.contains(*rep))
            .collect();
        if !missing.is_empty() {
            for (index, kind, rep) in plan.reps() {
                if missing.contains(rep) {
                    violations.push(RecordViolation::new(
                        index,
                        kind,
                        "rep_id",
                        format!("rep '{rep}' does not exist"),
                    ));
                }
            }
        }
        known_reps.learn(found.into_iter());
    }

    let mut counts = KindCounts::default();
    let customers = stage(
        &mut tx,
        &plan.customers,
        &plan.history,
        &mut counts,
        &mut violations,
    )
    .await?;
    let interactions = stage(
        &mut tx,
        &plan.interactions,
        &plan.history,
        &mut counts,
        &mut violations,
    )
    .await?;
    let deals = stage(
        &mut tx,
        &plan.deals,
        &plan.history,
        &mut counts,
        &mut violations,
    )
    .await?;
    let feedback = stage(
        &mut tx,
        &plan.feedback,
        &plan.history,
        &mut counts,
        &mut violations,
    )
    .await?;
    let requests = stage(
        &mut tx,
        &plan.requests,
        &plan.history,
        &mut counts,
        &mut violations,
    )
    .await?;
    if !violations.is_empty() || !plan.violations.is_empty() {
        return Ok(Err(violations)); // dropping the transaction rolls it back
    }

    // Deals convert at the rates the rollups reflect: read under the
    // shared rates lock, held until commit (see `store::rates`).
    let rates = if deals.inserts.is_empty() && deals.updates.is_empty() {
        RateBook::new(reporting)
    } else {
        rates::lock_shared(&mut tx).await?;
        let written = deals
            .inserts
            .iter()
            .copied()
            .chain(deals.updates.iter().flat_map(|(new, old)| [*new, old]));
        rates::book_for(&mut tx, reporting, written.filter_map(Version::live)).await?
    };
    let mut deltas = Deltas::default();
    let mut w = Writer {
        conn: &mut tx,
        deltas: &mut deltas,
        rates: &rates,
    };
    w.write(customers).await?;
    w.write(interactions).await?;
    w.write(deals).await?;
    w.write(feedback).await?;
    w.write(requests).await?;
    let change = rollup::apply(&mut tx, deltas).await?;
    changes::publish(&mut tx, &change).await?;
    tx.commit().await?;
    Ok(Ok(counts))
}

/// What a batch will write for one record type.
struct Staged<'a, T> {
    /// New ids (as far as the transaction can see): records and
    /// tombstones.
    inserts: Vec<&'a Version<T>>,
    /// Newer versions, with the stored version they replace.
    updates: Vec<(&'a Version<T>, Version<T>)>,
}

/// Locks and reads the stored versions of `versions`, classifies each
/// one, and returns what to write.
async fn stage<'a, T: Table>(
    conn: &mut PgConnection,
    versions: &'a [(usize, Version<T>)],
    history: &HashMap<usize, History>,
    counts: &mut KindCounts,
    violations: &mut Vec<RecordViolation>,
) -> Result<Staged<'a, T>, sqlx::Error> {
    let counts = counts.of(T::KIND);
    let mut staged = Staged {
        inserts: Vec::new(),
        updates: Vec::new(),
    };
    if versions.is_empty() {
        return Ok(staged);
    }
    let ids: Vec<&str> = versions.iter().map(|(_, v)| v.id()).collect();
    let mut stored: HashMap<String, Version<T>> = records::load::<T>(conn, &ids)
        .await?
        .into_iter()
        .map(|v| (v.id().to_owned(), v))
        .collect();
    for (index, version) in versions {
        let old = stored.remove(version.id());
        let outcome = classify(version, old.as_ref());
        const ALONE: History = History {
            before: Vec::new(),
            repeats_after: 0,
        };
        *counts += history.get(index).unwrap_or(&ALONE).counts(
            old.as_ref().map(Version::key),
            version.key(),
            outcome,
        );
        match outcome {
            Outcome::Insert => staged.inserts.push(version),
            Outcome::Update => {
                if let Some(old) = old {
                    staged.updates.push((version, old));
                }
            }
            Outcome::Unchanged | Outcome::Stale => {}
            Outcome::Conflict => violations.push(conflict(*index, version.kind())),
        }
    }
    Ok(staged)
}

fn conflict(index: usize, kind: &'static str) -> RecordViolation {
    RecordViolation::new(
        index,
        kind,
        "updated_at",
        "the stored version has the same id and updated_at but different content; \
         send a newer updated_at to replace it",
    )
}

/// Writes staged records and collects their rollup changes.
struct Writer<'c> {
    conn: &'c mut PgConnection,
    deltas: &'c mut Deltas,
    rates: &'c RateBook,
}

impl Writer<'_> {
    async fn write<T: Table>(&mut self, staged: Staged<'_, T>) -> Result<(), sqlx::Error> {
        let Staged {
            inserts,
            mut updates,
        } = staged;
        let mut new_records = Vec::new();
        let mut new_tombstones = Vec::new();
        for version in inserts {
            match version {
                Version::Live(record) => new_records.push(record),
                Version::Deleted(tombstone) => new_tombstones.push(tombstone),
            }
        }
        if !new_records.is_empty() {
            records::upsert(self.conn, &new_records, false).await?;
            for record in new_records {
                self.deltas
                    .apply(record.rep_id(), &record.contributions(self.rates), 1);
            }
        }
        if !new_tombstones.is_empty() {
            records::insert_tombstones::<T>(self.conn, &new_tombstones).await?;
        }
        if updates.is_empty() {
            return Ok(());
        }
        updates.sort_by(|a, b| a.0.id().cmp(b.0.id()));
        let mut replaced = Vec::new();
        let mut buried = Vec::new();
        for (new, old) in &updates {
            if let Version::Live(old) = old {
                self.deltas
                    .apply(old.rep_id(), &old.contributions(self.rates), -1);
            }
            match new {
                Version::Live(new) => {
                    self.deltas
                        .apply(new.rep_id(), &new.contributions(self.rates), 1);
                    replaced.push(new);
                }
                Version::Deleted(tombstone) => buried.push(tombstone),
            }
        }
        if !replaced.is_empty() {
            records::upsert(self.conn, &replaced, true).await?;
        }
        if !buried.is_empty() {
            records::bury::<T>(self.conn, &buried).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::backoff;

    #[test]
    fn retries_back_off_with_jitter_under_a_doubling_ceiling() {
        assert_eq!(backoff(1, 0.0), Duration::ZERO);
        assert_eq!(backoff(1, 0.5), Duration::from_millis(5));
        assert_eq!(backoff(2, 1.0), Duration::from_millis(20));
        assert_eq!(backoff(4, 1.0), Duration::from_millis(80));
        assert_eq!(backoff(40, 1.0), Duration::from_millis(320));
        assert!(backoff(3, 0.25) < backoff(3, 0.75));
    }
}
