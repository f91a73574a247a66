//! KPI sums from the rollups (plus raw records for sub-hour edges), or from
//! the raw records alone (the naive baseline, and the reference the rollups
//! are tested against).

use std::{collections::HashMap, sync::LazyLock};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::rollup::COLUMNS;
use crate::{
    Error,
    domain::{
        directory::ChangePoint,
        metrics::{METRICS, Metric, Tally},
        rollup::{Part, Sums, cover},
        tally::{
            RetentionQuery, Segment, TallyQuery, TeamMembers, chain_retention, retention_order,
        },
    },
};

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
                for &Part {
                    level,
                    from,
                    to,
                    sign,
                } in parts.iter()
                {
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

fn add_row(all: &mut [Tally], slot: i32, sums: &Sums) {
    if let Some(tally) = usize::try_from(slot).ok().and_then(|i| all.get_mut(i)) {
        for (metric, value) in METRICS.iter().zip(sums) {
            tally.add(*metric, *value);
        }
    }
}

type SumsRow = (i32, Sums);

/// One signed range to sum for a query's slot; level 0 for raw ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RangeKey {
    slot: i32,
    level: i16,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    sign: i32,
}

/// Signed ranges to sum, each for the group of reps that shares it.
#[derive(Default)]
struct Parts(std::collections::BTreeMap<RangeKey, Vec<String>>);

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
        let key = RangeKey {
            slot,
            level,
            from,
            to,
            sign,
        };
        self.0.entry(key).or_default().push(rep.to_owned());
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
            .bind(self.0.keys().map(|k| k.slot).collect::<Vec<_>>())
            .bind(self.0.keys().map(|k| k.level).collect::<Vec<_>>())
            .bind(self.0.keys().map(|k| k.from).collect::<Vec<_>>())
            .bind(self.0.keys().map(|k| k.to).collect::<Vec<_>>())
            .bind(self.0.keys().map(|k| k.sign).collect::<Vec<_>>())
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

/// The membership of `team_id` in one round trip; `None` if there is no
/// such team.
pub async fn membership(pool: &PgPool, team_id: &str) -> Result<Option<TeamMembers>, Error> {
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
    let mut out = TeamMembers::default();
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

/// What a leaderboard shows of a rep besides its value.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RepCard {
    pub rep_id: String,
    pub display_name: String,
    /// The team the rep is in now.
    pub team: Option<String>,
}

/// Display name and current team of each rep, in one query.
pub async fn rep_cards(pool: &PgPool, reps: &[String]) -> Result<HashMap<String, RepCard>, Error> {
    let cards: Vec<RepCard> = sqlx::query_as(
        r#"
        SELECT r.rep_id, r.display_name,
               (SELECT h.team_id FROM rep_team_history h
                WHERE h.rep_id = r.rep_id AND h.effective_from <= now()
                ORDER BY h.effective_from DESC LIMIT 1) AS team
        FROM reps r WHERE r.rep_id = ANY($1)
        "#,
    )
    .bind(reps)
    .fetch_all(pool)
    .await?;
    Ok(cards
        .into_iter()
        .map(|card| (card.rep_id.clone(), card))
        .collect())
}
