//! Watched scorecards and leaderboards: the change feed across processes,
//! messages only on change, the end of a watch on revocation and shutdown,
//! the bound on watches, resynchronisation after a lost listener.

use std::time::{Duration, Instant};

use kpi_service::{
    domain::access::Role,
    proto::pb::{self, kpi_service_client::KpiServiceClient},
    store,
    testkit::records,
};
use tonic::{Code, Streaming, transport::Channel};
use tonic_types::StatusExt;

use crate::cache::{january, subject as team};
use crate::helpers::{
    Authed, Bearer, TestApp, assert_status, at, start_service_with, test_settings, watched_dir,
};

fn no_interval() -> Option<pbjson_types::Duration> {
    Some(pbjson_types::Duration {
        seconds: 0,
        nanos: 0,
    })
}

fn kpis(channel: Channel, key: &str) -> KpiServiceClient<Authed> {
    KpiServiceClient::with_interceptor(channel, Bearer::new(key))
}

/// A scorecard watch of team `t` in January: INTERACTIONS, then REVENUE.
fn scorecard_watch(t: &str) -> pb::WatchScorecardRequest {
    pb::WatchScorecardRequest {
        subject: team(t),
        period: january(),
        kpis: vec![pb::Kpi::Interactions as i32, pb::Kpi::Revenue as i32],
        min_interval: no_interval(),
    }
}

/// The next message of a watch (panics after 10 s without one).
async fn next<T>(stream: &mut Streaming<T>) -> Result<T, tonic::Status> {
    match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
        Ok(Ok(Some(message))) => Ok(message),
        Ok(Ok(None)) => panic!("the watch ended without an error"),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!("no message within 10 s"),
    }
}

/// (reason, INTERACTIONS, the INTERACTIONS target) of a scorecard message.
fn seen(message: &pb::WatchScorecardResponse) -> (pb::WatchReason, f64, Option<f64>) {
    let entries = message
        .scorecard
        .as_ref()
        .map(|c| c.entries.clone())
        .unwrap_or_default();
    (
        message.reason(),
        entries
            .first()
            .and_then(|e| e.current.as_ref())
            .and_then(|v| v.value)
            .unwrap_or(f64::NAN),
        entries
            .first()
            .and_then(|e| e.target.as_ref())
            .map(|t| t.value),
    )
}

fn call(id: &str, rep: &str, when: &str) -> pb::ActivityRecord {
    records::interaction(id, rep, pb::Channel::Call, at(when)).record()
}

