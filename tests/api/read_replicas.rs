//! Read replicas: the service with `--read-database-url` pointing at a real
//! PostgreSQL streaming replica (`pg_basebackup -R` of the test's primary,
//! started as a hot standby). KPI reads run on the replica once it has
//! caught up; every read counts the write acknowledged just before it;
//! with the replica's replay paused (so it really is behind: the test
//! checks) the reads go to the primary after the bounded wait and are
//! still exact; with the replica stopped they go to the primary at once.

use std::time::{Duration, Instant};

use kpi_service::{
    proto::pb::{
        self, activity_service_client::ActivityServiceClient,
        directory_service_client::DirectoryServiceClient, kpi_service_client::KpiServiceClient,
    },
    testkit::{
        cluster, org,
        process::{Launch, ServiceProcess},
        records,
    },
};
use sqlx::{Connection, PgConnection};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::helpers::{
    BIN, Bearer, Durability, socket_url, throwaway_cluster_with_kpi, watched_dir,
};
use crate::metrics::{App, scrape, value};

type Kpis = KpiServiceClient<InterceptedService<Channel, Bearer>>;
type Activity = ActivityServiceClient<InterceptedService<Channel, Bearer>>;

/// The rep's interactions from yesterday to tomorrow (UTC), as the service
/// answers.
async fn interactions(kpis: &mut Kpis) -> f64 {
    let today = chrono::Utc::now().date_naive();
    let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    let card = kpis
        .get_scorecard(pb::GetScorecardRequest {
            subject: Some(pb::Subject {
                subject: Some(pb::subject::Subject::RepId("rep-a".into())),
            }),
            period: Some(pb::Period {
                start_date: day(today - chrono::Days::new(1)),
                end_date: day(today + chrono::Days::new(1)),
                time_zone: "UTC".into(),
                ..Default::default()
            }),
            kpis: vec![pb::Kpi::Interactions as i32],
        })
        .await
        .unwrap()
        .into_inner();
    card.entries[0].current.as_ref().unwrap().value.unwrap()
}

/// Records interaction `n` and waits for its OK.
async fn record(activity: &mut Activity, n: usize) {
    let at = chrono::Utc::now() - chrono::Duration::seconds(5);
    activity
        .record_activities(pb::RecordActivitiesRequest {
            records: vec![
                records::interaction(format!("call-{n}"), "rep-a", pb::Channel::Call, at).record(),
            ],
        })
        .await
        .unwrap();
}

async fn count_on(connection: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM interactions")
        .fetch_one(connection)
        .await
        .unwrap()
}

fn reads(metrics: &str, target: &str, route: &str) -> f64 {
    value(
        metrics,
        "kpi_reads_total",
        &[("target", target), ("route", route)],
    )
}

