//! Periods of whole days in a time zone, and the calendar buckets in them.
//!
//! A period covers the instants from local midnight of its start date to
//! local midnight after its end date, exactly, across DST changes. A local
//! midnight that does not exist (a DST gap at midnight) starts at the first
//! instant after the gap; one that exists twice starts at the first.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use super::ids::echo;

/// Longest period accepted.
pub const MAX_YEARS: u32 = 10;

/// Whole local days `start..=end` in `zone`. The fields are private: the
/// only way to get a `Period` is `Period::new` (or a method of one), so
/// every period in the service was validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    start: NaiveDate,
    /// Inclusive.
    end: NaiveDate,
    zone: Tz,
}

/// The first year of the accepted range of every date and instant the
/// service takes in.
pub const FIRST_YEAR: i32 = 1900;
/// The last year of that range.
pub const LAST_YEAR: i32 = 2199;

/// Whether `year` is in the accepted range. The range keeps everything
/// derived from an accepted date (the previous period, at most ten years
/// back; local midnights in any zone; calendar buckets) far inside the
/// ranges of chrono, PostgreSQL and protobuf timestamps, so no date
/// arithmetic on an accepted value can overflow, and every instant keeps
/// its nanoseconds exactly (chrono's nanosecond range is 1677-2262).
pub fn year_accepted(year: i32) -> bool {
    (FIRST_YEAR..=LAST_YEAR).contains(&year)
}

pub fn parse_date(raw: &str) -> Result<NaiveDate, String> {
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|_| format!("must be a date like 2026-01-31 (got {})", echo(raw)))?;
    if year_accepted(date.year()) {
        Ok(date)
    } else {
        Err(format!(
            "must be between {FIRST_YEAR}-01-01 and {LAST_YEAR}-12-31 (got {})",
            echo(raw)
        ))
    }
}

pub fn parse_zone(raw: &str) -> Result<Tz, String> {
    raw.parse::<Tz>().map_err(|_| {
        format!(
            "must be an IANA time zone like Europe/Berlin (got {})",
            echo(raw)
        )
    })
}

/// The first instant of local `date` in `zone`.
pub fn local_midnight(zone: Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_time(NaiveTime::MIN);
    // Walk forward a minute at a time through a gap (they are whole minutes
    // and at most a few hours long).
    for minutes in 0..(48 * 60) {
        let local = midnight + TimeDelta::minutes(minutes);
        if let Some(at) = zone.from_local_datetime(&local).earliest() {
            return at.with_timezone(&Utc);
        }
    }
    // Unreachable for real zones; fall back to the UTC reading.
    midnight.and_utc()
}

impl Period {
    /// Validates dates and zone: end not before start, at most 10 years.
    pub fn new(start: NaiveDate, end: NaiveDate, zone: Tz) -> Result<Self, String> {
        if end < start {
            return Err(format!("end_date {end} is before start_date {start}"));
        }
        let limit = start.checked_add_months(Months::new(12 * MAX_YEARS));
        if limit.is_none_or(|limit| end >= limit) {
            return Err(format!("a period may be at most {MAX_YEARS} years long"));
        }
        Ok(Self { start, end, zone })
    }

    pub fn start(&self) -> NaiveDate {
        self.start
    }

