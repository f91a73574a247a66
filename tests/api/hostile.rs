//! Hostile input, per RPC: NUL characters, megabyte strings, forged page
//! tokens, dates and instants outside the accepted range, numbers at the
//! edge of their types. Each answers its exact code and field path, its
//! message stays short (no echo of a megabyte), and the service still
//! answers the next call.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use kpi_service::{
    proto::pb::{
        self, kpi_service_client::KpiServiceClient, target_service_client::TargetServiceClient,
    },
    testkit::records::{self, usd},
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::{
    helpers::{Authed, Bearer, TestApp, at, ts},
    kpi::{rep_subject, team_subject},
};

const MEGABYTE: usize = 1 << 20;

/// The clients of one hostile session and the checks after each call.
struct Attacker {
    app: TestApp,
    kpi: KpiServiceClient<Authed>,
    targets: TargetServiceClient<Authed>,
    checked: usize,
}

impl Attacker {
    async fn new() -> Self {
        let app = TestApp::spawn().await;
        app.upsert_team("team-a", "Team A", "").await.unwrap();
        app.upsert_team("team-b", "Team B", "").await.unwrap();
        app.rep_in("anna", "team-a").await;
        app.rep_in("bob", "team-a").await;
        let kpi =
            KpiServiceClient::with_interceptor(app.channel.clone(), Bearer::new(&app.admin_key));
        let targets =
            TargetServiceClient::with_interceptor(app.channel.clone(), Bearer::new(&app.admin_key));
        Self {
            app,
            kpi,
            targets,
            checked: 0,
        }
    }

    /// Asserts `result` failed with `code` naming exactly `fields`, with a
    /// short message, and that the service still answers.
    #[track_caller]
    fn expect<T: std::fmt::Debug>(
        &mut self,
        rpc: &str,
        result: Result<T, Status>,
        code: Code,
        fields: &[&str],
    ) {
        let status = match result {
            Ok(answer) => panic!("{rpc}: expected {code:?}, got an answer: {answer:?}"),
            Err(status) => status,
        };
        assert_eq!(status.code(), code, "{rpc}: {status:?}");
        let named: Vec<String> = status
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        assert_eq!(named, fields, "{rpc}: {status:?}");
        let details_len: usize = status.details().len();
        assert!(
            status.message().len() < 2048 && details_len < 4096,
            "{rpc}: the error carries {} + {details_len} bytes",
            status.message().len()
        );
        self.checked += 1;
    }

    /// The service answers an ordinary call (after every hostile one).
    async fn still_answers(&self) {
        let team = self.app.get_team("team-a").await;
        match team {
            Ok(team) => assert_eq!(team.team_id, "team-a"),
            Err(status) => panic!("the service stopped answering: {status:?}"),
        }
    }

    fn period(&self, start: &str, end: &str, zone: &str) -> Option<pb::Period> {
        Some(pb::Period {
            start_date: start.into(),
            end_date: end.into(),
            time_zone: zone.into(),
            ..Default::default()
        })
    }
}

/// A page token of the service with its cursor replaced by `cursor`.
fn forged(real_token: &str, cursor: &str) -> String {
    let raw = URL_SAFE_NO_PAD
        .decode(real_token)
        .unwrap_or_else(|e| panic!("not a token: {e}"));
    let raw = String::from_utf8(raw).unwrap_or_else(|e| panic!("not text: {e}"));
    let mut parts = raw.splitn(3, '\n');
    let (version, query) = (parts.next().unwrap(), parts.next().unwrap());
    URL_SAFE_NO_PAD.encode(format!("{version}\n{query}\n{cursor}"))
}

