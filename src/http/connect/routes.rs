//! The route table: every unary and server-streaming RPC of `kpi.v1` by
//! its path, with the proto3 JSON conversions of its messages (pbjson's,
//! generated from the protos, so the mapping grpcurl and every Connect
//! client speak).

use prost::Message;
use serde::{Serialize, de::DeserializeOwned};

use crate::proto::pb;

/// Converts a request body to protobuf, or a response from it.
pub type Convert = fn(&[u8]) -> Result<Vec<u8>, String>;

/// One RPC: its path and the JSON conversions of its messages.
pub struct Route {
    pub path: &'static str,
    /// The Rust types of its messages (`pb::GetTeamRequest`), checked
    /// against the descriptors by a test.
    pub types: (&'static str, &'static str),
    pub request: Convert,
    pub response: Convert,
}

fn from_json<T: Message + DeserializeOwned>(body: &[u8]) -> Result<Vec<u8>, String> {
    // An empty body is the empty message, as in Connect.
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let message: T = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(message.encode_to_vec())
}

fn to_json<T: Message + Default + Serialize>(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let message = T::decode(bytes).map_err(|e| e.to_string())?;
    serde_json::to_vec(&message).map_err(|e| e.to_string())
}

macro_rules! route {
    ($path:literal, $request:ty, $response:ty) => {
        Route {
            path: $path,
            types: (stringify!($request), stringify!($response)),
            request: from_json::<$request>,
            response: to_json::<$response>,
        }
    };
}

/// Every unary RPC of the API (a test checks the list against the
/// descriptors).
pub const UNARY: &[Route] = &[
    route!(
        "/kpi.v1.DirectoryService/UpsertTeam",
        pb::UpsertTeamRequest,
        pb::UpsertTeamResponse
    ),
    route!(
        "/kpi.v1.DirectoryService/GetTeam",
        pb::GetTeamRequest,
        pb::GetTeamResponse
    ),
    route!(
        "/kpi.v1.DirectoryService/ListTeams",
        pb::ListTeamsRequest,
        pb::ListTeamsResponse
    ),
    route!(
        "/kpi.v1.DirectoryService/UpsertRep",
        pb::UpsertRepRequest,
        pb::UpsertRepResponse
    ),
    route!(
        "/kpi.v1.DirectoryService/GetRep",
        pb::GetRepRequest,
        pb::GetRepResponse
    ),
    route!(
        "/kpi.v1.DirectoryService/ListReps",
        pb::ListRepsRequest,
        pb::ListRepsResponse
    ),
    route!(
        "/kpi.v1.ActivityService/RecordActivities",
        pb::RecordActivitiesRequest,
        pb::RecordActivitiesResponse
    ),
    route!(
        "/kpi.v1.KpiService/ListKpis",
        pb::ListKpisRequest,
        pb::ListKpisResponse
    ),
    route!(
        "/kpi.v1.KpiService/GetScorecard",
        pb::GetScorecardRequest,
        pb::GetScorecardResponse
    ),
    route!(
        "/kpi.v1.KpiService/GetKpiSeries",
        pb::GetKpiSeriesRequest,
        pb::GetKpiSeriesResponse
    ),
    route!(
        "/kpi.v1.KpiService/GetLeaderboard",
        pb::GetLeaderboardRequest,
        pb::GetLeaderboardResponse
    ),
    route!(
        "/kpi.v1.KpiService/ExplainKpi",
        pb::ExplainKpiRequest,
        pb::ExplainKpiResponse
    ),
    route!(
        "/kpi.v1.TargetService/SetTarget",
        pb::SetTargetRequest,
        pb::SetTargetResponse
    ),
    route!(
        "/kpi.v1.TargetService/ListTargets",
        pb::ListTargetsRequest,
        pb::ListTargetsResponse
    ),
    route!(
        "/kpi.v1.TargetService/DeleteTarget",
        pb::DeleteTargetRequest,
        pb::DeleteTargetResponse
    ),
    route!(
        "/kpi.v1.ExchangeRateService/SetExchangeRates",
        pb::SetExchangeRatesRequest,
        pb::SetExchangeRatesResponse
    ),
    route!(
        "/kpi.v1.ExchangeRateService/ListExchangeRates",
        pb::ListExchangeRatesRequest,
        pb::ListExchangeRatesResponse
    ),
];

