//! How rollups line up with periods: UTC hour, day and month buckets, and
//! the cover of any time range by the coarsest buckets that fit, with raw
//! records only for what no bucket fits (sub-hour edges).

use std::collections::HashMap;

use chrono::{DateTime, Datelike, DurationRound, Months, NaiveDate, TimeDelta, Utc};

use super::kpi::{Contribution, METRICS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Hour = 1,
    Day = 2,
    Month = 3,
}

pub const LEVELS: [Level; 3] = [Level::Hour, Level::Day, Level::Month];

/// The earliest instant the service keeps (validation rejects earlier
/// years), where cumulative ranges start.
pub fn epoch() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn floor_month(at: DateTime<Utc>) -> DateTime<Utc> {
    at.date_naive()
        .with_day(1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(at, |t| t.and_utc())
}

/// The bucket of `level` that contains `at`.
pub fn floor(level: Level, at: DateTime<Utc>) -> DateTime<Utc> {
    match level {
        Level::Hour => at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at),
        Level::Day => at.duration_trunc(TimeDelta::days(1)).unwrap_or(at),
        Level::Month => floor_month(at),
    }
}

/// The first bucket boundary of `level` at or after `at`.
pub fn ceil(level: Level, at: DateTime<Utc>) -> DateTime<Utc> {
    let down = floor(level, at);
    if down == at {
        return at;
    }
    match level {
        Level::Hour => down + TimeDelta::hours(1),
        Level::Day => down + TimeDelta::days(1),
        Level::Month => down.checked_add_months(Months::new(1)).unwrap_or(at),
    }
}

/// A part of a range: bucket starts of one level in [from, to), or (level
/// `None`) raw records credited in [from, to).
pub type Part = (Option<Level>, DateTime<Utc>, DateTime<Utc>);

