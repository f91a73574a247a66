//! KPI sums from the rollups (plus raw records for sub-hour edges), or from
//! the raw records alone (the naive baseline, and the reference the rollups
//! are tested against): `tallies` plans one call's reads over the distinct
//! rep groups; `rollups` reads the rollup parts (pruning months without
//! activity), `raw` the records themselves, `retention` the churn counts.

mod raw;
mod retention;
mod rollups;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

pub use self::rollups::active_months_of;
use self::{
    raw::raw_sums,
    retention::{RetentionGroups, retention_counts},
    rollups::{Parts, active_months, rollup_sums, span_sums},
};
use crate::{
    Error,
    domain::{
        rollup::{Part, Sums, cover},
        sums::{METRICS, Metric, MetricSet, Tally},
        tally::{RepRef, RetentionQuery, TallyQuery, chain_retention, retention_order},
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
