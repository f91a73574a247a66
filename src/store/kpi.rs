//! KPI sums from the rollups (plus raw records for sub-hour edges), or from
//! the raw records alone (the naive baseline, and the reference the rollups
//! are tested against).

use std::{
    collections::{HashMap, HashSet},
    sync::LazyLock,
};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::rollup::COLUMNS;
use crate::{
    Error,
    domain::{
        directory::{ChangePoint, intervals_in, team_at},
        kpi::{METRICS, Metric, Tally},
        rollup::{Part, Sums, cover, epoch},
    },
};

/// Records of one rep credited in [from, to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub rep: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Retention at `start` for the customers of `reps` (those in the subject
/// at `start`), with churns counted until `end`.
#[derive(Debug, Clone)]
pub struct RetentionQuery {
    pub reps: Vec<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// One tally to compute.
#[derive(Debug, Clone, Default)]
pub struct TallyQuery {
    pub segments: Vec<Segment>,
    pub retention: Option<RetentionQuery>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Rollups for whole hours, days and months; raw records for the rest.
    Rollups,
    /// Raw records only.
    Raw,
}

/// Computes every query's tally, in few round trips whatever their number.
pub async fn tallies(
    pool: &PgPool,
    queries: &[TallyQuery],
    source: Source,
) -> Result<Vec<Tally>, Error> {
    let n = queries.len();
    // Slots 0..n: the queries' ranges; n..2n: cumulative ranges before each
    // retention start (conversions - churns = active customers), each from
    // the previous retention start of the same reps when there is one.
    // The raw source counts active customers from their own timestamps:
    // an independent reference for this arithmetic.
    let links = match source {
        Source::Rollups => chain_retention(queries),
        Source::Raw => Vec::new(),
    };
    let mut ranges: Vec<(i32, Segment)> = Vec::new();
    let mut churn_checks: Vec<(i32, &RetentionQuery)> = Vec::new();
    for (i, query) in queries.iter().enumerate() {
        let slot = i32::try_from(i).unwrap_or(i32::MAX);
        ranges.extend(query.segments.iter().map(|s| (slot, s.clone())));
        if let Some(retention) = &query.retention {
            let cumulative = i32::try_from(n + i).unwrap_or(i32::MAX);
            if let Some(link) = links
                .get(i)
                .filter(|l| l.reuse.is_none() && l.from < retention.start)
            {
                ranges.extend(retention.reps.iter().map(|rep| {
                    (
                        cumulative,
                        Segment {
                            rep: rep.clone(),
                            from: link.from,
                            to: retention.start,
                        },
                    )
                }));
            }
            churn_checks.push((slot, retention));
        }
    }

    // Reps whose ranges coincide (a team without moves: all of them) share
    // one index scan per range.
    let mut bucket_parts = Parts::default();
    let mut raw_parts = Parts::default();
    let mut covers: HashMap<(DateTime<Utc>, DateTime<Utc>), Vec<Part>> = HashMap::new();
    for (slot, segment) in &ranges {
        match source {
            Source::Raw => raw_parts.add(*slot, 0, segment.from, segment.to, 1, &segment.rep),
            Source::Rollups => {
                let parts = covers
                    .entry((segment.from, segment.to))
                    .or_insert_with(|| cover(segment.from, segment.to));
                for &(level, from, to, sign) in parts.iter() {
                    match level {
                        Some(level) => {
                            bucket_parts.add(*slot, level as i16, from, to, sign, &segment.rep)
                        }
                        None => raw_parts.add(*slot, 0, from, to, sign, &segment.rep),
                    }
                }
            }
        }
    }

    // Independent queries: run them at once, each on its own connection.
    let (rollups, raws, counted) = tokio::try_join!(
        rollup_sums(pool, &bucket_parts),
        raw_sums(pool, &raw_parts),
        retention_counts(pool, &churn_checks, source)
    )?;
    let mut all = vec![Tally::default(); 2 * n];
    for (slot, sums) in rollups.into_iter().chain(raws) {
        add_row(&mut all, slot, &sums);
    }
    let net = |tally: &Tally| tally.get(Metric::Conversions) - tally.get(Metric::Churns);
    let mut active = vec![0i128; n];
    for &i in &retention_order(queries) {
        active[i] = match (source, links.get(i)) {
            (Source::Rollups, Some(link)) => {
                net(&all[n + i])
                    + link.base.map_or(0, |j| active[j])
                    + link.reuse.map_or(0, |q| net(&all[q]))
            }
            _ => i32::try_from(i)
                .ok()
                .and_then(|slot| counted.get(&slot))
                .and_then(|c| c.active)
                .unwrap_or(0),
        };
    }
    let mut out: Vec<Tally> = all[..n].to_vec();
    for (slot, _) in &churn_checks {
        let i = usize::try_from(*slot).unwrap_or(0);
        out[i].retention.active_at_start = active[i];
        out[i].retention.churned = counted.get(slot).map_or(0, |c| c.churned);
    }
    Ok(out)
}

/// Where a retention query's count of active customers at its start
/// comes from: conversions minus churns of its reps over [from, start),
/// plus the count of query `base` (same reps, start `from`) if any; the
/// range's own sums are those of query `reuse` when its segments are
/// exactly these reps over [from, start) (the scorecard's previous period:
/// nothing more to read).
#[derive(Debug, Clone, PartialEq)]
struct Link {
    from: DateTime<Utc>,
    base: Option<usize>,
    reuse: Option<usize>,
}

/// The queries with retention, by start (a base comes before its users).
fn retention_order(queries: &[TallyQuery]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..queries.len())
        .filter(|&i| queries[i].retention.is_some())
        .collect();
    order.sort_by_key(|&i| queries[i].retention.as_ref().map(|r| r.start));
    order
}

