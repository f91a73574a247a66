//! Who may call what: the access policy, one entry per RPC of `kpi.v1`
//! by its gRPC path (Connect calls reach the same paths), with the roles
//! it needs and whether its calls are audit events.

use crate::domain::access::{Need, Role};

/// One RPC's entry in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The gRPC path, `/package.Service/Method`.
    pub path: &'static str,
    pub need: Need,
    /// Calls are audit events (they change the directory or targets).
    pub audited: bool,
}

const fn rule(path: &'static str, need: Need, audited: bool) -> Rule {
    Rule {
        path,
        need,
        audited,
    }
}

const READ: Need = Need::Role(Role::Read);
const INGEST: Need = Need::Role(Role::Ingest);

/// The policy, one entry per RPC, spelled out: no wildcard, so an RPC
/// added later is closed (admin only) until it is classified here. A test
/// checks that every method of the descriptor set has an entry.
pub const POLICY: &[Rule] = &[
    rule("/kpi.v1.DirectoryService/UpsertTeam", INGEST, true),
    rule("/kpi.v1.DirectoryService/GetTeam", READ, false),
    rule("/kpi.v1.DirectoryService/ListTeams", READ, false),
    rule("/kpi.v1.DirectoryService/UpsertRep", INGEST, true),
    rule("/kpi.v1.DirectoryService/GetRep", READ, false),
    rule("/kpi.v1.DirectoryService/ListReps", READ, false),
    rule("/kpi.v1.ActivityService/RecordActivities", INGEST, false),
    rule("/kpi.v1.ActivityService/StreamActivities", INGEST, false),
    rule("/kpi.v1.KpiService/ListKpis", READ, false),
    rule("/kpi.v1.KpiService/GetScorecard", READ, false),
    rule("/kpi.v1.KpiService/GetKpiSeries", READ, false),
    rule("/kpi.v1.KpiService/GetLeaderboard", READ, false),
    rule("/kpi.v1.KpiService/WatchScorecard", READ, false),
    rule("/kpi.v1.KpiService/WatchLeaderboard", READ, false),
    rule("/kpi.v1.KpiService/ExplainKpi", READ, false),
    rule("/kpi.v1.TargetService/SetTarget", Need::Admin, true),
    rule("/kpi.v1.TargetService/ListTargets", READ, false),
    rule("/kpi.v1.TargetService/DeleteTarget", Need::Admin, true),
    rule("/kpi.v1.ExchangeRateService/SetExchangeRates", INGEST, true),
    rule("/kpi.v1.ExchangeRateService/ListExchangeRates", READ, false),
];

/// Services anyone may call without a key (probes and tooling).
const OPEN_SERVICES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// What the RPC at `path` needs: its policy entry, open for health and
/// reflection, admin for anything else.
pub fn need_for(path: &str) -> Need {
    if OPEN_SERVICES.iter().any(|open| path.starts_with(open)) {
        return Need::Open;
    }
    POLICY
        .iter()
        .find(|r| r.path == path)
        .map_or(Need::Admin, |r| r.need)
}

/// Whether calls of `path` are audit events (they change the directory or
/// targets; an RPC without a policy entry is audited too).
pub fn is_audited(path: &str) -> bool {
    if OPEN_SERVICES.iter().any(|open| path.starts_with(open)) {
        return false;
    }
    POLICY
        .iter()
        .find(|r| r.path == path)
        .is_none_or(|r| r.audited)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::access::allows;

    #[test]
    fn every_method_of_the_api_has_a_policy_entry_and_every_entry_a_method() {
        let mut methods: Vec<String> = crate::proto::methods()
            .into_iter()
            .map(|m| m.path)
            .collect();
        methods.sort();
        let mut policy: Vec<String> = POLICY.iter().map(|r| r.path.to_owned()).collect();
        policy.sort();
        assert!(methods.len() >= 15, "{methods:?}");
        assert_eq!(methods, policy);
    }

    #[test]
    fn roles_get_what_their_name_says() {
        let upsert = need_for("/kpi.v1.DirectoryService/UpsertRep");
        let read = need_for("/kpi.v1.DirectoryService/ListReps");
        let record = need_for("/kpi.v1.ActivityService/RecordActivities");
        let target = need_for("/kpi.v1.TargetService/SetTarget");
        let future = need_for("/kpi.v1.SomethingNew/DoIt");
        let new_method = need_for("/kpi.v1.KpiService/DeleteEverything");
        assert!(!allows(Role::Read, new_method) && allows(Role::Admin, new_method));
        assert!(is_audited("/kpi.v1.KpiService/DeleteEverything"));
        assert!(allows(Role::Ingest, upsert) && allows(Role::Ingest, record));
        assert!(!allows(Role::Ingest, read) && !allows(Role::Read, upsert));
        assert!(allows(Role::Read, read) && !allows(Role::Read, record));
        assert!(!allows(Role::Read, target) && allows(Role::Admin, target));
        assert!(!allows(Role::Read, future) && allows(Role::Admin, future));
        assert_eq!(need_for("/grpc.health.v1.Health/Check"), Need::Open);
    }
}
