//! What a KPI computation reads, planned without I/O: a tally query is the
//! reps and time ranges whose records make up one subject's KPIs over one
//! period, plus the customers whose retention it measures. `store::kpi`
//! turns a list of them into SQL; this module decides what they are.

use std::{collections::HashSet, sync::Arc};

use chrono::{DateTime, Utc};

use crate::domain::{
    directory::{ChangePoint, intervals_in, team_at},
    rollup::epoch,
    sums::MetricSet,
};

/// A rep's id in a tally plan: shared, since a series names every rep of
/// its team once per bucket.
pub type RepRef = Arc<str>;

/// Records of one rep credited in [from, to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub rep: RepRef,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Retention at `start` for the customers of `reps` (those in the subject
/// at `start`), with churns counted until `end`.
#[derive(Debug, Clone)]
pub struct RetentionQuery {
    pub reps: Vec<RepRef>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// One tally to compute.
#[derive(Debug, Clone, Default)]
pub struct TallyQuery {
    pub segments: Vec<Segment>,
    pub retention: Option<RetentionQuery>,
    /// The sums to read (the others stay zero); all by default.
    pub metrics: MetricSet,
}

/// Where a retention query's count of active customers at its start
/// comes from: conversions minus churns of its reps over [from, start),
/// plus the count of query `base` (same reps, start `from`) if any; the
/// range's own sums are those of query `reuse` when its segments are
/// exactly these reps over [from, start) (the scorecard's previous period:
/// nothing more to read).
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub from: DateTime<Utc>,
    pub base: Option<usize>,
    pub reuse: Option<usize>,
}

/// The queries with retention, by start (a base comes before its users).
pub fn retention_order(queries: &[TallyQuery]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..queries.len())
        .filter(|&i| queries[i].retention.is_some())
        .collect();
    order.sort_by_key(|&i| queries[i].retention.as_ref().map(|r| r.start));
    order
}

/// Chains each retention query to the latest earlier one of the same reps,
/// so that a scorecard (period and previous period) or a series reads the
/// months since the beginning once, not once per start.
pub fn chain_retention(queries: &[TallyQuery]) -> Vec<Link> {
    fn sorted(reps: &[RepRef]) -> Vec<&str> {
        let mut reps: Vec<&str> = reps.iter().map(|r| &**r).collect();
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

/// A team's current subtree and the membership history of every rep who
/// was ever in it.
#[derive(Debug, Clone, Default)]
pub struct TeamMembers {
    pub teams: HashSet<String>,
    pub histories: Vec<(RepRef, Vec<ChangePoint>)>,
}

/// What a team's KPIs over [from, to) are made of: each member's records
/// while a member, and the customers of the members at `from`.
pub fn team_query(team: &TeamMembers, from: DateTime<Utc>, to: DateTime<Utc>) -> TallyQuery {
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
        metrics: MetricSet::ALL,
    }
}

/// A rep's own KPIs over [from, to).
pub fn rep_query(rep: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> TallyQuery {
    let rep: RepRef = Arc::from(rep);
    TallyQuery {
        segments: vec![Segment {
            rep: rep.clone(),
            from,
            to,
        }],
        retention: Some(RetentionQuery {
            reps: vec![rep],
            start: from,
            end: to,
        }),
        metrics: MetricSet::ALL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(i64::from(day) * 86_400, 0).unwrap_or_default()
    }

    fn reps(ids: &[&str]) -> Vec<RepRef> {
        ids.iter().map(|s| Arc::from(*s)).collect()
    }

    fn team(ids: &[&str], from: u32, to: u32) -> TallyQuery {
        TallyQuery {
            segments: ids
                .iter()
                .map(|rep| Segment {
                    rep: Arc::from(*rep),
                    from: at(from),
                    to: at(to),
                })
                .collect(),
            retention: Some(RetentionQuery {
                reps: reps(ids),
                start: at(from),
                end: at(to),
            }),
            metrics: MetricSet::ALL,
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
