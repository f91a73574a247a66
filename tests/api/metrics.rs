//! The Prometheus scrape at `GET /metrics`, read by the real `curl`: the
//! figures move with traffic (calls by method and code, records by type and
//! outcome, batches, KPI queries by source, cache lookups, the pool), no id
//! ever becomes a label, and `promtool check metrics` (Debian's prometheus,
//! which `cargo xtask test` provides as `PROMTOOL`) accepts the exposition.

use std::{collections::HashMap, time::Duration};

use kpi_service::{
    proto::pb::{
        self, activity_service_client::ActivityServiceClient,
        directory_service_client::DirectoryServiceClient, kpi_service_client::KpiServiceClient,
    },
    testkit::{
        process::{Launch, ServiceProcess},
        records,
    },
};
use tonic::transport::Channel;

use crate::helpers::{BIN, Bearer, EmptyDatabase, watched_dir};

/// The service's address, for curl.
pub(crate) struct App {
    pub(crate) endpoint: String,
}

/// The scrape, as curl gets it.
pub(crate) async fn scrape(app: &App) -> String {
    let bin = std::env::var("CURL").unwrap_or_else(|_| "curl".to_owned());
    let output = tokio::process::Command::new(&bin)
        .args(["--silent", "--show-error", "--fail"])
        .arg(format!("{}/metrics", app.endpoint))
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run curl ({bin}): {e}"));
    assert!(
        output.status.success(),
        "GET /metrics: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A service process of its own on an empty database, so that its figures
/// are one test's traffic only.
struct OwnService {
    // Fields drop in order: the process before its database.
    _service: ServiceProcess,
    database: EmptyDatabase,
    app: App,
    channel: Channel,
    admin: String,
}

impl OwnService {
    async fn start(label: &str) -> Self {
        let database = EmptyDatabase::create().await;
        let dir = watched_dir(label);
        let service = ServiceProcess::start(&Launch {
            database_url: Some(&database.url),
            ..Launch::new(BIN, &dir)
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
        let channel = Channel::from_shared(service.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            admin: service.admin_key().unwrap(),
            app: App {
                endpoint: service.endpoint(),
            },
            channel,
            database,
            _service: service,
        }
    }
}

/// One sample: its name and labels.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The sum of the samples of `name` whose labels include `labels`.
pub(crate) fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

#[tokio::test]
async fn the_scrape_moves_with_traffic_and_never_labels_an_id() {
    // A process of its own: its figures are this test's traffic only, so
    // they must move by exactly what it did.
    let own = OwnService::start("metrics").await;
    let (app, channel, key) = (&own.app, own.channel.clone(), own.admin.clone());
    let mut directory =
        DirectoryServiceClient::with_interceptor(channel.clone(), Bearer::new(&key));
    directory
        .upsert_team(pb::UpsertTeamRequest {
            team_id: "team-9c1d".into(),
            display_name: "Team".into(),
            parent_team_id: String::new(),
        })
        .await
        .unwrap();
    directory
        .upsert_rep(pb::UpsertRepRequest {
            rep_id: "rep-5e7a".into(),
            display_name: "Rep".into(),
            team_id: "team-9c1d".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let before = scrape(app).await;
    let mut activity = ActivityServiceClient::with_interceptor(channel.clone(), Bearer::new(&key));

    let at = chrono::Utc::now() - chrono::Duration::minutes(1);
    let batch = || {
        (0..3)
            .map(|i| {
                records::interaction(format!("call-{i}"), "rep-5e7a", pb::Channel::Call, at)
                    .record()
            })
            .collect::<Vec<_>>()
    };
    for _ in 0..2 {
        activity
            .record_activities(pb::RecordActivitiesRequest { records: batch() })
            .await
            .unwrap();
    }
    // A batch naming an unknown rep: rejected, nothing counted as stored.
    let unknown = records::interaction("call-x", "nobody", pb::Channel::Call, at).record();
    assert!(
        activity
            .record_activities(pb::RecordActivitiesRequest {
                records: vec![unknown]
            })
            .await
            .is_err()
    );
    let mut kpis = KpiServiceClient::with_interceptor(channel.clone(), Bearer::new(&key));
    let request = |zone: &str| pb::GetScorecardRequest {
        subject: Some(pb::Subject {
            subject: Some(pb::subject::Subject::TeamId("team-9c1d".into())),
        }),
        period: Some(pb::Period {
            relative: pb::RelativePeriod::CurrentMonth as i32,
            time_zone: zone.into(),
            ..Default::default()
        }),
        kpis: Vec::new(),
    };
    kpis.get_scorecard(request("UTC")).await.unwrap();
    kpis.get_scorecard(request("UTC")).await.unwrap();
    assert!(kpis.get_scorecard(request("Mars/Olympus")).await.is_err());
    // A path that is no method: counted, under "other".
    let _ = tokio::process::Command::new(std::env::var("CURL").unwrap_or_else(|_| "curl".into()))
        .args(["--silent", "--http2-prior-knowledge", "-X", "POST"])
        .args(["-H", "content-type: application/grpc"])
        .arg(format!("{}/kpi.v1.KpiService/rep-5e7a", app.endpoint))
        .output()
        .await;
    // The pool is sampled once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = scrape(app).await;

    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let scorecard = [("service", "kpi.v1.KpiService"), ("method", "GetScorecard")];
    let calls = |code| [scorecard[0], scorecard[1], ("code", code)];
    assert_eq!(moved("kpi_rpc_requests_total", &calls("OK")), 2.0);
    assert_eq!(
        moved("kpi_rpc_requests_total", &calls("INVALID_ARGUMENT")),
        1.0
    );
    assert_eq!(moved("kpi_rpc_duration_seconds_count", &calls("OK")), 2.0);
    let record_calls = [
        ("service", "kpi.v1.ActivityService"),
        ("method", "RecordActivities"),
    ];
    assert_eq!(moved("kpi_rpc_requests_total", &record_calls), 3.0);
    let other = [("service", "other"), ("method", "other")];
    assert_eq!(moved("kpi_rpc_requests_total", &other), 1.0);
    let records = |outcome| [("type", "interaction"), ("outcome", outcome)];
    assert_eq!(moved("kpi_ingest_records_total", &records("inserted")), 3.0);
    assert_eq!(
        moved("kpi_ingest_records_total", &records("unchanged")),
        3.0
    );
    assert_eq!(
        moved("kpi_ingest_records_total", &[]),
        6.0,
        "the rejected batch counts no record"
    );
    let batches = |outcome| [("outcome", outcome)];
    assert_eq!(
        moved("kpi_ingest_batches_total", &batches("committed")),
        2.0
    );
    assert_eq!(moved("kpi_ingest_batches_total", &batches("rejected")), 1.0);
    assert!(moved("kpi_query_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(moved("kpi_cache_lookups_total", &[("result", "miss")]), 1.0);
    // The batch that inserted was noted and heard (the replay changed
    // nothing, so it notified nothing).
    assert!(moved("kpi_change_feed_lag_seconds_count", &[]) >= 1.0);
    assert_eq!(moved("kpi_cache_lookups_total", &[("result", "hit")]), 1.0);
    assert!(value(&after, "kpi_db_pool_max_connections", &[]) >= 1.0);
    assert!(value(&after, "kpi_db_pool_acquire_duration_seconds_count", &[]) >= 1.0);
    assert!(after.contains("kpi_db_pool_connections{state=\"in_use\"}"));
    assert!(after.contains("kpi_database_up"));
    assert!(after.contains("kpi_watches_open"));
    assert!(after.contains("# HELP kpi_rpc_requests_total"));
    assert!(after.contains("# TYPE kpi_rpc_duration_seconds histogram"));

    // No id, key or name in any label.
    for secret in ["team-9c1d", "rep-5e7a", "call-0", &key[4..16]] {
        assert!(!after.contains(secret), "{secret} in the scrape");
    }

    // promtool's lint (names, units, _total, HELP) accepts it.
    match std::env::var("PROMTOOL") {
        Ok(promtool) => {
            use tokio::io::AsyncWriteExt as _;
            let mut check = tokio::process::Command::new(&promtool)
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {promtool}: {e}"));
            if let Some(mut stdin) = check.stdin.take() {
                stdin.write_all(after.as_bytes()).await.unwrap();
            }
            let output = check.wait_with_output().await.unwrap();
            assert!(
                output.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Err(_) => eprintln!(
            "PROMTOOL is not set: the exposition is not linted (cargo xtask test sets it)"
        ),
    }
}

#[tokio::test]
async fn a_stream_counts_the_status_it_ended_with_and_a_call_given_up_counts_cancelled() {
    use kpi_service::{domain::access::Role, store};
    let own = OwnService::start("metrics-streams").await;
    let (app, channel, admin) = (&own.app, own.channel.clone(), own.admin.clone());
    DirectoryServiceClient::with_interceptor(channel.clone(), Bearer::new(&admin))
        .upsert_team(pb::UpsertTeamRequest {
            team_id: "team-4b2e".into(),
            display_name: "Team".into(),
            parent_team_id: String::new(),
        })
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&own.database.url).await.unwrap();
    let reader = store::keys::create(&pool, "watcher", Role::Read, None, None)
        .await
        .unwrap()
        .token;
    tokio::time::sleep(kpi_service::service::access::REFRESH_EVERY * 3).await;
    let watch = pb::WatchScorecardRequest {
        subject: Some(pb::Subject {
            subject: Some(pb::subject::Subject::TeamId("team-4b2e".into())),
        }),
        period: Some(pb::Period {
            relative: pb::RelativePeriod::CurrentMonth as i32,
            time_zone: "UTC".into(),
            ..Default::default()
        }),
        kpis: vec![pb::Kpi::Interactions as i32],
        min_interval: None,
    };
    let before = scrape(app).await;

    // A watch that started well (its first message) and then ended with an
    // error: its key was revoked.
    let mut revoked = KpiServiceClient::with_interceptor(channel.clone(), Bearer::new(&reader))
        .watch_scorecard(watch.clone())
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), revoked.message()).await;
    assert!(matches!(first, Ok(Ok(Some(_)))), "{first:?}");
    // It lives a second before the revocation: its duration is its life.
    tokio::time::sleep(Duration::from_secs(1)).await;
    store::keys::revoke(&pool, &reader[4..16]).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), revoked.message())
        .await
        .expect("the watch stayed open after its key was revoked");
    assert!(
        matches!(&end, Err(status) if status.code() == tonic::Code::Unauthenticated),
        "{end:?}"
    );

    // A watch its caller gives up on after the first message.
    let mut given_up = KpiServiceClient::with_interceptor(channel.clone(), Bearer::new(&admin))
        .watch_scorecard(watch)
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), given_up.message()).await;
    assert!(matches!(first, Ok(Ok(Some(_)))), "{first:?}");
    drop(given_up);

    let method = |code| {
        [
            ("service", "kpi.v1.KpiService"),
            ("method", "WatchScorecard"),
            ("code", code),
        ]
    };
    let moved = |after: &str, code| {
        value(after, "kpi_rpc_requests_total", &method(code))
            - value(&before, "kpi_rpc_requests_total", &method(code))
    };
    // The server hears of the reset when it next polls the stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut after = scrape(app).await;
    while moved(&after, "CANCELLED") < 1.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = scrape(app).await;
    }
    assert_eq!(moved(&after, "UNAUTHENTICATED"), 1.0);
    assert_eq!(moved(&after, "CANCELLED"), 1.0);
    assert_eq!(
        moved(&after, "OK"),
        0.0,
        "a watch that started is not an OK call"
    );
    let lived = value(
        &after,
        "kpi_rpc_duration_seconds_sum",
        &method("UNAUTHENTICATED"),
    ) - value(
        &before,
        "kpi_rpc_duration_seconds_sum",
        &method("UNAUTHENTICATED"),
    );
    assert!(lived >= 1.0, "the revoked watch lived {lived} s");
}
