//! `kpi.v1.KpiService` and `kpi.v1.TargetService`.

use std::collections::HashMap;

use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use super::{
    auth::{principal, require_team},
    convert::timestamp,
    pb::{self, kpi_service_server::KpiService, target_service_server::TargetService},
};
use crate::{
    Error,
    access::Principal,
    domain::{
        Violations,
        ids::{RepId, TeamId},
        kpi::{self as math, CATALOG, Direction, Kpi, KpiValue, Shape, Tally, Unit},
        period::{self, Granularity, Period},
    },
    store::{
        directory as directory_store,
        kpi::{self as store, Source, TallyQuery},
        targets::{self as targets_store, TargetRow},
    },
};

/// Settings the KPI services need.
#[derive(Debug, Clone)]
pub struct KpiSettings {
    pub default_zone: Tz,
    pub fiscal_year_start_month: u32,
    pub reporting_currency: String,
}

#[derive(Debug, Clone)]
pub struct KpiApi {
    pool: PgPool,
    settings: KpiSettings,
}

impl KpiApi {
    pub fn new(pool: PgPool, settings: KpiSettings) -> Self {
        Self { pool, settings }
    }

    /// The `period` field of a request, violations under `period.`.
    fn period_of(&self, v: &mut Violations, period: Option<pb::Period>) -> Option<Period> {
        let p = period.unwrap_or_default();
        parse_period(
            v,
            "period.",
            &p.start_date,
            &p.end_date,
            &p.time_zone,
            self.settings.default_zone,
        )
    }
}

const ALL_KPIS: [Kpi; 18] = [
    Kpi::Leads,
    Kpi::NewCustomers,
    Kpi::ConversionRate,
    Kpi::RetentionRate,
    Kpi::ChurnRate,
    Kpi::Nps,
    Kpi::Csat,
    Kpi::WinRate,
    Kpi::Revenue,
    Kpi::DealsWon,
    Kpi::AverageDealSize,
    Kpi::SalesCycleDays,
    Kpi::Interactions,
    Kpi::Calls,
    Kpi::Emails,
    Kpi::Meetings,
    Kpi::FirstResponseMinutes,
    Kpi::RequestResolutionRate,
];

fn kpi_to_pb(kpi: Kpi) -> pb::Kpi {
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

fn kpi_from_number(n: i32) -> Option<Kpi> {
    ALL_KPIS.into_iter().find(|k| kpi_to_pb(*k) as i32 == n)
}

fn parse_kpi(n: i32) -> Result<Kpi, String> {
    kpi_from_number(n).ok_or_else(|| format!("must be a KPI other than KPI_UNSPECIFIED (got {n})"))
}

/// A scorecard's subject.
#[derive(Debug, Clone)]
enum Subject {
    Rep(RepId),
    Team(TeamId),
}

impl Subject {
    fn kind(&self) -> &'static str {
        match self {
            Subject::Rep(_) => "rep",
            Subject::Team(_) => "team",
        }
    }

    fn id(&self) -> &str {
        match self {
            Subject::Rep(id) => id.as_str(),
            Subject::Team(id) => id.as_str(),
        }
    }

    fn to_pb(&self) -> pb::Subject {
        pb::Subject {
            subject: Some(match self {
                Subject::Rep(id) => pb::subject::Subject::RepId(id.to_string()),
                Subject::Team(id) => pb::subject::Subject::TeamId(id.to_string()),
            }),
        }
    }
}

fn parse_subject(field: &str, subject: Option<&pb::Subject>) -> Result<Subject, String> {
    match subject.and_then(|s| s.subject.as_ref()) {
        Some(pb::subject::Subject::RepId(id)) => RepId::parse(id)
            .map(Subject::Rep)
            .map_err(|e| format!("{field}.rep_id {e}")),
        Some(pb::subject::Subject::TeamId(id)) => TeamId::parse(id)
            .map(Subject::Team)
            .map_err(|e| format!("{field}.team_id {e}")),
        None => Err("is required: set rep_id or team_id".into()),
    }
}

fn subject_from_row(kind: &str, id: &str) -> pb::Subject {
    pb::Subject {
        subject: Some(if kind == "rep" {
            pb::subject::Subject::RepId(id.to_owned())
        } else {
            pb::subject::Subject::TeamId(id.to_owned())
        }),
    }
}

