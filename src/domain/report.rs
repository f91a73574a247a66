//! The answers of the KPI use cases: scorecards, series and leaderboards,
//! as domain values (the transports turn them into their own messages),
//! and the pure ranking of a leaderboard.

use crate::domain::{
    ids::RepId,
    kpi::{self, Direction, Interval, Kpi, KpiValue, Shape},
    period::Period,
    target::{Subject, Target, TargetProgress},
};

/// A subject's KPIs for a period and the period before it.
#[derive(Debug, Clone)]
pub struct Scorecard {
    pub subject: Subject,
    pub period: Period,
    pub previous_period: Period,
    /// The currency of every money value.
    pub currency: String,
    pub entries: Vec<ScorecardEntry>,
}

#[derive(Debug, Clone)]
pub struct ScorecardEntry {
    pub current: KpiValue,
    pub previous: KpiValue,
    /// current - previous, when both are defined.
    pub change: Option<f64>,
    /// The subject's target for exactly this period, with progress.
    pub target: Option<(Target, TargetProgress)>,
}

/// One KPI per calendar bucket.
#[derive(Debug, Clone)]
pub struct Series {
    pub period: Period,
    pub currency: String,
    pub points: Vec<SeriesPoint>,
}

#[derive(Debug, Clone)]
pub struct SeriesPoint {
    pub bucket: Period,
    pub value: KpiValue,
}

/// A team's reps ranked by one KPI.
#[derive(Debug, Clone)]
pub struct Leaderboard {
    pub period: Period,
    pub currency: String,
    pub entries: Vec<LeaderboardEntry>,
}

#[derive(Debug, Clone)]
pub struct LeaderboardEntry {
    pub rep_id: RepId,
    pub display_name: String,
    /// Competition rank (1, 1, 3); `None` for an unranked rep.
    pub rank: Option<i32>,
    /// Why the rep is not ranked (an undefined value, a small sample).
    pub not_ranked_reason: Option<String>,
    pub value: KpiValue,
    /// actual / target when the rep has a target for this period.
    pub attainment: Option<f64>,
    /// Ranked, with a 95% interval that overlaps the interval of the entry
    /// ranked just above: the data cannot tell the two apart.
    pub statistically_tied_with_previous: bool,
}

/// Whether two 95% intervals share a point.
fn overlap(a: Option<&Interval>, b: Option<&Interval>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.low <= b.high && b.low <= a.high,
        _ => false,
    }
}

/// A rep's value before ranking.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub rep_id: RepId,
    pub display_name: String,
    pub value: KpiValue,
    pub target: Option<f64>,
}

