//! Two replicas: two `kpi-service` processes on one PostgreSQL, started at
//! once on an empty database (the migrations apply once), taking the same
//! batches concurrently (each record stored once, every id counted
//! inserted exactly once across both), answering the same KPIs, and
//! refusing a revoked key within about a second (1.5 s allowed), both.

use std::time::{Duration, Instant};

use kpi_service::{
    domain::access::Role,
    proto::pb::{
        self, activity_service_client::ActivityServiceClient,
        directory_service_client::DirectoryServiceClient, kpi_service_client::KpiServiceClient,
    },
    testkit::{process::ServiceProcess, records},
};
use tonic::{Code, transport::Channel};

use crate::helpers::{BIN, Bearer, EmptyDatabase, start_service, watched_dir};

async fn channel(service: &ServiceProcess) -> Channel {
    Channel::from_shared(service.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn get_team(channel: Channel, token: String) -> Code {
    DirectoryServiceClient::with_interceptor(channel, Bearer::new(&token))
        .get_team(pb::GetTeamRequest {
            team_id: "floor".into(),
        })
        .await
        .map_or_else(|s| s.code(), |_| Code::Ok)
}

/// Waits (up to 10 s) until both replicas have loaded `token`.
async fn accepted_by_both(a: &Channel, b: &Channel, token: &str) {
    let since = Instant::now();
    for channel in [a, b] {
        while !matches!(
            get_team(channel.clone(), token.to_owned()).await,
            Code::Ok | Code::NotFound
        ) {
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "the key was never loaded"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn two_replicas_migrate_once_store_each_record_once_and_agree() {
    let database = EmptyDatabase::create().await;
    // Both start at once on the empty database: both migrate.
    let (a, b) = {
        let (url_a, url_b) = (database.url.clone(), database.url.clone());
        let a = std::thread::spawn(move || start_service(&watched_dir("replica-a"), Some(&url_a)));
        let b = std::thread::spawn(move || start_service(&watched_dir("replica-b"), Some(&url_b)));
        (a.join().unwrap(), b.join().unwrap())
    };
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    // Both serve (neither failed on the other's half-applied schema), and
    // every migration is recorded as applied, successfully.
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert_eq!(applied.len(), files, "{applied:?}");
    assert!(applied.iter().all(|(_, ok)| *ok), "{applied:?}");
    let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE role = 'admin'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(admins, 1, "one first admin key, whichever started first");

    let key = kpi_service::store::keys::create(&pool, "replicas", Role::Admin, None, None)
        .await
        .unwrap()
        .token;
    let (ch_a, ch_b) = (channel(&a).await, channel(&b).await);
    accepted_by_both(&ch_a, &ch_b, &key).await;
    let mut directory = DirectoryServiceClient::with_interceptor(ch_a.clone(), Bearer::new(&key));
    directory
        .upsert_team(pb::UpsertTeamRequest {
            team_id: "floor".into(),
            display_name: "Floor".into(),
            parent_team_id: String::new(),
        })
        .await
        .unwrap();
    for rep in ["r1", "r2"] {
        directory
            .upsert_rep(pb::UpsertRepRequest {
                rep_id: rep.into(),
                display_name: rep.into(),
                team_id: "floor".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    // 1,000 ids in batches of 100, every batch sent through both replicas
    // at once, and again shifted by 50 ids (overlapping two batches).
    let at = chrono::Utc::now() - chrono::Duration::hours(1);
    let record = |i: usize| {
        let rep = if i.is_multiple_of(3) { "r1" } else { "r2" };
        records::interaction(format!("i-{i:04}"), rep, pb::Channel::Call, at).record()
    };
    let mut batches: Vec<Vec<pb::ActivityRecord>> = (0..10)
        .map(|b| (b * 100..b * 100 + 100).map(record).collect())
        .collect();
    batches.extend((0..9).map(|b| (b * 100 + 50..b * 100 + 150).map(record).collect()));
    let sent: usize = batches.iter().map(Vec::len).sum::<usize>() * 2;
    let send = |channel: Channel, batch: Vec<pb::ActivityRecord>| {
        let key = key.clone();
        async move {
            ActivityServiceClient::with_interceptor(channel, Bearer::new(&key))
                .record_activities(pb::RecordActivitiesRequest { records: batch })
                .await
                .map(|r| r.into_inner().counts.unwrap_or_default())
        }
    };
    let calls = batches
        .into_iter()
        .flat_map(|batch| [send(ch_a.clone(), batch.clone()), send(ch_b.clone(), batch)]);
    let answers = futures::future::join_all(calls).await;
    let mut total = pb::RecordCounts::default();
    for answer in answers {
        let counts = answer.unwrap_or_else(|e| panic!("a batch failed: {e:?}"));
        total.inserted += counts.inserted;
        total.unchanged += counts.unchanged;
        total.updated += counts.updated;
        total.stale += counts.stale;
    }
    assert_eq!(total.inserted, 1000, "{total:?}");
    assert_eq!(
        usize::try_from(total.inserted + total.unchanged).unwrap(),
        sent,
        "{total:?}"
    );
    assert_eq!((total.updated, total.stale), (0, 0));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM interactions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 1000);

    // Reads through either are the same answer.
    let scorecard = |channel: Channel| {
        let key = key.clone();
        async move {
            KpiServiceClient::with_interceptor(channel, Bearer::new(&key))
                .get_scorecard(pb::GetScorecardRequest {
                    subject: Some(pb::Subject {
                        subject: Some(pb::subject::Subject::TeamId("floor".into())),
                    }),
                    period: Some(pb::Period {
                        relative: pb::RelativePeriod::LastNDays as i32,
                        last_n_days: 7,
                        time_zone: "UTC".into(),
                        ..Default::default()
                    }),
                    kpis: vec![pb::Kpi::Interactions as i32, pb::Kpi::Calls as i32],
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let (from_a, from_b) = (scorecard(ch_a.clone()).await, scorecard(ch_b.clone()).await);
    assert_eq!(from_a, from_b);
    let interactions = from_a
        .entries
        .first()
        .and_then(|e| e.current.as_ref())
        .and_then(|v| v.value);
    assert_eq!(interactions, Some(1000.0));

    // A key revoked (through the CLI, on the shared database) is refused by
    // both within a second.
    let reader = kpi_service::store::keys::create(&pool, "reader", Role::Read, None, None)
        .await
        .unwrap()
        .token;
    accepted_by_both(&ch_a, &ch_b, &reader).await;
    let revoked = tokio::process::Command::new(BIN)
        .args(["keys", "revoke", &reader[4..16]])
        .env("DATABASE_URL", &database.url)
        .output()
        .await
        .unwrap();
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let since = Instant::now();
    for channel in [ch_a, ch_b] {
        while get_team(channel.clone(), reader.clone()).await != Code::Unauthenticated {
            assert!(
                since.elapsed() < Duration::from_millis(1500),
                "still accepted {:?} after the revocation",
                since.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "both replicas refused the revoked key after {:?}",
        since.elapsed()
    );
    pool.close().await;
    drop((a, b));
}
