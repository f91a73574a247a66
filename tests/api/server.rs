//! The server around the services: health that follows the database,
//! graceful shutdown with a drain deadline.

use std::time::{Duration, Instant};

use sqlx::Connection;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::helpers::{Durability, TestApp, socket_url, test_settings, throwaway_cluster};

#[tokio::test]
async fn health_reports_every_kpi_service_and_rejects_unknown_ones() {
    let app = TestApp::spawn().await;
    assert_eq!(app.health_of("").await.ok(), Some(ServingStatus::Serving));
    assert_eq!(
        app.health_of("kpi.v1.DirectoryService").await.ok(),
        Some(ServingStatus::Serving)
    );
    let unknown = app.health_of("kpi.v1.NoSuchService").await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn health_follows_the_database_down_and_back_up_without_a_restart() {
    // A cluster of this test's own, so stopping it disturbs no other test.
    let pg = tokio::task::spawn_blocking(|| throwaway_cluster("health", Durability::Off))
        .await
        .unwrap();
    let options = pg.connect_options("postgres");
    let mut admin = sqlx::PgConnection::connect_with(&options).await.unwrap();
    sqlx::raw_sql("CREATE DATABASE kpi")
        .execute(&mut admin)
        .await
        .unwrap();
    drop(admin);
    let app = TestApp::spawn_with(test_settings(socket_url(&pg, "kpi"))).await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();

    let stopper = pg.clone();
    tokio::task::spawn_blocking(move || stopper.stop())
        .await
        .unwrap()
        .unwrap();
    let down = app
        .wait_for_health("", ServingStatus::NotServing, Duration::from_secs(5))
        .await;
    assert_eq!(
        app.health_of("kpi.v1.DirectoryService").await.ok(),
        Some(ServingStatus::NotServing)
    );
    let failed = app.get_team("t1").await.unwrap_err();
    assert_eq!(failed.code(), tonic::Code::Unavailable, "{failed:?}");

    let starter = pg.clone();
    tokio::task::spawn_blocking(move || starter.start())
        .await
        .unwrap()
        .unwrap();
    let up = app
        .wait_for_health("", ServingStatus::Serving, Duration::from_secs(10))
        .await;
    assert_eq!(app.get_team("t1").await.unwrap().team_id, "t1");
    eprintln!("NOT_SERVING after {down:?}, SERVING again after {up:?}");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_within_the_drain_deadline_despite_an_open_stream() {
    let database_app = TestApp::spawn().await;
    // A second server on the same database with a short drain deadline.
    let mut settings = test_settings(database_app.url.clone());
    settings.shutdown_timeout = Duration::from_secs(1);
    let app = TestApp::spawn_with(settings).await;

    // Health Watch is a server stream that stays open until the client
    // goes away.
    let mut stream = app
        .health
        .clone()
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap();
    assert!(first.is_some());

    let started = Instant::now();
    app.shutdown().await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with a 1 s drain deadline"
    );
    drop(stream);
}
