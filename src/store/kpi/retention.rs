//! Retention's churn and active counts, from the customers' own
//! timestamps.

use std::{collections::HashMap, sync::LazyLock};

use sqlx::PgPool;

use super::{Groups, Source};
use crate::{Error, domain::tally::RetentionQuery};

/// Per slot of a retention query: the customers converted before its start
/// who churned in [start, end), and (raw source only) the active customers
/// at its start, counted from the customers' own timestamps.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    pub(super) churned: i128,
    pub(super) active: Option<i128>,
}

/// With rollups, only the customers who churned in the period are read
/// (an index range); the raw count reads every converted customer. Each
/// check names its reps as a slice of $6 (a group, bound once).
pub(super) static RETENTION_SQL: LazyLock<[String; 2]> = LazyLock::new(|| {
    let counts = [
        "SELECT count(*) AS churned, NULL::bigint AS active FROM customers c \
         WHERE c.rep_id = ANY (($6::text[])[x.lo:x.hi]) \
           AND c.churned_at >= x.s AND c.churned_at < x.e AND c.converted_at < x.s",
        "SELECT count(*) FILTER (WHERE c.churned_at >= x.s AND c.churned_at < x.e) AS churned, \
                count(*) FILTER (WHERE c.churned_at IS NULL OR c.churned_at >= x.s) AS active \
         FROM customers c WHERE c.rep_id = ANY (($6::text[])[x.lo:x.hi]) AND c.converted_at < x.s",
    ];
    counts.map(|counts| {
        format!(
            "SELECT x.slot, sum(n.churned)::bigint, sum(n.active)::bigint \
             FROM UNNEST($1::int[], $2::int[], $3::int[], $4::timestamptz[], $5::timestamptz[]) \
                  AS x (slot, lo, hi, s, e) \
             CROSS JOIN LATERAL ({counts}) n \
             GROUP BY x.slot"
        )
    })
});

/// The retention checks of a call, their reps interned as groups.
pub(super) struct RetentionGroups<'q> {
    checks: Vec<(i32, u32, &'q RetentionQuery)>,
    groups: Groups,
}

impl<'q> RetentionGroups<'q> {
    pub(super) fn new(checks: &[(i32, &'q RetentionQuery)]) -> Self {
        let mut groups = Groups::default();
        let checks = checks
            .iter()
            .filter(|(_, retention)| !retention.reps.is_empty())
            .map(|&(slot, retention)| (slot, groups.intern(retention.reps.clone()), retention))
            .collect();
        Self { checks, groups }
    }
}

pub(super) async fn retention_counts(
    pool: &PgPool,
    retention: &RetentionGroups<'_>,
    source: Source,
) -> Result<HashMap<i32, Counts>, Error> {
    if retention.checks.is_empty() {
        return Ok(HashMap::new());
    }
    let checks = &retention.checks;
    let (first, last) = retention.groups.bounds(checks.iter().map(|c| c.1));
    let sql = match source {
        Source::Rollups => &*RETENTION_SQL[0],
        Source::Raw => &*RETENTION_SQL[1],
    };
    let rows: Vec<(i32, i64, Option<i64>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(checks.iter().map(|c| c.0).collect::<Vec<_>>())
        .bind(first)
        .bind(last)
        .bind(checks.iter().map(|c| c.2.start).collect::<Vec<_>>())
        .bind(checks.iter().map(|c| c.2.end).collect::<Vec<_>>())
        .bind(retention.groups.reps())
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(slot, churned, active)| {
            let counts = Counts {
                churned: i128::from(churned),
                active: active.map(i128::from),
            };
            (slot, counts)
        })
        .collect())
}
