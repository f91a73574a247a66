//! DirectoryService: teams, reps, membership history, paging, bad input.

use std::collections::HashSet;

use kpi_service::proto::pb;
use tonic::Code;

use crate::helpers::{TestApp, assert_invalid, assert_status, micros, rep, ts};

#[tokio::test]
async fn upserting_a_team_twice_leaves_one_team_and_returns_the_same_entity() {
    let app = TestApp::spawn().await;
    let first = app.upsert_team("emea", "EMEA", "").await.unwrap();
    let second = app.upsert_team("emea", "EMEA", "").await.unwrap();
    assert_eq!(first, second);
    assert_eq!(first.team_id, "emea");
    assert_eq!(app.count("teams").await, 1);
    assert_eq!(app.get_team("emea").await.ok(), Some(first.clone()));

    let renamed = app.upsert_team("emea", "Europe", "").await.unwrap();
    assert_eq!(renamed.display_name, "Europe");
    assert_eq!(renamed.create_time, first.create_time);
    assert!(micros(&renamed.update_time) > micros(&first.update_time));
}

#[tokio::test]
async fn teams_nest_and_a_cycle_is_rejected_naming_the_parent_field() {
    let app = TestApp::spawn().await;
    app.upsert_team("region", "Region", "").await.unwrap();
    app.upsert_team("team", "Team", "region").await.unwrap();
    app.upsert_team("pod", "Pod", "team").await.unwrap();

    let cycle = app
        .upsert_team("region", "Region", "pod")
        .await
        .unwrap_err();
    assert_invalid(&cycle, &["parent_team_id"]);
    let own_parent = app.upsert_team("pod", "Pod", "pod").await.unwrap_err();
    assert_invalid(&own_parent, &["parent_team_id"]);
    // Nothing changed.
    let region = app.get_team("region").await.unwrap();
    assert_eq!(region.parent_team_id, "");

    // Moving a subtree elsewhere (no cycle) is fine.
    app.upsert_team("other", "Other", "").await.unwrap();
    let moved = app.upsert_team("team", "Team", "other").await.unwrap();
    assert_eq!(moved.parent_team_id, "other");
}

#[tokio::test]
async fn a_parent_or_team_that_does_not_exist_is_rejected() {
    let app = TestApp::spawn().await;
    let status = app.upsert_team("team", "Team", "ghost").await.unwrap_err();
    assert_invalid(&status, &["parent_team_id"]);
    assert_eq!(app.count("teams").await, 0);

    let status = app.upsert_rep(rep("anna", "ghost")).await.unwrap_err();
    assert_invalid(&status, &["team_id"]);
    assert_eq!(app.count("reps").await, 0);

    let status = app.get_team("ghost").await.unwrap_err();
    assert_status(&status, Code::NotFound, "TEAM_NOT_FOUND");
    let status = app.get_rep("ghost").await.unwrap_err();
    assert_status(&status, Code::NotFound, "REP_NOT_FOUND");
}

#[tokio::test]
async fn bad_input_lists_every_violation_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let status = app
        .upsert_rep(pb::UpsertRepRequest {
            rep_id: "x".repeat(129),
            display_name: String::new(),
            email: "not-an-address".into(),
            active: None,
            team_id: "bad\u{7}team".into(),
            team_effective_time: Some(pbjson_types::Timestamp {
                seconds: 0,
                nanos: -5,
            }),
        })
        .await
        .unwrap_err();
    assert_invalid(
        &status,
        &[
            "rep_id",
            "display_name",
            "email",
            "team_id",
            "team_effective_time",
        ],
    );
    assert!(
        status.message().contains("5 invalid fields"),
        "{}",
        status.message()
    );

    let status = app.upsert_team("", " ", "").await.unwrap_err();
    assert_invalid(&status, &["team_id", "display_name"]);
    let status = app.get_rep("").await.unwrap_err();
    assert_invalid(&status, &["rep_id"]);
    assert_eq!(app.count("reps").await + app.count("teams").await, 0);
}

#[tokio::test]
async fn upserting_a_rep_twice_is_idempotent() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    let first = app.rep_in("anna", "t1").await;
    let second = app.rep_in("anna", "t1").await;
    assert_eq!(first, second);
    assert_eq!(app.count("reps").await, 1);
    assert_eq!(app.count("rep_team_history").await, 1);
    assert!(first.active, "a new rep is active unless told otherwise");
    assert_eq!(first.email, "anna@example.com");
    assert_eq!(app.get_rep("anna").await.ok(), Some(first));
}

