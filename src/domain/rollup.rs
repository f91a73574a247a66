//! How rollups line up with periods: UTC hour, day and month buckets, and
//! the cover of any time range by the coarsest buckets that fit, with raw
//! records only for what no bucket fits (sub-hour edges).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, DurationRound, Months, NaiveDate, TimeDelta, Utc};

use super::sums::{Contribution, METRICS};

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

/// Whether [from, to) touches one of `months` (UTC month starts, as the
/// month rollup buckets).
pub fn touches_month(
    months: &std::collections::BTreeSet<DateTime<Utc>>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> bool {
    let first = floor(Level::Month, from);
    first < to && months.range(first..to).next().is_some()
}

/// A signed part of a range: bucket starts of one level in [from, to), or
/// (level `None`) raw records credited in [from, to); `sign` -1 parts are
/// subtracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub level: Option<Level>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub sign: i32,
}

/// Signed parts whose sum over [from, to) is exact: at each level, a ragged
/// end is either filled in with finer buckets or rounded out to the next
/// boundary with the excess subtracted, whichever reads fewer rows. So the
/// second quarter in Berlin (22:00 UTC to 22:00 UTC) is two months plus one
/// more month minus two hours, not two months, 29 days and 24 hours.
pub fn cover(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Part> {
    let mut parts = Vec::new();
    cover_at(
        from,
        to,
        Some(Level::Month),
        1,
        &mut parts,
        &mut Memo::new(),
    );
    parts.sort_by_key(|p| (p.from, p.to));
    parts
}

fn finer(level: Level) -> Option<Level> {
    match level {
        Level::Month => Some(Level::Day),
        Level::Day => Some(Level::Hour),
        Level::Hour => None,
    }
}

/// Buckets of `level` in [from, to) (both boundaries of the level).
fn buckets(level: Level, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    match level {
        Level::Hour => (to - from).num_hours(),
        Level::Day => (to - from).num_days(),
        Level::Month => {
            let months = |t: DateTime<Utc>| i64::from(t.year()) * 12 + i64::from(t.month0());
            months(to) - months(from)
        }
    }
}

/// The cheapest way to read [from, to) at `level`: the span [x, y) of
/// whole buckets to read, with each end either filled in with finer
/// buckets (x after `from`) or rounded out with the excess subtracted (x
/// before `from`); `None` if finer buckets alone are cheaper. With its cost
/// in rough rows read (raw records count as one row per quarter hour: they
/// are read through an index).
fn plan(from: DateTime<Utc>, to: DateTime<Utc>, level: Option<Level>, memo: &mut Memo) -> Plan {
    if from >= to {
        return (0, None);
    }
    let Some(level) = level else {
        return (((to - from).num_minutes() / 15).max(1), None);
    };
    if let Some(known) = memo.get(&(from, to, level)) {
        return *known;
    }
    let next = finer(level);
    let mut best = (plan(from, to, next, memo).0, None);
    for x in [ceil(level, from), floor(level, from)] {
        for y in [floor(level, to), ceil(level, to)] {
            if x < y {
                let cost = buckets(level, x, y)
                    + plan(x.min(from), x.max(from), next, memo).0
                    + plan(y.min(to), y.max(to), next, memo).0;
                if cost < best.0 {
                    best = (cost, Some((x, y)));
                }
            }
        }
    }
    memo.insert((from, to, level), best);
    best
}

type Plan = (i64, Option<(DateTime<Utc>, DateTime<Utc>)>);
type Memo = HashMap<(DateTime<Utc>, DateTime<Utc>, Level), Plan>;

fn cover_at(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    level: Option<Level>,
    sign: i32,
    parts: &mut Vec<Part>,
    memo: &mut Memo,
) {
    if from >= to {
        return;
    }
    let Some(level) = level else {
        parts.push(Part {
            level: None,
            from,
            to,
            sign,
        });
        return;
    };
    let next = finer(level);
    match plan(from, to, Some(level), memo).1 {
        None => cover_at(from, to, next, sign, parts, memo),
        Some((x, y)) => {
            parts.push(Part {
                level: Some(level),
                from: x,
                to: y,
                sign,
            });
            // A filled-in end adds finer buckets; a rounded-out one
            // subtracts them.
            if x < from {
                cover_at(x, from, next, -sign, parts, memo);
            } else {
                cover_at(from, x, next, sign, parts, memo);
            }
            if y > to {
                cover_at(to, y, next, -sign, parts, memo);
            } else {
                cover_at(y, to, next, sign, parts, memo);
            }
        }
    }
}

/// Sums of every metric, in `METRICS` order.
pub type Sums = [i128; METRICS.len()];

/// One rollup change: the row (rep, level, bucket) and the sums to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaRow {
    pub rep: String,
    pub level: Level,
    pub bucket: DateTime<Utc>,
    pub sums: Sums,
}