/// Chains each retention query to the latest earlier one of the same reps,
/// so that a scorecard (period and previous period) or a series reads the
/// months since the beginning once, not once per start.
fn chain_retention(queries: &[TallyQuery]) -> Vec<Link> {
    fn sorted(reps: &[String]) -> Vec<&str> {
        let mut reps: Vec<&str> = reps.iter().map(String::as_str).collect();
        reps.sort_unstable();
        reps.dedup();
        reps
    }
    let order = retention_order(queries);
    // Each query's reps, sorted once (a series has a query per bucket).
    let rep_sets: Vec<Vec<&str>> = queries
        .iter()
        .map(|q| q.retention.as_ref().map_or(Vec::new(), |r| sorted(&r.reps)))
        .collect();
    let mut links = vec![
        Link {
            from: epoch(),
            base: None,
            reuse: None,
        };
        queries.len()
    ];
    for (k, &i) in order.iter().enumerate() {
        let Some(retention) = &queries[i].retention else {
            continue;
        };
        let reps = &rep_sets[i];
        // (`order` is by start: every earlier query starts no later.)
        let base = order[..k]
            .iter()
            .rev()
            .copied()
            .find(|&j| rep_sets[j] == *reps);
        let Some(from) = base.and_then(|j| queries[j].retention.as_ref().map(|r| r.start)) else {
            continue;
        };
        let exactly = |query: &TallyQuery| {
            let mut segments: Vec<&str> = Vec::with_capacity(query.segments.len());
            for segment in &query.segments {
                if segment.from != from || segment.to != retention.start {
                    return false;
                }
                segments.push(&segment.rep);
            }
            segments.sort_unstable();
            segments == *reps
        };
        let reuse = (from < retention.start)
            .then(|| queries.iter().position(exactly))
            .flatten();
        links[i] = Link { from, base, reuse };
    }
    links
}

fn add_row(all: &mut [Tally], slot: i32, sums: &Sums) {
    if let Some(tally) = usize::try_from(slot).ok().and_then(|i| all.get_mut(i)) {
        for (metric, value) in METRICS.iter().zip(sums) {
            tally.add(*metric, *value);
        }
    }
}

type SumsRow = (i32, Sums);

/// Signed ranges to sum, each for a group of reps: (slot, level, from,
/// to, sign) -> reps. Level 0 for raw ranges.
#[derive(Default)]
#[allow(clippy::type_complexity)]
struct Parts(
    std::collections::BTreeMap<(i32, i16, DateTime<Utc>, DateTime<Utc>, i32), Vec<String>>,
);

