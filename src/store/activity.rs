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

use std::{
    collections::{HashMap, HashSet},
    sync::LazyLock,
};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::rollup;

use crate::{
    Error,
    domain::{
        FieldViolation,
        activity::{
            Amount, Batch, Channel, Counts, Customer, CustomerRequest, Deal, DealStage, Feedback,
            FeedbackKind, Interaction, Outcome, Versioned, classify, dedupe,
        },
        kpi::{self, Contributions},
        rollup::Deltas,
    },
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
const MAX_ATTEMPTS: u32 = 5;

/// A batch reduced to one version per id, with what that reduction found.
struct Plan {
    customers: Vec<(usize, Customer)>,
    interactions: Vec<(usize, Interaction)>,
    deals: Vec<(usize, Deal)>,
    feedback: Vec<(usize, Feedback)>,
    requests: Vec<(usize, CustomerRequest)>,
    /// The records the reduction left out, by (index, kind, rep_id): their
    /// reps must exist too.
    dropped: Vec<(usize, &'static str, String)>,
    counts: Counts,
    violations: Vec<FieldViolation>,
}

fn reduce<T: Versioned>(
    records: Vec<(usize, T)>,
    dropped: &mut Vec<(usize, &'static str, String)>,
    counts: &mut Counts,
    violations: &mut Vec<FieldViolation>,
) -> Vec<(usize, T)> {
    let deduped = dedupe(records);
    *counts += deduped.counts;
    violations.extend(deduped.conflicts.into_iter().map(|index| {
        FieldViolation::new(
            format!("records[{index}].{}.updated_at", T::KIND),
            "another record of this batch has the same id and updated_at but different content",
        )
    }));
    dropped.extend(
        deduped
            .dropped
            .into_iter()
            .map(|(index, rep)| (index, T::KIND, rep)),
    );
    deduped.winners
}

/// (index, kind, rep_id) of `records`.
fn reps_of<T: Versioned>(
    records: &[(usize, T)],
) -> impl Iterator<Item = (usize, &'static str, &str)> {
    records
        .iter()
        .map(|(index, r)| (*index, T::KIND, r.rep_id()))
}

impl Plan {
    fn new(batch: Batch, violations: Vec<FieldViolation>) -> Self {
        let mut dropped = Vec::new();
        let mut counts = Counts::default();
        let mut violations = violations;
        let (d, c, v) = (&mut dropped, &mut counts, &mut violations);
        Self {
            customers: reduce(batch.customers, d, c, v),
            interactions: reduce(batch.interactions, d, c, v),
            deals: reduce(batch.deals, d, c, v),
            feedback: reduce(batch.feedback, d, c, v),
            requests: reduce(batch.requests, d, c, v),
            dropped,
            counts,
            violations,
        }
    }

    /// Every record's (index, kind, rep_id), the left-out ones included.
    fn reps(&self) -> impl Iterator<Item = (usize, &'static str, &str)> {
        reps_of(&self.customers)
            .chain(reps_of(&self.interactions))
            .chain(reps_of(&self.deals))
            .chain(reps_of(&self.feedback))
            .chain(reps_of(&self.requests))
            .chain(
                self.dropped
                    .iter()
                    .map(|(index, kind, rep)| (*index, *kind, rep.as_str())),
            )
    }
}

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
/// record. `violations` are those already found in the request; with them,
/// or with any the database finds (unknown reps, a stored version with the
/// same `updated_at` but other content), nothing is written and all of them
/// are returned together.
pub async fn record_batch(
    pool: &PgPool,
    known_reps: &KnownReps,
    batch: Batch,
    violations: Vec<FieldViolation>,
) -> Result<Counts, Error> {
    let plan = Plan::new(batch, violations);
    let mut attempt = 1;
    loop {
        match apply(pool, known_reps, &plan).await {
            Ok(Ok(mut counts)) => {
                counts += plan.counts;
                return Ok(counts);
            }
            Ok(Err(mut violations)) => {
                violations.extend(plan.violations.iter().cloned());
                violations.sort_by_key(|v| record_index(&v.field));
                return Err(Error::InvalidArgument(violations));
            }
            Err(err) if is_retryable(&err) && attempt < MAX_ATTEMPTS => {
                tracing::info!(attempt, error = %err, "batch raced a concurrent one (deadlock, serialization failure or an id inserted meanwhile); retrying");
                attempt += 1;
            }
            Err(err) if is_retryable(&err) => return Err(Error::Aborted(err.into())),
            Err(err) => return Err(err.into()),
        }
    }
}

/// The N of a `records[N]…` path, to list violations in request order.
fn record_index(field: &str) -> usize {
    field
        .strip_prefix("records[")
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// Deadlocks, serialization failures, and unique violations: a concurrent
/// batch inserted one of our new ids first (the insert waited for it to
/// commit); the retry finds its version and classifies against it.
fn is_retryable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Database(db)
            if matches!(db.code().as_deref(), Some("40P01" | "40001" | "23505"))
    )
}

async fn apply(
    pool: &PgPool,
    known_reps: &KnownReps,
    plan: &Plan,
) -> Result<Result<Counts, Vec<FieldViolation>>, sqlx::Error> {
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
                    violations.push(FieldViolation::new(
                        format!("records[{index}].{kind}.rep_id"),
                        format!("rep '{rep}' does not exist"),
                    ));
                }
            }
        }
        known_reps.learn(found.into_iter());
    }

    let mut counts = Counts::default();
    let customers = stage(&mut tx, &plan.customers, &mut counts, &mut violations).await?;
    let interactions = stage(&mut tx, &plan.interactions, &mut counts, &mut violations).await?;
    let deals = stage(&mut tx, &plan.deals, &mut counts, &mut violations).await?;
    let feedback = stage(&mut tx, &plan.feedback, &mut counts, &mut violations).await?;
    let requests = stage(&mut tx, &plan.requests, &mut counts, &mut violations).await?;
    if !violations.is_empty() || !plan.violations.is_empty() {
        return Ok(Err(violations)); // dropping the transaction rolls it back
    }

    let mut deltas = Deltas::default();
    let mut w = Writer {
        conn: &mut tx,
        deltas: &mut deltas,
    };
    w.write(customers).await?;
    w.write(interactions).await?;
    w.write(deals).await?;
    w.write(feedback).await?;
    w.write(requests).await?;
    rollup::apply(&mut tx, deltas).await?;
    tx.commit().await?;
    Ok(Ok(counts))
}