/// Rollup changes, kept per rep and hour only: a record touches one
/// entry, and the day and month changes are the sums of their hours.
#[derive(Debug, Default)]
pub struct Deltas(HashMap<String, BTreeMap<i64, Sums>>);

const SECONDS_PER_HOUR: i64 = 3600;

impl Deltas {
    /// Adds (`sign` 1) or removes (`sign` -1) a record's contributions.
    pub fn apply(&mut self, rep_id: &str, contributions: &[Contribution], sign: i128) {
        let hours = match self.0.get_mut(rep_id) {
            Some(hours) => hours,
            None => self.0.entry(rep_id.to_owned()).or_default(),
        };
        for (at, metric, value) in contributions {
            let hour = at.timestamp().div_euclid(SECONDS_PER_HOUR);
            let sums = hours.entry(hour).or_insert([0; METRICS.len()]);
            sums[*metric as usize] += sign * value;
        }
    }

    /// The changes that are not zero, in (level, rep, bucket) order: the
    /// order rows are locked in, hour rows first (see `store::rollup`).
    pub fn into_rows(self) -> Vec<DeltaRow> {
        let mut reps: Vec<(String, BTreeMap<i64, Sums>)> = self.0.into_iter().collect();
        reps.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut rows = Vec::new();
        for level in LEVELS {
            for (rep, hours) in &reps {
                // Hours in order: each day's or month's hours are adjacent.
                let mut current: Option<(DateTime<Utc>, Sums)> = None;
                for (hour, sums) in hours {
                    let at = DateTime::from_timestamp(hour * SECONDS_PER_HOUR, 0)
                        .unwrap_or(DateTime::<Utc>::MIN_UTC);
                    let bucket = floor(level, at);
                    match &mut current {
                        Some((b, total)) if *b == bucket => {
                            total.iter_mut().zip(sums).for_each(|(t, v)| *t += v);
                        }
                        _ => {
                            if let Some((b, total)) = current.replace((bucket, *sums)) {
                                push_nonzero(&mut rows, rep, level, b, total);
                            }
                        }
                    }
                }
                if let Some((b, total)) = current {
                    push_nonzero(&mut rows, rep, level, b, total);
                }
            }
        }
        rows
    }
}