#[tokio::test]
async fn concurrent_upserts_of_one_rep_leave_one_rep() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    let calls = (0..8).map(|_| app.upsert_rep(rep("anna", "t1")));
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(app.count("reps").await, 1);
    assert_eq!(app.count("rep_team_history").await, 1);
}

#[tokio::test]
async fn a_first_team_applies_from_the_beginning_of_time() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    let anna = app.rep_in("anna", "t1").await;
    assert_eq!(anna.team_id, "t1");
    assert_eq!(
        anna.memberships,
        [pb::TeamMembership {
            team_hidden: false,
            team_id: "t1".into(),
            effective_from: None,
            effective_until: None,
        }]
    );
}

#[tokio::test]
async fn a_first_team_with_an_effective_time_starts_then() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    let mut request = rep("anna", "t1");
    request.team_effective_time = Some(ts("2026-01-01T00:00:00Z"));
    let anna = app.upsert_rep(request).await.unwrap();
    assert_eq!(anna.memberships.len(), 1);
    assert_eq!(
        anna.memberships[0].effective_from,
        Some(ts("2026-01-01T00:00:00Z"))
    );
}

#[tokio::test]
async fn a_team_move_keeps_the_history_with_its_effective_time() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.upsert_team("t2", "Team 2", "").await.unwrap();
    let before = app.rep_in("anna", "t1").await;

    let mut moved = rep("anna", "t2");
    moved.team_effective_time = Some(ts("2026-02-15T09:00:00Z"));
    let anna = app.upsert_rep(moved.clone()).await.unwrap();
    assert_eq!(anna.team_id, "t2");
    assert_eq!(
        anna.memberships,
        [
            pb::TeamMembership {
                team_hidden: false,
                team_id: "t1".into(),
                effective_from: None,
                effective_until: Some(ts("2026-02-15T09:00:00Z")),
            },
            pb::TeamMembership {
                team_hidden: false,
                team_id: "t2".into(),
                effective_from: Some(ts("2026-02-15T09:00:00Z")),
                effective_until: None,
            },
        ]
    );
    assert!(micros(&anna.update_time) > micros(&before.update_time));
    // The same move again changes nothing.
    assert_eq!(app.upsert_rep(moved).await.ok(), Some(anna.clone()));
    assert_eq!(app.get_rep("anna").await.ok(), Some(anna));
}

#[tokio::test]
async fn a_move_without_an_effective_time_takes_effect_now() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.upsert_team("t2", "Team 2", "").await.unwrap();
    app.rep_in("anna", "t1").await;
    let started = chrono::Utc::now().timestamp();
    let anna = app.rep_in("anna", "t2").await;
    let from = anna.memberships[1].effective_from.unwrap().seconds;
    assert!(
        (started - 1..=started + 5).contains(&from),
        "{from} vs {started}"
    );
    assert_eq!(anna.team_id, "t2");
}

#[tokio::test]
async fn a_back_dated_move_replaces_the_history_after_it() {
    let app = TestApp::spawn().await;
    for team in ["t1", "t2", "t3"] {
        app.upsert_team(team, team, "").await.unwrap();
    }
    app.rep_in("anna", "t1").await;
    let mut to_t2 = rep("anna", "t2");
    to_t2.team_effective_time = Some(ts("2026-03-01T00:00:00Z"));
    app.upsert_rep(to_t2).await.unwrap();
    let mut to_t3 = rep("anna", "t3");
    to_t3.team_effective_time = Some(ts("2026-02-01T00:00:00Z"));
    let anna = app.upsert_rep(to_t3).await.unwrap();

    let periods: Vec<_> = anna
        .memberships
        .iter()
        .map(|m| (m.team_id.as_str(), m.effective_from))
        .collect();
    assert_eq!(
        periods,
        [("t1", None), ("t3", Some(ts("2026-02-01T00:00:00Z")))]
    );
    assert_eq!(anna.team_id, "t3");
}