#[tokio::test]
async fn hostile_directory_requests_answer_their_field_and_the_service_keeps_answering() {
    let mut a = Attacker::new().await;
    let big = "x".repeat(MEGABYTE);
    let mut directory = a.app.directory.clone();

    let r = a.app.upsert_team("a\0b", "Team", "").await;
    a.expect("UpsertTeam", r, Code::InvalidArgument, &["team_id"]);
    let r = a.app.upsert_team("team-z", &big, "team\0a").await;
    a.expect(
        "UpsertTeam",
        r,
        Code::InvalidArgument,
        &["display_name", "parent_team_id"],
    );
    let r = a.app.get_team(&big).await;
    a.expect("GetTeam", r, Code::InvalidArgument, &["team_id"]);
    a.still_answers().await;

    let first = a
        .app
        .list_teams(pb::ListTeamsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let r = a
        .app
        .list_teams(pb::ListTeamsRequest {
            page_size: 1,
            page_token: forged(&first.next_page_token, "team\0a"),
            ..Default::default()
        })
        .await;
    a.expect("ListTeams", r, Code::InvalidArgument, &["page_token"]);
    let r = a
        .app
        .list_teams(pb::ListTeamsRequest {
            page_size: -1,
            page_token: big.clone(),
            parent_team_id: String::new(),
        })
        .await;
    a.expect(
        "ListTeams",
        r,
        Code::InvalidArgument,
        &["page_size", "page_token"],
    );
    // A token belongs to its filter, so a bad filter is reported alone.
    let r = a
        .app
        .list_teams(pb::ListTeamsRequest {
            page_size: -1,
            page_token: big.clone(),
            parent_team_id: "\0".into(),
        })
        .await;
    a.expect("ListTeams", r, Code::InvalidArgument, &["parent_team_id"]);
    a.still_answers().await;

    let r = directory
        .upsert_rep(pb::UpsertRepRequest {
            rep_id: "carl".into(),
            display_name: "Carl\0".into(),
            email: format!("carl@{big}"),
            active: None,
            team_id: "team-a".into(),
            team_effective_time: Some(ts("1600-01-01T00:59:59.999999500Z")),
        })
        .await;
    a.expect(
        "UpsertRep",
        r,
        Code::InvalidArgument,
        &["display_name", "email", "team_effective_time"],
    );
    let r = a.app.get_rep("anna\0").await;
    a.expect("GetRep", r, Code::InvalidArgument, &["rep_id"]);
    let first = a
        .app
        .list_reps(pb::ListRepsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let r = a
        .app
        .list_reps(pb::ListRepsRequest {
            page_size: 1,
            page_token: forged(&first.next_page_token, "anna\0"),
            ..Default::default()
        })
        .await;
    a.expect("ListReps", r, Code::InvalidArgument, &["page_token"]);
    let r = a
        .app
        .list_reps(pb::ListRepsRequest {
            page_size: 1,
            page_token: forged(&first.next_page_token, &"a".repeat(4096)),
            ..Default::default()
        })
        .await;
    a.expect("ListReps", r, Code::InvalidArgument, &["page_token"]);
    let r = a
        .app
        .list_reps(pb::ListRepsRequest {
            team_id: big.clone(),
            include_sub_teams: true,
            ..Default::default()
        })
        .await;
    a.expect("ListReps", r, Code::InvalidArgument, &["team_id"]);
    a.still_answers().await;
    assert_eq!(a.checked, 11);
    // Nothing of the above was written.
    assert_eq!(a.app.count("teams").await, 2);
    assert_eq!(a.app.count("reps").await, 2);
}

#[tokio::test]
async fn hostile_batches_name_their_record_and_field_and_store_nothing() {
    let mut a = Attacker::new().await;
    let big = "x".repeat(MEGABYTE);
    let t = at("2026-03-02T10:00:00Z");
    let nul_comment = records::feedback("f1", "anna", pb::FeedbackKind::Nps, 9, t)
        .with_comment("great\0call")
        .record();
    let before_chrono = {
        let mut call = records::interaction("i1", "anna", pb::Channel::Call, t);
        call.occurred_at = Some(ts("1600-01-01T00:59:59.999999500Z"));
        call.record()
    };
    let after_chrono = {
        let mut call = records::interaction("i2", "anna", pb::Channel::Call, t);
        call.updated_at = Some(pbjson_types::Timestamp {
            seconds: 9_300_000_000,
            nanos: 0,
        });
        call.record()
    };
    let huge_deal = records::deal(
        "d1",
        "anna",
        pb::DealStage::Won,
        usd(i64::MAX, 999_999_999),
        t,
        Some(t),
    )
    .record();
    let long_currency = records::deal(
        "d2",
        "anna",
        pb::DealStage::Won,
        pb::Money {
            currency_code: big.clone(),
            units: 1,
            nanos: 0,
        },
        t,
        Some(t),
    )
    .record();
    let long_id = records::interaction(big.clone(), "anna\0", pb::Channel::Email, t).record();
    let batch = vec![
        nul_comment,
        before_chrono,
        after_chrono,
        huge_deal,
        long_currency,
        long_id,
    ];
    let fields = [
        "records[0].feedback.comment",
        "records[1].interaction.occurred_at",
        "records[2].interaction.updated_at",
        "records[3].deal.amount",
        "records[4].deal.amount.currency_code",
        "records[5].interaction.interaction_id",
        "records[5].interaction.rep_id",
    ];
    let r = a.app.record(batch.clone()).await;
    a.expect("RecordActivities", r, Code::InvalidArgument, &fields);
    a.still_answers().await;

    // In a stream, the same batch after a good one: BATCH_REJECTED with one
    // batch committed, so a CRM knows not to retry it as it is.
    let good = vec![records::interaction("ok", "anna", pb::Channel::Call, t).record()];
    let r = a.app.stream(vec![good, batch]).await;
    let status = r.as_ref().err().cloned();
    a.expect("StreamActivities", r, Code::InvalidArgument, &fields);
    let status = status.unwrap();
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone()),
        Some("BATCH_REJECTED".to_owned())
    );
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .and_then(|i| i.metadata.get("committed_batches").cloned()),
        Some("1".to_owned())
    );
    a.still_answers().await;
    assert_eq!(a.app.count("interactions").await, 1);
    assert_eq!(a.app.count("deals").await, 0);
    assert_eq!(a.app.count("feedback").await, 0);

    // The largest accepted amount is stored exactly.
    let largest = records::deal(
        "d-max",
        "anna",
        pb::DealStage::Won,
        usd(999_999_999_999_999, 999_999_999),
        t,
        Some(t),
    )
    .record();
    let counts = a.app.record(vec![largest]).await.unwrap();
    assert_eq!(counts.inserted, 1);
}

