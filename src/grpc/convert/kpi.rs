//! KPI requests and answers: KPIs, subjects, periods, values with their
//! intervals, targets and their progress, scorecards, leaderboards,
//! ExplainKpi's records, watch options. `targets` shares the period and
//! subject parsers.

use std::time::Duration;

use chrono_tz::Tz;

use crate::{
    domain::{
        Violations,
        explain::{ExplainPart, RecordContribution},
        ids::{RepId, TeamId},
        kpi::{self as math, Direction, Kpi, KpiValue, Progress, Unit},
        period::{self, CalendarUnit, Granularity, Period, PeriodSpec, Relative},
        report::{Leaderboard, LeaderboardEntry, Scorecard, ScorecardEntry},
        target::{Subject, Target, TargetProgress},
    },
    proto::{pb, timestamp},
    service::watch::{self, Reason},
};

pub fn reason_to_pb(reason: Reason) -> pb::WatchReason {
    match reason {
        Reason::Initial => pb::WatchReason::Initial,
        Reason::Changed => pb::WatchReason::Changed,
        Reason::PeriodRolledOver => pb::WatchReason::PeriodRolledOver,
    }
}

/// A watch's `min_interval`: absent is the default; negative, fractional
/// garbage or more than the maximum is a violation.
pub fn min_interval(v: &mut Violations, raw: Option<&pbjson_types::Duration>) -> Option<Duration> {
    let Some(raw) = raw else {
        return Some(watch::DEFAULT_MIN_INTERVAL);
    };
    let checked = (|| {
        if raw.seconds < 0 || raw.nanos < 0 || raw.nanos >= 1_000_000_000 {
            return Err("must be a duration of 0s or more".to_owned());
        }
        let interval = Duration::new(u64::try_from(raw.seconds).map_err(|e| e.to_string())?, 0)
            + Duration::from_nanos(u64::try_from(raw.nanos).map_err(|e| e.to_string())?);
        if interval > watch::MAX_MIN_INTERVAL {
            return Err(format!(
                "must be at most {}s",
                watch::MAX_MIN_INTERVAL.as_secs()
            ));
        }
        Ok(interval)
    })();
    v.check("min_interval", checked)
}

pub fn kpi_to_pb(kpi: Kpi) -> pb::Kpi {
    match kpi {
        Kpi::Leads => pb::Kpi::Leads,
        Kpi::NewCustomers => pb::Kpi::NewCustomers,
        Kpi::ConversionRate => pb::Kpi::ConversionRate,
        Kpi::RetentionRate => pb::Kpi::RetentionRate,
        Kpi::ChurnRate => pb::Kpi::ChurnRate,
        Kpi::Nps => pb::Kpi::Nps,
        Kpi::Csat => pb::Kpi::Csat,
        Kpi::WinRate => pb::Kpi::WinRate,
        Kpi::Revenue => pb::Kpi::Revenue,
        Kpi::DealsWon => pb::Kpi::DealsWon,
        Kpi::AverageDealSize => pb::Kpi::AverageDealSize,
        Kpi::SalesCycleDays => pb::Kpi::SalesCycleDays,
        Kpi::Interactions => pb::Kpi::Interactions,
        Kpi::Calls => pb::Kpi::Calls,
        Kpi::Emails => pb::Kpi::Emails,
        Kpi::Meetings => pb::Kpi::Meetings,
        Kpi::FirstResponseMinutes => pb::Kpi::FirstResponseMinutes,
        Kpi::RequestResolutionRate => pb::Kpi::RequestResolutionRate,
    }
}

/// A `kpi.v1.Kpi` number as a KPI; UNSPECIFIED and unknown numbers are
/// violations.
pub fn parse_kpi(n: i32) -> Result<Kpi, String> {
    Kpi::ALL
        .into_iter()
        .find(|k| kpi_to_pb(*k) as i32 == n)
        .ok_or_else(|| format!("must be a KPI other than KPI_UNSPECIFIED (got {n})"))
}