#[tokio::test]
async fn a_rep_may_leave_every_team() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.rep_in("anna", "t1").await;
    let mut leave = rep("anna", "");
    leave.team_effective_time = Some(ts("2026-04-01T00:00:00Z"));
    leave.active = Some(false);
    let anna = app.upsert_rep(leave).await.unwrap();
    assert_eq!(anna.team_id, "");
    assert!(!anna.active);
    assert_eq!(anna.memberships.len(), 2);
    assert_eq!(anna.memberships[1].team_id, "");

    let loner = app.rep_in("bob", "").await;
    assert!(loner.memberships.is_empty());
    // Leaving `active` out keeps it as it is.
    assert!(!app.upsert_rep(rep("anna", "")).await.unwrap().active);
}

#[tokio::test]
async fn paging_through_teams_returns_each_once_in_order() {
    let app = TestApp::spawn().await;
    for i in 0..57 {
        app.upsert_team(&format!("team-{i:03}"), "T", "")
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .list_teams(pb::ListTeamsRequest {
                page_size: 10,
                page_token: token,
                parent_team_id: String::new(),
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.teams.len() <= 10);
        seen.extend(page.teams.into_iter().map(|t| t.team_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 6);
    let expected: Vec<String> = (0..57).map(|i| format!("team-{i:03}")).collect();
    assert_eq!(seen, expected);

    let everything = app
        .list_teams(pb::ListTeamsRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(everything.teams.len(), 57);
    assert!(everything.next_page_token.is_empty());
    let default_page = app
        .list_teams(pb::ListTeamsRequest::default())
        .await
        .unwrap();
    assert_eq!(default_page.teams.len(), 50);
}

#[tokio::test]
async fn reps_list_by_team_with_and_without_sub_teams() {
    let app = TestApp::spawn().await;
    app.upsert_team("region", "Region", "").await.unwrap();
    app.upsert_team("team", "Team", "region").await.unwrap();
    app.upsert_team("pod", "Pod", "team").await.unwrap();
    app.upsert_team("elsewhere", "Elsewhere", "").await.unwrap();
    for i in 0..25 {
        let team = ["region", "team", "pod", "elsewhere"][i % 4];
        app.rep_in(&format!("rep-{i:02}"), team).await;
    }
    // rep-00 (region) moves out: lists show current members only.
    app.rep_in("rep-00", "elsewhere").await;

    let walk = |team: &'static str, include_sub_teams: bool| {
        let app = &app;
        async move {
            let mut ids = Vec::new();
            let mut token = String::new();
            loop {
                let page = app
                    .list_reps(pb::ListRepsRequest {
                        page_size: 3,
                        page_token: token,
                        team_id: team.into(),
                        include_sub_teams,
                    })
                    .await
                    .unwrap();
                ids.extend(page.reps.into_iter().map(|r| r.rep_id));
                if page.next_page_token.is_empty() {
                    return ids;
                }
                token = page.next_page_token;
            }
        }
    };
    let direct = walk("region", false).await;
    assert_eq!(
        direct,
        ["rep-04", "rep-08", "rep-12", "rep-16", "rep-20", "rep-24"]
    );
    let nested = walk("region", true).await;
    assert_eq!(nested.len(), 18);
    assert_eq!(
        nested.iter().collect::<HashSet<_>>().len(),
        18,
        "no duplicates"
    );
    assert!(!nested.contains(&"rep-00".to_owned()));
    let pod = walk("pod", true).await;
    assert_eq!(pod.len(), 6);
    let all = walk("", false).await;
    assert_eq!(all.len(), 25);
}

#[tokio::test]
async fn bad_paging_requests_are_rejected() {
    let app = TestApp::spawn().await;
    app.upsert_team("a", "A", "").await.unwrap();
    app.upsert_team("b", "B", "").await.unwrap();
    let negative = app
        .list_teams(pb::ListTeamsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&negative, &["page_size"]);

    let garbage = app
        .list_reps(pb::ListRepsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&garbage, &["page_token"]);

    // A token only continues the query it came from.
    app.rep_in("r1", "a").await;
    app.rep_in("r2", "a").await;
    let first = app
        .list_reps(pb::ListRepsRequest {
            page_size: 1,
            team_id: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!first.next_page_token.is_empty());
    let mismatch = app
        .list_reps(pb::ListRepsRequest {
            page_size: 1,
            page_token: first.next_page_token,
            team_id: "b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&mismatch, &["page_token"]);

    let unknown = app
        .list_reps(pb::ListRepsRequest {
            team_id: "ghost".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_status(&unknown, Code::NotFound, "TEAM_NOT_FOUND");
}