/// Ranks candidates by `kpi`, best first by the KPI's direction, ties by
/// rep id and sharing a rank; reps whose value is undefined or whose sample
/// is below `min_sample` (rates and means only) follow, unranked, by id.
/// `limit` > 0 keeps the first `limit` entries.
pub fn rank(
    kpi: Kpi,
    candidates: Vec<Candidate>,
    min_sample: i64,
    limit: usize,
) -> Vec<LeaderboardEntry> {
    let def = kpi::definition(kpi);
    let mut ranked = Vec::new();
    let mut unranked = Vec::new();
    for c in candidates {
        let reason = match c.value.value {
            None => Some("undefined".to_owned()),
            Some(_) if def.shape != Shape::Total && c.value.sample_size < min_sample => {
                Some(format!("sample {} below {min_sample}", c.value.sample_size))
            }
            Some(_) => None,
        };
        match reason {
            None => ranked.push(c),
            Some(reason) => unranked.push((c, reason)),
        }
    }
    let key = |c: &Candidate| c.value.value.unwrap_or(f64::NAN);
    ranked.sort_by(|a, b| {
        let order = key(a).total_cmp(&key(b));
        let order = if def.direction == Direction::HigherIsBetter {
            order.reverse()
        } else {
            order
        };
        order.then_with(|| a.rep_id.cmp(&b.rep_id))
    });
    unranked.sort_by(|a, b| a.0.rep_id.cmp(&b.0.rep_id));
    let values: Vec<f64> = ranked.iter().map(key).collect();
    let ranks = kpi::competition_ranks(&values);
    let entry = |c: Candidate, rank: Option<i32>, reason: Option<String>| LeaderboardEntry {
        attainment: c
            .target
            .and_then(|t| kpi::attainment(kpi, t, c.value.value)),
        rep_id: c.rep_id,
        display_name: c.display_name,
        rank,
        not_ranked_reason: reason,
        value: c.value,
        statistically_tied_with_previous: false,
    };
    let mut entries: Vec<LeaderboardEntry> = ranked
        .into_iter()
        .zip(ranks)
        .map(|(c, rank)| entry(c, Some(rank), None))
        .chain(
            unranked
                .into_iter()
                .map(|(c, reason)| entry(c, None, Some(reason))),
        )
        .collect();
    for i in 1..entries.len() {
        let (above, this) = entries.split_at_mut(i);
        if let (Some(above), Some(this)) = (above.last(), this.first_mut())
            && above.rank.is_some()
            && this.rank.is_some()
        {
            this.statistically_tied_with_previous =
                overlap(above.value.interval.as_ref(), this.value.interval.as_ref());
        }
    }
    if limit > 0 {
        entries.truncate(limit);
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        kpi::evaluate,
        sums::{Metric, Tally},
    };

    fn candidate(rep: &str, kpi: Kpi, tally: &Tally) -> Candidate {
        Candidate {
            rep_id: RepId::parse(rep).unwrap_or_else(|e| panic!("{e}")),
            display_name: rep.to_uppercase(),
            value: evaluate(kpi, tally),
            target: Some(4.0),
        }
    }

    fn won(n: i128) -> Tally {
        let mut t = Tally::default();
        t.add(Metric::DealsWon, n);
        t
    }

    #[test]
    fn ties_share_a_rank_and_the_next_rank_skips() {
        let entries = rank(
            Kpi::DealsWon,
            vec![
                candidate("c", Kpi::DealsWon, &won(2)),
                candidate("b", Kpi::DealsWon, &won(5)),
                candidate("a", Kpi::DealsWon, &won(5)),
            ],
            0,
            0,
        );
        let got: Vec<(&str, Option<i32>)> = entries
            .iter()
            .map(|e| (e.rep_id.as_str(), e.rank))
            .collect();
        assert_eq!(got, vec![("a", Some(1)), ("b", Some(1)), ("c", Some(3))]);
        assert_eq!(entries[0].attainment, Some(1.25));
        assert_eq!(entries[2].attainment, Some(0.5));
    }

    fn win_rate(won: i128, lost: i128) -> Tally {
        let mut t = Tally::default();
        t.add(Metric::DealsWon, won);
        t.add(Metric::DealsLost, lost);
        t
    }

    #[test]
    fn ranked_rates_say_when_their_interval_overlaps_the_one_above() {
        // Wilson 95% at n = 100: 60% is 50.2-69.1, 55% is 45.2-64.4 (they
        // overlap: a tie), 10% is 5.5-17.4 (clearly below 55%).
        let entries = rank(
            Kpi::WinRate,
            vec![
                candidate("c", Kpi::WinRate, &win_rate(10, 90)),
                candidate("a", Kpi::WinRate, &win_rate(60, 40)),
                candidate("b", Kpi::WinRate, &win_rate(55, 45)),
                candidate("d", Kpi::WinRate, &win_rate(1, 0)),
            ],
            10,
            0,
        );
        let got: Vec<(&str, Option<i32>, bool)> = entries
            .iter()
            .map(|e| {
                (
                    e.rep_id.as_str(),
                    e.rank,
                    e.statistically_tied_with_previous,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", Some(1), false),
                ("b", Some(2), true),
                ("c", Some(3), false),
                // Unranked (sample 1): never tied.
                ("d", None, false),
            ]
        );
        // Counts have no interval: never tied, even when equal.
        let counts = rank(
            Kpi::DealsWon,
            vec![
                candidate("a", Kpi::DealsWon, &won(5)),
                candidate("b", Kpi::DealsWon, &won(5)),
            ],
            0,
            0,
        );
        assert!(counts.iter().all(|e| !e.statistically_tied_with_previous));
    }

    #[test]
    fn small_samples_of_rates_are_listed_unranked_after_the_ranked() {
        // A win rate of 1 closed deal is defined but below the sample of 10.
        let mut one = Tally::default();
        one.add(Metric::DealsWon, 1);
        let entries = rank(
            Kpi::WinRate,
            vec![
                candidate("a", Kpi::WinRate, &one),
                candidate("b", Kpi::WinRate, &Tally::default()),
            ],
            10,
            0,
        );
        assert!(entries.iter().all(|e| e.rank.is_none()));
        assert_eq!(entries[1].not_ranked_reason.as_deref(), Some("undefined"));
        assert!(
            entries[0]
                .not_ranked_reason
                .as_deref()
                .is_some_and(|r| r.contains("below 10"))
        );
        assert_eq!(
            rank(
                Kpi::WinRate,
                vec![candidate("a", Kpi::WinRate, &one)],
                10,
                0
            )
            .len(),
            1
        );
    }
}