/// Parses a subject, naming the offending field (`subject.team_id`,
/// `subject.rep_id`, or `subject` when neither is set) under `field`.
pub fn parse_subject(
    v: &mut Violations,
    field: &str,
    subject: Option<&pb::Subject>,
) -> Option<Subject> {
    match subject.and_then(|s| s.subject.as_ref()) {
        Some(pb::subject::Subject::RepId(id)) => v
            .check(format!("{field}.rep_id"), RepId::parse(id))
            .map(Subject::Rep),
        Some(pb::subject::Subject::TeamId(id)) => v
            .check(format!("{field}.team_id"), TeamId::parse(id))
            .map(Subject::Team),
        None => {
            v.add(field, "is required: set rep_id or team_id");
            None
        }
    }
}

pub fn subject_to_pb(subject: &Subject) -> pb::Subject {
    pb::Subject {
        subject: Some(match subject {
            Subject::Rep(id) => pb::subject::Subject::RepId(id.to_string()),
            Subject::Team(id) => pb::subject::Subject::TeamId(id.to_string()),
        }),
    }
}

/// Parses dates and zone of a period, naming fields under `prefix`.
pub fn parse_period(
    v: &mut Violations,
    prefix: &str,
    start: &str,
    end: &str,
    zone: &str,
    default_zone: Tz,
) -> Option<Period> {
    let start = v.check(format!("{prefix}start_date"), period::parse_date(start));
    let end = v.check(format!("{prefix}end_date"), period::parse_date(end));
    let zone = if zone.is_empty() {
        Some(default_zone)
    } else {
        v.check(format!("{prefix}time_zone"), period::parse_zone(zone))
    };
    let (start, end, zone) = (start?, end?, zone?);
    v.check(format!("{prefix}end_date"), Period::new(start, end, zone))
}

/// Fixed dates, or a relative period (resolved when the call runs), naming
/// fields under `prefix`.
pub fn parse_period_spec(
    v: &mut Violations,
    prefix: &str,
    p: &pb::Period,
    default_zone: Tz,
) -> Option<PeriodSpec> {
    if p.relative == 0 {
        if p.last_n_days != 0 {
            v.add(
                format!("{prefix}last_n_days"),
                "is only for relative RELATIVE_PERIOD_LAST_N_DAYS",
            );
        }
        return parse_period(
            v,
            prefix,
            &p.start_date,
            &p.end_date,
            &p.time_zone,
            default_zone,
        )
        .map(PeriodSpec::Fixed);
    }
    for (field, value) in [("start_date", &p.start_date), ("end_date", &p.end_date)] {
        if !value.is_empty() {
            v.add(
                format!("{prefix}{field}"),
                "must be empty with a relative period",
            );
        }
    }
    let zone = if p.time_zone.is_empty() {
        Some(default_zone)
    } else {
        v.check(
            format!("{prefix}time_zone"),
            period::parse_zone(&p.time_zone),
        )
    };
    let relative = v.check(format!("{prefix}relative"), relative_from_pb(p.relative));
    let relative = match relative? {
        Some(unit_relative) => {
            if p.last_n_days != 0 {
                v.add(
                    format!("{prefix}last_n_days"),
                    "is only for relative RELATIVE_PERIOD_LAST_N_DAYS",
                );
            }
            unit_relative
        }
        None => v.check(
            format!("{prefix}last_n_days"),
            Relative::last_days(i64::from(p.last_n_days)),
        )?,
    };
    Some(PeriodSpec::Relative {
        relative,
        zone: zone?,
    })
}

/// A relative period from its enum value: `Some` for the calendar units,
/// `None` for LAST_N_DAYS (its count is another field).
pub fn relative_from_pb(n: i32) -> Result<Option<Relative>, String> {
    use CalendarUnit::{Day, Month, Quarter, Week, Year};
    use pb::RelativePeriod as R;
    Ok(Some(match R::try_from(n) {
        Ok(R::CurrentDay) => Relative::Current(Day),
        Ok(R::CurrentWeek) => Relative::Current(Week),
        Ok(R::CurrentMonth) => Relative::Current(Month),
        Ok(R::CurrentQuarter) => Relative::Current(Quarter),
        Ok(R::CurrentYear) => Relative::Current(Year),
        Ok(R::PreviousDay) => Relative::Previous(Day),
        Ok(R::PreviousWeek) => Relative::Previous(Week),
        Ok(R::PreviousMonth) => Relative::Previous(Month),
        Ok(R::PreviousQuarter) => Relative::Previous(Quarter),
        Ok(R::PreviousYear) => Relative::Previous(Year),
        Ok(R::LastNDays) => return Ok(None),
        Ok(R::Unspecified) | Err(_) => {
            return Err(format!("must be a RELATIVE_PERIOD_ value (got {n})"));
        }
    }))
}

