//! Acknowledged means durable: every record whose call returned OK is in
//! the database after the service is killed (SIGKILL) mid-load and
//! PostgreSQL crashes and restarts.

use std::{
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use kpi_service::proto::pb::{
    self, activity_service_client::ActivityServiceClient,
    directory_service_client::DirectoryServiceClient,
};
use kpi_service::testkit::records;
use sqlx::Connection;

use crate::helpers::{
    Bearer, Durability, at, rep, socket_url, start_service, throwaway_cluster_with_kpi,
};

fn call(id: String) -> pb::ActivityRecord {
    records::interaction(id, "anna", pb::Channel::Email, at("2026-05-04T10:00:00Z"))
        .with_updated(at("2026-06-01T00:00:00Z"))
        .record()
}

#[tokio::test]
async fn acknowledged_records_survive_a_killed_service_and_a_postgres_crash() {
    // A cluster of this test's own with PostgreSQL's durable defaults.
    let pg = throwaway_cluster_with_kpi("durable", Durability::On).await;
    let url = socket_url(&pg, "kpi");
    let data_dir = PathBuf::from(format!("{}-service", pg.socket_dir().display()));
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();

    let service = start_service(&data_dir, Some(&url));
    let endpoint = format!("http://{}", service.addr);
    let channel = tonic::transport::Channel::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer = Bearer::new(&service.admin_key().unwrap());
    let mut directory = DirectoryServiceClient::with_interceptor(channel.clone(), bearer.clone());
    directory
        .upsert_team(pb::UpsertTeamRequest {
            team_id: "t1".into(),
            display_name: "Team 1".into(),
            parent_team_id: String::new(),
        })
        .await
        .unwrap();
    directory.upsert_rep(rep("anna", "t1")).await.unwrap();

    // Two loaders send batches until the service dies under them; each
    // remembers the ids of batches that were acknowledged.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut loaders = Vec::new();
    for loader in 0..2 {
        let acknowledged = acknowledged.clone();
        let mut client = ActivityServiceClient::with_interceptor(channel.clone(), bearer.clone());
        loaders.push(tokio::spawn(async move {
            for batch in 0..10_000 {
                let ids: Vec<String> = (0..100)
                    .map(|i| format!("l{loader}-b{batch}-i{i}"))
                    .collect();
                let records = ids.iter().cloned().map(call).collect();
                match client
                    .record_activities(pb::RecordActivitiesRequest { records })
                    .await
                {
                    Ok(_) => acknowledged.lock().unwrap().extend(ids),
                    Err(_) => return,
                }
            }
        }));
    }
    while acknowledged.lock().unwrap().len() < 3_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.kill();
    for loader in loaders {
        loader.await.unwrap();
    }

    // Crash PostgreSQL too (immediate shutdown: no checkpoint), then start it.
    let crashed = pg.clone();
    tokio::task::spawn_blocking(move || {
        let pid = crashed.running_pid().unwrap();
        std::process::Command::new("kill")
            .args(["-QUIT", &pid.to_string()])
            .status()
            .unwrap();
        while crashed.running_pid().is_some() {
            std::thread::sleep(Duration::from_millis(50));
        }
        crashed.start().unwrap();
    })
    .await
    .unwrap();

    let acknowledged = acknowledged.lock().unwrap().clone();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT interaction_id FROM interactions WHERE interaction_id = ANY($1)",
    )
    .bind(&acknowledged)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    eprintln!(
        "{} acknowledged, {} found after the crash",
        acknowledged.len(),
        stored.len()
    );
    assert!(acknowledged.len() >= 3_000);
    assert_eq!(
        stored.len(),
        acknowledged.len(),
        "acknowledged records were lost"
    );
}
