//! KPI sums from the rollups (plus raw records for sub-hour edges), or from
//! the raw records alone (the naive baseline, and the reference the rollups
//! are tested against).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::LazyLock,
};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::rollup::COLUMNS;
use crate::{
    Error,
    domain::{
        directory::ChangePoint,
        money::MissingRates,
        rollup::{Level, Part, Sums, cover, floor, touches_month},
        sums::{METRICS, Metric, MetricSet, Tally},
        tally::{
            RepRef, RetentionQuery, TallyQuery, TeamMembers, chain_retention, retention_order,
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
    reporting: &str,
) -> Result<Vec<Tally>, Error> {
    use tracing::Instrument as _;
    let started = std::time::Instant::now();
    let label = match source {
        Source::Rollups => "rollup",
        Source::Raw => "raw",
    };
    let span = tracing::info_span!("kpi_query", source = label, queries = queries.len());
    let tallies = tallies_from(pool, queries, source, reporting)
        .instrument(span)
        .await;
    crate::observe::metrics::kpi_query(label, started.elapsed());
    tallies
}

async fn tallies_from(
    pool: &PgPool,
    queries: &[TallyQuery],
    source: Source,
    reporting: &str,
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
    // Reps whose ranges coincide (a team without moves: all of them) form
    // one group, bound once however many buckets name it; each range is
    // covered by rollup parts once.
    let mut by_range: BTreeMap<(i32, DateTime<Utc>, DateTime<Utc>), Vec<RepRef>> = BTreeMap::new();
    let mut churn_checks: Vec<(i32, &RetentionQuery)> = Vec::new();
    for (i, query) in queries.iter().enumerate() {
        let slot = i32::try_from(i).unwrap_or(i32::MAX);
        for segment in &query.segments {
            by_range
                .entry((slot, segment.from, segment.to))
                .or_default()
                .push(segment.rep.clone());
        }
        if let Some(retention) = &query.retention {
            let cumulative = i32::try_from(n + i).unwrap_or(i32::MAX);
            if let Some(link) = links
                .get(i)
                .filter(|l| l.reuse.is_none() && l.from < retention.start)
            {
                by_range
                    .entry((cumulative, link.from, retention.start))
                    .or_default()
                    .extend(retention.reps.iter().cloned());
            }
            churn_checks.push((slot, retention));
        }
    }
    let mut groups = Groups::default();
    let mut bucket_parts = Parts::default();
    let mut raw_parts = Parts::default();
    let mut covers: HashMap<(DateTime<Utc>, DateTime<Utc>), Vec<Part>> = HashMap::new();
    for ((slot, from, to), reps) in by_range {
        let group = groups.intern(reps);
        match source {
            Source::Raw => raw_parts.add(slot, 0, from, to, 1, group),
            Source::Rollups => {
                let parts = covers.entry((from, to)).or_insert_with(|| cover(from, to));
                for part in parts.iter() {
                    match part.level {
                        Some(level) => bucket_parts.add(
                            slot,
                            level as i16,
                            part.from,
                            part.to,
                            part.sign,
                            group,
                        ),
                        None => raw_parts.add(slot, 0, part.from, part.to, part.sign, group),
                    }
                }
            }
        }
    }
    drop(covers);
    if source == Source::Rollups {
        let active = active_months(pool, &groups, &bucket_parts, &raw_parts).await?;
        if let Some(active) = active {
            bucket_parts.retain_active(&active);
            raw_parts.retain_active(&active);
        }
    }
    // A group read at one level by many parts (a series: one or more per
    // bucket) is read once over their span, summed per bucket in SQL, and
    // the buckets are added to the parts here: the rows read follow the
    // buckets of the answer, not buckets x reps x parts.
    let (spanned, single) = bucket_parts.split_spans();
    let retention_groups = RetentionGroups::new(&churn_checks);

    // Independent queries: run them at once, each on its own connection.
    // Only the sums the KPIs are made of (cumulative retention ranges read
    // conversions and churns).
    let metrics = queries.iter().fold(MetricSet::NONE, |set, q| {
        let retention = if q.retention.is_some() {
            MetricSet::of(&[Metric::Conversions, Metric::Churns])
        } else {
            MetricSet::NONE
        };
        set.union(q.metrics).union(retention)
    });
    let (rollups, spans, raws, counted) = tokio::try_join!(
        rollup_sums(pool, &single, &groups, metrics),
        span_sums(pool, &spanned, &groups, metrics),
        raw_sums(pool, &raw_parts, &groups, reporting),
        retention_counts(pool, &retention_groups, source)
    )?;
    let mut all = vec![Tally::default(); 2 * n];
    for (slot, sums) in rollups.into_iter().chain(spans).chain(raws) {
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

/// One signed range to sum for a query's slot, over a group's reps; level
/// 0 for raw ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RangeKey {
    group: u32,
    level: i16,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    slot: i32,
    sign: i32,
}

/// The distinct rep groups of a call, each sorted, each bound once.
#[derive(Default)]
struct Groups {
    index: HashMap<Vec<RepRef>, u32>,
    list: Vec<Vec<RepRef>>,
}

impl Groups {
    fn intern(&mut self, mut reps: Vec<RepRef>) -> u32 {
        reps.sort_unstable();
        if let Some(&group) = self.index.get(&reps) {
            return group;
        }
        let group = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.list.push(reps.clone());
        self.index.insert(reps, group);
        group
    }

    /// Every group's reps, concatenated: bound once per statement.
    fn reps(&self) -> Vec<&str> {
        self.list.iter().flatten().map(|r| &**r).collect()
    }

    /// For each of `groups` in turn, the first and last (1-based,
    /// inclusive) index of its reps in `reps()`.
    fn bounds(&self, groups: impl Iterator<Item = u32>) -> (Vec<i32>, Vec<i32>) {
        let mut starts = Vec::with_capacity(self.list.len() + 1);
        let mut next = 1usize;
        for group in &self.list {
            starts.push(next);
            next += group.len();
        }
        starts.push(next);
        let at = |i: usize| {
            starts
                .get(i)
                .and_then(|&n| i32::try_from(n).ok())
                .unwrap_or(0)
        };
        groups
            .map(|group| {
                let g = usize::try_from(group).unwrap_or(usize::MAX);
                (at(g), at(g.saturating_add(1)) - 1)
            })
            .unzip()
    }
}

/// Below this many (rep, range) reads, finding the months with activity
/// costs more than the reads it saves.
const PRUNE_MIN_READS: usize = 2_000;

/// For each group, the UTC months in which any of its reps has a month
/// rollup row, between the first part and the last; `None` when the parts
/// are too few to be worth it (see `active_months_by_rep`).
async fn active_months(
    pool: &PgPool,
    groups: &Groups,
    bucket_parts: &Parts,
    raw_parts: &Parts,
) -> Result<Option<Vec<BTreeSet<DateTime<Utc>>>>, Error> {
    let keys = || bucket_parts.0.keys().chain(raw_parts.0.keys());
    let reads: usize = keys()
        .map(|k| groups.list.get(k.group as usize).map_or(0, Vec::len))
        .sum();
    if reads < PRUNE_MIN_READS {
        return Ok(None);
    }
    let (Some(from), Some(to)) = (keys().map(|k| k.from).min(), keys().map(|k| k.to).max()) else {
        return Ok(None);
    };
    let mut reps: Vec<&str> = groups.reps();
    reps.sort_unstable();
    reps.dedup();
    let by_rep = active_months_by_rep(pool, &reps, from, to).await?;
    Ok(Some(
        groups
            .list
            .iter()
            .map(|reps| {
                reps.iter()
                    .filter_map(|rep| by_rep.get(&**rep))
                    .flatten()
                    .copied()
                    .collect()
            })
            .collect(),
    ))
}

/// The UTC months touching [from, to) in which any of `reps` has
/// activity (see `active_months_by_rep`).
pub async fn active_months_of(
    pool: &PgPool,
    reps: &[&str],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<BTreeSet<DateTime<Utc>>, Error> {
    Ok(active_months_by_rep(pool, reps, from, to)
        .await?
        .into_values()
        .flatten()
        .collect())
}

/// Per rep, the UTC months touching [from, to) in which it has a month
/// rollup row. A record contributes to the hour, day and month rollups of
/// the instant it is credited at, so a range inside months without a row
/// has no record to read, raw or rolled up: a 10-year daily series over a
/// team with a year of activity reads the year (and a rep hired last
/// spring costs nothing before it). A row whose sums went back to zero
/// stays, which only keeps a month in.
///
/// Read before the sums, like each of them on its own connection: a write
/// acknowledged before the call began is in every one of them.
async fn active_months_by_rep(
    pool: &PgPool,
    reps: &[&str],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<HashMap<String, Vec<DateTime<Utc>>>, Error> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT rep_id, bucket FROM kpi_rollups \
         WHERE level = 3 AND rep_id = ANY ($1) AND bucket >= $2 AND bucket < $3",
    )
    .bind(reps)
    .bind(floor(Level::Month, from))
    .bind(to)
    .fetch_all(pool)
    .await?;
    let mut by_rep: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    for row in &rows {
        by_rep
            .entry(row.try_get(0)?)
            .or_default()
            .push(row.try_get(1)?);
    }
    Ok(by_rep)
}

/// From this many (rep, range) reads, the parts read one by one are read
/// in two halves at once (a 10-year daily series in a zone off UTC: the
/// edge hours of a year of active days for 50 reps are 18,000 descents).
const PARALLEL_MIN_READS: usize = 4_000;

/// Reading a part's range costs an index descent per rep, worth about this
/// many rows read (see `Parts::split_spans`).
const DESCENT_ROWS: i64 = 5;

/// Signed ranges to sum, each with how many times it was added (two
/// segments of one rep in one slot may cover the same bucket range).
#[derive(Default)]
struct Parts(BTreeMap<RangeKey, i32>);

impl Parts {
    fn add(
        &mut self,
        slot: i32,
        level: i16,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        sign: i32,
        group: u32,
    ) {
        let key = RangeKey {
            group,
            level,
            from,
            to,
            slot,
            sign,
        };
        *self.0.entry(key).or_insert(0) += 1;
    }

    /// Keeps the parts that touch a month in which their group is active
    /// (`active_months`).
    fn retain_active(&mut self, active: &[BTreeSet<DateTime<Utc>>]) {
        self.0.retain(|key, _| {
            active
                .get(key.group as usize)
                .is_some_and(|months| touches_month(months, key.from, key.to))
        });
    }

    /// Each part with its sign times its multiplicity.
    fn weighted(&self) -> impl Iterator<Item = (&RangeKey, i32)> {
        self.0
            .iter()
            .map(|(key, times)| (key, key.sign.saturating_mul(*times)))
    }

    /// (The parts to read once over their span, the parts to read one by
    /// one.) Per (group, level), in buckets of the level per rep: one by
    /// one reads each distinct range (a descent each, plus its buckets);
    /// the span reads every bucket from the first part to the last, once.
    /// A daily series reads its days over the span, while the few edge hours
    /// of a scorecard, or one hour a month of a monthly series, are read
    /// where they are.
    fn split_spans(self) -> (Parts, Parts) {
        #[derive(Default)]
        struct Cost {
            ranges: std::collections::BTreeSet<(DateTime<Utc>, DateTime<Utc>)>,
            first: Option<DateTime<Utc>>,
            last: Option<DateTime<Utc>>,
        }
        let unit_hours = |level: i16| match level {
            1 => 1,
            2 => 24,
            _ => 730,
        };
        let mut costs: HashMap<(u32, i16), Cost> = HashMap::new();
        for key in self.0.keys() {
            let cost = costs.entry((key.group, key.level)).or_default();
            cost.ranges.insert((key.from, key.to));
            cost.first = Some(cost.first.map_or(key.from, |f| f.min(key.from)));
            cost.last = Some(cost.last.map_or(key.to, |t| t.max(key.to)));
        }
        let spanned: std::collections::HashSet<(u32, i16)> = costs
            .into_iter()
            .filter(|((_, level), cost)| {
                let buckets = |from: DateTime<Utc>, to: DateTime<Utc>| {
                    (to - from).num_hours() / unit_hours(*level)
                };
                let one_by_one: i64 = cost
                    .ranges
                    .iter()
                    .map(|&(f, t)| DESCENT_ROWS + buckets(f, t))
                    .sum();
                let span = match (cost.first, cost.last) {
                    (Some(f), Some(t)) => DESCENT_ROWS + buckets(f, t),
                    _ => i64::MAX,
                };
                cost.ranges.len() > 1 && span < one_by_one
            })
            .map(|(key, _)| key)
            .collect();
        let (spanned, single) = self
            .0
            .into_iter()
            .partition(|(key, _)| spanned.contains(&(key.group, key.level)));
        (Parts(spanned), Parts(single))
    }

    /// Binds $1 slot, $2 level, $3 from, $4 to, $5 sign, $6 and $7 the
    /// first and last index (1-based) of the part's group in $8, all reps.
    fn bind<'q>(
        &'q self,
        groups: &'q Groups,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let (first, last) = groups.bounds(self.0.keys().map(|k| k.group));
        let keys = || self.0.keys();
        query
            .bind(keys().map(|k| k.slot).collect::<Vec<_>>())
            .bind(keys().map(|k| k.level).collect::<Vec<_>>())
            .bind(keys().map(|k| k.from).collect::<Vec<_>>())
            .bind(keys().map(|k| k.to).collect::<Vec<_>>())
            .bind(self.weighted().map(|(_, sign)| sign).collect::<Vec<_>>())
            .bind(first)
            .bind(last)
            .bind(groups.reps())
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
    Ok((slot, parse_columns(row, 1)?))
}

/// The metric sums (decimal text) in the columns from `first` on.
fn parse_columns(row: &sqlx::postgres::PgRow, first: usize) -> Result<Sums, Error> {
    use sqlx::Row;
    let mut sums = [0i128; METRICS.len()];
    for (i, sum) in sums.iter_mut().enumerate() {
        let text: String = row.try_get(first + i)?;
        *sum = text
            .parse()
            .map_err(|_| Error::internal(anyhow::anyhow!("sum is not an integer: {text}")))?;
    }
    Ok(sums)
}

/// Per part, an index range scan of its rollup rows (LATERAL: the planner
/// cannot know how few parts there are and would otherwise scan the table).
/// One SQL expression per metric, in `METRICS` order: `expr(column)` for
/// the metrics in `metrics`, the constant `'0'` for the others (never read).
fn metric_columns(metrics: MetricSet, expr: impl Fn(&str) -> String) -> Vec<String> {
    METRICS
        .iter()
        .zip(COLUMNS)
        .map(|(m, c)| {
            if metrics.contains(*m) {
                expr(c)
            } else {
                "'0'".to_owned()
            }
        })
        .collect()
}

/// Adds `sums`, times `sign`, to `slot`'s total.
fn add_signed(by_slot: &mut BTreeMap<i32, Sums>, slot: i32, sign: i32, sums: &Sums) {
    let total = by_slot.entry(slot).or_insert([0; METRICS.len()]);
    let sign = i128::from(sign);
    for (sum, value) in total.iter_mut().zip(sums) {
        *sum += sign * value;
    }
}

fn rollup_sql(metrics: MetricSet) -> String {
    let inner: Vec<String> = METRICS
        .iter()
        .zip(COLUMNS)
        .filter(|(m, _)| metrics.contains(**m))
        .map(|(_, c)| format!("sum(r.{c}) AS {c}"))
        .collect();
    let outer = metric_columns(metrics, |c| {
        format!("coalesce(sum(s.{c} * c.sgn), 0)::text")
    });
    let inner = if inner.is_empty() {
        "1 AS nothing".to_owned()
    } else {
        inner.join(", ")
    };
    format!(
        "{PARTS_CTE} SELECT c.slot, {} FROM parts c \
         CROSS JOIN LATERAL ( \
             SELECT {inner} FROM kpi_rollups r \
             WHERE r.rep_id = ANY (c.reps) AND r.level = c.lvl AND r.bucket >= c.f AND r.bucket < c.t) s \
         GROUP BY c.slot",
        outer.join(", ")
    )
}

/// The sums of parts read one by one: each distinct (group, level, range)
/// is read once (consecutive buckets of a series share their edge ranges,
/// a scorecard's period and previous period too), then added, signed, to
/// every slot whose part it is.
async fn rollup_sums(
    pool: &PgPool,
    parts: &Parts,
    groups: &Groups,
    metrics: MetricSet,
) -> Result<Vec<SumsRow>, Error> {
    if parts.0.is_empty() {
        return Ok(Vec::new());
    }
    let mut distinct: BTreeMap<(u32, i16, DateTime<Utc>, DateTime<Utc>), i32> = BTreeMap::new();
    for key in parts.0.keys() {
        let next = i32::try_from(distinct.len()).unwrap_or(i32::MAX);
        distinct
            .entry((key.group, key.level, key.from, key.to))
            .or_insert(next);
    }
    // Many reads are split in two halves read at once, each on its own
    // connection: the database server's cores share the descents.
    let reads: usize = distinct
        .keys()
        .map(|(group, ..)| groups.list.get(*group as usize).map_or(0, Vec::len))
        .sum();
    let chunks = if reads >= PARALLEL_MIN_READS { 2 } else { 1 };
    let mut ranges: Vec<Parts> = (0..chunks).map(|_| Parts::default()).collect();
    let total = distinct.len().max(1);
    for (i, (&(group, level, from, to), &index)) in distinct.iter().enumerate() {
        if let Some(chunk) = ranges.get_mut(i * chunks / total) {
            chunk.add(index, level, from, to, 1, group);
        }
    }
    let sql = rollup_sql(metrics);
    let reads = ranges.iter().filter(|r| !r.0.is_empty()).map(|r| {
        r.bind(groups, sqlx::query(sqlx::AssertSqlSafe(sql.as_str())))
            .fetch_all(pool)
    });
    let mut sums_of: HashMap<i32, Sums> = HashMap::new();
    for rows in futures::future::try_join_all(reads).await? {
        for row in &rows {
            let (index, sums) = parse_sums(row)?;
            sums_of.insert(index, sums);
        }
    }
    let mut by_slot: BTreeMap<i32, Sums> = BTreeMap::new();
    for (key, sign) in parts.weighted() {
        let Some(sums) = distinct
            .get(&(key.group, key.level, key.from, key.to))
            .and_then(|index| sums_of.get(index))
        else {
            continue;
        };
        add_signed(&mut by_slot, key.slot, sign, sums);
    }
    Ok(by_slot.into_iter().collect())
}

/// Per (group, level) span: the group's rollup rows in the span, summed
/// over its reps per bucket (so at most one row per bucket of the span).
fn span_sql(metrics: MetricSet) -> String {
    let sums = metric_columns(metrics, |c| format!("sum(r.{c})::text"));
    format!(
        "SELECT u.g, u.lvl, r.bucket, {} \
         FROM UNNEST($1::int[], $2::smallint[], $3::timestamptz[], $4::timestamptz[], \
                     $5::int[], $6::int[]) AS u (g, lvl, f, t, lo, hi) \
         CROSS JOIN LATERAL ( \
             SELECT * FROM kpi_rollups r \
             WHERE r.rep_id = ANY (($7::text[])[u.lo:u.hi]) AND r.level = u.lvl \
               AND r.bucket >= u.f AND r.bucket < u.t) r \
         GROUP BY u.g, u.lvl, r.bucket",
        sums.join(", ")
    )
}

/// One bucket's sums over a group's reps.
type BucketSums = (DateTime<Utc>, Sums);

/// The sums of many parts per (group, level), from one read of their span:
/// the rows per bucket come back sorted, and each part adds the buckets in
/// its range (two binary searches), signed, to its slot.
async fn span_sums(
    pool: &PgPool,
    parts: &Parts,
    groups: &Groups,
    metrics: MetricSet,
) -> Result<Vec<SumsRow>, Error> {
    use sqlx::Row;
    if parts.0.is_empty() {
        return Ok(Vec::new());
    }
    // Parts are ordered by group, level, from: each span is a run.
    let mut spans: BTreeMap<(u32, i16), (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    for key in parts.0.keys() {
        let span = spans
            .entry((key.group, key.level))
            .or_insert((key.from, key.to));
        span.0 = span.0.min(key.from);
        span.1 = span.1.max(key.to);
    }
    let (first, last) = groups.bounds(spans.keys().map(|k| k.0));
    let rows = sqlx::query(sqlx::AssertSqlSafe(span_sql(metrics)))
        .bind(
            spans
                .keys()
                .map(|k| i32::try_from(k.0).unwrap_or(i32::MAX))
                .collect::<Vec<_>>(),
        )
        .bind(spans.keys().map(|k| k.1).collect::<Vec<_>>())
        .bind(spans.values().map(|v| v.0).collect::<Vec<_>>())
        .bind(spans.values().map(|v| v.1).collect::<Vec<_>>())
        .bind(first)
        .bind(last)
        .bind(groups.reps())
        .fetch_all(pool)
        .await?;
    let mut buckets: HashMap<(u32, i16), Vec<BucketSums>> = HashMap::new();
    for row in &rows {
        let group: i32 = row.try_get(0)?;
        let level: i16 = row.try_get(1)?;
        let bucket: DateTime<Utc> = row.try_get(2)?;
        let sums = parse_columns(row, 3)?;
        buckets
            .entry((u32::try_from(group).unwrap_or(u32::MAX), level))
            .or_default()
            .push((bucket, sums));
    }
    drop(rows);
    for list in buckets.values_mut() {
        list.sort_unstable_by_key(|(bucket, _)| *bucket);
    }
    let mut by_slot: BTreeMap<i32, Sums> = BTreeMap::new();
    for (key, sign) in parts.weighted() {
        let Some(list) = buckets.get(&(key.group, key.level)) else {
            continue;
        };
        let lo = list.partition_point(|(bucket, _)| *bucket < key.from);
        let hi = list.partition_point(|(bucket, _)| *bucket < key.to);
        let Some(inside) = list.get(lo..hi) else {
            continue;
        };
        for (_, sums) in inside {
            add_signed(&mut by_slot, key.slot, sign, sums);
        }
    }
    Ok(by_slot.into_iter().collect())
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
    // A won deal's amount in the reporting currency ($9: rate 1), at the
    // rate of its currency dated on or before closed_at's UTC date, rounded
    // once to the nano, half to even: PostgreSQL's own arithmetic, apart
    // from the service's (domain::money), so that each checks the other.
    let deals_from = "FROM deals d \
        LEFT JOIN LATERAL (SELECT CASE WHEN d.currency = $9 THEN 1::numeric ELSE ( \
            SELECT r.rate FROM exchange_rates r \
            WHERE r.currency = d.currency AND r.effective_date <= (d.closed_at AT TIME ZONE 'UTC')::date \
            ORDER BY r.effective_date DESC LIMIT 1) END AS rate) dr ON true \
        LEFT JOIN LATERAL (SELECT d.amount * dr.rate * 1000000000 AS y) dy ON true \
        LEFT JOIN LATERAL (SELECT trunc(dy.y) + CASE WHEN dy.y - trunc(dy.y) > 0.5 \
            OR (dy.y - trunc(dy.y) = 0.5 AND mod(trunc(dy.y), 2) = 1) THEN 1 ELSE 0 END AS nanos) dc ON true \
        WHERE d.rep_id = ANY (e.reps) AND d.closed_at >= e.f AND d.closed_at < e.t";
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
                    "coalesce(sum(dc.nanos) FILTER (WHERE d.stage = 2), 0)",
                ),
                (M::CycleMicros, cycle.as_str()),
                (
                    M::WonUnconverted,
                    "count(*) FILTER (WHERE d.stage = 2 AND dr.rate IS NULL)",
                ),
            ],
            deals_from,
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

async fn raw_sums(
    pool: &PgPool,
    parts: &Parts,
    groups: &Groups,
    reporting: &str,
) -> Result<Vec<SumsRow>, Error> {
    if parts.0.is_empty() {
        return Ok(Vec::new());
    }
    let rows = parts
        .bind(groups, sqlx::query(sqlx::AssertSqlSafe(RAW_SQL.as_str())))
        .bind(reporting)
        .fetch_all(pool)
        .await?;
    rows.iter().map(parse_sums).collect()
}

/// For the queries at `slots` (their index in the caller's list): the
/// currencies of their won deals without an exchange rate at closed_at,
/// and the earliest such closed_at. Read from the deals themselves (the
/// rollups count them, `Metric::WonUnconverted`, but not by currency).
pub async fn missing_rates(
    pool: &PgPool,
    reporting: &str,
    slots: &[(usize, &TallyQuery)],
) -> Result<HashMap<usize, MissingRates>, Error> {
    use sqlx::Row;
    let mut slot_ids = Vec::new();
    let mut reps = Vec::new();
    let mut froms = Vec::new();
    let mut tos = Vec::new();
    for (slot, query) in slots {
        for segment in &query.segments {
            slot_ids.push(i32::try_from(*slot).unwrap_or(i32::MAX));
            reps.push(&*segment.rep);
            froms.push(segment.from);
            tos.push(segment.to);
        }
    }
    if slot_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT s.slot, d.currency, min(d.closed_at) \
         FROM unnest($1::int[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS s (slot, rep, f, t) \
         JOIN deals d ON d.rep_id = s.rep AND d.closed_at >= s.f AND d.closed_at < s.t \
         WHERE d.stage = 2 AND d.currency <> $5 AND NOT EXISTS ( \
             SELECT 1 FROM exchange_rates r \
             WHERE r.currency = d.currency AND r.effective_date <= (d.closed_at AT TIME ZONE 'UTC')::date) \
         GROUP BY s.slot, d.currency ORDER BY s.slot, d.currency",
    )
    .bind(&slot_ids)
    .bind(&reps)
    .bind(&froms)
    .bind(&tos)
    .bind(reporting)
    .fetch_all(pool)
    .await?;
    let mut out: HashMap<usize, MissingRates> = HashMap::new();
    for row in &rows {
        let slot: i32 = row.try_get(0)?;
        let currency: String = row.try_get(1)?;
        let earliest: DateTime<Utc> = row.try_get(2)?;
        let entry = out
            .entry(usize::try_from(slot).unwrap_or(usize::MAX))
            .or_insert_with(|| MissingRates {
                currencies: Vec::new(),
                earliest_closed_at: earliest,
            });
        entry.currencies.push(currency);
        entry.earliest_closed_at = entry.earliest_closed_at.min(earliest);
    }
    Ok(out)
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
/// (an index range); the raw count reads every converted customer. Each
/// check names its reps as a slice of $6 (a group, bound once).
static RETENTION_SQL: LazyLock<[String; 2]> = LazyLock::new(|| {
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
struct RetentionGroups<'q> {
    checks: Vec<(i32, u32, &'q RetentionQuery)>,
    groups: Groups,
}

impl<'q> RetentionGroups<'q> {
    fn new(checks: &[(i32, &'q RetentionQuery)]) -> Self {
        let mut groups = Groups::default();
        let checks = checks
            .iter()
            .filter(|(_, retention)| !retention.reps.is_empty())
            .map(|&(slot, retention)| (slot, groups.intern(retention.reps.clone()), retention))
            .collect();
        Self { checks, groups }
    }
}

async fn retention_counts(
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
            Some((last, points)) if **last == *id => points.push(point),
            _ => out.histories.push((id.into(), vec![point])),
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

#[cfg(test)]
mod tests {
    use chrono::{Days, NaiveDate};

    use super::*;
    use crate::domain::period::{Period, parse_zone};

    /// The rollup parts of one group's buckets (days or months, Berlin).
    fn parts_of(days: bool) -> Parts {
        let zone = parse_zone("Europe/Berlin").unwrap_or(chrono_tz::UTC);
        let first = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap_or_default();
        let mut parts = Parts::default();
        let buckets: Vec<Period> = if days {
            (0..365)
                .filter_map(|d| {
                    let day = first + Days::new(d);
                    Period::new(day, day, zone).ok()
                })
                .collect()
        } else {
            (0..12)
                .filter_map(|m| {
                    let start = first.checked_add_months(chrono::Months::new(m))?;
                    let end = start.checked_add_months(chrono::Months::new(1))? - Days::new(1);
                    Period::new(start, end, zone).ok()
                })
                .collect()
        };
        for (slot, bucket) in buckets.iter().enumerate() {
            for part in cover(bucket.start_time(), bucket.end_time()) {
                if let Some(level) = part.level {
                    let slot = i32::try_from(slot).unwrap_or(0);
                    parts.add(slot, level as i16, part.from, part.to, part.sign, 0);
                }
            }
        }
        parts
    }

    #[test]
    fn parts_in_months_without_activity_are_dropped_and_the_rest_kept() {
        let mut parts = parts_of(true);
        let before = parts.0.len();
        let month = |m: u32| {
            NaiveDate::from_ymd_opt(2025, m, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
                .unwrap_or_default()
        };
        // Active in March and April (UTC months) only.
        let active = vec![[month(3), month(4)].into_iter().collect()];
        parts.retain_active(&active);
        assert!(!parts.0.is_empty() && parts.0.len() < before);
        for key in parts.0.keys() {
            assert!(
                key.to > month(3) && key.from < month(5),
                "{key:?} is outside March and April"
            );
        }
        // The Berlin day of 1 March starts on 28 February UTC: its edge
        // hours before March are in an inactive month and go, its day in
        // March stays.
        assert!(parts.0.keys().any(|k| k.from == month(3)));
        // A group with no activity at all keeps nothing.
        let mut parts = parts_of(true);
        parts.retain_active(&[BTreeSet::new()]);
        assert!(parts.0.is_empty());
    }

    fn levels(parts: &Parts) -> std::collections::BTreeSet<i16> {
        parts.0.keys().map(|k| k.level).collect()
    }

    #[test]
    fn a_daily_series_reads_its_days_over_the_span_and_a_monthly_one_reads_parts() {
        let (spanned, single) = parts_of(true).split_spans();
        assert!(
            levels(&spanned).contains(&2),
            "days are read over their span"
        );
        assert!(
            levels(&single).contains(&1),
            "the edge hours are read where they are"
        );
        // A monthly series: its months are read over the span too, but its
        // edge hours (one or two a month) where they are, not a year of
        // hours.
        let (spanned, single) = parts_of(false).split_spans();
        assert!(!levels(&spanned).contains(&1), "{:?}", levels(&spanned));
        assert!(levels(&single).contains(&1));
    }
}