/// The request's relative period, echoed in the answer's ResolvedPeriod.
pub fn relative_asked(period: Option<&pb::Period>) -> i32 {
    period.map_or(0, |p| p.relative)
}

pub fn resolved_as(p: &Period, relative: i32) -> pb::ResolvedPeriod {
    pb::ResolvedPeriod {
        relative,
        ..resolved(p)
    }
}

pub fn resolved(p: &Period) -> pb::ResolvedPeriod {
    pb::ResolvedPeriod {
        start_date: p.start().to_string(),
        end_date: p.end().to_string(),
        time_zone: p.zone().name().to_owned(),
        start_time: Some(timestamp(p.start_time())),
        end_time: Some(timestamp(p.end_time())),
        relative: 0,
    }
}

pub fn money(nanos: i128, currency: &str) -> pb::Money {
    let units = i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX);
    let frac = i32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    pb::Money {
        currency_code: currency.to_owned(),
        units,
        nanos: frac,
    }
}

pub fn value_to_pb(v: &KpiValue, currency: &str) -> pb::KpiValue {
    pb::KpiValue {
        kpi: kpi_to_pb(v.kpi) as i32,
        value: v.value,
        undefined_reason: v.undefined_reason.unwrap_or_default().to_owned(),
        money: v.money_nanos.map(|n| money(n, currency)),
        numerator: v.numerator.clone(),
        denominator: v.denominator.clone(),
        sample_size: v.sample_size,
        interval: v.interval.map(|i| pb::Interval {
            low: i.low,
            high: i.high,
            method: i.method.to_owned(),
        }),
        promoters: v.promoters,
        detractors: v.detractors,
        missing_rates: (v.unconverted_deals > 0).then(|| pb::MissingRates {
            deals: v.unconverted_deals,
            currency_codes: v
                .missing_rates
                .as_ref()
                .map(|m| m.currencies.clone())
                .unwrap_or_default(),
            earliest_closed_at: v
                .missing_rates
                .as_ref()
                .map(|m| timestamp(m.earliest_closed_at)),
        }),
    }
}

pub fn progress_to_pb(p: &TargetProgress) -> pb::TargetProgress {
    let progress: &Progress = &p.progress;
    pb::TargetProgress {
        target: progress.target,
        actual: progress.actual,
        attainment: progress.attainment,
        elapsed_fraction: progress.elapsed_fraction,
        expected_to_date: progress.expected_to_date,
        projected: progress.projected,
        on_track: progress.on_track,
        as_of: p.as_of.to_string(),
    }
}

pub fn target_to_pb(t: &Target) -> pb::Target {
    pb::Target {
        target_id: t.id.clone(),
        kpi: kpi_to_pb(t.kpi) as i32,
        subject: Some(subject_to_pb(&t.subject)),
        start_date: t.period.start().to_string(),
        end_date: t.period.end().to_string(),
        time_zone: t.period.zone().name().to_owned(),
        value: t.value,
        create_time: Some(timestamp(t.created_at)),
        update_time: Some(timestamp(t.updated_at)),
    }
}

pub fn scorecard_entry_to_pb(e: &ScorecardEntry, currency: &str) -> pb::ScorecardEntry {
    pb::ScorecardEntry {
        current: Some(value_to_pb(&e.current, currency)),
        previous: Some(value_to_pb(&e.previous, currency)),
        change: e.change,
        target: e.target.as_ref().map(|(t, _)| target_to_pb(t)),
        progress: e.target.as_ref().map(|(_, p)| progress_to_pb(p)),
    }
}

pub fn leaderboard_entry_to_pb(e: LeaderboardEntry, currency: &str) -> pb::LeaderboardEntry {
    pb::LeaderboardEntry {
        rank: e.rank.unwrap_or(0),
        ranked: e.rank.is_some(),
        not_ranked_reason: e.not_ranked_reason.unwrap_or_default(),
        display_name: e.display_name,
        attainment: e.attainment,
        value: Some(value_to_pb(&e.value, currency)),
        rep_id: e.rep_id.to_string(),
        statistically_tied_with_previous: e.statistically_tied_with_previous,
    }
}

