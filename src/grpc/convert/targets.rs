//! Target requests: a target to set, the filter of a listing.

use chrono_tz::Tz;

use super::kpi::{parse_kpi, parse_period, parse_period_spec, parse_subject};
use crate::{
    Error,
    domain::{
        Violations, period,
        target::{NewTarget, TargetFilter, check_value},
    },
    proto::pb,
};

/// A target to set, or every violation of the request.
pub fn new_target(req: pb::SetTargetRequest, default_zone: Tz) -> Result<NewTarget, Error> {
    let mut v = Violations::new();
    let kpi = v.check("kpi", parse_kpi(req.kpi));
    let subject = parse_subject(&mut v, "subject", req.subject.as_ref());
    let period = parse_period(
        &mut v,
        "",
        &req.start_date,
        &req.end_date,
        &req.time_zone,
        default_zone,
    );
    // The value is checked against the KPI's unit as soon as the KPI is
    // known, so its violation is listed with every other one.
    let value = kpi.and_then(|kpi| v.check("value", check_value(kpi, req.value)));
    v.finish(|| NewTarget::new(kpi?, subject?, period?, value?).ok())
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

/// The filter of a ListTargets request, or every violation of it.
pub fn target_filter(
    req: &pb::ListTargetsRequest,
    default_zone: Tz,
) -> Result<TargetFilter, Error> {
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