    /// The last day, inclusive.
    pub fn end(&self) -> NaiveDate {
        self.end
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    pub fn start_time(&self) -> DateTime<Utc> {
        local_midnight(self.zone, self.start)
    }

    /// The first instant after the period.
    pub fn end_time(&self) -> DateTime<Utc> {
        local_midnight(self.zone, self.end + Days::new(1))
    }

    pub fn days(&self) -> u64 {
        (self.end - self.start).num_days().unsigned_abs() + 1
    }

    /// The period of equal length (in days) right before this one.
    pub fn previous(&self) -> Self {
        let days = self.days();
        Self {
            start: self.start - Days::new(days),
            end: self.start - Days::new(1),
            zone: self.zone,
        }
    }

    /// Whether `date` falls in the period.
    pub fn contains(&self, date: NaiveDate) -> bool {
        self.start <= date && date <= self.end
    }

    /// The part of the period through the end of `as_of` (inclusive), or
    /// `None` if `as_of` is before the period.
    pub fn through(&self, as_of: NaiveDate) -> Option<Self> {
        (as_of >= self.start).then(|| Self {
            end: as_of.min(self.end),
            ..*self
        })
    }

    /// Share of the period's time elapsed at instant `at`, 0-1.
    pub fn elapsed_fraction(&self, at: DateTime<Utc>) -> f64 {
        let (start, end) = (self.start_time(), self.end_time());
        if at <= start {
            return 0.0;
        }
        if at >= end {
            return 1.0;
        }
        (at - start).num_milliseconds() as f64 / (end - start).num_milliseconds() as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Day,
    /// ISO weeks, Monday to Sunday.
    Week,
    Month,
    /// Fiscal quarters.
    Quarter,
}

/// The first day of the bucket that contains `date`.
fn bucket_start(date: NaiveDate, granularity: Granularity, fiscal_start_month: u32) -> NaiveDate {
    match granularity {
        Granularity::Day => date,
        Granularity::Week => date - Days::new(u64::from(date.weekday().num_days_from_monday())),
        Granularity::Month => date.with_day(1).unwrap_or(date),
        Granularity::Quarter => {
            // Months since the fiscal year's first month, rounded down to 3.
            let offset = (date.month() + 12 - fiscal_start_month) % 12;
            let first = date.with_day(1).unwrap_or(date);
            first - Months::new(offset % 3)
        }
    }
}

fn next_bucket(start: NaiveDate, granularity: Granularity) -> NaiveDate {
    match granularity {
        Granularity::Day => start + Days::new(1),
        Granularity::Week => start + Days::new(7),
        Granularity::Month => start + Months::new(1),
        Granularity::Quarter => start + Months::new(3),
    }
}

/// The calendar buckets covering `period`, each clipped to it.
pub fn buckets(period: &Period, granularity: Granularity, fiscal_start_month: u32) -> Vec<Period> {
    let mut out = Vec::new();
    let mut start = bucket_start(period.start, granularity, fiscal_start_month);
    while start <= period.end {
        let next = next_bucket(start, granularity);
        out.push(Period {
            start: start.max(period.start),
            end: (next - Days::new(1)).min(period.end),
            zone: period.zone,
        });
        start = next;
    }
    out
}

/// A calendar unit a relative period counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarUnit {
    Day,
    /// ISO week, Monday to Sunday.
    Week,
    Month,
    /// Fiscal quarter.
    Quarter,
    /// Fiscal year (the calendar year when the fiscal year starts in
    /// January).
    Year,
}

/// The most days `LAST_N_DAYS` may span (ten years, the longest period).
pub const MAX_LAST_N_DAYS: u32 = 3650;

/// A period given relative to today in its time zone, resolved into dates
/// at each evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relative {
    /// The unit that contains today (all of it, also the days to come).
    Current(CalendarUnit),
    /// The unit before that.
    Previous(CalendarUnit),
    /// The `n` days ending with today.
    LastDays(u32),
}

/// A period as asked for: fixed dates, or relative to today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodSpec {
    Fixed(Period),
    Relative { relative: Relative, zone: Tz },
}

impl PeriodSpec {
    /// The dates this spec means at instant `now`.
    pub fn resolve(&self, now: DateTime<Utc>, fiscal_start_month: u32) -> Period {
        match *self {
            Self::Fixed(period) => period,
            Self::Relative { relative, zone } => relative.resolve(
                now.with_timezone(&zone).date_naive(),
                zone,
                fiscal_start_month,
            ),
        }
    }

    pub fn is_relative(&self) -> bool {
        matches!(self, Self::Relative { .. })
    }