fn push_nonzero(
    rows: &mut Vec<DeltaRow>,
    rep: &str,
    level: Level,
    bucket: DateTime<Utc>,
    sums: Sums,
) {
    if sums.iter().any(|v| *v != 0) {
        rows.push(DeltaRow {
            rep: rep.to_owned(),
            level,
            bucket,
            sums,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_touches_the_months_it_overlaps_and_no_other() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
        };
        let months: std::collections::BTreeSet<_> =
            [t("2026-03-01T00:00:00Z"), t("2026-05-01T00:00:00Z")].into();
        // Berlin's 1 April starts on 31 March UTC: it touches March.
        assert!(touches_month(
            &months,
            t("2026-03-31T22:00:00Z"),
            t("2026-04-01T22:00:00Z")
        ));
        assert!(!touches_month(
            &months,
            t("2026-04-01T00:00:00Z"),
            t("2026-05-01T00:00:00Z")
        ));
        assert!(touches_month(
            &months,
            t("2026-04-30T22:00:00Z"),
            t("2026-05-01T00:00:01Z")
        ));
        assert!(!touches_month(
            &months,
            t("2026-06-01T00:00:00Z"),
            t("2026-06-01T00:00:00Z")
        ));
        assert!(!touches_month(
            &months,
            t("2026-02-27T00:00:00Z"),
            t("2026-03-01T00:00:00Z")
        ));
    }

    fn utc(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    /// The signed parts as (level, from, to, sign) with level 0 for raw.
    fn shown(parts: Vec<Part>) -> Vec<(i32, String, String, i32)> {
        parts
            .into_iter()
            .map(|p| {
                (
                    p.level.map_or(0, |l| l as i32),
                    p.from.to_rfc3339(),
                    p.to.to_rfc3339(),
                    p.sign,
                )
            })
            .collect()
    }

    /// Sums a cover over hourly "records" at every quarter hour to check it
    /// counts each instant of the range exactly once.
    fn counted(parts: &[Part], from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        let mut at = floor(Level::Month, from) - TimeDelta::days(40);
        let end = ceil(Level::Month, to) + TimeDelta::days(40);
        while at < end {
            let n: i32 = parts
                .iter()
                .filter(|p| match p.level {
                    None => p.from <= at && at < p.to,
                    Some(level) => {
                        let bucket = floor(level, at);
                        p.from <= bucket && bucket < p.to
                    }
                })
                .map(|p| p.sign)
                .sum();
            if n != i32::from(from <= at && at < to) {
                return false;
            }
            at += TimeDelta::minutes(15);
        }
        true
    }

    #[test]
    fn a_berlin_quarter_is_three_months_minus_two_hours_and_plus_two() {
        let (from, to) = (utc("2026-03-31T22:00:00Z"), utc("2026-06-30T22:00:00Z"));
        let parts = cover(from, to);
        assert!(counted(&parts, from, to));
        assert_eq!(
            shown(parts),
            [
                (
                    1,
                    "2026-03-31T22:00:00+00:00".into(),
                    "2026-04-01T00:00:00+00:00".into(),
                    1
                ),
                (
                    3,
                    "2026-04-01T00:00:00+00:00".into(),
                    "2026-07-01T00:00:00+00:00".into(),
                    1
                ),
                (
                    1,
                    "2026-06-30T22:00:00+00:00".into(),
                    "2026-07-01T00:00:00+00:00".into(),
                    -1
                ),
            ]
        );
    }

    #[test]
    fn a_berlin_month_is_one_month_minus_and_plus_two_hours() {
        let (from, to) = (utc("2026-03-31T22:00:00Z"), utc("2026-04-30T22:00:00Z"));
        let parts = cover(from, to);
        assert!(counted(&parts, from, to));
        assert_eq!(
            shown(parts)
                .iter()
                .map(|(level, _, _, sign)| (*level, *sign))
                .collect::<Vec<_>>(),
            [(1, 1), (3, 1), (1, -1)]
        );
    }

    #[test]
    fn covers_count_every_instant_once_in_awkward_zones() {
        for (from, to) in [
            ("2025-12-31T18:15:00Z", "2026-03-31T18:15:00Z"),
            ("2026-03-07T05:00:00Z", "2026-03-08T05:00:00Z"),
            ("2026-01-01T10:15:00Z", "2026-01-01T10:45:00Z"),
            ("2026-01-01T10:00:00Z", "2026-01-01T13:00:00Z"),
            ("2026-02-27T11:45:00Z", "2026-03-02T12:15:00Z"),
            ("2026-01-31T23:45:00Z", "2026-02-01T00:15:00Z"),
        ] {
            let (from, to) = (utc(from), utc(to));
            assert!(counted(&cover(from, to), from, to), "{from} - {to}");
        }
        let epoch_to_berlin = cover(epoch(), utc("2026-03-31T22:00:00Z"));
        assert!(epoch_to_berlin.len() <= 3, "{epoch_to_berlin:?}");
    }

    #[test]
    fn deltas_come_out_by_level_rep_and_bucket_with_days_and_months_summed() {
        use super::super::sums::Metric;
        let mut deltas = Deltas::default();
        for (rep, at) in [
            ("bob", "2026-01-31T23:10:00Z"),
            ("anna", "2026-02-01T00:20:00Z"),
            ("anna", "2026-01-31T23:59:59Z"),
            ("anna", "2026-01-31T23:00:00Z"),
            ("anna", "2026-01-31T22:30:00Z"),
        ] {
            deltas.apply(rep, &[(utc(at), Metric::Calls, 1)], 1);
        }
        let rows: Vec<(String, Level, String, i128)> = deltas
            .into_rows()
            .into_iter()
            .map(|row| {
                let bucket = row.bucket.format("%m-%dT%H").to_string();
                (row.rep, row.level, bucket, row.sums[Metric::Calls as usize])
            })
            .collect();
        let expected: Vec<(String, Level, String, i128)> = [
            ("anna", Level::Hour, "01-31T22", 1),
            ("anna", Level::Hour, "01-31T23", 2),
            ("anna", Level::Hour, "02-01T00", 1),
            ("bob", Level::Hour, "01-31T23", 1),
            ("anna", Level::Day, "01-31T00", 3),
            ("anna", Level::Day, "02-01T00", 1),
            ("bob", Level::Day, "01-31T00", 1),
            ("anna", Level::Month, "01-01T00", 3),
            ("anna", Level::Month, "02-01T00", 1),
            ("bob", Level::Month, "01-01T00", 1),
        ]
        .into_iter()
        .map(|(r, l, b, n)| (r.to_owned(), l, b.to_owned(), n))
        .collect();
        assert_eq!(rows, expected);
    }

    #[test]
    fn a_record_adds_to_its_hour_day_and_month() {
        let mut deltas = Deltas::default();
        let at = utc("2026-02-03T04:05:06Z");
        deltas.apply("anna", &[(at, super::super::sums::Metric::Calls, 1)], 1);
        deltas.apply("anna", &[(at, super::super::sums::Metric::Calls, 1)], -1);
        assert!(
            deltas.into_rows().is_empty(),
            "an update to the same thing nets out"
        );
    }
}
