//! What ends an open call besides its client: a revoked key, a shutdown, the
//! server's call deadline; and the rest of the hardening of the call path
//! (migrations without the statement timeout, one-after-another counts in
//! a batch, redaction for scoped keys, audited refusals).

use std::time::{Duration, Instant};

use kpi_service::{
    domain::access::Role,
    proto::pb::{self, activity_service_client::ActivityServiceClient},
    store,
    testkit::records,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::{
    Bearer, Durability, TestApp, at, rep, socket_url, start_service_with, test_settings,
    throwaway_cluster_with_kpi, ts, watched_dir,
};

fn call(id: &str) -> pb::ActivityRecord {
    records::interaction(id, "anna", pb::Channel::Call, at("2026-03-02T10:00:00Z")).record()
}

/// An open StreamActivities call: batches go in through `send`, the answer
/// comes out of `answer`.
struct OpenStream {
    send: mpsc::Sender<pb::StreamActivitiesRequest>,
    answer: tokio::task::JoinHandle<Result<pb::StreamActivitiesResponse, Status>>,
}

fn open_stream(app: &TestApp, key: &str) -> OpenStream {
    let (send, receive) = mpsc::channel(4);
    let mut client = ActivityServiceClient::with_interceptor(app.channel.clone(), Bearer::new(key));
    let answer = tokio::spawn(async move {
        client
            .stream_activities(ReceiverStream::new(receive))
            .await
            .map(tonic::Response::into_inner)
    });
    OpenStream { send, answer }
}

/// The ErrorInfo reason and `committed_batches` of a stream's error.
fn reason_and_committed(status: &Status) -> (String, Option<String>) {
    let info = status.get_error_details().error_info().cloned();
    (
        info.as_ref().map(|i| i.reason.clone()).unwrap_or_default(),
        info.and_then(|i| i.metadata.get("committed_batches").cloned()),
    )
}

#[tokio::test]
async fn revoking_the_key_of_an_open_idle_stream_ends_it_within_a_second() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.rep_in("anna", "t1").await;
    let key = app.key(Role::Ingest, None).await;
    app.keys_refreshed().await;
    let stream = open_stream(&app, &key);
    for batch in 0..2 {
        let records = vec![call(&format!("i{batch}"))];
        stream
            .send
            .send(pb::StreamActivitiesRequest { records })
            .await
            .unwrap();
    }
    // Both batches committed before the revocation.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.count("interactions").await < 2 {
        assert!(Instant::now() < deadline, "batches were not committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store::keys::revoke(&app.db, &key[4..16]).await.unwrap();
    let revoked = Instant::now();
    // The client sends nothing more and keeps the stream open.
    let status = tokio::time::timeout(Duration::from_secs(5), stream.answer)
        .await
        .expect("the stream stayed open after its key was revoked")
        .unwrap()
        .unwrap_err();
    let took = revoked.elapsed();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        reason_and_committed(&status),
        ("API_KEY_INVALID".to_owned(), Some("2".to_owned()))
    );
    assert!(took < Duration::from_millis(1500), "ended after {took:?}");
    // A batch sent after the revocation is refused, not stored.
    stream
        .send
        .send(pb::StreamActivitiesRequest {
            records: vec![call("late")],
        })
        .await
        .ok();
    assert_eq!(app.count("interactions").await, 2);
    eprintln!("the revoked stream ended after {took:?}");
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_shutting_down_their_committed_batches_and_retry_info() {
    let database_app = TestApp::spawn().await;
    database_app.upsert_team("t1", "Team 1", "").await.unwrap();
    database_app.rep_in("anna", "t1").await;
    // A second server on the same database, with the default 10 s drain.
    let app = TestApp::spawn_with(test_settings(database_app.url.clone())).await;
    let stream = open_stream(&app, &app.admin_key);
    stream
        .send
        .send(pb::StreamActivitiesRequest {
            records: vec![call("i1")],
        })
        .await
        .unwrap();
    while app.count("interactions").await < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let stopped = tokio::spawn(app.shutdown());
    let status = tokio::time::timeout(Duration::from_secs(5), stream.answer)
        .await
        .expect("the stream outlived the shutdown")
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        reason_and_committed(&status),
        ("SHUTTING_DOWN".to_owned(), Some("1".to_owned()))
    );
    assert!(status.get_error_details().retry_info().is_some());
    stopped.await.unwrap().unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?} of a 10 s drain"
    );
    eprintln!("shutdown with an open stream took {took:?}");
}

