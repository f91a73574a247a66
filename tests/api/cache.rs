//! The result cache: answers from memory, never stale, on any replica.

use kpi_service::{
    proto::pb::{
        self, exchange_rate_service_client::ExchangeRateServiceClient,
        kpi_service_client::KpiServiceClient, target_service_client::TargetServiceClient,
    },
    testkit::records,
};

use crate::helpers::{Bearer, TestApp, at, test_settings};

pub(crate) fn january() -> Option<pb::Period> {
    Some(pb::Period {
        start_date: "2026-01-01".into(),
        end_date: "2026-01-31".into(),
        time_zone: "UTC".into(),
        ..Default::default()
    })
}

pub(crate) fn subject(team: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        subject: Some(pb::subject::Subject::TeamId(team.into())),
    })
}

/// (INTERACTIONS, REVENUE, DEALS_WON, the INTERACTIONS target) of a team in
/// January, asked of `app`.
async fn card(app: &TestApp, team: &str) -> (f64, Option<f64>, f64, Option<f64>) {
    let entries =
        KpiServiceClient::with_interceptor(app.channel.clone(), Bearer::new(&app.admin_key))
            .get_scorecard(pb::GetScorecardRequest {
                subject: subject(team),
                period: january(),
                kpis: vec![
                    pb::Kpi::Interactions as i32,
                    pb::Kpi::Revenue as i32,
                    pb::Kpi::DealsWon as i32,
                ],
            })
            .await
            .unwrap()
            .into_inner()
            .entries;
    let value = |i: usize| entries[i].current.as_ref().and_then(|v| v.value);
    (
        value(0).unwrap_or(f64::NAN),
        value(1),
        value(2).unwrap_or(f64::NAN),
        entries[0].target.as_ref().map(|t| t.value),
    )
}

/// Team t1's INTERACTIONS target for January: 50.
pub(crate) async fn set_january_target(app: &TestApp) {
    TargetServiceClient::with_interceptor(app.channel.clone(), Bearer::new(&app.admin_key))
        .set_target(pb::SetTargetRequest {
            kpi: pb::Kpi::Interactions as i32,
            subject: subject("t1"),
            start_date: "2026-01-01".into(),
            end_date: "2026-01-31".into(),
            time_zone: "UTC".into(),
            value: 50.0,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_scorecard_cached_on_one_replica_shows_every_write_the_other_acknowledged() {
    // Two replicas of the service on one database: writes go through `a`,
    // reads through `b`.
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_with(test_settings(a.url.clone())).await;
    a.upsert_team("t1", "Team 1", "").await.unwrap();
    a.upsert_team("t2", "Team 2", "").await.unwrap();
    a.rep_in("anna", "t1").await;
    assert_eq!(card(&b, "t1").await, (0.0, Some(0.0), 0.0, None));

    // Proof that `b` answers from memory: a change behind the service's
    // back (no version bump) is not seen while nothing the answer read
    // changed through the service.
    sqlx::query(
        "INSERT INTO kpi_rollups (rep_id, level, bucket, calls) \
         VALUES ('anna', 3, '2026-01-01T00:00:00Z', 100)",
    )
    .execute(&a.db)
    .await
    .unwrap();
    assert_eq!(card(&b, "t1").await.0, 0.0);

    // Every write acknowledged by `a` is in `b`'s very next answer.
    for n in 1..=3 {
        let when = at(&format!("2026-01-1{n}T10:00:00Z"));
        a.record(vec![
            records::interaction(format!("i{n}"), "anna", pb::Channel::Call, when)
                .with_updated(when)
                .record(),
        ])
        .await
        .unwrap();
        // Recomputed: the 100 calls written behind its back show up too.
        assert_eq!(card(&b, "t1").await.0, 100.0 + f64::from(n));
    }
    // A deal in EUR without a rate: won, but no revenue until a rate.
    let closed = at("2026-01-20T10:00:00Z");
    a.record(vec![pb::ActivityRecord {
        record: Some(pb::activity_record::Record::Deal(records::deal(
            "d1",
            "anna",
            pb::DealStage::Won,
            pb::Money {
                currency_code: "EUR".into(),
                units: 1000,
                nanos: 0,
            },
            at("2026-01-05T10:00:00Z"),
            Some(closed),
        ))),
    }])
    .await
    .unwrap();
    assert_eq!(card(&b, "t1").await, (103.0, Some(0.0), 1.0, None));
    ExchangeRateServiceClient::with_interceptor(a.channel.clone(), Bearer::new(&a.admin_key))
        .set_exchange_rates(pb::SetExchangeRatesRequest {
            rates: vec![pb::ExchangeRate {
                currency_code: "EUR".into(),
                effective_date: "2026-01-01".into(),
                rate: "1.1".into(),
            }],
        })
        .await
        .unwrap();
    assert_eq!(card(&b, "t1").await.1, Some(1100.0));
    // A target set through `a`.
    set_january_target(&a).await;
    assert_eq!(card(&b, "t1").await.3, Some(50.0));
    // A move of anna to t2 from the beginning of time: t1 empties, t2
    // has it all.
    assert_eq!(card(&b, "t2").await.0, 0.0);
    a.upsert_rep(pb::UpsertRepRequest {
        team_effective_time: Some(kpi_service::proto::timestamp(at("2000-01-01T00:00:00Z"))),
        ..crate::helpers::rep("anna", "t2")
    })
    .await
    .unwrap();
    assert_eq!(card(&b, "t1").await.0, 0.0);
    assert_eq!(card(&b, "t2").await.0, 103.0);
}

#[tokio::test]
async fn every_committed_change_is_notified_with_what_it_touched() {
    use kpi_service::store::changes::{CHANNEL, Change};
    let app = TestApp::spawn().await;
    let mut listener = sqlx::postgres::PgListener::connect(&app.url).await.unwrap();
    listener.listen(CHANNEL).await.unwrap();
    let mut next = async || {
        let note = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
            .await
            .expect("no notification within 5 s")
            .unwrap();
        Change::parse(note.payload()).unwrap()
    };
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    assert_eq!(next().await, Change::new(vec!["directory".into()], None));
    app.rep_in("anna", "t1").await;
    assert_eq!(next().await.scopes, ["directory"]);
    let when = at("2026-01-11T10:20:00Z");
    let call = records::interaction("i1", "anna", pb::Channel::Call, when)
        .with_updated(when)
        .record();
    app.record(vec![call.clone()]).await.unwrap();
    assert_eq!(
        next().await,
        Change::new(
            vec!["rep:anna".into()],
            Some((at("2026-01-11T10:00:00Z"), at("2026-01-11T11:00:00Z")))
        )
    );
    // A replay changes nothing: no notification. The next one is the
    // target's.
    app.record(vec![call]).await.unwrap();
    set_january_target(&app).await;
    assert_eq!(next().await.scopes, ["targets"]);
}