/// Rollup ranges `(level, from, to)` (bucket starts in [from, to)) and raw
/// ranges `(from, to)` that together cover [from, to) exactly once: the
/// whole months inside it, then whole days inside what is left at each end,
/// then whole hours, then raw records.
#[allow(clippy::type_complexity)]
pub fn cover(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> (
    Vec<(Level, DateTime<Utc>, DateTime<Utc>)>,
    Vec<(DateTime<Utc>, DateTime<Utc>)>,
) {
    let mut parts = Vec::new();
    cover_at(from, to, Some(Level::Month), &mut parts);
    parts.sort_by_key(|p| p.1);
    let mut buckets = Vec::new();
    let mut raw = Vec::new();
    for (level, f, t) in parts {
        match level {
            Some(level) => buckets.push((level, f, t)),
            None => raw.push((f, t)),
        }
    }
    (buckets, raw)
}

fn finer(level: Level) -> Option<Level> {
    match level {
        Level::Month => Some(Level::Day),
        Level::Day => Some(Level::Hour),
        Level::Hour => None,
    }
}

fn cover_at(from: DateTime<Utc>, to: DateTime<Utc>, level: Option<Level>, parts: &mut Vec<Part>) {
    if from >= to {
        return;
    }
    let Some(level) = level else {
        parts.push((None, from, to));
        return;
    };
    // Both ends of a bucket range must be boundaries of its level.
    let (a, b) = (ceil(level, from), floor(level, to));
    if a < b {
        parts.push((Some(level), a, b));
        cover_at(from, a, finer(level), parts);
        cover_at(b, to, finer(level), parts);
    } else {
        cover_at(from, to, finer(level), parts);
    }
}

/// Rollup changes: rep -> (level, bucket) -> sums to add.
#[derive(Debug, Default)]
#[allow(clippy::type_complexity)]
pub struct Deltas(pub HashMap<String, HashMap<(Level, DateTime<Utc>), [i128; METRICS.len()]>>);

impl Deltas {
    /// Adds (`sign` 1) or removes (`sign` -1) a record's contributions.
    pub fn apply(&mut self, rep_id: &str, contributions: &[Contribution], sign: i128) {
        let buckets = match self.0.get_mut(rep_id) {
            Some(buckets) => buckets,
            None => self.0.entry(rep_id.to_owned()).or_default(),
        };
        for (at, metric, value) in contributions {
            for level in LEVELS {
                let sums = buckets
                    .entry((level, floor(level, *at)))
                    .or_insert([0; METRICS.len()]);
                sums[*metric as usize] += sign * value;
            }
        }
    }

    /// The changes that are not zero, sorted by key (the order rows are
    /// locked in).
    #[allow(clippy::type_complexity)]
    pub fn into_sorted(self) -> Vec<((String, Level, DateTime<Utc>), [i128; METRICS.len()])> {
        let mut rows: Vec<_> = self
            .0
            .into_iter()
            .flat_map(|(rep, buckets)| {
                buckets
                    .into_iter()
                    .map(move |((level, bucket), sums)| ((rep.clone(), level, bucket), sums))
            })
            .filter(|(_, sums)| sums.iter().any(|v| *v != 0))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn a_kathmandu_quarter_is_covered_by_months_days_hours_and_two_raw_edges() {
        let (buckets, raw) = cover(utc("2025-12-31T18:15:00Z"), utc("2026-03-31T18:15:00Z"));
        assert_eq!(
            raw,
            [
                (utc("2025-12-31T18:15:00Z"), utc("2025-12-31T19:00:00Z")),
                (utc("2026-03-31T18:00:00Z"), utc("2026-03-31T18:15:00Z")),
            ]
        );
        assert_eq!(
            buckets,
            [
                (
                    Level::Hour,
                    utc("2025-12-31T19:00:00Z"),
                    utc("2026-01-01T00:00:00Z")
                ),
                (
                    Level::Month,
                    utc("2026-01-01T00:00:00Z"),
                    utc("2026-03-01T00:00:00Z")
                ),
                (
                    Level::Day,
                    utc("2026-03-01T00:00:00Z"),
                    utc("2026-03-31T00:00:00Z")
                ),
                (
                    Level::Hour,
                    utc("2026-03-31T00:00:00Z"),
                    utc("2026-03-31T18:00:00Z")
                ),
            ]
        );
    }

    #[test]
    fn a_range_ending_mid_day_is_not_covered_by_that_day() {
        // New York's 7 March 2026: 05:00Z to 05:00Z next day.
        let (buckets, raw) = cover(utc("2026-03-07T05:00:00Z"), utc("2026-03-08T05:00:00Z"));
        assert!(raw.is_empty());
        assert_eq!(
            buckets,
            [(
                Level::Hour,
                utc("2026-03-07T05:00:00Z"),
                utc("2026-03-08T05:00:00Z")
            )]
        );
    }

    #[test]
    fn short_ranges_stay_raw_or_hourly() {
        let (buckets, raw) = cover(utc("2026-01-01T10:15:00Z"), utc("2026-01-01T10:45:00Z"));
        assert!(buckets.is_empty());
        assert_eq!(raw.len(), 1);
        let (buckets, raw) = cover(utc("2026-01-01T10:00:00Z"), utc("2026-01-01T13:00:00Z"));
        assert!(raw.is_empty());
        assert_eq!(
            buckets,
            [(
                Level::Hour,
                utc("2026-01-01T10:00:00Z"),
                utc("2026-01-01T13:00:00Z")
            )]
        );
    }

    #[test]
    fn a_record_adds_to_its_hour_day_and_month() {
        let mut deltas = Deltas::default();
        let at = utc("2026-02-03T04:05:06Z");
        deltas.apply("anna", &[(at, super::super::kpi::Metric::Calls, 1)], 1);
        deltas.apply("anna", &[(at, super::super::kpi::Metric::Calls, 1)], -1);
        assert!(
            deltas.into_sorted().is_empty(),
            "an update to the same thing nets out"
        );
    }
}
