//! Sums from the rollups: the parts (hour, day and month buckets) each
//! query's ranges cover, the months with activity that are worth reading,
//! and the sub-hour edges read from the records (`span_sums`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{Groups, RangeKey, SumsRow};
use crate::{
    Error,
    domain::{
        rollup::{Level, Sums, floor, touches_month},
        sums::{METRICS, MetricSet},
    },
    store::rollup::COLUMNS,
};

/// Below this many (rep, range) reads, finding the months with activity
/// costs more than the reads it saves.
pub(super) const PRUNE_MIN_READS: usize = 2_000;

/// For each group, the UTC months in which any of its reps has a month
/// rollup row, between the first part and the last; `None` when the parts
/// are too few to be worth it (see `active_months_by_rep`).
pub(super) async fn active_months(
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
pub(super) async fn active_months_by_rep(
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
pub(super) const PARALLEL_MIN_READS: usize = 4_000;

/// Reading a part's range costs an index descent per rep, worth about this
/// many rows read (see `Parts::split_spans`).
pub(super) const DESCENT_ROWS: i64 = 5;

/// Signed ranges to sum, each with how many times it was added (two
/// segments of one rep in one slot may cover the same bucket range).
#[derive(Default)]
pub(super) struct Parts(pub(super) BTreeMap<RangeKey, i32>);

impl Parts {
    pub(super) fn add(
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
    pub(super) fn retain_active(&mut self, active: &[BTreeSet<DateTime<Utc>>]) {
        self.0.retain(|key, _| {
            active
                .get(key.group as usize)
                .is_some_and(|months| touches_month(months, key.from, key.to))
        });
    }

    /// Each part with its sign times its multiplicity.
    pub(super) fn weighted(&self) -> impl Iterator<Item = (&RangeKey, i32)> {
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
    pub(super) fn split_spans(self) -> (Parts, Parts) {
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
    pub(super) fn bind<'q>(
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
pub(super) const PARTS_CTE: &str = "WITH parts AS ( \
        SELECT u.slot, u.lvl, u.f, u.t, u.sgn, ($8::text[])[u.lo:u.hi] AS reps \
        FROM UNNEST($1::int[], $2::smallint[], $3::timestamptz[], $4::timestamptz[], $5::int[], \
                    $6::int[], $7::int[]) AS u (slot, lvl, f, t, sgn, lo, hi)) ";

pub(super) fn parse_sums(row: &sqlx::postgres::PgRow) -> Result<SumsRow, Error> {
    use sqlx::Row;
    let slot: i32 = row.try_get(0)?;
    Ok((slot, parse_columns(row, 1)?))
}

/// The metric sums (decimal text) in the columns from `first` on.
pub(super) fn parse_columns(row: &sqlx::postgres::PgRow, first: usize) -> Result<Sums, Error> {
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
pub(super) fn metric_columns(metrics: MetricSet, expr: impl Fn(&str) -> String) -> Vec<String> {
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
pub(super) fn add_signed(by_slot: &mut BTreeMap<i32, Sums>, slot: i32, sign: i32, sums: &Sums) {
    let total = by_slot.entry(slot).or_insert([0; METRICS.len()]);
    let sign = i128::from(sign);
    for (sum, value) in total.iter_mut().zip(sums) {
        *sum += sign * value;
    }
}

pub(super) fn rollup_sql(metrics: MetricSet) -> String {
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
pub(super) async fn rollup_sums(
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
pub(super) fn span_sql(metrics: MetricSet) -> String {
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
pub(super) type BucketSums = (DateTime<Utc>, Sums);

/// The sums of many parts per (group, level), from one read of their span:
/// the rows per bucket come back sorted, and each part adds the buckets in
/// its range (two binary searches), signed, to its slot.
pub(super) async fn span_sums(
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

#[cfg(test)]
mod tests {
    use chrono::{Days, NaiveDate};

    use super::*;
    use crate::domain::{
        period::{Period, parse_zone},
        rollup::cover,
    };

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
