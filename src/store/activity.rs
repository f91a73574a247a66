//! Recording activity: one transaction per batch, idempotent by id and
//! version (see `domain::activity`), safe against concurrent retries.
//!
//! Per batch: check that every rep exists; per record type, lock the stored
//! versions of the batch's ids (in id order, so racing batches cannot
//! deadlock), classify each record, and write the new and newer ones with
//! one `INSERT … SELECT FROM UNNEST … ON CONFLICT DO UPDATE … WHERE newer`.
//! Any violation rolls the whole batch back.

use std::collections::{HashMap, HashSet};

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
        kpi::{self, Contribution},
        rollup::Deltas,
    },
};

/// How often a batch is retried after a deadlock or serialization failure
/// before the error reaches the caller.
const MAX_ATTEMPTS: u32 = 3;

/// A batch reduced to one version per id, with what that reduction found.
struct Plan {
    customers: Vec<(usize, Customer)>,
    interactions: Vec<(usize, Interaction)>,
    deals: Vec<(usize, Deal)>,
    feedback: Vec<(usize, Feedback)>,
    requests: Vec<(usize, CustomerRequest)>,
    /// Every record's rep, to check they exist: (index, kind, rep_id).
    reps: Vec<(usize, &'static str, String)>,
    counts: Counts,
    violations: Vec<FieldViolation>,
}

fn reduce<T: Versioned>(
    records: Vec<(usize, T)>,
    reps: &mut Vec<(usize, &'static str, String)>,
    counts: &mut Counts,
    violations: &mut Vec<FieldViolation>,
) -> Vec<(usize, T)> {
    reps.extend(
        records
            .iter()
            .map(|(index, r)| (*index, T::KIND, r.rep_id().to_owned())),
    );
    let (winners, batch_counts, conflicts) = dedupe(records);
    *counts += batch_counts;
    violations.extend(conflicts.into_iter().map(|index| {
        FieldViolation::new(
            format!("records[{index}].{}.updated_at", T::KIND),
            "another record of this batch has the same id and updated_at but different content",
        )
    }));
    winners
}

impl Plan {
    fn new(batch: Batch, violations: Vec<FieldViolation>) -> Self {
        let mut reps = Vec::with_capacity(batch.len());
        let mut counts = Counts::default();
        let mut violations = violations;
        let (r, c, v) = (&mut reps, &mut counts, &mut violations);
        Self {
            customers: reduce(batch.customers, r, c, v),
            interactions: reduce(batch.interactions, r, c, v),
            deals: reduce(batch.deals, r, c, v),
            feedback: reduce(batch.feedback, r, c, v),
            requests: reduce(batch.requests, r, c, v),
            reps,
            counts,
            violations,
        }
    }
}

/// Records a validated batch atomically and says what happened to each
/// record. `violations` are those already found in the request; with them,
/// or with any the database finds (unknown reps, a stored version with the
/// same `updated_at` but other content), nothing is written and all of them
/// are returned together.
pub async fn record_batch(
    pool: &PgPool,
    batch: Batch,
    violations: Vec<FieldViolation>,
) -> Result<Counts, Error> {
    let plan = Plan::new(batch, violations);
    let mut attempt = 1;
    loop {
        match apply(pool, &plan).await {
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
                tracing::info!(attempt, error = %err, "batch hit a deadlock or serialization failure; retrying");
                attempt += 1;
            }
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

fn is_retryable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001"))
    )
}

async fn apply(
    pool: &PgPool,
    plan: &Plan,
) -> Result<Result<Counts, Vec<FieldViolation>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut violations = Vec::new();

    let distinct: HashSet<&str> = plan.reps.iter().map(|(_, _, rep)| rep.as_str()).collect();
    let distinct: Vec<&str> = distinct.into_iter().collect();
    let known: HashSet<String> =
        sqlx::query_scalar("SELECT rep_id FROM reps WHERE rep_id = ANY($1)")
            .bind(&distinct)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    for (index, kind, rep) in &plan.reps {
        if !known.contains(rep) {
            violations.push(FieldViolation::new(
                format!("records[{index}].{kind}.rep_id"),
                format!("rep '{rep}' does not exist"),
            ));
        }
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
        counts: &mut counts,
        violations: &mut violations,
        deltas: &mut deltas,
    };
    w.write(customers).await?;
    w.write(interactions).await?;
    w.write(deals).await?;
    w.write(feedback).await?;
    w.write(requests).await?;
    if !violations.is_empty() {
        return Ok(Err(violations));
    }
    rollup::apply(&mut tx, deltas).await?;
    tx.commit().await?;
    Ok(Ok(counts))
}

/// What a batch will write for one record type.
struct Staged<'a, T> {
    /// New ids (as far as the transaction can see).
    inserts: Vec<(usize, &'a T)>,
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
                staged.inserts.push((*index, record));
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
    counts: &'c mut Counts,
    violations: &'c mut Vec<FieldViolation>,
    deltas: &'c mut Deltas,
}

impl Writer<'_> {
    async fn write<T: Table>(&mut self, staged: Staged<'_, T>) -> Result<(), sqlx::Error> {
        let Staged {
            inserts,
            mut updates,
        } = staged;
        if !inserts.is_empty() {
            let rows: Vec<&T> = inserts.iter().map(|(_, r)| *r).collect();
            let written: HashSet<String> = T::upsert(self.conn, &rows, false)
                .await?
                .into_iter()
                .collect();
            let mut raced = Vec::new();
            for (index, record) in &inserts {
                if written.contains(record.id()) {
                    self.deltas
                        .apply(record.rep_id(), &record.contributions(), 1);
                } else {
                    raced.push((*index, *record));
                }
            }
            if !raced.is_empty() {
                // A concurrent batch inserted these ids first and has
                // committed (the insert waited for it): classify again
                // against what it stored.
                let ids: Vec<&str> = raced.iter().map(|(_, r)| r.id()).collect();
                let mut stored: HashMap<String, T> = T::load(self.conn, &ids)
                    .await?
                    .into_iter()
                    .map(|r| (r.id().to_owned(), r))
                    .collect();
                for (index, record) in raced {
                    self.counts.inserted = self.counts.inserted.saturating_sub(1);
                    let old = stored.remove(record.id());
                    match classify(record, old.as_ref()) {
                        Outcome::Update | Outcome::Insert => {
                            self.counts.updated += 1;
                            if let Some(old) = old {
                                updates.push((record, old));
                            }
                        }
                        Outcome::Unchanged => self.counts.unchanged += 1,
                        Outcome::Stale => self.counts.stale += 1,
                        Outcome::Conflict => self.violations.push(conflict(index, T::KIND)),
                    }
                }
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
    /// The stored versions of `ids`, locked for the transaction, in id order.
    async fn load(conn: &mut PgConnection, ids: &[&str]) -> Result<Vec<Self>, sqlx::Error>;
    /// Inserts `rows` (sorted by id); with `replace`, an existing row is
    /// replaced when the new version is newer. Returns the ids written.
    async fn upsert(
        conn: &mut PgConnection,
        rows: &[&Self],
        replace: bool,
    ) -> Result<Vec<String>, sqlx::Error>;
    /// What the record adds to the KPI sums.
    fn contributions(&self) -> Vec<Contribution>;
}

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
    fn contributions(&self) -> Vec<Contribution> {
        kpi::customer_contributions(self)
    }

    async fn load(conn: &mut PgConnection, ids: &[&str]) -> Result<Vec<Self>, sqlx::Error> {
        let rows: Vec<CustomerRow> = sqlx::query_as(
            r#"
            SELECT customer_id, rep_id, lead_at, converted_at, churned_at, source_updated_at
            FROM customers WHERE customer_id = ANY($1)
            ORDER BY customer_id
            FOR UPDATE
            "#,
        )
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
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            r#"
            INSERT INTO customers AS cur
                (customer_id, rep_id, lead_at, converted_at, churned_at, source_updated_at)
            SELECT id, rep, lead, converted, churned, updated
            FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                        $5::timestamptz[], $6::timestamptz[])
                 AS u (id, rep, lead, converted, churned, updated)
            ON CONFLICT (customer_id) DO UPDATE SET
                rep_id = EXCLUDED.rep_id,
                lead_at = EXCLUDED.lead_at,
                converted_at = EXCLUDED.converted_at,
                churned_at = EXCLUDED.churned_at,
                source_updated_at = EXCLUDED.source_updated_at,
                recorded_at = now()
            WHERE EXCLUDED.source_updated_at > cur.source_updated_at AND $7
            RETURNING customer_id
            "#,
        )
        .bind(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.rep_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.lead_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.converted_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.churned_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
        .bind(replace)
        .fetch_all(conn)
        .await
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
    fn contributions(&self) -> Vec<Contribution> {
        kpi::interaction_contributions(self)
    }

    async fn load(conn: &mut PgConnection, ids: &[&str]) -> Result<Vec<Self>, sqlx::Error> {
        let rows: Vec<InteractionRow> = sqlx::query_as(
            r#"
            SELECT interaction_id, rep_id, customer_id, channel, occurred_at, duration_seconds,
                   source_updated_at
            FROM interactions WHERE interaction_id = ANY($1)
            ORDER BY interaction_id
            FOR UPDATE
            "#,
        )
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
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            r#"
            INSERT INTO interactions AS cur
                (interaction_id, rep_id, customer_id, channel, occurred_at, duration_seconds,
                 source_updated_at)
            SELECT id, rep, customer, channel, occurred, duration, updated
            FROM UNNEST($1::text[], $2::text[], $3::text[], $4::smallint[], $5::timestamptz[],
                        $6::integer[], $7::timestamptz[])
                 AS u (id, rep, customer, channel, occurred, duration, updated)
            ON CONFLICT (interaction_id) DO UPDATE SET
                rep_id = EXCLUDED.rep_id,
                customer_id = EXCLUDED.customer_id,
                channel = EXCLUDED.channel,
                occurred_at = EXCLUDED.occurred_at,
                duration_seconds = EXCLUDED.duration_seconds,
                source_updated_at = EXCLUDED.source_updated_at,
                recorded_at = now()
            WHERE EXCLUDED.source_updated_at > cur.source_updated_at AND $8
            RETURNING interaction_id
            "#,
        )
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
        .bind(replace)
        .fetch_all(conn)
        .await
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
    fn contributions(&self) -> Vec<Contribution> {
        kpi::deal_contributions(self)
    }

    async fn load(conn: &mut PgConnection, ids: &[&str]) -> Result<Vec<Self>, sqlx::Error> {
        let rows: Vec<DealRow> = sqlx::query_as(
            r#"
            SELECT deal_id, rep_id, customer_id, currency, amount::text, stage, created_at,
                   closed_at, source_updated_at
            FROM deals WHERE deal_id = ANY($1)
            ORDER BY deal_id
            FOR UPDATE
            "#,
        )
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
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            r#"
            INSERT INTO deals AS cur
                (deal_id, rep_id, customer_id, currency, amount, stage, created_at, closed_at,
                 source_updated_at)
            SELECT id, rep, customer, currency, amount::numeric, stage, created, closed, updated
            FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                        $6::smallint[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[])
                 AS u (id, rep, customer, currency, amount, stage, created, closed, updated)
            ON CONFLICT (deal_id) DO UPDATE SET
                rep_id = EXCLUDED.rep_id,
                customer_id = EXCLUDED.customer_id,
                currency = EXCLUDED.currency,
                amount = EXCLUDED.amount,
                stage = EXCLUDED.stage,
                created_at = EXCLUDED.created_at,
                closed_at = EXCLUDED.closed_at,
                source_updated_at = EXCLUDED.source_updated_at,
                recorded_at = now()
            WHERE EXCLUDED.source_updated_at > cur.source_updated_at AND $10
            RETURNING deal_id
            "#,
        )
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
        .bind(replace)
        .fetch_all(conn)
        .await
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
    fn contributions(&self) -> Vec<Contribution> {
        kpi::feedback_contributions(self)
    }

    async fn load(conn: &mut PgConnection, ids: &[&str]) -> Result<Vec<Self>, sqlx::Error> {
        let rows: Vec<FeedbackRow> = sqlx::query_as(
            r#"
            SELECT feedback_id, rep_id, customer_id, kind, score, submitted_at, comment,
                   source_updated_at
            FROM feedback WHERE feedback_id = ANY($1)
            ORDER BY feedback_id
            FOR UPDATE
            "#,
        )
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
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            r#"
            INSERT INTO feedback AS cur
                (feedback_id, rep_id, customer_id, kind, score, submitted_at, comment,
                 source_updated_at)
            SELECT id, rep, customer, kind, score, submitted, comment, updated
            FROM UNNEST($1::text[], $2::text[], $3::text[], $4::smallint[], $5::smallint[],
                        $6::timestamptz[], $7::text[], $8::timestamptz[])
                 AS u (id, rep, customer, kind, score, submitted, comment, updated)
            ON CONFLICT (feedback_id) DO UPDATE SET
                rep_id = EXCLUDED.rep_id,
                customer_id = EXCLUDED.customer_id,
                kind = EXCLUDED.kind,
                score = EXCLUDED.score,
                submitted_at = EXCLUDED.submitted_at,
                comment = EXCLUDED.comment,
                source_updated_at = EXCLUDED.source_updated_at,
                recorded_at = now()
            WHERE EXCLUDED.source_updated_at > cur.source_updated_at AND $9
            RETURNING feedback_id
            "#,
        )
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
        .bind(replace)
        .fetch_all(conn)
        .await
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
    fn contributions(&self) -> Vec<Contribution> {
        kpi::request_contributions(self)
    }

    async fn load(conn: &mut PgConnection, ids: &[&str]) -> Result<Vec<Self>, sqlx::Error> {
        let rows: Vec<RequestRow> = sqlx::query_as(
            r#"
            SELECT request_id, rep_id, customer_id, opened_at, first_response_at, resolved_at,
                   source_updated_at
            FROM customer_requests WHERE request_id = ANY($1)
            ORDER BY request_id
            FOR UPDATE
            "#,
        )
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
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            r#"
            INSERT INTO customer_requests AS cur
                (request_id, rep_id, customer_id, opened_at, first_response_at, resolved_at,
                 source_updated_at)
            SELECT id, rep, customer, opened, responded, resolved, updated
            FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                        $5::timestamptz[], $6::timestamptz[], $7::timestamptz[])
                 AS u (id, rep, customer, opened, responded, resolved, updated)
            ON CONFLICT (request_id) DO UPDATE SET
                rep_id = EXCLUDED.rep_id,
                customer_id = EXCLUDED.customer_id,
                opened_at = EXCLUDED.opened_at,
                first_response_at = EXCLUDED.first_response_at,
                resolved_at = EXCLUDED.resolved_at,
                source_updated_at = EXCLUDED.source_updated_at,
                recorded_at = now()
            WHERE EXCLUDED.source_updated_at > cur.source_updated_at AND $8
            RETURNING request_id
            "#,
        )
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
        .bind(replace)
        .fetch_all(conn)
        .await
    }
}