impl Parts {
    fn add(
        &mut self,
        slot: i32,
        level: i16,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        sign: i32,
        rep: &str,
    ) {
        self.0
            .entry((slot, level, from, to, sign))
            .or_default()
            .push(rep.to_owned());
    }

    /// Binds $1 slot, $2 level, $3 from, $4 to, $5 sign, $6 and $7 the
    /// first and last index (1-based) of the part's reps in $8, all reps.
    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let mut reps = Vec::new();
        let mut first = Vec::new();
        let mut last = Vec::new();
        for group in self.0.values() {
            first.push(i32::try_from(reps.len() + 1).unwrap_or(i32::MAX));
            reps.extend(group.iter().map(String::as_str));
            last.push(i32::try_from(reps.len()).unwrap_or(i32::MAX));
        }
        query
            .bind(self.0.keys().map(|k| k.0).collect::<Vec<_>>())
            .bind(self.0.keys().map(|k| k.1).collect::<Vec<_>>())
            .bind(self.0.keys().map(|k| k.2).collect::<Vec<_>>())
            .bind(self.0.keys().map(|k| k.3).collect::<Vec<_>>())
            .bind(self.0.keys().map(|k| k.4).collect::<Vec<_>>())
            .bind(first)
            .bind(last)
            .bind(reps)
    }
}

/// The parts with their reps as an array (`parts.reps`, a slice of $8).
const PARTS_CTE: &str = "WITH parts AS ( \
        SELECT u.slot, u.lvl, u.f, u.t, u.sgn, ($8::text[])[u.lo:u.hi] AS reps \
        FROM UNNEST($1::int[], $2::smallint[], $3::timestamptz[], $4::timestamptz[], $5::int[], \
                    $6::int[], $7::int[]) AS u (slot, lvl, f, t, sgn, lo, hi)) ";

fn parse_sums(row: &sqlx::postgres::PgRow) -> Result<SumsRow, Error> {
    use sqlx::Row;
    let slot: i32 = row.try_get(0)?;
    let mut sums = [0i128; METRICS.len()];
    for (i, sum) in sums.iter_mut().enumerate() {
        let text: String = row.try_get(i + 1)?;
        *sum = text
            .parse()
            .map_err(|_| Error::internal(anyhow::anyhow!("sum is not an integer: {text}")))?;
    }
    Ok((slot, sums))
}

/// Per part, an index range scan of its rollup rows (LATERAL: the planner
/// cannot know how few parts there are and would otherwise scan the table).
static ROLLUP_SQL: LazyLock<String> = LazyLock::new(|| {
    let inner: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("sum(r.{c}) AS {c}"))
        .collect();
    let outer: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("coalesce(sum(s.{c} * c.sgn), 0)::text"))
        .collect();
    format!(
        "{PARTS_CTE} SELECT c.slot, {} FROM parts c \
         CROSS JOIN LATERAL ( \
             SELECT {} FROM kpi_rollups r \
             WHERE r.rep_id = ANY (c.reps) AND r.level = c.lvl AND r.bucket >= c.f AND r.bucket < c.t) s \
         GROUP BY c.slot",
        outer.join(", "),
        inner.join(", ")
    )
});

async fn rollup_sums(pool: &PgPool, parts: &Parts) -> Result<Vec<SumsRow>, Error> {
    if parts.0.is_empty() {
        return Ok(Vec::new());
    }
    let rows = parts
        .bind(sqlx::query(sqlx::AssertSqlSafe(ROLLUP_SQL.as_str())))
        .fetch_all(pool)
        .await?;
    rows.iter().map(parse_sums).collect()
}