/// What a batch will write for one record type.
struct Staged<'a, T> {
    /// New ids (as far as the transaction can see).
    inserts: Vec<&'a T>,
    /// Newer versions, with the stored version they replace.
    updates: Vec<(&'a T, T)>,
}

/// Locks and reads the stored versions of `records`, classifies each
/// record, and returns what to write.
async fn stage<'a, T: Table>(
    conn: &mut PgConnection,
    records: &'a [(usize, T)],
    counts: &mut Counts,
    violations: &mut Vec<FieldViolation>,
) -> Result<Staged<'a, T>, sqlx::Error> {
    let mut staged = Staged {
        inserts: Vec::new(),
        updates: Vec::new(),
    };
    if records.is_empty() {
        return Ok(staged);
    }
    let ids: Vec<&str> = records.iter().map(|(_, r)| r.id()).collect();
    let mut stored: HashMap<String, T> = T::load(conn, &ids)
        .await?
        .into_iter()
        .map(|r| (r.id().to_owned(), r))
        .collect();
    for (index, record) in records {
        let old = stored.remove(record.id());
        match classify(record, old.as_ref()) {
            Outcome::Insert => {
                counts.inserted += 1;
                staged.inserts.push(record);
            }
            Outcome::Update => {
                counts.updated += 1;
                if let Some(old) = old {
                    staged.updates.push((record, old));
                }
            }
            Outcome::Unchanged => counts.unchanged += 1,
            Outcome::Stale => counts.stale += 1,
            Outcome::Conflict => violations.push(conflict(*index, T::KIND)),
        }
    }
    Ok(staged)
}

fn conflict(index: usize, kind: &str) -> FieldViolation {
    FieldViolation::new(
        format!("records[{index}].{kind}.updated_at"),
        "the stored version has the same id and updated_at but different content; \
         send a newer updated_at to replace it",
    )
}

/// Writes staged records and collects their rollup changes.
struct Writer<'c> {
    conn: &'c mut PgConnection,
    deltas: &'c mut Deltas,
}

impl Writer<'_> {
    async fn write<T: Table>(&mut self, staged: Staged<'_, T>) -> Result<(), sqlx::Error> {
        let Staged {
            inserts,
            mut updates,
        } = staged;
        if !inserts.is_empty() {
            T::upsert(self.conn, &inserts, false).await?;
            for record in inserts {
                self.deltas
                    .apply(record.rep_id(), &record.contributions(), 1);
            }
        }
        if !updates.is_empty() {
            updates.sort_by(|a, b| a.0.id().cmp(b.0.id()));
            let rows: Vec<&T> = updates.iter().map(|(new, _)| *new).collect();
            T::upsert(self.conn, &rows, true).await?;
            for (new, old) in &updates {
                self.deltas.apply(old.rep_id(), &old.contributions(), -1);
                self.deltas.apply(new.rep_id(), &new.contributions(), 1);
            }
        }
        Ok(())
    }
}