#[tokio::test]
async fn hostile_kpi_and_target_requests_answer_their_field_and_the_service_keeps_answering() {
    let mut a = Attacker::new().await;
    let big = "x".repeat(MEGABYTE);
    let mut kpi = a.kpi.clone();
    let mut targets = a.targets.clone();

    let r = kpi
        .get_scorecard(pb::GetScorecardRequest {
            subject: team_subject("team\0a"),
            period: a.period("2026-01-01", "2026-01-31", &big),
            kpis: vec![9999],
        })
        .await;
    a.expect(
        "GetScorecard",
        r,
        Code::InvalidArgument,
        &["subject.team_id", "period.time_zone", "kpis[0]"],
    );
    let r = kpi
        .get_scorecard(pb::GetScorecardRequest {
            subject: rep_subject(&big),
            period: a.period("-262143-01-01", "-262143-01-01", "UTC"),
            kpis: vec![],
        })
        .await;
    a.expect(
        "GetScorecard",
        r,
        Code::InvalidArgument,
        &["subject.rep_id", "period.start_date", "period.end_date"],
    );
    a.still_answers().await;

    let r = kpi
        .get_kpi_series(pb::GetKpiSeriesRequest {
            subject: rep_subject("anna"),
            kpi: i32::MAX,
            period: a.period("2026-01-01", &big, "UTC"),
            granularity: -1,
        })
        .await;
    a.expect(
        "GetKpiSeries",
        r,
        Code::InvalidArgument,
        &["kpi", "period.end_date", "granularity"],
    );
    let r = kpi
        .get_leaderboard(pb::GetLeaderboardRequest {
            kpi: pb::Kpi::Calls as i32,
            team_id: "team-a\0".into(),
            period: a.period("2026-01-01", "2026-01-31", "UTC"),
            min_sample: Some(-1),
            limit: -5,
        })
        .await;
    a.expect(
        "GetLeaderboard",
        r,
        Code::InvalidArgument,
        &["team_id", "min_sample", "limit"],
    );
    a.still_answers().await;

    let r = targets
        .set_target(pb::SetTargetRequest {
            kpi: pb::Kpi::WinRate as i32,
            subject: team_subject("team-a"),
            start_date: "2026-01-01".into(),
            end_date: "2026-03-31".into(),
            time_zone: "Mars/Olympus\0".into(),
            value: f64::NAN,
        })
        .await;
    a.expect(
        "SetTarget",
        r,
        Code::InvalidArgument,
        &["time_zone", "value"],
    );
    let r = targets
        .set_target(pb::SetTargetRequest {
            kpi: pb::Kpi::Revenue as i32,
            subject: rep_subject("anna"),
            start_date: "2026-01-01".into(),
            end_date: "2026-03-31".into(),
            time_zone: String::new(),
            value: f64::MAX,
        })
        .await;
    a.expect("SetTarget", r, Code::InvalidArgument, &["value"]);
    let r = targets
        .list_targets(pb::ListTargetsRequest {
            subject: team_subject(&big),
            kpi: 0,
            active_on: "2026-02-30".into(),
            as_of: "+262142-12-31".into(),
            period: None,
        })
        .await;
    a.expect(
        "ListTargets",
        r,
        Code::InvalidArgument,
        &["subject.team_id", "active_on", "as_of"],
    );
    for target_id in ["t\0", big.as_str()] {
        let r = targets
            .delete_target(pb::DeleteTargetRequest {
                target_id: target_id.into(),
            })
            .await;
        a.expect("DeleteTarget", r, Code::InvalidArgument, &["target_id"]);
    }
    a.still_answers().await;
    assert_eq!(a.checked, 9);
    assert_eq!(a.app.count("targets").await, 0);
}