/// One SELECT per source table: the metrics it feeds, zero for the rest.
static RAW_SQL: LazyLock<String> = LazyLock::new(|| {
    let part = |exprs: &[(Metric, &str)], from: &str| {
        let columns: Vec<String> = METRICS
            .iter()
            .map(|m| {
                let expr = exprs
                    .iter()
                    .find(|(metric, _)| metric == m)
                    .map_or("0::numeric", |(_, e)| e);
                format!("({expr})::numeric AS {}", COLUMNS[*m as usize])
            })
            .collect();
        format!(
            "SELECT e.slot, e.sgn, x.* FROM parts e CROSS JOIN LATERAL (SELECT {} {from}) x",
            columns.join(", ")
        )
    };
    use Metric as M;
    // Whole microseconds, as the rollups count them.
    let micros = |a: &str, b: &str| format!("(extract(epoch FROM ({b} - {a})) * 1000000)::bigint");
    let cycle = format!(
        "coalesce(sum({}) FILTER (WHERE d.stage = 2), 0)",
        micros("d.created_at", "d.closed_at")
    );
    let response = format!(
        "coalesce(sum({}) FILTER (WHERE q.first_response_at IS NOT NULL), 0)",
        micros("q.opened_at", "q.first_response_at")
    );
    let parts = [
        part(
            &[
                (M::Calls, "count(*) FILTER (WHERE i.channel = 1)"),
                (M::Emails, "count(*) FILTER (WHERE i.channel = 2)"),
                (M::Meetings, "count(*) FILTER (WHERE i.channel = 3)"),
                (M::Messages, "count(*) FILTER (WHERE i.channel = 4)"),
                (M::Demos, "count(*) FILTER (WHERE i.channel = 5)"),
            ],
            "FROM interactions i WHERE i.rep_id = ANY (e.reps) AND i.occurred_at >= e.f AND i.occurred_at < e.t",
        ),
        part(
            &[
                (M::Leads, "count(*)"),
                (
                    M::LeadsConverted,
                    "count(*) FILTER (WHERE c.converted_at IS NOT NULL)",
                ),
            ],
            "FROM customers c WHERE c.rep_id = ANY (e.reps) AND c.lead_at >= e.f AND c.lead_at < e.t",
        ),
        part(
            &[(M::Conversions, "count(*)")],
            "FROM customers c WHERE c.rep_id = ANY (e.reps) AND c.converted_at >= e.f AND c.converted_at < e.t",
        ),
        part(
            &[(M::Churns, "count(*)")],
            "FROM customers c WHERE c.rep_id = ANY (e.reps) AND c.churned_at >= e.f AND c.churned_at < e.t",
        ),
        part(
            &[
                (M::DealsWon, "count(*) FILTER (WHERE d.stage = 2)"),
                (M::DealsLost, "count(*) FILTER (WHERE d.stage = 3)"),
                (
                    M::RevenueNanos,
                    "coalesce(sum((d.amount * 1000000000)::numeric(40, 0)) FILTER (WHERE d.stage = 2), 0)",
                ),
                (M::CycleMicros, cycle.as_str()),
            ],
            "FROM deals d WHERE d.rep_id = ANY (e.reps) AND d.closed_at >= e.f AND d.closed_at < e.t",
        ),
        part(
            &[
                (M::NpsResponses, "count(*) FILTER (WHERE f.kind = 1)"),
                (
                    M::NpsPromoters,
                    "count(*) FILTER (WHERE f.kind = 1 AND f.score >= 9)",
                ),
                (
                    M::NpsDetractors,
                    "count(*) FILTER (WHERE f.kind = 1 AND f.score <= 6)",
                ),
                (M::CsatResponses, "count(*) FILTER (WHERE f.kind = 2)"),
                (
                    M::CsatSatisfied,
                    "count(*) FILTER (WHERE f.kind = 2 AND f.score >= 4)",
                ),
            ],
            "FROM feedback f WHERE f.rep_id = ANY (e.reps) AND f.submitted_at >= e.f AND f.submitted_at < e.t",
        ),
        part(
            &[
                (M::RequestsOpened, "count(*)"),
                (
                    M::RequestsResolved,
                    "count(*) FILTER (WHERE q.resolved_at IS NOT NULL)",
                ),
                (
                    M::RequestsResponded,
                    "count(*) FILTER (WHERE q.first_response_at IS NOT NULL)",
                ),
                (M::ResponseMicros, response.as_str()),
            ],
            "FROM customer_requests q WHERE q.rep_id = ANY (e.reps) AND q.opened_at >= e.f AND q.opened_at < e.t",
        ),
    ];
    let sums: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("sum(p.{c} * p.sgn)::text"))
        .collect();
    format!(
        "{PARTS_CTE} SELECT p.slot, {} FROM ({}) p GROUP BY p.slot",
        sums.join(", "),
        parts.join(" UNION ALL ")
    )
});

