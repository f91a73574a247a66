//! Targets per KPI, subject and period.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;

use crate::{Error, domain::access::generate_key};

#[derive(Debug, Clone, PartialEq)]
pub struct TargetRow {
    pub target_id: String,
    pub kpi: i16,
    pub subject_kind: String,
    pub subject_id: String,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    pub time_zone: String,
    pub value: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

type Row = (
    String,
    i16,
    String,
    String,
    NaiveDate,
    NaiveDate,
    String,
    f64,
    DateTime<Utc>,
    DateTime<Utc>,
);

fn row(r: Row) -> TargetRow {
    TargetRow {
        target_id: r.0,
        kpi: r.1,
        subject_kind: r.2,
        subject_id: r.3,
        start_date: r.4,
        end_date: r.5,
        time_zone: r.6,
        value: r.7,
        created_at: r.8,
        updated_at: r.9,
    }
}

/// Sets a target; the same KPI, subject and dates replace the old value.
#[allow(clippy::too_many_arguments)]
pub async fn set(
    pool: &PgPool,
    kpi: i16,
    subject_kind: &str,
    subject_id: &str,
    start: NaiveDate,
    end: NaiveDate,
    time_zone: &str,
    value: f64,
) -> Result<TargetRow, Error> {
    let id = generate_key()
        .map_err(|e| Error::internal(anyhow::anyhow!("OS RNG: {e}")))?
        .key_id;
    let r: Row = sqlx::query_as(
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
        RETURNING target_id, kpi, subject_kind, subject_id, start_date, end_date, time_zone,
                  value, created_at, updated_at
        "#,
    )
    .bind(format!("t-{id}"))
    .bind(kpi)
    .bind(subject_kind)
    .bind(subject_id)
    .bind(start)
    .bind(end)
    .bind(time_zone)
    .bind(value)
    .fetch_one(pool)
    .await?;
    Ok(row(r))
}

/// Targets matching the filters (each optional), by subject, KPI, dates.
pub async fn list(
    pool: &PgPool,
    subject: Option<(&str, &str)>,
    kpi: Option<i16>,
    active_on: Option<NaiveDate>,
) -> Result<Vec<TargetRow>, Error> {
    let rows: Vec<Row> = sqlx::query_as(
        r#"
        SELECT target_id, kpi, subject_kind, subject_id, start_date, end_date, time_zone, value,
               created_at, updated_at
        FROM targets
        WHERE ($1::text IS NULL OR (subject_kind = $1 AND subject_id = $2))
          AND ($3::smallint IS NULL OR kpi = $3)
          AND ($4::date IS NULL OR (start_date <= $4 AND end_date >= $4))
        ORDER BY subject_kind, subject_id, kpi, start_date, end_date
        LIMIT 10000
        "#,
    )
    .bind(subject.map(|s| s.0))
    .bind(subject.map(|s| s.1))
    .bind(kpi)
    .bind(active_on)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(row).collect())
}

/// The targets of these subjects for exactly these dates.
pub async fn for_period(
    pool: &PgPool,
    subject_kind: &str,
    subject_ids: &[String],
    start: NaiveDate,
    end: NaiveDate,
) -> Result<Vec<TargetRow>, Error> {
    let rows: Vec<Row> = sqlx::query_as(
        r#"
        SELECT target_id, kpi, subject_kind, subject_id, start_date, end_date, time_zone, value,
               created_at, updated_at
        FROM targets
        WHERE subject_kind = $1 AND subject_id = ANY($2) AND start_date = $3 AND end_date = $4
        "#,
    )
    .bind(subject_kind)
    .bind(subject_ids)
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(row).collect())
}

pub async fn get(pool: &PgPool, target_id: &str) -> Result<Option<TargetRow>, Error> {
    let r: Option<Row> = sqlx::query_as(
        r#"
        SELECT target_id, kpi, subject_kind, subject_id, start_date, end_date, time_zone, value,
               created_at, updated_at
        FROM targets WHERE target_id = $1
        "#,
    )
    .bind(target_id)
    .fetch_optional(pool)
    .await?;
    Ok(r.map(row))
}

pub async fn delete(pool: &PgPool, target_id: &str) -> Result<bool, Error> {
    let result = sqlx::query("DELETE FROM targets WHERE target_id = $1")
        .bind(target_id)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() > 0)
}
