//! The `kpi_rollups` table: written with every batch, read by KPI queries.

use std::sync::LazyLock;

use sqlx::PgConnection;

use super::changes::{Change, rep_scope};
use crate::domain::{
    rollup::{DeltaRow, Deltas, Level},
    sums::{METRICS, Metric},
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
    "won_unconverted",
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

/// The metrics each kind of record feeds, as ranges of `METRICS`: a batch
/// upserts only the groups it changes (an interaction batch writes 5
/// columns, not 23).
const GROUPS: [std::ops::Range<usize>; 5] = [0..5, 5..9, 9..14, 14..19, 19..23];

/// The metrics (indexes into `METRICS`) of the groups in `mask` (bit i:
/// `GROUPS[i]`), in the order the statement names and binds them.
fn masked(mask: u8) -> Vec<usize> {
    GROUPS
        .iter()
        .enumerate()
        .filter(|(g, _)| mask & (1 << g) != 0)
        .flat_map(|(_, range)| range.clone())
        .collect()
}

/// The groups with any change in `rows`.
fn mask_of(rows: &[DeltaRow]) -> u8 {
    rows.iter().fold(0, |mask, DeltaRow { sums, .. }| {
        GROUPS.iter().enumerate().fold(mask, |mask, (g, range)| {
            if sums[range.clone()].iter().any(|v| *v != 0) {
                mask | (1 << g)
            } else {
                mask
            }
        })
    })
}

/// `INSERT … SELECT unnest(…) … ON CONFLICT DO UPDATE SET col = col + new`
/// for the metrics of `mask` (through the partitioned parent: one
/// statement for every level).
fn upsert_sql(mask: u8) -> String {
    let metrics = masked(mask);
    let names: Vec<&str> = metrics.iter().map(|&i| COLUMNS[i]).collect();
    let names = names.join(", ");
    let params: Vec<String> = metrics
        .iter()
        .enumerate()
        .map(|(p, &i)| {
            let n = p + 4;
            if is_numeric(METRICS[i]) {
                format!("${n}::text[]")
            } else {
                format!("${n}::bigint[]")
            }
        })
        .collect();
    let select: Vec<String> = metrics
        .iter()
        .zip(&params)
        .map(|(&i, p)| {
            if is_numeric(METRICS[i]) {
                format!("unnest({p})::numeric")
            } else {
                format!("unnest({p})")
            }
        })
        .collect();
    let sets: Vec<String> = metrics
        .iter()
        .map(|&i| format!("{c} = r.{c} + EXCLUDED.{c}", c = COLUMNS[i]))
        .collect();
    format!(
        "INSERT INTO kpi_rollups AS r (rep_id, level, bucket, {names}) \
         SELECT unnest($1::text[]), unnest($2::smallint[]), unnest($3::timestamptz[]), {} \
         ON CONFLICT (rep_id, level, bucket) DO UPDATE SET {}",
        select.join(", "),
        sets.join(", ")
    )
}

/// The statement for each mask, built once.
static UPSERTS: LazyLock<Vec<String>> = LazyLock::new(|| (0..32).map(upsert_sql).collect());

/// Adds `deltas` to the rollups in one statement, rows in (level, rep,
/// bucket) order: concurrent batches lock them in the same order, and the
/// hour rows come first, so the day and month rows that concurrent batches
/// share are locked only for the end of the statement and the commit.
///
/// Returns what changed (the reps whose sums moved, and the hours they
/// moved in) for the change feed: nothing when every change netted out.
pub async fn apply(conn: &mut PgConnection, deltas: Deltas) -> Result<Change, sqlx::Error> {
    let rows = deltas.into_rows();
    let mask = mask_of(&rows);
    if let Some(sql) = UPSERTS.get(usize::from(mask)).filter(|_| mask != 0) {
        upsert(conn, sql, mask, &rows).await?;
    }
    let hours = rows.iter().filter(|r| r.level == Level::Hour);
    let from = hours.clone().map(|r| r.bucket).min();
    let until = hours
        .map(|r| r.bucket)
        .max()
        .map(|b| b + chrono::TimeDelta::hours(1));
    Ok(Change::new(
        rows.iter().map(|r| rep_scope(&r.rep)).collect(),
        from.zip(until),
    ))
}

async fn upsert(
    conn: &mut PgConnection,
    sql: &str,
    mask: u8,
    rows: &[DeltaRow],
) -> Result<(), sqlx::Error> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(rows.iter().map(|row| row.rep.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.level as i16).collect::<Vec<_>>())
        .bind(rows.iter().map(|row| row.bucket).collect::<Vec<_>>());
    for i in masked(mask) {
        if is_numeric(METRICS[i]) {
            query = query.bind(
                rows.iter()
                    .map(|row| row.sums[i].to_string())
                    .collect::<Vec<_>>(),
            );
        } else {
            query = query.bind(
                rows.iter()
                    .map(|row| i64::try_from(row.sums[i]).unwrap_or(i64::MAX))
                    .collect::<Vec<_>>(),
            );
        }
    }
    query.execute(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_groups_cover_every_metric_once_in_order() {
        let covered: Vec<usize> = GROUPS.iter().flat_map(|g| g.clone()).collect();
        assert_eq!(covered, (0..METRICS.len()).collect::<Vec<_>>());
        assert!(
            upsert_sql(0b00001)
                .contains("(rep_id, level, bucket, calls, emails, meetings, messages, demos)")
        );
        assert!(
            upsert_sql(0b11111)
                .contains("response_micros = r.response_micros + EXCLUDED.response_micros")
        );
    }
}
