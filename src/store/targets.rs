//! Targets per KPI, subject and period. KPIs are stored by their code
//! (`Kpi::code`), subjects as kind and id.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;

use super::{
    changes::{self, Change},
    keys::generate_key,
};
use crate::{
    Error,
    domain::{
        kpi::Kpi,
        period::{Period, parse_zone},
        target::{NewTarget, Subject, Target, TargetFilter},
    },
};

/// The columns of `TargetRow`, for `concat!` (statements are static text).
macro_rules! columns {
    () => {
        " target_id, kpi, subject_kind, subject_id, start_date, end_date, time_zone, value, \
         created_at, updated_at "
    };
}

#[derive(sqlx::FromRow)]
struct TargetRow {
    target_id: String,
    kpi: String,
    subject_kind: String,
    subject_id: String,
    start_date: NaiveDate,
    end_date: NaiveDate,
    time_zone: String,
    value: f64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<TargetRow> for Target {
    type Error = Error;

    /// A stored row that this build cannot read (an unknown KPI code or
    /// zone) is an internal error naming the row, never a guess.
    fn try_from(row: TargetRow) -> Result<Self, Error> {
        let corrupt =
            |what: String| Error::internal(anyhow::anyhow!("target '{}': {what}", row.target_id));
        let kpi = Kpi::from_code(&row.kpi).map_err(|e| corrupt(e.to_string()))?;
        let subject = Subject::from_parts(&row.subject_kind, &row.subject_id).map_err(&corrupt)?;
        let zone = parse_zone(&row.time_zone).map_err(&corrupt)?;
        let period = Period::new(row.start_date, row.end_date, zone).map_err(&corrupt)?;
        Ok(Target {
            id: row.target_id,
            kpi,
            subject,
            period,
            value: row.value,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

fn targets(rows: Vec<TargetRow>) -> Result<Vec<Target>, Error> {
    rows.into_iter().map(Target::try_from).collect()
}

/// Sets a target; the same KPI, subject and dates replace the old value.
pub async fn set(pool: &PgPool, target: &NewTarget) -> Result<Target, Error> {
    let id = generate_key()
        .map_err(|e| Error::internal(anyhow::anyhow!("OS RNG: {e}")))?
        .key_id;
    let period = target.period();
    let mut tx = pool.begin().await?;
    let row: TargetRow = sqlx::query_as(concat!(
        r#"
        INSERT INTO targets AS t
            (target_id, kpi, subject_kind, subject_id, start_date, end_date, time_zone, value)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (kpi, subject_kind, subject_id, start_date, end_date) DO UPDATE SET
            time_zone = EXCLUDED.time_zone,
            value = EXCLUDED.value,
            updated_at = CASE WHEN (t.time_zone, t.value) IS DISTINCT FROM
                                   (EXCLUDED.time_zone, EXCLUDED.value)
                              THEN now() ELSE t.updated_at END
        RETURNING"#,
        columns!()
    ))
    .bind(format!("t-{id}"))
    .bind(target.kpi().code())
    .bind(target.subject().kind())
    .bind(target.subject().id())
    .bind(period.start())
    .bind(period.end())
    .bind(period.zone().name())
    .bind(target.value())
    .fetch_one(&mut *tx)
    .await?;
    changes::publish(&mut tx, &targets_change()).await?;
    tx.commit().await?;
    Target::try_from(row)
}

fn targets_change() -> Change {
    Change::new(vec![changes::TARGETS.to_owned()], None)
}

/// Targets matching the filter, by subject, KPI and dates; with `visible`
/// (a scoped key's teams) only the targets of those teams and of the reps
/// now in them, decided in this one query.
pub async fn list(
    pool: &PgPool,
    filter: &TargetFilter,
    period: Option<&Period>,
    visible: Option<Vec<String>>,
) -> Result<Vec<Target>, Error> {
    let rows: Vec<TargetRow> = sqlx::query_as(concat!(
        "SELECT",
        columns!(),
        r#"
        FROM targets t
        WHERE ($1::text IS NULL OR (t.subject_kind = $1 AND t.subject_id = $2))
          AND ($3::text IS NULL OR t.kpi = $3)
          AND ($4::date IS NULL OR (t.start_date <= $4 AND t.end_date >= $4))
          AND ($7::date IS NULL
               OR (t.start_date = $7 AND t.end_date = $8 AND t.time_zone = $9))
          AND ($5::text[] IS NULL
               OR (t.subject_kind = 'team' AND t.subject_id = ANY($5))
               OR (t.subject_kind = 'rep' AND (
                     SELECT h.team_id FROM rep_team_history h
                     WHERE h.rep_id = t.subject_id AND h.effective_from <= now()
                     ORDER BY h.effective_from DESC LIMIT 1) = ANY($5)))
        ORDER BY t.subject_kind, t.subject_id, array_position($6::text[], t.kpi),
                 t.start_date, t.end_date
        LIMIT 10000
        "#
    ))
    .bind(filter.subject.as_ref().map(Subject::kind))
    .bind(filter.subject.as_ref().map(Subject::id))
    .bind(filter.kpi.map(Kpi::code))
    .bind(filter.active_on)
    .bind(visible)
    .bind(Kpi::ALL.map(Kpi::code).to_vec())
    .bind(period.map(Period::start))
    .bind(period.map(Period::end))
    .bind(period.map(|p| p.zone().name()))
    .fetch_all(pool)
    .await?;
    targets(rows)
}

/// The targets of these subjects for exactly this period's dates.
pub async fn for_period(
    pool: &PgPool,
    subject_kind: &str,
    subject_ids: &[String],
    period: &Period,
) -> Result<Vec<Target>, Error> {
    let rows: Vec<TargetRow> = sqlx::query_as(concat!(
        "SELECT",
        columns!(),
        r#"
        FROM targets
        WHERE subject_kind = $1 AND subject_id = ANY($2) AND start_date = $3 AND end_date = $4
        "#
    ))
    .bind(subject_kind)
    .bind(subject_ids)
    .bind(period.start())
    .bind(period.end())
    .fetch_all(pool)
    .await?;
    targets(rows)
}

/// Deletes a target; whether there was one.
pub async fn delete(pool: &PgPool, target_id: &str) -> Result<bool, Error> {
    let mut tx = pool.begin().await?;
    let result = sqlx::query("DELETE FROM targets WHERE target_id = $1")
        .bind(target_id)
        .execute(&mut *tx)
        .await?;
    let deleted = result.rows_affected() > 0;
    if deleted {
        changes::publish(&mut tx, &targets_change()).await?;
    }
    tx.commit().await?;
    Ok(deleted)
}
