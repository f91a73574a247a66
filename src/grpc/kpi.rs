//! `kpi.v1.KpiService`: parse the request into a typed query
//! (`convert::kpi`), call the use case in `service/`, convert the answer.

use std::{pin::Pin, time::Duration};

use chrono_tz::Tz;
use prost::Message as _;
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{
    auth::principal,
    convert::kpi::{
        contribution_to_pb, definition_to_pb, explain_part, granularity, leaderboard_to_pb, merge,
        min_interval, parse_kpi, parse_period_spec, parse_subject, reason_to_pb, relative_asked,
        resolved_as, scorecard_to_pb, value_to_pb,
    },
    pb::{self, kpi_service_server::KpiService},
    streams::StreamLimits,
};
use crate::{
    domain::{
        Violations,
        ids::TeamId,
        kpi::{CATALOG, Kpi},
        paging::PageRequest,
        period::PeriodSpec,
    },
    service::{
        Services,
        explain::ExplainQuery,
        leaderboard::LeaderboardQuery,
        scorecard::{ScorecardQuery, SeriesQuery},
        watch::{self, Answer, Compute, Update},
    },
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

impl KpiApi {
    /// Starts a watch of `caller`'s (see `Watches::start`), ending on
    /// revocation and shutdown as every stream does.
    async fn watch<T: Send + 'static>(
        &self,
        caller: crate::service::access::Principal,
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
