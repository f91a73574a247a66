//! `kpi.v1.KpiService`: parse the request into a typed query, call the use
//! case in `service/`, convert the answer. Also the proto <-> domain
//! conversions of KPI values, periods and subjects that `targets` shares.

use std::{pin::Pin, time::Duration};

use chrono_tz::Tz;
use prost::Message as _;
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{
    activity::StreamLimits,
    auth::principal,
    convert::timestamp,
    pb::{self, kpi_service_server::KpiService},
};
use crate::{
    domain::{
        Violations,
        ids::{RepId, TeamId},
        kpi::{self as math, CATALOG, Direction, Kpi, KpiValue, Progress, Unit},
        paging::PageRequest,
        period::{self, CalendarUnit, Granularity, Period, PeriodSpec, Relative},
        report::{Leaderboard, LeaderboardEntry, Scorecard, ScorecardEntry},
        target::{Subject, Target, TargetProgress},
    },
    service::{
        Services,
        explain::ExplainQuery,
        leaderboard::LeaderboardQuery,
        scorecard::{ScorecardQuery, SeriesQuery},
        watch::{self, Answer, Compute, Reason, Update},
    },
    store::explain::{Contribution, Part},
};

#[derive(Clone)]
pub struct KpiApi {
    services: Services,
    default_zone: Tz,
    /// What ends an open watch besides its client.
    limits: StreamLimits,
}

impl KpiApi {
    pub fn new(services: Services, default_zone: Tz, limits: StreamLimits) -> Self {
        Self {
            services,
            default_zone,
            limits,
        }
    }
}

/// The messages of a watch, as tonic sends them.
pub type WatchStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn reason_to_pb(reason: Reason) -> pb::WatchReason {
    match reason {
        Reason::Initial => pb::WatchReason::Initial,
        Reason::Changed => pb::WatchReason::Changed,
        Reason::PeriodRolledOver => pb::WatchReason::PeriodRolledOver,
    }
}