#[tokio::test]
async fn a_write_through_one_process_reaches_a_watcher_and_a_cached_scorecard_on_another() {
    // Writes go through `a` (this test's in-process server); the watcher and
    // the reader use `b`, the binary in its own process, on the same database.
    let a = TestApp::spawn().await;
    a.upsert_team("t1", "Team 1", "").await.unwrap();
    a.upsert_team("t2", "Team 2", "").await.unwrap();
    a.rep_in("anna", "t1").await;
    a.rep_in("ben", "t1").await;
    a.rep_in("carl", "t2").await;
    let url = a.url.clone();
    let b = tokio::task::spawn_blocking(move || {
        start_service_with(&watched_dir("watch-b"), Some(&url), &[], "info")
    })
    .await
    .unwrap();
    let b_channel = Channel::from_shared(b.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut b_kpis = kpis(b_channel.clone(), &a.admin_key);

    let mut card = b_kpis
        .watch_scorecard(scorecard_watch("t1"))
        .await
        .unwrap()
        .into_inner();
    let mut board = b_kpis
        .watch_leaderboard(pb::WatchLeaderboardRequest {
            kpi: pb::Kpi::Interactions as i32,
            team_id: "t1".into(),
            period: january(),
            min_interval: no_interval(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        seen(&next(&mut card).await.unwrap()),
        (pb::WatchReason::Initial, 0.0, None)
    );
    let first_board = next(&mut board).await.unwrap();
    assert_eq!(first_board.reason(), pb::WatchReason::Initial);

    let cached = |client: KpiServiceClient<Authed>| async move {
        let mut client = client;
        client
            .get_scorecard(pb::GetScorecardRequest {
                subject: team("t1"),
                period: january(),
                kpis: vec![pb::Kpi::Interactions as i32],
            })
            .await
            .unwrap()
            .into_inner()
            .entries[0]
            .current
            .as_ref()
            .and_then(|v| v.value)
    };
    assert_eq!(cached(b_kpis.clone()).await, Some(0.0));

    for n in 1..=3 {
        let wrote = Instant::now();
        a.record(vec![call(&format!("i{n}"), "ben", "2026-01-10T10:00:00Z")])
            .await
            .unwrap();
        let message = next(&mut card).await.unwrap();
        eprintln!("write on a -> watcher on b: {:?}", wrote.elapsed());
        assert_eq!(
            seen(&message),
            (pb::WatchReason::Changed, f64::from(n), None)
        );
        // The plain call on b, answered from its cache, agrees.
        assert_eq!(cached(b_kpis.clone()).await, Some(f64::from(n)));
        let ranked = next(&mut board).await.unwrap();
        assert_eq!(ranked.reason(), pb::WatchReason::Changed);
        let top = &ranked.leaderboard.unwrap().entries[0];
        assert_eq!((top.rep_id.as_str(), top.rank), ("ben", 1));
    }

    // A write that changes nothing the watches show sends nothing: the
    // next message is the one of the write after it.
    a.record(vec![call("other-team", "carl", "2026-01-10T10:00:00Z")])
        .await
        .unwrap();
    a.record(vec![call(
        "outside-january",
        "anna",
        "2026-02-10T10:00:00Z",
    )])
    .await
    .unwrap();
    // A retried write counts nothing again.
    a.record(vec![call("i1", "ben", "2026-01-10T10:00:00Z")])
        .await
        .unwrap();
    // Team t1's INTERACTIONS target for January: 50.
    crate::cache::set_january_target(&a).await;
    assert_eq!(
        seen(&next(&mut card).await.unwrap()),
        (pb::WatchReason::Changed, 3.0, Some(50.0))
    );
    a.record(vec![call("anna-1", "anna", "2026-01-11T10:00:00Z")])
        .await
        .unwrap();
    assert_eq!(
        seen(&next(&mut card).await.unwrap()),
        (pb::WatchReason::Changed, 4.0, Some(50.0))
    );
    // The leaderboard did not move for carl, February or the retry, nor
    // for the team target (it ranks by rep targets): anna's call is next.
    let ranked = next(&mut board).await.unwrap().leaderboard.unwrap();
    let order: Vec<(&str, Option<f64>)> = ranked
        .entries
        .iter()
        .map(|e| (e.rep_id.as_str(), e.value.as_ref().and_then(|v| v.value)))
        .collect();
    assert_eq!(order, [("ben", Some(3.0)), ("anna", Some(1.0))]);
    drop(b);
}

#[tokio::test]
async fn revocation_and_shutdown_end_watches_within_a_second() {
    let database_app = TestApp::spawn().await;
    database_app.upsert_team("t1", "Team 1", "").await.unwrap();
    database_app.rep_in("anna", "t1").await;
    // A second server on the same database, with the default 10 s drain.
    let app = TestApp::spawn_with(test_settings(database_app.url.clone())).await;
    let key = app.key(Role::Read, None).await;
    app.keys_refreshed().await;

    let mut revoked_watch = kpis(app.channel.clone(), &key)
        .watch_scorecard(scorecard_watch("t1"))
        .await
        .unwrap()
        .into_inner();
    next(&mut revoked_watch).await.unwrap();
    store::keys::revoke(&app.db, &key[4..16]).await.unwrap();
    let revoked = Instant::now();
    let status = next(&mut revoked_watch).await.unwrap_err();
    let took = revoked.elapsed();
    assert_status(&status, Code::Unauthenticated, "API_KEY_INVALID");
    assert!(took < Duration::from_millis(1500), "ended after {took:?}");
    eprintln!("the revoked watch ended after {took:?}");

    let mut open = kpis(app.channel.clone(), &app.admin_key)
        .watch_scorecard(scorecard_watch("t1"))
        .await
        .unwrap()
        .into_inner();
    next(&mut open).await.unwrap();
    let started = Instant::now();
    let stopped = tokio::spawn(app.shutdown());
    let status = next(&mut open).await.unwrap_err();
    let took = started.elapsed();
    assert_status(&status, Code::Unavailable, "SHUTTING_DOWN");
    assert!(status.get_error_details().retry_info().is_some());
    assert!(took < Duration::from_secs(1), "ended after {took:?}");
    stopped.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the watch held the shutdown for {:?} of a 10 s drain",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_process_bounds_its_watches_and_checks_the_request() {
    let database_app = TestApp::spawn().await;
    database_app.upsert_team("t1", "Team 1", "").await.unwrap();
    let mut settings = test_settings(database_app.url.clone());
    settings.max_watches = 2;
    let app = TestApp::spawn_with(settings).await;
    let mut client = kpis(app.channel.clone(), &app.admin_key);
    // A team outside a scoped key's teams is refused like the unary call,
    // and takes no place.
    let scoped = app.key(Role::Read, Some("t1")).await;
    app.upsert_team("t2", "Team 2", "").await.unwrap();
    app.keys_refreshed().await;
    let status = kpis(app.channel.clone(), &scoped)
        .watch_scorecard(scorecard_watch("t2"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    let mut first = client
        .watch_scorecard(scorecard_watch("t1"))
        .await
        .unwrap()
        .into_inner();
    next(&mut first).await.unwrap();
    let mut second = client
        .watch_leaderboard(pb::WatchLeaderboardRequest {
            kpi: pb::Kpi::Revenue as i32,
            team_id: "t1".into(),
            period: january(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    next(&mut second).await.unwrap();
    let refused = client
        .watch_scorecard(scorecard_watch("t1"))
        .await
        .unwrap_err();
    assert_status(&refused, Code::ResourceExhausted, "TOO_MANY_WATCHES");
    assert!(refused.get_error_details().retry_info().is_some());

    // A watch whose client goes away gives its place back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut third = loop {
        match client.watch_scorecard(scorecard_watch("t1")).await {
            Ok(watch) => break watch.into_inner(),
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "the place was not given back");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    next(&mut third).await.unwrap();

    // Bad requests are refused before any place is taken, every field named.
    let status = client
        .watch_scorecard(pb::WatchScorecardRequest {
            subject: None,
            period: january(),
            kpis: vec![],
            min_interval: Some(pbjson_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
        })
        .await
        .unwrap_err();
    crate::helpers::assert_invalid(&status, &["subject", "min_interval"]);
    let status = client
        .watch_leaderboard(pb::WatchLeaderboardRequest {
            kpi: pb::Kpi::Revenue as i32,
            team_id: "t1".into(),
            period: january(),
            min_interval: Some(pbjson_types::Duration {
                seconds: 7200,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    crate::helpers::assert_invalid(&status, &["min_interval"]);
}

#[tokio::test]
async fn a_lost_listener_resynchronises_every_watch() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.rep_in("anna", "t1").await;
    let mut watch = kpis(app.channel.clone(), &app.admin_key)
        .watch_scorecard(scorecard_watch("t1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen(&next(&mut watch).await.unwrap()).1, 0.0);

    // A change whose notification is never heard: committed with its
    // version bump but no NOTIFY (as when the listener's connection is
    // down at that moment).
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO kpi_rollups (rep_id, level, bucket, calls) \
         VALUES ('anna', 3, '2026-01-01T00:00:00Z', 5)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO kpi_versions AS v (scope, version) VALUES ('rep:anna', 1) \
         ON CONFLICT (scope) DO UPDATE SET version = v.version + 1",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(500), watch.message()).await;
    assert!(
        quiet.is_err(),
        "a message without a notification: {quiet:?}"
    );

    // The listener loses its connection: once it listens again, every
    // watch recomputes and this one finds the change.
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(terminated, [true], "one listener per process");
    let message = next(&mut watch).await.unwrap();
    assert_eq!(seen(&message), (pb::WatchReason::Changed, 5.0, None));

    // And it hears changes again.
    app.record(vec![call("i1", "anna", "2026-01-10T10:00:00Z")])
        .await
        .unwrap();
    assert_eq!(seen(&next(&mut watch).await.unwrap()).1, 6.0);
}

#[tokio::test]
async fn grpcurl_watches_a_scorecard_with_a_request_from_stdin() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.rep_in("anna", "t1").await;
    let bin = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".to_owned());
    let address = app.endpoint.trim_start_matches("http://").to_owned();
    let mut grpcurl = tokio::process::Command::new(&bin)
        .args([
            "-plaintext",
            "-H",
            &format!("authorization: Bearer {}", app.admin_key),
            "-d",
            "@",
            &address,
            "kpi.v1.KpiService/WatchScorecard",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run grpcurl ({bin}): {e}; use `cargo xtask test`"));
    let mut stdin = grpcurl.stdin.take().unwrap();
    stdin
        .write_all(
            br#"{"subject": {"team_id": "t1"}, "period": {"start_date": "2026-01-01", "end_date": "2026-01-31", "time_zone": "UTC"}, "kpis": ["KPI_CALLS"], "min_interval": "0s"}"#,
        )
        .await
        .unwrap();
    drop(stdin);
    let mut lines = BufReader::new(grpcurl.stdout.take().unwrap()).lines();
    // Reads grpcurl's output until a line containing `wanted`; returns it all.
    let mut read_until = async |wanted: &str| {
        let mut seen = String::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {wanted} from grpcurl within 15 s:\n{seen}"))
                .unwrap()
                .unwrap_or_else(|| panic!("grpcurl ended before {wanted}:\n{seen}"));
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(wanted) {
                return seen;
            }
        }
    };
    let first = read_until("WATCH_REASON_INITIAL").await;
    assert!(first.contains("\"startDate\": \"2026-01-01\""), "{first}");
    app.record(vec![call("g1", "anna", "2026-01-10T10:00:00Z")])
        .await
        .unwrap();
    let second = read_until("WATCH_REASON_CHANGED").await;
    assert!(second.contains("\"value\": 1"), "{second}");
    grpcurl.kill().await.ok();
}