/// Every server-streaming RPC (a test checks the list against the
/// descriptors).
pub const SERVER_STREAMING: &[Route] = &[
    route!(
        "/kpi.v1.KpiService/WatchScorecard",
        pb::WatchScorecardRequest,
        pb::WatchScorecardResponse
    ),
    route!(
        "/kpi.v1.KpiService/WatchLeaderboard",
        pb::WatchLeaderboardRequest,
        pb::WatchLeaderboardResponse
    ),
];

pub fn identity(bytes: &[u8]) -> Result<Vec<u8>, String> {
    Ok(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (path, request type, response type) of the RPCs `keep` selects.
    fn described(keep: fn(&prost_types::MethodDescriptorProto) -> bool) -> Vec<[String; 3]> {
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_default();
        let rust = |proto: &str| proto.replace(".kpi.v1.", "pb::");
        let mut rpcs: Vec<[String; 3]> = set
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| (f, s)))
            .flat_map(|(f, s)| s.method.iter().map(move |m| (f, s, m)))
            .filter(|(_, _, m)| keep(m))
            .map(|(f, s, m)| {
                [
                    format!("/{}.{}/{}", f.package(), s.name(), m.name()),
                    rust(m.input_type()),
                    rust(m.output_type()),
                ]
            })
            .collect();
        rpcs.sort();
        rpcs
    }

    fn listed(routes: &[Route]) -> Vec<[String; 3]> {
        let mut listed: Vec<[String; 3]> = routes
            .iter()
            .map(|u| {
                [
                    u.path.to_owned(),
                    u.types.0.replace(' ', ""),
                    u.types.1.replace(' ', ""),
                ]
            })
            .collect();
        listed.sort();
        listed
    }

    #[test]
    fn every_unary_and_server_streaming_rpc_has_a_connect_route_with_its_own_messages() {
        let unary = described(|m| !m.client_streaming() && !m.server_streaming());
        assert_eq!(listed(UNARY), unary);
        assert_eq!(unary.len(), 17);
        let streaming = described(|m| !m.client_streaming() && m.server_streaming());
        assert_eq!(listed(SERVER_STREAMING), streaming);
        assert_eq!(streaming.len(), 2);
    }

    #[test]
    fn json_converts_both_ways_with_proto_names_or_json_names() {
        let proto = from_json::<pb::GetScorecardRequest>(
            br#"{"subject": {"team_id": "emea"}, "kpis": ["KPI_REVENUE", 1], "period": {"startDate": "2026-07-01"}}"#,
        );
        let decoded = proto
            .ok()
            .and_then(|p| pb::GetScorecardRequest::decode(p.as_slice()).ok());
        assert_eq!(
            decoded
                .as_ref()
                .map(|r| (r.kpis.clone(), r.period.clone().map(|p| p.start_date))),
            Some((
                vec![pb::Kpi::Revenue as i32, 1],
                Some("2026-07-01".to_owned())
            ))
        );
        assert!(from_json::<pb::GetScorecardRequest>(b"{\"kpis\": \"nope\"}").is_err());
        assert!(from_json::<pb::ListKpisRequest>(b"").is_ok());
        let counts = pb::RecordActivitiesResponse {
            counts: Some(pb::RecordCounts {
                inserted: 3,
                ..Default::default()
            }),
        };
        let json = to_json::<pb::RecordActivitiesResponse>(&counts.encode_to_vec());
        assert_eq!(
            json.ok().and_then(|j| String::from_utf8(j).ok()),
            Some(r#"{"counts":{"inserted":"3"}}"#.to_owned())
        );
    }
}