/// How one record type is read and written.
trait Table: Versioned + Sized {
    /// The stored versions of `ids`, locked for the transaction, in id order
    /// (through the primary key: see `BEGIN_BATCH`).
    async fn load(conn: &mut PgConnection, ids: &[&str]) -> Result<Vec<Self>, sqlx::Error>;
    /// Inserts `rows` (sorted by id; an id inserted meanwhile by a
    /// concurrent batch fails the statement with a unique violation, and
    /// the batch is retried); with `replace`, replaces the stored rows
    /// (locked by `load`) whose version is older.
    async fn upsert(
        conn: &mut PgConnection,
        rows: &[&Self],
        replace: bool,
    ) -> Result<(), sqlx::Error>;
    /// What the record adds to the KPI sums.
    fn contributions(&self) -> Contributions;
}

/// The statements of one record table, from one list of its columns: the
/// locked lookup of stored versions by id, a plain insert for new ids, and
/// an upsert that replaces older versions. Rows are written as one array
/// per column, unnested in the select list (no per-column tuplestore).
struct TableSql {
    load: String,
    insert: String,
    replace: String,
}

impl TableSql {
    /// `columns`: (name, SQL type), the id first. `numeric` columns travel
    /// as text both ways (exact decimals).
    fn new(table: &str, columns: &[(&str, &str)]) -> Self {
        let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
        let id = names.first().copied().unwrap_or_default();
        let read: Vec<String> = columns
            .iter()
            .map(|(name, ty)| match *ty {
                "numeric" => format!("{name}::text"),
                _ => (*name).to_owned(),
            })
            .collect();
        let values: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| match *ty {
                "numeric" => format!("unnest(${}::text[])::numeric", i + 1),
                _ => format!("unnest(${}::{ty}[])", i + 1),
            })
            .collect();
        // The gate (one index descent) skips the 1000 probes when no stored
        // id lies between the batch's least and greatest: a bulk sync of
        // new records, or new ids above all stored ones.
        // (The bounds are computed once, as parameters of the gate's index
        // scan: no join for the planner to get wrong on a table it
        // believes empty.)
        let load = format!(
            "WITH r AS MATERIALIZED (SELECT min(x) AS lo, max(x) AS hi FROM unnest($1::text[]) x) \
             SELECT {} FROM {table} WHERE {id} = ANY($1) \
             AND EXISTS (SELECT 1 FROM {table} s \
                         WHERE s.{id} BETWEEN (SELECT lo FROM r) AND (SELECT hi FROM r)) \
             ORDER BY {id} FOR UPDATE",
            read.join(", ")
        );
        let insert = format!(
            "INSERT INTO {table} AS cur ({}) SELECT {}",
            names.join(", "),
            values.join(", ")
        );
        let sets: Vec<String> = names
            .iter()
            .skip(1)
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let replace = format!(
            "{insert} ON CONFLICT ({id}) DO UPDATE SET {}, recorded_at = now() \
             WHERE EXCLUDED.source_updated_at > cur.source_updated_at",
            sets.join(", ")
        );
        Self {
            load,
            insert,
            replace,
        }
    }

    fn write(&self, replace: bool) -> &str {
        if replace { &self.replace } else { &self.insert }
    }
}

static CUSTOMERS: LazyLock<TableSql> = LazyLock::new(|| {
    TableSql::new(
        "customers",
        &[
            ("customer_id", "text"),
            ("rep_id", "text"),
            ("lead_at", "timestamptz"),
            ("converted_at", "timestamptz"),
            ("churned_at", "timestamptz"),
            ("source_updated_at", "timestamptz"),
        ],
    )
});

static INTERACTIONS: LazyLock<TableSql> = LazyLock::new(|| {
    TableSql::new(
        "interactions",
        &[
            ("interaction_id", "text"),
            ("rep_id", "text"),
            ("customer_id", "text"),
            ("channel", "smallint"),
            ("occurred_at", "timestamptz"),
            ("duration_seconds", "integer"),
            ("source_updated_at", "timestamptz"),
        ],
    )
});