    /// The next instant after `now` at which `resolve` may give other
    /// dates: the next local midnight for a relative period, never for
    /// fixed dates.
    pub fn next_change(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match *self {
            Self::Fixed(_) => None,
            Self::Relative { zone, .. } => {
                let today = now.with_timezone(&zone).date_naive();
                today
                    .succ_opt()
                    .map(|tomorrow| local_midnight(zone, tomorrow))
            }
        }
    }
}

impl Relative {
    /// Checks `LastDays`' count.
    pub fn last_days(n: i64) -> Result<Self, String> {
        u32::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_LAST_N_DAYS).contains(n))
            .map(Self::LastDays)
            .ok_or_else(|| format!("must be 1 to {MAX_LAST_N_DAYS} (got {n})"))
    }

    /// The dates on local day `today` in `zone`.
    pub fn resolve(self, today: NaiveDate, zone: Tz, fiscal_start_month: u32) -> Period {
        let (start, end) = match self {
            Self::Current(unit) => unit_around(today, unit, fiscal_start_month),
            Self::Previous(unit) => {
                let (start, _) = unit_around(today, unit, fiscal_start_month);
                unit_around(start - Days::new(1), unit, fiscal_start_month)
            }
            Self::LastDays(n) => (today - Days::new(u64::from(n.max(1)) - 1), today),
        };
        Period { start, end, zone }
    }
}