async fn raw_sums(pool: &PgPool, parts: &Parts) -> Result<Vec<SumsRow>, Error> {
    if parts.0.is_empty() {
        return Ok(Vec::new());
    }
    let rows = parts
        .bind(sqlx::query(sqlx::AssertSqlSafe(RAW_SQL.as_str())))
        .fetch_all(pool)
        .await?;
    rows.iter().map(parse_sums).collect()
}

/// Per slot of a retention query: the customers converted before its start
/// who churned in [start, end), and (raw source only) the active customers
/// at its start, counted from the customers' own timestamps.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    churned: i128,
    active: Option<i128>,
}

/// With rollups, only the customers who churned in the period are read
/// (an index range); the raw count reads every converted customer.
static RETENTION_SQL: LazyLock<[String; 2]> = LazyLock::new(|| {
    let counts = [
        "SELECT count(*) AS churned, NULL::bigint AS active FROM customers c \
         WHERE c.rep_id = x.rep AND c.churned_at >= x.s AND c.churned_at < x.e \
           AND c.converted_at < x.s",
        "SELECT count(*) FILTER (WHERE c.churned_at >= x.s AND c.churned_at < x.e) AS churned, \
                count(*) FILTER (WHERE c.churned_at IS NULL OR c.churned_at >= x.s) AS active \
         FROM customers c WHERE c.rep_id = x.rep AND c.converted_at < x.s",
    ];
    counts.map(|counts| {
        format!(
            "SELECT x.slot, sum(n.churned)::bigint, sum(n.active)::bigint \
             FROM UNNEST($1::int[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS x (slot, rep, s, e) \
             CROSS JOIN LATERAL ({counts}) n \
             GROUP BY x.slot"
        )
    })
});

async fn retention_counts(
    pool: &PgPool,
    checks: &[(i32, &RetentionQuery)],
    source: Source,
) -> Result<HashMap<i32, Counts>, Error> {
    let mut slots = Vec::new();
    let mut reps = Vec::new();
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    for (slot, retention) in checks {
        for rep in &retention.reps {
            slots.push(*slot);
            reps.push(rep.as_str());
            starts.push(retention.start);
            ends.push(retention.end);
        }
    }
    if slots.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = match source {
        Source::Rollups => &*RETENTION_SQL[0],
        Source::Raw => &*RETENTION_SQL[1],
    };
    let rows: Vec<(i32, i64, Option<i64>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&slots)
        .bind(&reps)
        .bind(&starts)
        .bind(&ends)
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

/// A team's current subtree and the membership history of every rep who
/// was ever in it.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    pub teams: HashSet<String>,
    pub histories: Vec<(String, Vec<ChangePoint>)>,
}

/// The membership of `team_id` in one round trip; `None` if there is no
/// such team.
pub async fn membership(pool: &PgPool, team_id: &str) -> Result<Option<Membership>, Error> {
    // (is a team of the subtree, team or rep id, effective from, team)
    type MembershipRow = (bool, String, Option<DateTime<Utc>>, Option<String>);
    let rows: Vec<MembershipRow> = sqlx::query_as(
        r#"
        WITH RECURSIVE tree (team_id) AS (
            SELECT team_id FROM teams WHERE team_id = $1
            UNION
            SELECT t.team_id FROM teams t JOIN tree ON t.parent_team_id = tree.team_id
        )
        SELECT true, team_id, NULL::timestamptz, NULL::text FROM tree
        UNION ALL
        SELECT false, h.rep_id, CASE WHEN isfinite(h.effective_from) THEN h.effective_from END,
               h.team_id
        FROM rep_team_history h
        WHERE h.rep_id IN (SELECT rep_id FROM rep_team_history WHERE team_id IN (SELECT team_id FROM tree))
        ORDER BY 1 DESC, 2, 3 NULLS FIRST
        "#,
    )
    .bind(team_id)
    .fetch_all(pool)
    .await?;
    let mut out = Membership::default();
    for (is_team, id, from, team) in rows {
        if is_team {
            out.teams.insert(id);
            continue;
        }
        let point = ChangePoint { from, team };
        match out.histories.last_mut() {
            Some((last, points)) if *last == id => points.push(point),
            _ => out.histories.push((id, vec![point])),
        }
    }
    Ok((!out.teams.is_empty()).then_some(out))
}

