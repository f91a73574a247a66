//! TargetService against the hand-worked data set of `kpi`: attainment,
//! pace and progress, and target lists that match the scorecards.

use kpi_service::proto::pb;
use tonic::Code;

use crate::kpi::{assert_close, find, q2, rep_subject, sales_org, scorecard, team_subject, value};

#[tokio::test]
async fn team_targets_listed_together_match_the_team_scorecard() {
    // Several targets of one team (and one of another) in one list: each
    // progress equals the team's own scorecard value for that KPI.
    let (_app, mut kpi, mut targets) = sales_org().await;
    let q2_target = |k: pb::Kpi, team: &str| pb::SetTargetRequest {
        kpi: k as i32,
        subject: team_subject(team),
        start_date: "2026-04-01".into(),
        end_date: "2026-06-30".into(),
        time_zone: "UTC".into(),
        value: 10.0,
    };
    for (k, team) in [
        (pb::Kpi::Calls, "team-a"),
        (pb::Kpi::DealsWon, "team-a"),
        (pb::Kpi::Calls, "team-b"),
    ] {
        targets.set_target(q2_target(k, team)).await.unwrap();
    }
    let listed = targets
        .list_targets(pb::ListTargetsRequest {
            as_of: "2026-06-30".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .targets;
    assert_eq!(listed.len(), 3);
    let mut counted = 0.0;
    for listed in listed {
        let target = listed.target.unwrap();
        let card = scorecard(&mut kpi, target.subject, q2()).await;
        let expected = value(&card, pb::Kpi::try_from(target.kpi).unwrap())
            .value
            .unwrap();
        assert_close(listed.progress.unwrap().actual, expected);
        counted += expected;
    }
    assert!(counted > 0.0, "the teams have activity in Q2");
}

#[tokio::test]
async fn targets_carry_attainment_and_pace() {
    let (_app, mut kpi, mut targets) = sales_org().await;
    let set = |k: pb::Kpi, subject: Option<pb::Subject>, value: f64| pb::SetTargetRequest {
        kpi: k as i32,
        subject,
        start_date: "2026-04-01".into(),
        end_date: "2026-06-30".into(),
        time_zone: "UTC".into(),
        value,
    };
    let first = targets
        .set_target(set(pb::Kpi::DealsWon, rep_subject("anna"), 5.0))
        .await
        .unwrap()
        .into_inner()
        .target
        .unwrap();
    // Same KPI, subject and dates: replaced, same id.
    let replaced = targets
        .set_target(set(pb::Kpi::DealsWon, rep_subject("anna"), 6.0))
        .await
        .unwrap()
        .into_inner()
        .target
        .unwrap();
    assert_eq!(replaced.target_id, first.target_id);
    assert_eq!(replaced.value, 6.0);
    targets
        .set_target(set(pb::Kpi::WinRate, rep_subject("anna"), 50.0))
        .await
        .unwrap();
    targets
        .set_target(set(pb::Kpi::SalesCycleDays, rep_subject("anna"), 30.0))
        .await
        .unwrap();

    // Mid-period, as of 16 May: 46 of 91 days elapsed; anna won d1 and d2.
    let listed = targets
        .list_targets(pb::ListTargetsRequest {
            subject: rep_subject("anna"),
            kpi: pb::Kpi::DealsWon as i32,
            active_on: "2026-05-16".into(),
            as_of: "2026-05-16".into(),
            period: None,
        })
        .await
        .unwrap()
        .into_inner()
        .targets;
    assert_eq!(listed.len(), 1);
    let p = listed[0].progress.clone().unwrap();
    assert_close(p.actual, 2.0);
    assert_close(Some(p.elapsed_fraction), 46.0 / 91.0);
    assert_close(p.expected_to_date, 6.0 * 46.0 / 91.0);
    assert_close(p.projected, 2.0 / (46.0 / 91.0));
    assert_close(p.attainment, 2.0 / 6.0);
    assert!(!p.on_track);
    assert_eq!(p.as_of, "2026-05-16");

    // The scorecard shows the target of exactly this period.
    let anna = scorecard(&mut kpi, rep_subject("anna"), q2()).await;
    let win = find(&anna, pb::Kpi::WinRate);
    assert_eq!(win.target.map(|t| t.value), Some(50.0));
    let progress = win.progress.unwrap();
    assert_close(progress.attainment, (200.0 / 3.0) / 50.0);
    assert!(progress.on_track);
    let cycle = find(&anna, pb::Kpi::SalesCycleDays).progress.unwrap();
    assert_close(cycle.attainment, 30.0 / 35.0);
    assert!(!cycle.on_track);
    assert!(find(&anna, pb::Kpi::Calls).target.is_none());

    // A leaderboard entry carries attainment when the rep has a target.
    let board = kpi
        .get_leaderboard(pb::GetLeaderboardRequest {
            kpi: pb::Kpi::DealsWon as i32,
            team_id: "region".into(),
            period: q2(),
            min_sample: None,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let anna_entry = board.iter().find(|e| e.rep_id == "anna").unwrap();
    assert_close(anna_entry.attainment, 2.0 / 6.0);
    assert!(
        board
            .iter()
            .find(|e| e.rep_id == "bob")
            .unwrap()
            .attainment
            .is_none()
    );

    // Filters and deletion.
    let on_a_later_day = targets
        .list_targets(pb::ListTargetsRequest {
            active_on: "2026-07-01".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .targets;
    assert!(on_a_later_day.is_empty());
    targets
        .delete_target(pb::DeleteTargetRequest {
            target_id: first.target_id.clone(),
        })
        .await
        .unwrap();
    let gone = targets
        .delete_target(pb::DeleteTargetRequest {
            target_id: first.target_id,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}