/// SIGSTOPs (or SIGCONTs) the postmaster and every backend of it.
fn signal_cluster(postmaster: u32, signal: &str) {
    let children = std::process::Command::new("pgrep")
        .args(["-P", &postmaster.to_string()])
        .output()
        .unwrap();
    let mut pids: Vec<String> = String::from_utf8_lossy(&children.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    pids.push(postmaster.to_string());
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .args(&pids)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A server on a cluster of its own (the test pauses it), with team t1.
async fn app_on_own_cluster(
    label: &'static str,
    adjust: impl FnOnce(&mut kpi_service::config::Settings),
) -> (kpi_service::embedded_pg::EmbeddedPostgres, TestApp) {
    let pg = throwaway_cluster_with_kpi(label, Durability::Off).await;
    let mut settings = test_settings(socket_url(&pg, "kpi"));
    settings.database.db_acquire_timeout = Duration::from_secs(20);
    adjust(&mut settings);
    let app = TestApp::spawn_with(settings).await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    (pg, app)
}

type KpiClient = pb::kpi_service_client::KpiServiceClient<crate::helpers::Authed>;

/// Team t1's CALLS per day over ten years in Berlin: 3,653 points.
async fn ten_year_series(mut kpi: KpiClient) -> Result<pb::GetKpiSeriesResponse, Status> {
    kpi.get_kpi_series(pb::GetKpiSeriesRequest {
        subject: crate::kpi::team_subject("t1"),
        kpi: pb::Kpi::Calls as i32,
        period: Some(pb::Period {
            start_date: "2016-01-01".into(),
            end_date: "2025-12-31".into(),
            time_zone: "Europe/Berlin".into(),
            ..Default::default()
        }),
        granularity: pb::Granularity::Day as i32,
    })
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn heavy_calls_beyond_the_limit_get_resource_exhausted_with_retry_info() {
    let (pg, app) = app_on_own_cluster("heavy", |s| {
        s.max_heavy_calls = 1;
        s.call_timeout = Duration::from_secs(4);
    })
    .await;
    let kpi = pb::kpi_service_client::KpiServiceClient::with_interceptor(
        app.channel.clone(),
        Bearer::new(&app.admin_key),
    );
    // The database is paused: the first heavy call holds the only slot.
    let postmaster = pg.running_pid().unwrap();
    signal_cluster(postmaster, "STOP");
    let first = tokio::spawn(ten_year_series(kpi.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let second = ten_year_series(kpi.clone()).await;
    let waited = started.elapsed();
    signal_cluster(postmaster, "CONT");
    let status = second.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason_and_committed(&status).0, "TOO_MANY_HEAVY_CALLS");
    assert!(status.get_error_details().retry_info().is_some());
    assert!(
        waited >= Duration::from_millis(900),
        "refused after {waited:?}"
    );
    first.await.unwrap().ok();
    // With the slot free again, the same call is answered.
    let deadline = Instant::now() + Duration::from_secs(20);
    let answered = loop {
        match ten_year_series(kpi.clone()).await {
            Ok(answer) => break answer,
            Err(status) => {
                assert!(Instant::now() < deadline, "never answered: {status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(answered.points.len(), 3653);
}

#[tokio::test]
async fn a_paused_database_holds_a_call_no_longer_than_the_call_timeout() {
    let (pg, app) = app_on_own_cluster("paused", |s| {
        s.call_timeout = Duration::from_secs(1);
    })
    .await;

    let postmaster = pg.running_pid().unwrap();
    signal_cluster(postmaster, "STOP");
    let started = Instant::now();
    let held = app.get_team("t1").await;
    let took = started.elapsed();
    signal_cluster(postmaster, "CONT");
    let status = held.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(reason_and_committed(&status).0, "CALL_DEADLINE");
    assert!(
        took < Duration::from_secs(4),
        "the call was held {took:?} with a 1 s call timeout"
    );
    // Resumed, the database answers again through the same server.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match app.get_team("t1").await {
            Ok(team) => break assert_eq!(team.team_id, "t1"),
            Err(status) => {
                assert!(Instant::now() < deadline, "never recovered: {status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
async fn migrations_wait_for_a_lock_longer_than_the_statement_timeout() {
    let app = TestApp::spawn().await;
    let mut args = test_settings(app.url.clone()).database;
    args.db_statement_timeout = Duration::from_millis(300);
    let options = store::session_options(app.url.parse().unwrap(), &args);
    let pool = store::connect(options, &args).await.unwrap();
    // Another session holds the migrations table for a second.
    let mut holder = app.db.begin().await.unwrap();
    sqlx::raw_sql("LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        holder.commit().await.unwrap();
    });
    let started = Instant::now();
    store::migrate(&pool).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    release.await.unwrap();
    // The pool's own statements keep their timeout.
    let slow = sqlx::query("SELECT pg_sleep(1)").execute(&pool).await;
    assert!(slow.is_err(), "the pool lost its statement timeout");
}

#[tokio::test]
async fn versions_in_one_batch_count_as_if_they_arrived_one_after_another() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.rep_in("anna", "t1").await;
    let version = |id: &str, hour: u32| {
        records::interaction(id, "anna", pb::Channel::Call, at("2026-03-02T10:00:00Z"))
            .with_updated(at(&format!("2026-03-02T{hour:02}:00:00Z")))
            .record()
    };
    // In one batch.
    let together = app
        .record(vec![version("a", 11), version("a", 12), version("a", 12)])
        .await
        .unwrap();
    // The same versions, one after another, of another id.
    let mut apart = pb::RecordCounts::default();
    for record in [version("b", 11), version("b", 12), version("b", 12)] {
        let c = app.record(vec![record]).await.unwrap();
        apart.inserted += c.inserted;
        apart.updated += c.updated;
        apart.unchanged += c.unchanged;
        apart.stale += c.stale;
    }
    assert_eq!(
        (
            together.inserted,
            together.updated,
            together.unchanged,
            together.stale
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(together, apart);
    // On top of a stored version in between: the older one is stale.
    let on_top = app
        .record(vec![version("a", 11), version("a", 13)])
        .await
        .unwrap();
    assert_eq!(
        (
            on_top.inserted,
            on_top.updated,
            on_top.unchanged,
            on_top.stale
        ),
        (0, 1, 0, 1)
    );
}

#[tokio::test]
async fn a_scoped_key_sees_no_team_id_outside_its_scope() {
    let app = TestApp::spawn().await;
    app.upsert_team("emea", "EMEA", "").await.unwrap();
    app.upsert_team("emea-west", "EMEA West", "emea")
        .await
        .unwrap();
    app.upsert_team("amer", "AMER", "").await.unwrap();
    app.rep_in("anna", "amer").await;
    let mut moved = rep("anna", "emea-west");
    moved.team_effective_time = Some(ts("2026-05-01T00:00:00Z"));
    app.upsert_rep(moved).await.unwrap();
    let key = app.key(Role::Read, Some("emea-west")).await;
    app.keys_refreshed().await;
    let mut client = app.directory_as(&key);
    let team = client
        .get_team(pb::GetTeamRequest {
            team_id: "emea-west".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .team
        .unwrap();
    assert_eq!(team.parent_team_id, "");
    let listed = client
        .list_teams(pb::ListTeamsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.teams.iter().all(|t| t.parent_team_id.is_empty()));
    let anna = client
        .get_rep(pb::GetRepRequest {
            rep_id: "anna".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .rep
        .unwrap();
    let history: Vec<(&str, bool)> = anna
        .memberships
        .iter()
        .map(|m| (m.team_id.as_str(), m.team_hidden))
        .collect();
    assert_eq!(history, [("", true), ("emea-west", false)]);
    // An unscoped key sees everything.
    let all = app.get_rep("anna").await.unwrap();
    let history: Vec<&str> = all.memberships.iter().map(|m| m.team_id.as_str()).collect();
    assert_eq!(history, ["amer", "emea-west"]);
    assert_eq!(
        app.get_team("emea-west").await.unwrap().parent_team_id,
        "emea"
    );
}

#[tokio::test]
async fn refused_keys_on_audited_rpcs_are_audited_at_a_bounded_rate() {
    let app = TestApp::spawn().await;
    let dir = watched_dir("refusals");
    let service = start_service_with(&dir, Some(&app.url), &[], "info");
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", service.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let started = Instant::now();
    let attempts = 100;
    let calls = (0..attempts).map(|i| {
        let mut client = pb::directory_service_client::DirectoryServiceClient::with_interceptor(
            channel.clone(),
            Bearer::new(&format!("kpi_0123456789ab_wrong{i}")),
        );
        async move {
            client
                .upsert_team(pb::UpsertTeamRequest {
                    team_id: "t".into(),
                    display_name: "T".into(),
                    parent_team_id: String::new(),
                })
                .await
                .unwrap_err()
                .code()
        }
    });
    let codes = futures::future::join_all(calls).await;
    let seconds = started.elapsed().as_secs() + 1;
    assert!(codes.iter().all(|c| *c == Code::Unauthenticated));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logged = service
        .log()
        .lines()
        .filter(|l| l.contains("audit: authentication refused"))
        .count();
    assert!(logged >= 1, "no refusal was audited");
    let bound = usize::try_from(seconds).unwrap() * 10 + 10;
    assert!(
        logged <= bound && logged < attempts,
        "{logged} refusal events for {attempts} attempts in {seconds} s"
    );
}