/// Parses dates and zone of a period, naming fields under `prefix`.
fn parse_period(
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

fn resolved(p: &Period) -> pb::ResolvedPeriod {
    pb::ResolvedPeriod {
        start_date: p.start.to_string(),
        end_date: p.end.to_string(),
        time_zone: p.zone.name().to_owned(),
        start_time: Some(timestamp(p.start_time())),
        end_time: Some(timestamp(p.end_time())),
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
    }
}

fn progress_to_pb(p: &math::Progress, as_of: NaiveDate) -> pb::TargetProgress {
    pb::TargetProgress {
        target: p.target,
        actual: p.actual,
        attainment: p.attainment,
        elapsed_fraction: p.elapsed_fraction,
        expected_to_date: p.expected_to_date,
        projected: p.projected,
        on_track: p.on_track,
        as_of: as_of.to_string(),
    }
}

fn target_to_pb(t: &TargetRow) -> pb::Target {
    pb::Target {
        target_id: t.target_id.clone(),
        kpi: i32::from(t.kpi),
        subject: Some(subject_from_row(&t.subject_kind, &t.subject_id)),
        start_date: t.start_date.to_string(),
        end_date: t.end_date.to_string(),
        time_zone: t.time_zone.clone(),
        value: t.value,
        create_time: Some(timestamp(t.created_at)),
        update_time: Some(timestamp(t.updated_at)),
    }
}

/// Today's date in `zone`.
fn today(zone: Tz) -> NaiveDate {
    Utc::now().with_timezone(&zone).date_naive()
}

/// Checks the caller may see the subject and that it exists.
async fn authorize_subject(
    pool: &PgPool,
    caller: &Principal,
    subject: &Subject,
) -> Result<(), Error> {
    match subject {
        Subject::Team(team) => {
            require_team(caller, team.as_str())?;
            if directory_store::get_team(pool, team.as_str())
                .await?
                .is_none()
            {
                return Err(Error::NotFound {
                    kind: "team",
                    id: team.to_string(),
                });
            }
        }
        Subject::Rep(rep) => {
            let found = directory_store::get_rep(pool, rep.as_str()).await?;
            if caller.scope.is_some()
                && !found
                    .as_ref()
                    .and_then(|r| r.team.as_deref())
                    .is_some_and(|t| caller.sees_team(t))
            {
                return Err(Error::PermissionDenied(format!(
                    "this key may not see rep '{rep}'"
                )));
            }
            if found.is_none() {
                return Err(Error::NotFound {
                    kind: "rep",
                    id: rep.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Checks the caller may read the subject's KPIs: for a team, the key's
/// scope alone (whether it exists is found with its membership, in the
/// same round trip as the rest); for a rep, as `authorize_subject`.
async fn authorize_read(pool: &PgPool, caller: &Principal, subject: &Subject) -> Result<(), Error> {
    match subject {
        Subject::Team(team) => require_team(caller, team.as_str()),
        Subject::Rep(_) => authorize_subject(pool, caller, subject).await,
    }
}

/// A team's membership, or NOT_FOUND.
async fn membership(pool: &PgPool, team: &TeamId) -> Result<store::Membership, Error> {
    store::membership(pool, team.as_str())
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "team",
            id: team.to_string(),
        })
}

/// Builds tally queries, reading each team's membership once however many
/// subjects and periods of one call name it (ListTargets: one per target).
struct QueryBuilder<'p> {
    pool: &'p PgPool,
    teams: HashMap<TeamId, store::Membership>,
}

impl<'p> QueryBuilder<'p> {
    fn new(pool: &'p PgPool) -> Self {
        Self {
            pool,
            teams: HashMap::new(),
        }
    }

    /// The tally queries of `subject` over each period. Retention
    /// (customers active at each period start) is computed only if one of
    /// `kpis` needs it.
    async fn queries_for(
        &mut self,
        subject: &Subject,
        periods: &[Period],
        kpis: &[Kpi],
    ) -> Result<Vec<TallyQuery>, Error> {
        let mut queries: Vec<TallyQuery> = match subject {
            Subject::Rep(rep) => periods
                .iter()
                .map(|p| store::rep_query(rep.as_str(), p.start_time(), p.end_time()))
                .collect(),
            Subject::Team(team) => {
                use std::collections::hash_map::Entry;
                let team = match self.teams.entry(team.clone()) {
                    Entry::Occupied(known) => known.into_mut(),
                    Entry::Vacant(new) => new.insert(membership(self.pool, team).await?),
                };
                periods
                    .iter()
                    .map(|p| store::team_query(team, p.start_time(), p.end_time()))
                    .collect()
            }
        };
        without_unneeded_retention(&mut queries, kpis);
        Ok(queries)
    }
}

/// Drops the retention part of `queries` unless one of `kpis` needs it.
fn without_unneeded_retention(queries: &mut [TallyQuery], kpis: &[Kpi]) {
    if !kpis.iter().any(|k| math::needs_retention(*k)) {
        for query in queries {
            query.retention = None;
        }
    }
}

#[tonic::async_trait]
impl KpiService for KpiApi {
    async fn list_kpis(
        &self,
        _request: Request<pb::ListKpisRequest>,
    ) -> Result<Response<pb::ListKpisResponse>, Status> {
        let kpis = CATALOG
            .iter()
            .map(|d| pb::KpiDefinition {
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
            })
            .collect();
        Ok(Response::new(pb::ListKpisResponse { kpis }))
    }

    async fn get_scorecard(
        &self,
        request: Request<pb::GetScorecardRequest>,
    ) -> Result<Response<pb::GetScorecardResponse>, Status> {
        let caller = principal(&request)?;
        let mut req = request.into_inner();
        let mut v = Violations::new();
        let subject = v.check("subject", parse_subject("subject", req.subject.as_ref()));
        let period = self.period_of(&mut v, req.period.take());
        let kpis: Vec<Option<Kpi>> = req
            .kpis
            .iter()
            .enumerate()
            .map(|(i, k)| v.check(format!("kpis[{i}]"), parse_kpi(*k)))
            .collect();
        let (subject, period, kpis) = v.finish(|| {
            let kpis: Option<Vec<Kpi>> = kpis.into_iter().collect();
            Some((subject?, period?, kpis?))
        })?;
        let kpis = if kpis.is_empty() {
            ALL_KPIS.to_vec()
        } else {
            kpis
        };
        authorize_read(&self.pool, &caller, &subject).await?;

        let previous = period.previous();
        let queries = QueryBuilder::new(&self.pool)
            .queries_for(&subject, &[period, previous], &kpis)
            .await?;
        let subject_ids = [subject.id().to_owned()];
        let (tallies, targets) = tokio::try_join!(
            store::tallies(&self.pool, &queries, Source::Rollups),
            targets_store::for_period(
                &self.pool,
                subject.kind(),
                &subject_ids,
                period.start,
                period.end,
            )
        )?;
        let elapsed = period.elapsed_fraction(Utc::now());
        let as_of = today(period.zone).clamp(period.start, period.end);
        let currency = &self.settings.reporting_currency;
        let entries = kpis
            .iter()
            .map(|kpi| {
                let current = math::evaluate(*kpi, &tallies[0]);
                let before = math::evaluate(*kpi, &tallies[1]);
                let change = current.value.zip(before.value).map(|(a, b)| a - b);
                let target = targets
                    .iter()
                    .find(|t| kpi_from_number(i32::from(t.kpi)) == Some(*kpi));
                pb::ScorecardEntry {
                    current: Some(value_to_pb(&current, currency)),
                    previous: Some(value_to_pb(&before, currency)),
                    change,
                    target: target.map(target_to_pb),
                    progress: target.map(|t| {
                        progress_to_pb(
                            &math::progress(*kpi, t.value, current.value, elapsed),
                            as_of,
                        )
                    }),
                }
            })
            .collect();
        Ok(Response::new(pb::GetScorecardResponse {
            subject: Some(subject.to_pb()),
            period: Some(resolved(&period)),
            previous_period: Some(resolved(&previous)),
            entries,
        }))
    }

    async fn get_kpi_series(
        &self,
        request: Request<pb::GetKpiSeriesRequest>,
    ) -> Result<Response<pb::GetKpiSeriesResponse>, Status> {
        let caller = principal(&request)?;
        let mut req = request.into_inner();
        let mut v = Violations::new();
        let subject = v.check("subject", parse_subject("subject", req.subject.as_ref()));
        let kpi = v.check("kpi", parse_kpi(req.kpi));
        let period = self.period_of(&mut v, req.period.take());
        let granularity = v.check(
            "granularity",
            match pb::Granularity::try_from(req.granularity) {
                Ok(pb::Granularity::Day) => Ok(Granularity::Day),
                Ok(pb::Granularity::Week) => Ok(Granularity::Week),
                Ok(pb::Granularity::Month) => Ok(Granularity::Month),
                Ok(pb::Granularity::Quarter) => Ok(Granularity::Quarter),
                _ => Err(format!(
                    "must be GRANULARITY_DAY, _WEEK, _MONTH or _QUARTER (got {})",
                    req.granularity
                )),
            },
        );
        let (subject, kpi, period, granularity) =
            v.finish(|| Some((subject?, kpi?, period?, granularity?)))?;
        let buckets = period::buckets(&period, granularity, self.settings.fiscal_year_start_month);
        if buckets.len() > 5000 {
            return Err(Error::invalid(
                "granularity",
                format!(
                    "{} buckets: choose a coarser granularity or a shorter period",
                    buckets.len()
                ),
            )
            .into());
        }
        authorize_read(&self.pool, &caller, &subject).await?;
        let queries = QueryBuilder::new(&self.pool)
            .queries_for(&subject, &buckets, &[kpi])
            .await?;
        let tallies = store::tallies(&self.pool, &queries, Source::Rollups).await?;
        let currency = &self.settings.reporting_currency;
        let points = buckets
            .iter()
            .zip(&tallies)
            .map(|(bucket, tally)| pb::SeriesPoint {
                start_date: bucket.start.to_string(),
                end_date: bucket.end.to_string(),
                value: Some(value_to_pb(&math::evaluate(kpi, tally), currency)),
            })
            .collect();
        Ok(Response::new(pb::GetKpiSeriesResponse {
            period: Some(resolved(&period)),
            points,
        }))
    }

    async fn get_leaderboard(
        &self,
        request: Request<pb::GetLeaderboardRequest>,
    ) -> Result<Response<pb::GetLeaderboardResponse>, Status> {
        let caller = principal(&request)?;
        let mut req = request.into_inner();
        let mut v = Violations::new();
        let kpi = v.check("kpi", parse_kpi(req.kpi));
        let team = v.check("team_id", TeamId::parse(&req.team_id));
        let period = self.period_of(&mut v, req.period.take());
        if req.min_sample.is_some_and(|m| m < 0) {
            v.add("min_sample", "must not be negative");
        }
        if req.limit < 0 {
            v.add("limit", "must not be negative");
        }
        let (kpi, team, period) = v.finish(|| Some((kpi?, team?, period?)))?;
        require_team(&caller, team.as_str())?;

        let team = membership(&self.pool, &team).await?;
        let (from, to) = (period.start_time(), period.end_time());
        let mut members: Vec<String> = team
            .histories
            .iter()
            .filter(|(_, points)| {
                !crate::domain::directory::intervals_in(points, &team.teams, from, to).is_empty()
            })
            .map(|(rep, _)| rep.clone())
            .collect();
        let cards = store::rep_cards(&self.pool, &members).await?;
        if caller.scope.is_some() {
            // A scoped key sees only the reps now in its teams.
            members.retain(|rep| {
                cards
                    .get(rep)
                    .and_then(|(_, team)| team.as_deref())
                    .is_some_and(|team| caller.sees_team(team))
            });
        }
        let mut queries: Vec<TallyQuery> = members
            .iter()
            .map(|rep| store::rep_query(rep, from, to))
            .collect();
        without_unneeded_retention(&mut queries, &[kpi]);
        let (tallies, targets) = tokio::try_join!(
            store::tallies(&self.pool, &queries, Source::Rollups),
            targets_store::for_period(&self.pool, "rep", &members, period.start, period.end)
        )?;
        let targets: HashMap<String, f64> = targets
            .into_iter()
            .filter(|t| kpi_from_number(i32::from(t.kpi)) == Some(kpi))
            .map(|t| (t.subject_id, t.value))
            .collect();
        let min_sample = req
            .min_sample
            .unwrap_or_else(|| math::default_min_sample(kpi));
        let def = math::definition(kpi);
        let mut ranked = Vec::new();
        let mut unranked = Vec::new();
        for (rep, tally) in members.iter().zip(&tallies) {
            let value = math::evaluate(kpi, tally);
            let reason = match value.value {
                None => Some("undefined".to_owned()),
                Some(_) if def.shape != Shape::Total && value.sample_size < min_sample => {
                    Some(format!("sample {} below {min_sample}", value.sample_size))
                }
                Some(_) => None,
            };
            let entry = (rep.clone(), value, reason);
            if entry.2.is_none() {
                ranked.push(entry);
            } else {
                unranked.push(entry);
            }
        }
        let key = |v: &KpiValue| v.value.unwrap_or(f64::NAN);
        ranked.sort_by(|a, b| {
            let order = key(&a.1).total_cmp(&key(&b.1));
            let order = if def.direction == Direction::HigherIsBetter {
                order.reverse()
            } else {
                order
            };
            order.then_with(|| a.0.cmp(&b.0))
        });
        unranked.sort_by(|a, b| a.0.cmp(&b.0));
        let values: Vec<f64> = ranked.iter().map(|e| key(&e.1)).collect();
        let ranks = math::competition_ranks(&values);
        let currency = &self.settings.reporting_currency;
        let mut entries: Vec<pb::LeaderboardEntry> = ranked
            .into_iter()
            .zip(ranks)
            .chain(unranked.into_iter().map(|e| (e, 0)))
            .map(|((rep, value, reason), rank)| pb::LeaderboardEntry {
                rank,
                ranked: reason.is_none(),
                not_ranked_reason: reason.unwrap_or_default(),
                display_name: cards
                    .get(&rep)
                    .map(|(name, _)| name.clone())
                    .unwrap_or_default(),
                attainment: targets
                    .get(&rep)
                    .and_then(|t| math::attainment(kpi, *t, value.value)),
                value: Some(value_to_pb(&value, currency)),
                rep_id: rep,
            })
            .collect();
        if req.limit > 0 {
            entries.truncate(usize::try_from(req.limit).unwrap_or(usize::MAX));
        }
        Ok(Response::new(pb::GetLeaderboardResponse {
            period: Some(resolved(&period)),
            entries,
        }))
    }
}

#[derive(Debug, Clone)]
pub struct TargetApi {
    pool: PgPool,
    settings: KpiSettings,
}

impl TargetApi {
    pub fn new(pool: PgPool, settings: KpiSettings) -> Self {
        Self { pool, settings }
    }
}

fn check_target_value(kpi: Kpi, value: f64) -> Result<f64, String> {
    if !value.is_finite() {
        return Err("must be a finite number".into());
    }
    let unit = math::definition(kpi).unit;
    let ok = match unit {
        Unit::Percent => (0.0..=100.0).contains(&value),
        Unit::Nps => (-100.0..=100.0).contains(&value),
        _ => value >= 0.0,
    };
    if ok {
        Ok(value)
    } else {
        Err(format!(
            "must be {} for this KPI (got {value})",
            match unit {
                Unit::Percent => "0-100",
                Unit::Nps => "-100 to 100",
                _ => "not negative",
            }
        ))
    }
}

#[tonic::async_trait]
impl TargetService for TargetApi {
    async fn set_target(
        &self,
        request: Request<pb::SetTargetRequest>,
    ) -> Result<Response<pb::SetTargetResponse>, Status> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let kpi = v.check("kpi", parse_kpi(req.kpi));
        let subject = v.check("subject", parse_subject("subject", req.subject.as_ref()));
        let period = parse_period(
            &mut v,
            "",
            &req.start_date,
            &req.end_date,
            &req.time_zone,
            self.settings.default_zone,
        );
        let value = kpi.and_then(|kpi| v.check("value", check_target_value(kpi, req.value)));
        let (kpi, subject, period, value) = v.finish(|| Some((kpi?, subject?, period?, value?)))?;
        authorize_subject(&self.pool, &caller, &subject).await?;
        let row = targets_store::set(
            &self.pool,
            kpi_to_pb(kpi) as i16,
            subject.kind(),
            subject.id(),
            period.start,
            period.end,
            period.zone.name(),
            value,
        )
        .await?;
        Ok(Response::new(pb::SetTargetResponse {
            target: Some(target_to_pb(&row)),
        }))
    }

    async fn list_targets(
        &self,
        request: Request<pb::ListTargetsRequest>,
    ) -> Result<Response<pb::ListTargetsResponse>, Status> {
        let caller = principal(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let subject = match &req.subject {
            Some(s) if s.subject.is_some() => v
                .check("subject", parse_subject("subject", Some(s)))
                .map(Some),
            _ => Some(None),
        };
        let kpi = if req.kpi == 0 {
            Some(None)
        } else {
            v.check("kpi", parse_kpi(req.kpi)).map(Some)
        };
        let active_on = if req.active_on.is_empty() {
            Some(None)
        } else {
            v.check("active_on", period::parse_date(&req.active_on))
                .map(Some)
        };
        let as_of = if req.as_of.is_empty() {
            Some(None)
        } else {
            v.check("as_of", period::parse_date(&req.as_of)).map(Some)
        };
        let (subject, kpi, active_on, as_of) =
            v.finish(|| Some((subject?, kpi?, active_on?, as_of?)))?;
        if let Some(subject) = &subject {
            authorize_subject(&self.pool, &caller, subject).await?;
        }
        let rows = targets_store::list(
            &self.pool,
            subject.as_ref().map(|s| (s.kind(), s.id())),
            kpi.map(|k| kpi_to_pb(k) as i16),
            active_on,
        )
        .await?;
        let mut visible = Vec::new();
        for row in rows {
            let subject = if row.subject_kind == "rep" {
                RepId::parse(&row.subject_id).map(Subject::Rep)
            } else {
                TeamId::parse(&row.subject_id).map(Subject::Team)
            };
            let Ok(subject) = subject else { continue };
            if caller.scope.is_some()
                && authorize_subject(&self.pool, &caller, &subject)
                    .await
                    .is_err()
            {
                continue;
            }
            visible.push((row, subject));
        }

        // Progress through the end of the as-of day (default: today, in
        // each target's zone), all tallies in one go.
        let mut plans = Vec::new();
        for (row, _) in &visible {
            let zone = period::parse_zone(&row.time_zone).unwrap_or(self.settings.default_zone);
            let full = Period {
                start: row.start_date,
                end: row.end_date,
                zone,
            };
            let day = as_of.unwrap_or_else(|| today(zone));
            let through = full.through(day);
            let at = match as_of {
                Some(day) => period::local_midnight(zone, day + chrono::Days::new(1)),
                None => Utc::now(),
            };
            plans.push((
                kpi_from_number(i32::from(row.kpi)).unwrap_or(Kpi::Leads),
                through,
                day.clamp(full.start, full.end),
                full.elapsed_fraction(at),
            ));
        }
        let mut builder = QueryBuilder::new(&self.pool);
        let mut queries = Vec::new();
        let mut slots = Vec::new();
        for ((_, subject), (kpi, through, _, _)) in visible.iter().zip(&plans) {
            match through {
                Some(p) => {
                    slots.push(Some(queries.len()));
                    queries.extend(builder.queries_for(subject, &[*p], &[*kpi]).await?);
                }
                None => slots.push(None),
            }
        }
        let tallies = store::tallies(&self.pool, &queries, Source::Rollups).await?;
        let targets = visible
            .iter()
            .zip(plans.iter().zip(slots))
            .map(|((row, _), ((kpi, _, as_of_day, elapsed), slot))| {
                let kpi = *kpi;
                let actual = match slot {
                    Some(i) => tallies.get(i).and_then(|t| math::evaluate(kpi, t).value),
                    None => math::evaluate(kpi, &Tally::default()).value,
                };
                pb::TargetWithProgress {
                    target: Some(target_to_pb(row)),
                    progress: Some(progress_to_pb(
                        &math::progress(kpi, row.value, actual, *elapsed),
                        *as_of_day,
                    )),
                }
            })
            .collect();
        Ok(Response::new(pb::ListTargetsResponse { targets }))
    }

    async fn delete_target(
        &self,
        request: Request<pb::DeleteTargetRequest>,
    ) -> Result<Response<pb::DeleteTargetResponse>, Status> {
        principal(&request)?;
        let id = request.into_inner().target_id;
        if id.is_empty() {
            return Err(Error::invalid("target_id", "must not be empty").into());
        }
        if targets_store::get(&self.pool, &id).await?.is_none()
            || !targets_store::delete(&self.pool, &id).await?
        {
            return Err(Error::NotFound { kind: "target", id }.into());
        }
        Ok(Response::new(pb::DeleteTargetResponse {}))
    }
}
