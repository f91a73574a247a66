//! `kpi.v1.TargetService`: parse -> `service::targets` -> convert.

use chrono_tz::Tz;
use tonic::{Request, Response, Status};

use super::{
    auth::principal,
    convert::kpi::{
        parse_kpi, parse_period, parse_period_spec, parse_subject, progress_to_pb, target_to_pb,
    },
    pb::{self, target_service_server::TargetService},
};
use crate::{
    Error,
    domain::{
        Violations,
        ids::check_id,
        period,
        target::{NewTarget, TargetFilter, check_value},
    },
    service::Services,
};

#[derive(Debug, Clone)]
pub struct TargetApi {
    services: Services,
    default_zone: Tz,
}

impl TargetApi {
    pub fn new(services: Services, default_zone: Tz) -> Self {
        Self {
            services,
            default_zone,
        }
    }

    fn new_target(&self, req: pb::SetTargetRequest) -> Result<NewTarget, Error> {
        let mut v = Violations::new();
        let kpi = v.check("kpi", parse_kpi(req.kpi));
        let subject = parse_subject(&mut v, "subject", req.subject.as_ref());
        let period = parse_period(
            &mut v,
            "",
            &req.start_date,
            &req.end_date,
            &req.time_zone,
            self.default_zone,
        );
        // The value is checked against the KPI's unit as soon as the KPI is
        // known, so its violation is listed with every other one.
        let value = kpi.and_then(|kpi| v.check("value", check_value(kpi, req.value)));
        v.finish(|| NewTarget::new(kpi?, subject?, period?, value?).ok())
    }
}

/// An optional field: empty means "not given".
fn optional<T>(
    v: &mut Violations,
    field: &str,
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<Option<T>> {
    if raw.is_empty() {
        Some(None)
    } else {
        v.check(field, parse(raw)).map(Some)
    }
}

fn target_filter(req: &pb::ListTargetsRequest, default_zone: Tz) -> Result<TargetFilter, Error> {
    let mut v = Violations::new();
    let subject = match &req.subject {
        Some(s) if s.subject.is_some() => parse_subject(&mut v, "subject", Some(s)).map(Some),
        _ => Some(None),
    };
    let kpi = if req.kpi == 0 {
        Some(None)
    } else {
        v.check("kpi", parse_kpi(req.kpi)).map(Some)
    };
    let active_on = optional(&mut v, "active_on", &req.active_on, period::parse_date);
    let as_of = optional(&mut v, "as_of", &req.as_of, period::parse_date);
    let period = match &req.period {
        Some(p) => parse_period_spec(&mut v, "period.", p, default_zone).map(Some),
        None => Some(None),
    };
    v.finish(|| {
        Some(TargetFilter {
            subject: subject?,
            kpi: kpi?,
            active_on: active_on?,
            period: period?,
            as_of: as_of?,
        })
    })
}

#[tonic::async_trait]
impl TargetService for TargetApi {
    async fn set_target(
        &self,
        request: Request<pb::SetTargetRequest>,
    ) -> Result<Response<pb::SetTargetResponse>, Status> {
        let caller = principal(&request)?;
        let target = self.new_target(request.into_inner())?;
        let target = self.services.targets.set(&caller, target).await?;
        Ok(Response::new(pb::SetTargetResponse {
            target: Some(target_to_pb(&target)),
        }))
    }

    async fn list_targets(
        &self,
        request: Request<pb::ListTargetsRequest>,
    ) -> Result<Response<pb::ListTargetsResponse>, Status> {
        let caller = principal(&request)?;
        let filter = target_filter(request.get_ref(), self.default_zone)?;
        let targets = self.services.targets.list(&caller, filter).await?;
        Ok(Response::new(pb::ListTargetsResponse {
            targets: targets
                .iter()
                .map(|t| pb::TargetWithProgress {
                    target: Some(target_to_pb(&t.target)),
                    progress: Some(progress_to_pb(&t.progress)),
                })
                .collect(),
        }))
    }

    async fn delete_target(
        &self,
        request: Request<pb::DeleteTargetRequest>,
    ) -> Result<Response<pb::DeleteTargetResponse>, Status> {
        let caller = principal(&request)?;
        let id = request.into_inner().target_id;
        check_id(&id).map_err(|e| Error::invalid("target_id", e))?;
        self.services.targets.delete(&caller, &id).await?;
        Ok(Response::new(pb::DeleteTargetResponse {}))
    }
}