pub fn scorecard_to_pb(card: &Scorecard, relative: i32) -> pb::GetScorecardResponse {
    pb::GetScorecardResponse {
        subject: Some(subject_to_pb(&card.subject)),
        period: Some(resolved_as(&card.period, relative)),
        previous_period: Some(resolved(&card.previous_period)),
        entries: card
            .entries
            .iter()
            .map(|e| scorecard_entry_to_pb(e, &card.currency))
            .collect(),
    }
}

pub fn leaderboard_to_pb(board: Leaderboard, relative: i32) -> pb::GetLeaderboardResponse {
    let currency = board.currency;
    pb::GetLeaderboardResponse {
        period: Some(resolved_as(&board.period, relative)),
        entries: board
            .entries
            .into_iter()
            .map(|e| leaderboard_entry_to_pb(e, &currency))
            .collect(),
    }
}

/// The parsed query and the interval, or every violation of both.
pub fn merge<Q>(
    query: Result<Q, crate::Error>,
    v: Violations,
    interval: Option<Duration>,
) -> Result<(Q, Duration), crate::Error> {
    match query {
        Ok(query) => v.finish(|| Some((query, interval?))),
        Err(crate::Error::InvalidArgument(mut violations)) => {
            violations.extend(v.into_vec());
            Err(crate::Error::InvalidArgument(violations))
        }
        Err(other) => Err(other),
    }
}

pub fn explain_part(n: i32) -> Result<ExplainPart, String> {
    match pb::ExplainPart::try_from(n) {
        Ok(pb::ExplainPart::Unspecified) => Ok(ExplainPart::Either),
        Ok(pb::ExplainPart::Numerator) => Ok(ExplainPart::Numerator),
        Ok(pb::ExplainPart::Denominator) => Ok(ExplainPart::Denominator),
        Err(_) => Err(format!(
            "must be EXPLAIN_PART_UNSPECIFIED, _NUMERATOR or _DENOMINATOR (got {n})"
        )),
    }
}

pub fn contribution_to_pb(c: &RecordContribution, currency: &str) -> pb::KpiContribution {
    let numerator = if c.in_nanos {
        math::nanos_text(c.numerator_nanos_or_count)
    } else {
        c.numerator_nanos_or_count.to_string()
    };
    let (original_amount, exchange_rate, converted_amount) = match &c.deal {
        Some((deal_currency, nanos, rate)) => (
            Some(money(*nanos, deal_currency)),
            rate.to_decimal(),
            Some(money(c.numerator_nanos_or_count, currency)),
        ),
        None => (None, String::new(), None),
    };
    pb::KpiContribution {
        record_type: c.record_type.to_owned(),
        record_id: c.record_id.clone(),
        rep_id: c.rep_id.clone(),
        team_id: c.team_id.clone().unwrap_or_default(),
        credited_at: Some(timestamp(c.credited_at)),
        numerator,
        denominator: c.denominator.to_string(),
        original_amount,
        exchange_rate,
        converted_amount,
    }
}

pub fn granularity(n: i32) -> Result<Granularity, String> {
    match pb::Granularity::try_from(n) {
        Ok(pb::Granularity::Day) => Ok(Granularity::Day),
        Ok(pb::Granularity::Week) => Ok(Granularity::Week),
        Ok(pb::Granularity::Month) => Ok(Granularity::Month),
        Ok(pb::Granularity::Quarter) => Ok(Granularity::Quarter),
        _ => Err(format!(
            "must be GRANULARITY_DAY, _WEEK, _MONTH or _QUARTER (got {n})"
        )),
    }
}

pub fn definition_to_pb(d: &math::Definition) -> pb::KpiDefinition {
    pb::KpiDefinition {
        kpi: kpi_to_pb(d.kpi) as i32,
        name: d.name.to_owned(),
        description: d.description.to_owned(),
        unit: match d.unit {
            Unit::Count => pb::Unit::Count,
            Unit::Percent => pb::Unit::Percent,
            Unit::Nps => pb::Unit::Nps,
            Unit::Money => pb::Unit::Money,
            Unit::Days => pb::Unit::Days,
            Unit::Minutes => pb::Unit::Minutes,
        } as i32,
        direction: match d.direction {
            Direction::HigherIsBetter => pb::Direction::HigherIsBetter,
            Direction::LowerIsBetter => pb::Direction::LowerIsBetter,
        } as i32,
        formula: d.formula.to_owned(),
    }
}