/// What a team's KPIs over [from, to) are made of: each member's records
/// while a member, and the customers of the members at `from`.
pub fn team_query(team: &Membership, from: DateTime<Utc>, to: DateTime<Utc>) -> TallyQuery {
    let teams = &team.teams;
    let mut segments = Vec::new();
    let mut at_start = Vec::new();
    for (rep, points) in &team.histories {
        for (f, t) in intervals_in(points, teams, from, to) {
            segments.push(Segment {
                rep: rep.clone(),
                from: f,
                to: t,
            });
        }
        if team_at(points, from).is_some_and(|team| teams.contains(&team)) {
            at_start.push(rep.clone());
        }
    }
    TallyQuery {
        segments,
        retention: Some(RetentionQuery {
            reps: at_start,
            start: from,
            end: to,
        }),
    }
}

/// A rep's own KPIs over [from, to).
pub fn rep_query(rep: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> TallyQuery {
    TallyQuery {
        segments: vec![Segment {
            rep: rep.to_owned(),
            from,
            to,
        }],
        retention: Some(RetentionQuery {
            reps: vec![rep.to_owned()],
            start: from,
            end: to,
        }),
    }
}

/// Display name and current team of each rep, in one query.
pub async fn rep_cards(
    pool: &PgPool,
    reps: &[String],
) -> Result<HashMap<String, (String, Option<String>)>, Error> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        r#"
        SELECT r.rep_id, r.display_name,
               (SELECT h.team_id FROM rep_team_history h
                WHERE h.rep_id = r.rep_id AND h.effective_from <= now()
                ORDER BY h.effective_from DESC LIMIT 1)
        FROM reps r WHERE r.rep_id = ANY($1)
        "#,
    )
    .bind(reps)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(rep, name, team)| (rep, (name, team)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(i64::from(day) * 86_400, 0).unwrap_or_default()
    }

    fn reps(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    fn team(ids: &[&str], from: u32, to: u32) -> TallyQuery {
        TallyQuery {
            segments: ids
                .iter()
                .map(|rep| Segment {
                    rep: (*rep).to_owned(),
                    from: at(from),
                    to: at(to),
                })
                .collect(),
            retention: Some(RetentionQuery {
                reps: reps(ids),
                start: at(from),
                end: at(to),
            }),
        }
    }

    #[test]
    fn a_scorecard_reads_the_months_before_the_previous_period_once() {
        // Current period [90, 180), previous [0, 90): the current count is
        // the previous one plus the previous period's own sums.
        let queries = [team(&["b", "a"], 90, 180), team(&["a", "b"], 0, 90)];
        let links = chain_retention(&queries);
        assert_eq!(retention_order(&queries), vec![1, 0]);
        assert_eq!(
            links[1],
            Link {
                from: epoch(),
                base: None,
                reuse: None
            }
        );
        assert_eq!(
            links[0],
            Link {
                from: at(0),
                base: Some(1),
                reuse: Some(1)
            }
        );
    }

    #[test]
    fn other_reps_or_other_ranges_are_not_chained_or_reused() {
        // A rep joined at day 90: the previous period had other reps.
        let queries = [team(&["a", "b", "c"], 90, 180), team(&["a", "b"], 0, 90)];
        assert_eq!(chain_retention(&queries)[0].base, None);
        // Same reps, but the earlier query ends before the later start:
        // chained, the gap [60, 90) read, nothing reused.
        let queries = [team(&["a"], 90, 180), team(&["a"], 0, 60)];
        let link = &chain_retention(&queries)[0];
        assert_eq!((link.from, link.base, link.reuse), (at(0), Some(1), None));
        // A leaderboard: one rep per query, no two alike.
        let queries = [team(&["a"], 0, 90), team(&["b"], 0, 90)];
        assert!(chain_retention(&queries).iter().all(|l| l.base.is_none()));
    }
}