#[tokio::test]
async fn reads_run_on_a_caught_up_replica_and_never_miss_an_acknowledged_write() {
    // Durable commits, as in production: a commit is flushed (and so can
    // be streamed) before it is acknowledged.
    let primary = throwaway_cluster_with_kpi("primary", Durability::On).await;
    let standby = {
        let primary = primary.clone();
        tokio::task::spawn_blocking(move || cluster::throwaway_standby("standby", &primary, &[]))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e:#}"))
    };
    let mut on_standby = PgConnection::connect_with(&standby.connect_options("kpi"))
        .await
        .unwrap();
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut on_standby)
        .await
        .unwrap();
    assert!(in_recovery, "the standby is a standby");

    let (primary_url, standby_url) = (socket_url(&primary, "kpi"), socket_url(&standby, "kpi"));
    let dir = watched_dir("read-replicas");
    let service = ServiceProcess::start(&Launch {
        database_url: Some(&primary_url),
        args: &["--read-database-url", &standby_url],
        ..Launch::new(BIN, &dir)
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let app = App {
        endpoint: service.endpoint(),
    };
    let key = service.admin_key().unwrap();
    let channel = Channel::from_shared(service.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut directory =
        DirectoryServiceClient::with_interceptor(channel.clone(), Bearer::new(&key));
    directory
        .upsert_team(org::team("team-a", "Team A", ""))
        .await
        .unwrap();
    directory
        .upsert_rep(org::rep("rep-a", "team-a"))
        .await
        .unwrap();
    let mut activity = ActivityServiceClient::with_interceptor(channel.clone(), Bearer::new(&key));
    let mut kpis = KpiServiceClient::with_interceptor(channel.clone(), Bearer::new(&key));

    // Replay running: each write, then at once a read that must count it.
    let before = scrape(&app).await;
    const ROUNDS: usize = 40;
    for n in 0..ROUNDS {
        record(&mut activity, n).await;
        assert_eq!(
            interactions(&mut kpis).await,
            (n + 1) as f64,
            "the read right after write {n}"
        );
    }
    let after = scrape(&app).await;
    let on_replica = reads(&after, "replica", "caught_up") + reads(&after, "replica", "waited")
        - reads(&before, "replica", "caught_up")
        - reads(&before, "replica", "waited");
    let on_primary = value(&after, "kpi_reads_total", &[("target", "primary")])
        - value(&before, "kpi_reads_total", &[("target", "primary")]);
    println!("replay running: {on_replica} reads on the replica, {on_primary} on the primary");
    assert_eq!(
        on_replica + on_primary,
        ROUNDS as f64,
        "every read was routed once"
    );
    assert!(
        on_replica >= (ROUNDS / 2) as f64,
        "most reads ran on the caught-up replica: {on_replica} of {ROUNDS}"
    );
    let served: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kpi-service'",
    )
    .fetch_one(&mut on_standby)
    .await
    .unwrap();
    assert!(served > 0, "the service holds connections to the standby");

    // Replay paused: the replica stops at what it has; reads wait the
    // bound, then run on the primary, and still count every write.
    // A pause takes effect at the next WAL record: a write, then wait
    // until replay says it is paused.
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&mut on_standby)
        .await
        .unwrap();
    record(&mut activity, ROUNDS).await;
    let since = Instant::now();
    loop {
        let state: String = sqlx::query_scalar("SELECT pg_get_wal_replay_pause_state()")
            .fetch_one(&mut on_standby)
            .await
            .unwrap();
        if state == "paused" {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "replay never paused: {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(interactions(&mut kpis).await, (ROUNDS + 1) as f64);
    let before = scrape(&app).await;
    for n in ROUNDS + 1..ROUNDS + 4 {
        record(&mut activity, n).await;
        let started = Instant::now();
        assert_eq!(interactions(&mut kpis).await, (n + 1) as f64);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the wait is bounded"
        );
    }
    let replica_count = count_on(&mut on_standby).await;
    let primary_count = count_on(&mut admin_kpi(&primary).await).await;
    assert!(
        replica_count < primary_count,
        "the paused replica is behind ({replica_count} vs {primary_count} interactions)"
    );
    let after = scrape(&app).await;
    assert_eq!(
        value(&after, "kpi_reads_total", &[("target", "primary")])
            - value(&before, "kpi_reads_total", &[("target", "primary")]),
        3.0,
        "the reads went to the primary"
    );
    assert!(
        reads(&after, "primary", "behind") > reads(&before, "primary", "behind"),
        "after waiting for the paused replica"
    );
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&mut on_standby)
        .await
        .unwrap();
    drop(on_standby);

    // Replay resumed: the replica catches up and serves again.
    let before = scrape(&app).await;
    let since = Instant::now();
    let mut n = ROUNDS + 4;
    loop {
        record(&mut activity, n).await;
        n += 1;
        assert_eq!(interactions(&mut kpis).await, n as f64);
        let now = scrape(&app).await;
        let back = reads(&now, "replica", "caught_up") + reads(&now, "replica", "waited")
            - reads(&before, "replica", "caught_up")
            - reads(&before, "replica", "waited");
        if back > 0.0 {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the resumed replica never served a read"
        );
    }

    // Replica stopped: reads go to the primary without waiting long.
    tokio::task::spawn_blocking(move || standby.stop())
        .await
        .unwrap()
        .unwrap();
    let before = scrape(&app).await;
    for _ in 0..3 {
        record(&mut activity, n).await;
        n += 1;
        let started = Instant::now();
        assert_eq!(interactions(&mut kpis).await, n as f64);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let after = scrape(&app).await;
    assert_eq!(
        value(&after, "kpi_reads_total", &[("target", "primary")])
            - value(&before, "kpi_reads_total", &[("target", "primary")]),
        3.0,
        "with the replica down every read ran on the primary"
    );
    assert!(
        reads(&after, "primary", "replica_unavailable")
            > reads(&before, "primary", "replica_unavailable"),
        "the stopped replica was noticed"
    );
    // Close the connections before the service stops: it drains them.
    drop((kpis, activity, directory, channel));
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn admin_kpi(pg: &kpi_service::embedded_pg::EmbeddedPostgres) -> PgConnection {
    PgConnection::connect_with(&pg.connect_options("kpi"))
        .await
        .unwrap()
}

#[tokio::test]
async fn replicas_are_refused_when_the_primary_acknowledges_before_flushing() {
    // The fast test cluster commits asynchronously (synchronous_commit =
    // off): a write could be acknowledged before a replica can see it.
    let primary = throwaway_cluster_with_kpi("async", Durability::Off).await;
    let url = socket_url(&primary, "kpi");
    let dir = watched_dir("async-primary");
    let refused = ServiceProcess::start(&Launch {
        database_url: Some(&url),
        args: &[
            "--read-database-url",
            "postgres://postgres@localhost/kpi?host=/nonexistent",
        ],
        ..Launch::new(BIN, &dir)
    })
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap_or_default();
    assert!(
        refused.contains("synchronous_commit"),
        "refused with a reason: {refused}"
    );
}