static DEALS: LazyLock<TableSql> = LazyLock::new(|| {
    TableSql::new(
        "deals",
        &[
            ("deal_id", "text"),
            ("rep_id", "text"),
            ("customer_id", "text"),
            ("currency", "text"),
            ("amount", "numeric"),
            ("stage", "smallint"),
            ("created_at", "timestamptz"),
            ("closed_at", "timestamptz"),
            ("source_updated_at", "timestamptz"),
        ],
    )
});

static FEEDBACK: LazyLock<TableSql> = LazyLock::new(|| {
    TableSql::new(
        "feedback",
        &[
            ("feedback_id", "text"),
            ("rep_id", "text"),
            ("customer_id", "text"),
            ("kind", "smallint"),
            ("score", "smallint"),
            ("submitted_at", "timestamptz"),
            ("comment", "text"),
            ("source_updated_at", "timestamptz"),
        ],
    )
});

static REQUESTS: LazyLock<TableSql> = LazyLock::new(|| {
    TableSql::new(
        "customer_requests",
        &[
            ("request_id", "text"),
            ("rep_id", "text"),
            ("customer_id", "text"),
            ("opened_at", "timestamptz"),
            ("first_response_at", "timestamptz"),
            ("resolved_at", "timestamptz"),
            ("source_updated_at", "timestamptz"),
        ],
    )
});

fn corrupt(what: &str, value: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("stored {what} is invalid: {value}").into())
}

type CustomerRow = (
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

impl Table for Customer {
    fn contributions(&self) -> Contributions {
        kpi::customer_contributions(self)
    }

    async fn load(conn: &mut PgConnection, ids: &[&str]) -> Result<Vec<Self>, sqlx::Error> {
        let rows: Vec<CustomerRow> = sqlx::query_as(sqlx::AssertSqlSafe(CUSTOMERS.load.as_str()))
            .bind(ids)
            .fetch_all(conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, rep_id, lead_at, converted_at, churned_at, updated_at)| Customer {
                    id,
                    rep_id,
                    lead_at,
                    converted_at,
                    churned_at,
                    updated_at,
                },
            )
            .collect())
    }

    async fn upsert(
        conn: &mut PgConnection,
        rows: &[&Self],
        replace: bool,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(CUSTOMERS.write(replace)))
            .bind(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.rep_id.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.lead_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.converted_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.churned_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .execute(conn)
            .await?;
        Ok(())
    }
}

type InteractionRow = (
    String,
    String,
    Option<String>,
    i16,
    DateTime<Utc>,
    Option<i32>,
    DateTime<Utc>,
);

impl Table for Interaction {
    fn contributions(&self) -> Contributions {
        kpi::interaction_contributions(self)
    }

    async fn load(conn: &mut PgConnection, ids: &[&str]) -> Result<Vec<Self>, sqlx::Error> {
        let rows: Vec<InteractionRow> =
            sqlx::query_as(sqlx::AssertSqlSafe(INTERACTIONS.load.as_str()))
                .bind(ids)
                .fetch_all(conn)
                .await?;
        rows.into_iter()
            .map(
                |(id, rep_id, customer_id, channel, occurred_at, duration_seconds, updated_at)| {
                    Ok(Interaction {
                        id,
                        rep_id,
                        customer_id,
                        channel: Channel::from_code(i32::from(channel))
                            .ok_or_else(|| corrupt("channel", channel))?,
                        occurred_at,
                        duration_seconds,
                        updated_at,
                    })
                },
            )
            .collect()
    }

    async fn upsert(
        conn: &mut PgConnection,
        rows: &[&Self],
        replace: bool,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(INTERACTIONS.write(replace)))
            .bind(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.rep_id.as_str()).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.customer_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.channel.code()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.duration_seconds).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .execute(conn)
            .await?;
        Ok(())
    }
}