/// The first and last day of the `unit` containing `date`.
fn unit_around(
    date: NaiveDate,
    unit: CalendarUnit,
    fiscal_start_month: u32,
) -> (NaiveDate, NaiveDate) {
    let (start, next) = match unit {
        CalendarUnit::Day => (date, date + Days::new(1)),
        CalendarUnit::Week | CalendarUnit::Month | CalendarUnit::Quarter => {
            let granularity = match unit {
                CalendarUnit::Week => Granularity::Week,
                CalendarUnit::Month => Granularity::Month,
                _ => Granularity::Quarter,
            };
            let start = bucket_start(date, granularity, fiscal_start_month);
            (start, next_bucket(start, granularity))
        }
        CalendarUnit::Year => {
            let offset = (date.month() + 12 - fiscal_start_month.clamp(1, 12)) % 12;
            let start = date.with_day(1).unwrap_or(date) - Months::new(offset);
            (start, start + Months::new(12))
        }
    };
    (start, next - Days::new(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(raw: &str) -> NaiveDate {
        NaiveDate::parse_from_str(raw, "%Y-%m-%d").unwrap_or_default()
    }

    fn dates(relative: Relative, today: &str, fiscal: u32) -> (String, String) {
        let p = relative.resolve(day(today), Tz::UTC, fiscal);
        (p.start().to_string(), p.end().to_string())
    }

    #[test]
    fn relative_periods_resolve_around_today() {
        use CalendarUnit::*;
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        // Wednesday 2026-12-02.
        let today = "2026-12-02";
        assert_eq!(dates(Relative::Current(Day), today, 1), pair(today, today));
        assert_eq!(
            dates(Relative::Previous(Day), today, 1),
            pair("2026-12-01", "2026-12-01")
        );
        assert_eq!(
            dates(Relative::Current(Week), today, 1),
            pair("2026-11-30", "2026-12-06")
        );
        assert_eq!(
            dates(Relative::Previous(Week), today, 1),
            pair("2026-11-23", "2026-11-29")
        );
        assert_eq!(
            dates(Relative::Current(Month), today, 1),
            pair("2026-12-01", "2026-12-31")
        );
        assert_eq!(
            dates(Relative::Previous(Month), today, 1),
            pair("2026-11-01", "2026-11-30")
        );
        assert_eq!(
            dates(Relative::Current(Quarter), today, 1),
            pair("2026-10-01", "2026-12-31")
        );
        assert_eq!(
            dates(Relative::Previous(Quarter), today, 1),
            pair("2026-07-01", "2026-09-30")
        );
        assert_eq!(
            dates(Relative::Current(Year), today, 1),
            pair("2026-01-01", "2026-12-31")
        );
        assert_eq!(
            dates(Relative::Previous(Year), today, 1),
            pair("2025-01-01", "2025-12-31")
        );
        assert_eq!(
            dates(Relative::LastDays(7), today, 1),
            pair("2026-11-26", today)
        );
        assert_eq!(dates(Relative::LastDays(1), today, 1), pair(today, today));
        // A fiscal year from February: Q4 is Nov-Jan, the year Feb-Jan.
        assert_eq!(
            dates(Relative::Current(Quarter), today, 2),
            pair("2026-11-01", "2027-01-31")
        );
        assert_eq!(
            dates(Relative::Previous(Quarter), today, 2),
            pair("2026-08-01", "2026-10-31")
        );
        assert_eq!(
            dates(Relative::Current(Year), today, 2),
            pair("2026-02-01", "2027-01-31")
        );
        assert_eq!(
            dates(Relative::Current(Year), "2026-01-15", 2),
            pair("2025-02-01", "2026-01-31")
        );
        assert_eq!(
            dates(Relative::Previous(Month), "2026-03-31", 1),
            pair("2026-02-01", "2026-02-28")
        );
        // A week across a year boundary.
        assert_eq!(
            dates(Relative::Current(Week), "2027-01-01", 1),
            pair("2026-12-28", "2027-01-03")
        );
        assert!(Relative::last_days(0).is_err());
        assert!(Relative::last_days(i64::from(MAX_LAST_N_DAYS) + 1).is_err());
    }

    #[test]
    fn a_relative_period_is_today_in_its_own_zone() {
        // 23:30 UTC on 30 November is already 1 December in Berlin.
        let now = DateTime::parse_from_rfc3339("2026-11-30T23:30:00Z")
            .map(|t| t.to_utc())
            .unwrap_or_default();
        let berlin: Tz = "Europe/Berlin".parse().unwrap_or(Tz::UTC);
        let month = |zone| {
            let p = PeriodSpec::Relative {
                relative: Relative::Current(CalendarUnit::Month),
                zone,
            }
            .resolve(now, 1);
            (p.start().to_string(), p.start_time())
        };
        assert_eq!(month(berlin).0, "2026-12-01");
        assert_eq!(month(berlin).1.to_rfc3339(), "2026-11-30T23:00:00+00:00");
        assert_eq!(month(Tz::UTC).0, "2026-11-01");
    }

    #[test]
    fn dates_outside_the_accepted_range_are_rejected_not_overflowed() {
        for bad in [
            "-262143-01-01",
            "+262142-12-31",
            "0001-01-01",
            "1899-12-31",
            "2200-01-01",
            "9999-12-31",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        for good in ["1900-01-01", "2199-12-31"] {
            assert!(parse_date(good).is_ok(), "{good}");
        }
        // The extremes of the range: the previous period of ten years from
        // the first day, and the buckets of the last, compute without a panic.
        let first = Period::new(
            date("1900-01-01"),
            date("1909-12-31"),
            chrono_tz::Pacific::Kiritimati,
        );
        let previous = first.map(|p| p.previous());
        assert!(previous.is_ok_and(|p| p.start() < date("1900-01-01")));
        let last = Period::new(
            date("2199-01-01"),
            date("2199-12-31"),
            chrono_tz::Etc::GMTPlus12,
        );
        assert!(last.is_ok_and(|p| buckets(&p, Granularity::Week, 1).len() == 53));
    }

    fn date(raw: &str) -> NaiveDate {
        parse_date(raw).unwrap_or_default()
    }

    fn zone(raw: &str) -> Tz {
        parse_zone(raw).unwrap_or(Tz::UTC)
    }

    fn utc(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn a_period_runs_from_local_midnight_to_local_midnight() {
        let p = Period::new(date("2026-01-01"), date("2026-01-31"), zone("Asia/Kolkata"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.start_time(), utc("2025-12-31T18:30:00Z"));
        assert_eq!(p.end_time(), utc("2026-01-31T18:30:00Z"));
        let k = Period::new(
            date("2026-01-01"),
            date("2026-01-01"),
            zone("Asia/Kathmandu"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.start_time(), utc("2025-12-31T18:15:00Z"));
    }

    #[test]
    fn dst_days_are_23_and_25_hours_long() {
        let spring = Period::new(
            date("2026-03-08"),
            date("2026-03-08"),
            zone("America/New_York"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            spring.end_time() - spring.start_time(),
            TimeDelta::hours(23)
        );
        let autumn = Period::new(
            date("2026-10-25"),
            date("2026-10-25"),
            zone("Europe/Berlin"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            autumn.end_time() - autumn.start_time(),
            TimeDelta::hours(25)
        );
    }

    #[test]
    fn a_missing_midnight_starts_after_the_gap() {
        // Chile (America/Santiago) springs forward at 00:00 -> 01:00 on
        // 2026-09-06.
        let start = local_midnight(zone("America/Santiago"), date("2026-09-06"));
        assert_eq!(start, utc("2026-09-06T04:00:00Z"));
    }

    #[test]
    fn periods_are_validated() {
        assert!(Period::new(date("2026-02-01"), date("2026-01-31"), Tz::UTC).is_err());
        assert!(Period::new(date("2016-01-01"), date("2025-12-31"), Tz::UTC).is_ok());
        assert!(Period::new(date("2016-01-01"), date("2026-01-01"), Tz::UTC).is_err());
        assert!(parse_zone("Mars/Olympus").is_err());
        assert!(parse_date("2026-02-30").is_err());
    }

    #[test]
    fn the_previous_period_has_the_same_number_of_days() {
        let q = Period::new(date("2026-04-01"), date("2026-06-30"), Tz::UTC)
            .unwrap_or_else(|e| panic!("{e}"));
        let prev = q.previous();
        // Q2 has 91 days, so the 91 days before it start on 31 December.
        assert_eq!(
            (prev.start, prev.end),
            (date("2025-12-31"), date("2026-03-31"))
        );
        assert_eq!(prev.days(), 91);
    }

    #[test]
    fn buckets_follow_iso_weeks_and_fiscal_quarters_clipped_to_the_period() {
        let p = Period::new(date("2026-01-01"), date("2026-01-15"), Tz::UTC)
            .unwrap_or_else(|e| panic!("{e}"));
        let weeks: Vec<_> = buckets(&p, Granularity::Week, 1)
            .iter()
            .map(|b| (b.start, b.end))
            .collect();
        assert_eq!(
            weeks,
            [
                (date("2026-01-01"), date("2026-01-04")),
                (date("2026-01-05"), date("2026-01-11")),
                (date("2026-01-12"), date("2026-01-15")),
            ]
        );
        let year = Period::new(date("2026-01-01"), date("2026-12-31"), Tz::UTC)
            .unwrap_or_else(|e| panic!("{e}"));
        let fiscal: Vec<_> = buckets(&year, Granularity::Quarter, 4)
            .iter()
            .map(|b| (b.start, b.end))
            .collect();
        assert_eq!(fiscal[0], (date("2026-01-01"), date("2026-03-31")));
        assert_eq!(fiscal[1], (date("2026-04-01"), date("2026-06-30")));
        assert_eq!(fiscal.len(), 4);
        assert_eq!(buckets(&year, Granularity::Month, 1).len(), 12);
        let feb = Period::new(date("2026-02-01"), date("2026-03-31"), Tz::UTC)
            .unwrap_or_else(|e| panic!("{e}"));
        let q: Vec<_> = buckets(&feb, Granularity::Quarter, 2)
            .iter()
            .map(|b| (b.start, b.end))
            .collect();
        assert_eq!(q, [(date("2026-02-01"), date("2026-03-31"))]);
    }
}
