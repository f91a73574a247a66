//! The `kpi_rollups` table: written with every batch, read by KPI queries.

use std::sync::LazyLock;

use sqlx::PgConnection;

use crate::domain::{
    kpi::{METRICS, Metric},
    rollup::Deltas,
};

/// Column of each metric, in `METRICS` order.
pub const COLUMNS: [&str; METRICS.len()] = [
    "calls",
    "emails",
    "meetings",
    "messages",
    "demos",
    "leads",
    "leads_converted",
    "conversions",
    "churns",
    "deals_won",
    "deals_lost",
    "revenue_nanos",
    "cycle_micros",
    "nps_responses",
    "nps_promoters",
    "nps_detractors",
    "csat_responses",
    "csat_satisfied",
    "requests_opened",
    "requests_resolved",
    "requests_responded",
    "response_micros",
];

/// Sums that may exceed 64 bits: stored as numeric.
pub fn is_numeric(metric: Metric) -> bool {
    matches!(
        metric,
        Metric::RevenueNanos | Metric::CycleMicros | Metric::ResponseMicros
    )
}

/// `INSERT … SELECT FROM UNNEST … ON CONFLICT DO UPDATE SET col = col + new`.
static UPSERT: LazyLock<String> = LazyLock::new(|| {
    let names = COLUMNS.join(", ");
    let params: Vec<String> = METRICS
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let n = i + 4;
            if is_numeric(*m) {
                format!("${n}::text[]")
            } else {
                format!("${n}::bigint[]")
            }
        })
        .collect();
    let select: Vec<String> = METRICS
        .iter()
        .zip(COLUMNS)
        .map(|(m, c)| {
            if is_numeric(*m) {
                format!("{c}::numeric")
            } else {
                c.to_owned()
            }
        })
        .collect();
    let sets: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("{c} = r.{c} + EXCLUDED.{c}"))
        .collect();
    format!(
        "INSERT INTO kpi_rollups AS r (rep_id, level, bucket, {names}) \
         SELECT rep, lvl, bucket, {} \
         FROM UNNEST($1::text[], $2::smallint[], $3::timestamptz[], {}) AS u (rep, lvl, bucket, {names}) \
         ON CONFLICT (rep_id, level, bucket) DO UPDATE SET {}",
        select.join(", "),
        params.join(", "),
        sets.join(", ")
    )
});

/// Adds `deltas` to the rollups (in key order, so concurrent batches lock
/// rows in the same order).
pub async fn apply(conn: &mut PgConnection, deltas: Deltas) -> Result<(), sqlx::Error> {
    let rows = deltas.into_sorted();
    if rows.is_empty() {
        return Ok(());
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(UPSERT.as_str()))
        .bind(
            rows.iter()
                .map(|((rep, _, _), _)| rep.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|((_, level, _), _)| *level as i16)
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|((_, _, bucket), _)| *bucket)
                .collect::<Vec<_>>(),
        );
    for (i, metric) in METRICS.iter().enumerate() {
        if is_numeric(*metric) {
            query = query.bind(
                rows.iter()
                    .map(|(_, sums)| sums[i].to_string())
                    .collect::<Vec<_>>(),
            );
        } else {
            query = query.bind(
                rows.iter()
                    .map(|(_, sums)| i64::try_from(sums[i]).unwrap_or(i64::MAX))
                    .collect::<Vec<_>>(),
            );
        }
    }
    query.execute(conn).await?;
    Ok(())
}