type DealRow = (
    String,
    String,
    Option<String>,
    String,
    String,
    i16,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

impl Table for Deal {
    fn contributions(&self) -> Contributions {
        kpi::deal_contributions(self)
    }

    async fn load(conn: &mut PgConnection, ids: &[&str]) -> Result<Vec<Self>, sqlx::Error> {
        let rows: Vec<DealRow> = sqlx::query_as(sqlx::AssertSqlSafe(DEALS.load.as_str()))
            .bind(ids)
            .fetch_all(conn)
            .await?;
        rows.into_iter()
            .map(
                |(
                    id,
                    rep_id,
                    customer_id,
                    currency,
                    amount,
                    stage,
                    created_at,
                    closed_at,
                    updated_at,
                )| {
                    Ok(Deal {
                        id,
                        rep_id,
                        customer_id,
                        currency,
                        amount: Amount::from_decimal(&amount).map_err(|e| corrupt("amount", e))?,
                        stage: DealStage::from_code(i32::from(stage))
                            .ok_or_else(|| corrupt("stage", stage))?,
                        created_at,
                        closed_at,
                        updated_at,
                    })
                },
            )
            .collect()
    }

    async fn upsert(
        conn: &mut PgConnection,
        rows: &[&Self],
        replace: bool,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(DEALS.write(replace)))
            .bind(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.rep_id.as_str()).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.customer_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.currency.as_str()).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.amount.to_decimal())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.stage.code()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.closed_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .execute(conn)
            .await?;
        Ok(())
    }
}

type FeedbackRow = (
    String,
    String,
    Option<String>,
    i16,
    i16,
    DateTime<Utc>,
    Option<String>,
    DateTime<Utc>,
);

impl Table for Feedback {
    fn contributions(&self) -> Contributions {
        kpi::feedback_contributions(self)
    }

    async fn load(conn: &mut PgConnection, ids: &[&str]) -> Result<Vec<Self>, sqlx::Error> {
        let rows: Vec<FeedbackRow> = sqlx::query_as(sqlx::AssertSqlSafe(FEEDBACK.load.as_str()))
            .bind(ids)
            .fetch_all(conn)
            .await?;
        rows.into_iter()
            .map(
                |(id, rep_id, customer_id, kind, score, submitted_at, comment, updated_at)| {
                    Ok(Feedback {
                        id,
                        rep_id,
                        customer_id,
                        kind: FeedbackKind::from_code(i32::from(kind))
                            .ok_or_else(|| corrupt("feedback kind", kind))?,
                        score,
                        submitted_at,
                        comment,
                        updated_at,
                    })
                },
            )
            .collect()
    }

    async fn upsert(
        conn: &mut PgConnection,
        rows: &[&Self],
        replace: bool,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(FEEDBACK.write(replace)))
            .bind(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.rep_id.as_str()).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.customer_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.kind.code()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.score).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.submitted_at).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.comment.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .execute(conn)
            .await?;
        Ok(())
    }
}

type RequestRow = (
    String,
    String,
    Option<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

impl Table for CustomerRequest {
    fn contributions(&self) -> Contributions {
        kpi::request_contributions(self)
    }

    async fn load(conn: &mut PgConnection, ids: &[&str]) -> Result<Vec<Self>, sqlx::Error> {
        let rows: Vec<RequestRow> = sqlx::query_as(sqlx::AssertSqlSafe(REQUESTS.load.as_str()))
            .bind(ids)
            .fetch_all(conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    id,
                    rep_id,
                    customer_id,
                    opened_at,
                    first_response_at,
                    resolved_at,
                    updated_at,
                )| {
                    CustomerRequest {
                        id,
                        rep_id,
                        customer_id,
                        opened_at,
                        first_response_at,
                        resolved_at,
                        updated_at,
                    }
                },
            )
            .collect())
    }

    async fn upsert(
        conn: &mut PgConnection,
        rows: &[&Self],
        replace: bool,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(REQUESTS.write(replace)))
            .bind(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.rep_id.as_str()).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.customer_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.opened_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.first_response_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.resolved_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .execute(conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_column_list_gives_the_lookup_and_both_writes() {
        assert_eq!(
            DEALS.load,
            "WITH r AS MATERIALIZED (SELECT min(x) AS lo, max(x) AS hi FROM unnest($1::text[]) x) \
             SELECT deal_id, rep_id, customer_id, currency, amount::text, stage, created_at, \
             closed_at, source_updated_at FROM deals WHERE deal_id = ANY($1) \
             AND EXISTS (SELECT 1 FROM deals s \
             WHERE s.deal_id BETWEEN (SELECT lo FROM r) AND (SELECT hi FROM r)) \
             ORDER BY deal_id FOR UPDATE"
        );
        assert!(
            DEALS
                .insert
                .contains("unnest($5::text[])::numeric, unnest($6::smallint[])")
        );
        assert!(!DEALS.insert.contains("ON CONFLICT"));
        assert!(DEALS.replace.starts_with(DEALS.insert.as_str()));
        assert!(
            DEALS
                .replace
                .contains("ON CONFLICT (deal_id) DO UPDATE SET rep_id = EXCLUDED.rep_id")
        );
    }
}