/// A watch's `min_interval`: absent is the default; negative, fractional
/// garbage or more than the maximum is a violation.
fn min_interval(v: &mut Violations, raw: Option<&pbjson_types::Duration>) -> Option<Duration> {
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

/// The fingerprint of a scorecard without what moves with the clock alone
/// (a target's pace and the day it is computed as of).
fn scorecard_fingerprint(card: &pb::GetScorecardResponse) -> u64 {
    let mut card = card.clone();
    for entry in &mut card.entries {
        if let Some(progress) = &mut entry.progress {
            progress.elapsed_fraction = 0.0;
            progress.expected_to_date = None;
            progress.projected = None;
            progress.on_track = false;
            progress.as_of.clear();
        }
    }
    watch::fingerprint(&card.encode_to_vec())
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
fn relative_from_pb(n: i32) -> Result<Option<Relative>, String> {
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
fn relative_asked(period: Option<&pb::Period>) -> i32 {
    period.map_or(0, |p| p.relative)
}

fn resolved_as(p: &Period, relative: i32) -> pb::ResolvedPeriod {
    pb::ResolvedPeriod {
        relative,
        ..resolved(p)
    }
}

fn resolved(p: &Period) -> pb::ResolvedPeriod {
    pb::ResolvedPeriod {
        start_date: p.start().to_string(),
        end_date: p.end().to_string(),
        time_zone: p.zone().name().to_owned(),
        start_time: Some(timestamp(p.start_time())),
        end_time: Some(timestamp(p.end_time())),
        relative: 0,
    }
}

fn money(nanos: i128, currency: &str) -> pb::Money {
    let units = i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX);
    let frac = i32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    pb::Money {
        currency_code: currency.to_owned(),
        units,
        nanos: frac,
    }
}

fn value_to_pb(v: &KpiValue, currency: &str) -> pb::KpiValue {
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
                .map(|m| super::convert::timestamp(m.earliest_closed_at)),
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

fn scorecard_entry_to_pb(e: &ScorecardEntry, currency: &str) -> pb::ScorecardEntry {
    pb::ScorecardEntry {
        current: Some(value_to_pb(&e.current, currency)),
        previous: Some(value_to_pb(&e.previous, currency)),
        change: e.change,
        target: e.target.as_ref().map(|(t, _)| target_to_pb(t)),
        progress: e.target.as_ref().map(|(_, p)| progress_to_pb(p)),
    }
}

fn leaderboard_entry_to_pb(e: LeaderboardEntry, currency: &str) -> pb::LeaderboardEntry {
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

fn scorecard_to_pb(card: &Scorecard, relative: i32) -> pb::GetScorecardResponse {
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

fn leaderboard_to_pb(board: Leaderboard, relative: i32) -> pb::GetLeaderboardResponse {
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
fn merge<Q>(
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

fn explain_part(n: i32) -> Result<Part, String> {
    match pb::ExplainPart::try_from(n) {
        Ok(pb::ExplainPart::Unspecified) => Ok(Part::Either),
        Ok(pb::ExplainPart::Numerator) => Ok(Part::Numerator),
        Ok(pb::ExplainPart::Denominator) => Ok(Part::Denominator),
        Err(_) => Err(format!(
            "must be EXPLAIN_PART_UNSPECIFIED, _NUMERATOR or _DENOMINATOR (got {n})"
        )),
    }
}

fn contribution_to_pb(c: &Contribution, currency: &str) -> pb::KpiContribution {
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

fn granularity(n: i32) -> Result<Granularity, String> {
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

impl KpiApi {
    /// Starts a watch of `caller`'s (see `Watches::start`), ending on
    /// revocation and shutdown as every stream does.
    async fn watch<T: Send + 'static>(
        &self,
        caller: crate::access::Principal,
        spec: PeriodSpec,
        interval: Duration,
        compute: impl FnMut() -> Compute<T> + Send + 'static,
    ) -> Result<impl Stream<Item = Result<Update<T>, Status>> + Send + 'static, Status> {
        let limits = self.limits.clone();
        let ended = async move { limits.ended(&caller).await };
        let updates = self
            .services
            .watches
            .start(spec, interval, compute, ended)
            .await?;
        Ok(ReceiverStream::new(updates).map(|update| update.map_err(Status::from)))
    }

    fn period_of(&self, v: &mut Violations, period: Option<pb::Period>) -> Option<PeriodSpec> {
        parse_period_spec(v, "period.", &period.unwrap_or_default(), self.default_zone)
    }

    fn scorecard_query(
        &self,
        req: pb::GetScorecardRequest,
    ) -> Result<ScorecardQuery, crate::Error> {
        let mut v = Violations::new();
        let subject = parse_subject(&mut v, "subject", req.subject.as_ref());
        let period = self.period_of(&mut v, req.period);
        let kpis: Vec<Option<Kpi>> = req
            .kpis
            .iter()
            .enumerate()
            .map(|(i, k)| v.check(format!("kpis[{i}]"), parse_kpi(*k)))
            .collect();
        v.finish(|| {
            Some(ScorecardQuery {
                subject: subject?,
                period: period?,
                kpis: kpis.into_iter().collect::<Option<Vec<Kpi>>>()?,
            })
        })
    }

    fn series_query(&self, req: pb::GetKpiSeriesRequest) -> Result<SeriesQuery, crate::Error> {
        let mut v = Violations::new();
        let subject = parse_subject(&mut v, "subject", req.subject.as_ref());
        let kpi = v.check("kpi", parse_kpi(req.kpi));
        let period = self.period_of(&mut v, req.period);
        let granularity = v.check("granularity", granularity(req.granularity));
        v.finish(|| {
            Some(SeriesQuery {
                subject: subject?,
                kpi: kpi?,
                period: period?,
                granularity: granularity?,
            })
        })
    }

    fn leaderboard_query(
        &self,
        req: pb::GetLeaderboardRequest,
    ) -> Result<LeaderboardQuery, crate::Error> {
        let mut v = Violations::new();
        let kpi = v.check("kpi", parse_kpi(req.kpi));
        let team = v.check("team_id", TeamId::parse(&req.team_id));
        let period = self.period_of(&mut v, req.period);
        if req.min_sample.is_some_and(|m| m < 0) {
            v.add("min_sample", "must not be negative");
        }
        let limit = v.check(
            "limit",
            usize::try_from(req.limit).map_err(|_| "must not be negative".to_owned()),
        );
        v.finish(|| {
            Some(LeaderboardQuery {
                kpi: kpi?,
                team: team?,
                period: period?,
                min_sample: req.min_sample,
                limit: limit?,
            })
        })
    }
}

fn definition_to_pb(d: &math::Definition) -> pb::KpiDefinition {
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

#[tonic::async_trait]
impl KpiService for KpiApi {
    async fn list_kpis(
        &self,
        _request: Request<pb::ListKpisRequest>,
    ) -> Result<Response<pb::ListKpisResponse>, Status> {
        Ok(Response::new(pb::ListKpisResponse {
            kpis: CATALOG.iter().map(definition_to_pb).collect(),
        }))
    }

    async fn get_scorecard(
        &self,
        request: Request<pb::GetScorecardRequest>,
    ) -> Result<Response<pb::GetScorecardResponse>, Status> {
        let caller = principal(&request)?;
        let relative = relative_asked(request.get_ref().period.as_ref());
        let query = self.scorecard_query(request.into_inner())?;
        let card = self.services.scorecards.scorecard(&caller, query).await?;
        Ok(Response::new(scorecard_to_pb(&card, relative)))
    }

    async fn explain_kpi(
        &self,
        request: Request<pb::ExplainKpiRequest>,
    ) -> Result<Response<pb::ExplainKpiResponse>, Status> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        let relative = relative_asked(req.period.as_ref());
        let mut v = Violations::new();
        let subject = parse_subject(&mut v, "subject", req.subject.as_ref());
        let kpi = v.check("kpi", parse_kpi(req.kpi));
        let period = self.period_of(&mut v, req.period);
        let part = v.check("part", explain_part(req.part));
        let query = v.finish(|| {
            Some(ExplainQuery {
                subject: subject?,
                kpi: kpi?,
                period: period?,
                part: part?,
            })
        })?;
        let page = PageRequest::parse(req.page_size, &req.page_token, &query.paging_key())?;
        let explained = self
            .services
            .explainer
            .explain(&caller, query, &page)
            .await?;
        let currency = &explained.currency;
        Ok(Response::new(pb::ExplainKpiResponse {
            value: Some(value_to_pb(&explained.value, currency)),
            period: Some(resolved_as(&explained.period, relative)),
            contributions: explained
                .page
                .items
                .iter()
                .map(|c| contribution_to_pb(c, currency))
                .collect(),
            next_page_token: explained.page.next_page_token,
        }))
    }

    type WatchScorecardStream = WatchStream<pb::WatchScorecardResponse>;

    async fn watch_scorecard(
        &self,
        request: Request<pb::WatchScorecardRequest>,
    ) -> Result<Response<Self::WatchScorecardStream>, Status> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        let relative = relative_asked(req.period.as_ref());
        let mut v = Violations::new();
        let interval = min_interval(&mut v, req.min_interval.as_ref());
        let query = self.scorecard_query(pb::GetScorecardRequest {
            subject: req.subject,
            period: req.period,
            kpis: req.kpis,
        });
        let (query, interval) = merge(query, v, interval)?;
        let spec = query.period;
        let services = self.services.clone();
        let compute_caller = caller.clone();
        let compute = move || -> Compute<pb::GetScorecardResponse> {
            let services = services.clone();
            let caller = compute_caller.clone();
            let query = query.clone();
            Box::pin(async move {
                let (card, scopes) = services.scorecards.scorecard_scoped(&caller, query).await?;
                let message = scorecard_to_pb(&card, relative);
                Ok(Answer {
                    fingerprint: scorecard_fingerprint(&message),
                    message,
                    scopes,
                    period: card.period,
                })
            })
        };
        let stream = self.watch(caller, spec, interval, compute).await?;
        Ok(Response::new(Box::pin(stream.map(|update| {
            update.map(|u| pb::WatchScorecardResponse {
                scorecard: Some(u.message),
                reason: reason_to_pb(u.reason) as i32,
            })
        }))))
    }

    type WatchLeaderboardStream = WatchStream<pb::WatchLeaderboardResponse>;

    async fn watch_leaderboard(
        &self,
        request: Request<pb::WatchLeaderboardRequest>,
    ) -> Result<Response<Self::WatchLeaderboardStream>, Status> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        let relative = relative_asked(req.period.as_ref());
        let mut v = Violations::new();
        let interval = min_interval(&mut v, req.min_interval.as_ref());
        let query = self.leaderboard_query(pb::GetLeaderboardRequest {
            kpi: req.kpi,
            team_id: req.team_id,
            period: req.period,
            min_sample: req.min_sample,
            limit: req.limit,
        });
        let (query, interval) = merge(query, v, interval)?;
        let spec = query.period;
        let services = self.services.clone();
        let compute_caller = caller.clone();
        let compute = move || -> Compute<pb::GetLeaderboardResponse> {
            let services = services.clone();
            let caller = compute_caller.clone();
            let query = query.clone();
            Box::pin(async move {
                let (board, scopes) = services
                    .leaderboards
                    .leaderboard_scoped(&caller, query)
                    .await?;
                let period = board.period;
                let message = leaderboard_to_pb(board, relative);
                Ok(Answer {
                    fingerprint: watch::fingerprint(&message.encode_to_vec()),
                    message,
                    scopes,
                    period,
                })
            })
        };
        let stream = self.watch(caller, spec, interval, compute).await?;
        Ok(Response::new(Box::pin(stream.map(|update| {
            update.map(|u| pb::WatchLeaderboardResponse {
                leaderboard: Some(u.message),
                reason: reason_to_pb(u.reason) as i32,
            })
        }))))
    }

    async fn get_kpi_series(
        &self,
        request: Request<pb::GetKpiSeriesRequest>,
    ) -> Result<Response<pb::GetKpiSeriesResponse>, Status> {
        let caller = principal(&request)?;
        let relative = relative_asked(request.get_ref().period.as_ref());
        let query = self.series_query(request.into_inner())?;
        let series = self.services.scorecards.series(&caller, query).await?;
        Ok(Response::new(pb::GetKpiSeriesResponse {
            period: Some(resolved_as(&series.period, relative)),
            points: series
                .points
                .iter()
                .map(|point| pb::SeriesPoint {
                    start_date: point.bucket.start().to_string(),
                    end_date: point.bucket.end().to_string(),
                    value: Some(value_to_pb(&point.value, &series.currency)),
                })
                .collect(),
        }))
    }

    async fn get_leaderboard(
        &self,
        request: Request<pb::GetLeaderboardRequest>,
    ) -> Result<Response<pb::GetLeaderboardResponse>, Status> {
        let caller = principal(&request)?;
        let relative = relative_asked(request.get_ref().period.as_ref());
        let query = self.leaderboard_query(request.into_inner())?;
        let board = self
            .services
            .leaderboards
            .leaderboard(&caller, query)
            .await?;
        Ok(Response::new(leaderboard_to_pb(board, relative)))
    }
}
