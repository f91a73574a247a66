//! Deletions: versioned like every record, kept as tombstones, removed
//! from every KPI in the transaction that applies them.

use kpi_service::{
    proto::pb::{self, RecordType, kpi_service_client::KpiServiceClient},
    testkit::records::{self, deletion, usd},
};

use crate::{
    helpers::{Authed, Bearer, TestApp, assert_invalid, at},
    kpi::{assert_close, rep_subject, scorecard, value},
};

const V1: &str = "2026-06-01T00:00:00Z";
const V2: &str = "2026-06-02T00:00:00Z";
const V3: &str = "2026-06-03T00:00:00Z";

fn q2() -> Option<pb::Period> {
    Some(pb::Period {
        start_date: "2026-04-01".into(),
        end_date: "2026-06-30".into(),
        time_zone: "UTC".into(),
        ..Default::default()
    })
}

fn call(id: &str, version: &str) -> pb::ActivityRecord {
    records::interaction(id, "anna", pb::Channel::Call, at("2026-05-04T10:00:00Z"))
        .with_updated(at(version))
        .record()
}

fn won_deal(id: &str, version: &str) -> pb::ActivityRecord {
    records::deal(
        id,
        "anna",
        pb::DealStage::Won,
        usd(12_500, 500_000_000),
        at("2026-04-01T09:00:00Z"),
        Some(at("2026-05-15T17:30:00Z")),
    )
    .with_updated(at(version))
    .record()
}

/// (inserted, updated, unchanged, stale, deleted)
fn counted(c: pb::RecordCounts) -> (i64, i64, i64, i64, i64) {
    (c.inserted, c.updated, c.unchanged, c.stale, c.deleted)
}

async fn setup() -> (TestApp, KpiServiceClient<Authed>) {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.rep_in("anna", "t1").await;
    let kpi = KpiServiceClient::with_interceptor(app.channel.clone(), Bearer::new(&app.admin_key));
    (app, kpi)
}

/// anna's Q2 (calls, deals won, revenue numerator).
async fn anna(kpi: &mut KpiServiceClient<Authed>) -> (f64, f64, String) {
    let card = scorecard(kpi, rep_subject("anna"), q2()).await;
    use pb::Kpi as K;
    (
        value(&card, K::Calls).value.unwrap_or(f64::NAN),
        value(&card, K::DealsWon).value.unwrap_or(f64::NAN),
        value(&card, K::Revenue).numerator,
    )
}

async fn deleted_rows(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE deleted"
    )))
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_deletion_removes_a_record_from_every_kpi_until_a_newer_version_restores_it() {
    let (app, mut kpi) = setup().await;
    let counts = app.record(vec![won_deal("d1", V1), call("i1", V1)]).await;
    assert_eq!(counted(counts.unwrap()), (2, 0, 0, 0, 0));
    assert_eq!(anna(&mut kpi).await, (1.0, 1.0, "12500.5".to_owned()));

    // Deleted at V2: gone from revenue and deals won; the call stays.
    let delete = || vec![deletion(RecordType::Deal, "d1", at(V2))];
    assert_eq!(
        counted(app.record(delete()).await.unwrap()),
        (0, 0, 0, 0, 1)
    );
    assert_eq!(anna(&mut kpi).await, (1.0, 0.0, "0".to_owned()));
    assert_eq!(deleted_rows(&app, "deals").await, 1);

    // A replayed deletion is unchanged; an older one, or the deal at the
    // deletion's version or before, redelivered late, is stale.
    assert_eq!(
        counted(app.record(delete()).await.unwrap()),
        (0, 0, 1, 0, 0)
    );
    let late = vec![
        won_deal("d1", V1),
        won_deal("d1", V2),
        deletion(RecordType::Deal, "d1", at(V1)),
    ];
    assert_eq!(counted(app.record(late).await.unwrap()), (0, 0, 0, 3, 0));
    assert_eq!(anna(&mut kpi).await, (1.0, 0.0, "0".to_owned()));

    // A newer version restores it (counted as inserted), KPIs included.
    assert_eq!(
        counted(app.record(vec![won_deal("d1", V3)]).await.unwrap()),
        (1, 0, 0, 0, 0)
    );
    assert_eq!(anna(&mut kpi).await, (1.0, 1.0, "12500.5".to_owned()));
    assert_eq!(deleted_rows(&app, "deals").await, 0);
    // The deletion at V2 is now older than the stored version.
    assert_eq!(
        counted(app.record(delete()).await.unwrap()),
        (0, 0, 0, 1, 0)
    );
    assert_eq!(app.count("deals").await, 1);
}

#[tokio::test]
async fn a_deletion_of_an_id_never_seen_is_kept_so_that_its_record_arriving_later_is_stale() {
    let (app, mut kpi) = setup().await;
    let gone = vec![deletion(RecordType::Interaction, "i9", at(V2))];
    assert_eq!(counted(app.record(gone).await.unwrap()), (0, 0, 0, 0, 1));
    assert_eq!(deleted_rows(&app, "interactions").await, 1);
    let late = vec![call("i9", V1), call("i9", V2)];
    assert_eq!(counted(app.record(late).await.unwrap()), (0, 0, 0, 2, 0));
    assert_eq!(anna(&mut kpi).await.0, 0.0);
    // A newer deletion replaces the tombstone's version.
    let newer = vec![deletion(RecordType::Interaction, "i9", at(V3))];
    assert_eq!(counted(app.record(newer).await.unwrap()), (0, 0, 0, 0, 1));
    assert_eq!(
        counted(
            app.record(vec![call("i9", "2026-06-04T00:00:00Z")])
                .await
                .unwrap()
        ),
        (1, 0, 0, 0, 0)
    );
    assert_eq!(anna(&mut kpi).await.0, 1.0);
}

#[tokio::test]
async fn a_batch_counts_its_deletions_as_if_they_arrived_one_after_another() {
    let (app, mut kpi) = setup().await;
    let batch = vec![
        // Inserted, then deleted.
        call("i1", V1),
        deletion(RecordType::Interaction, "i1", at(V2)),
        // Deleted, then a late older version: stale.
        deletion(RecordType::Interaction, "i2", at(V2)),
        call("i2", V1),
        // A deletion and its record of the same version, in either order:
        // the deletion wins.
        call("i3", V2),
        deletion(RecordType::Interaction, "i3", at(V2)),
        deletion(RecordType::Interaction, "i4", at(V2)),
        call("i4", V2),
        // A deletion repeated: deleted, unchanged.
        deletion(RecordType::Interaction, "i5", at(V1)),
        deletion(RecordType::Interaction, "i5", at(V1)),
        // Ids are per record type: deleting customer i6 leaves the call.
        call("i6", V1),
        deletion(RecordType::Customer, "i6", at(V2)),
    ];
    assert_eq!(counted(app.record(batch).await.unwrap()), (3, 0, 1, 2, 6));
    assert_eq!(anna(&mut kpi).await.0, 1.0, "only i6 is left");
    assert_eq!(deleted_rows(&app, "interactions").await, 5);
    assert_eq!(deleted_rows(&app, "customers").await, 1);
}

#[tokio::test]
async fn a_merge_is_a_deletion_of_the_loser_and_an_update_of_the_survivor() {
    let (app, mut kpi) = setup().await;
    // The same lead entered twice; the survivor converted.
    let lead = |id: &str, version: &str| {
        records::customer(id, "anna", at("2026-04-02T10:00:00Z"))
            .with_converted(Some(at("2026-04-20T10:00:00Z")))
            .with_updated(at(version))
            .record()
    };
    let duplicate = records::customer("c-dup", "anna", at("2026-04-05T10:00:00Z"))
        .with_updated(at(V1))
        .record();
    app.record(vec![lead("c-main", V1), duplicate])
        .await
        .unwrap();
    let rate = |card: &[pb::ScorecardEntry]| {
        let v = value(card, pb::Kpi::ConversionRate);
        (v.numerator, v.denominator)
    };
    let card = scorecard(&mut kpi, rep_subject("anna"), q2()).await;
    assert_eq!(rate(&card), ("1".to_owned(), "2".to_owned()));
    // The CRM merges c-dup into c-main at V2.
    let merge = vec![
        deletion(RecordType::Customer, "c-dup", at(V2)),
        lead("c-main", V2),
    ];
    assert_eq!(counted(app.record(merge).await.unwrap()), (0, 1, 0, 0, 1));
    let card = scorecard(&mut kpi, rep_subject("anna"), q2()).await;
    assert_eq!(rate(&card), ("1".to_owned(), "1".to_owned()));
    assert_close(value(&card, pb::Kpi::ConversionRate).value, 100.0);
}

#[tokio::test]
async fn a_deletion_and_an_insert_of_the_same_new_id_racing_end_deleted() {
    let (app, mut kpi) = setup().await;
    let mut tasks = Vec::new();
    for n in 0..40 {
        let id = format!("race-{n}");
        let insert = vec![call(&id, V1)];
        let delete = vec![deletion(RecordType::Interaction, &id, at(V2))];
        let (a, b) = (app.activity.clone(), app.activity.clone());
        tasks.push(tokio::spawn(async move {
            let send = |mut client: pb::activity_service_client::ActivityServiceClient<Authed>,
                        records| async move {
                client
                    .record_activities(pb::RecordActivitiesRequest { records })
                    .await
                    .map(|r| r.into_inner().counts.unwrap_or_default())
            };
            let (x, y) = tokio::join!(send(a, insert), send(b, delete));
            (x.unwrap(), y.unwrap())
        }));
    }
    let mut total = (0, 0, 0, 0, 0);
    for task in tasks {
        let (x, y) = task.await.unwrap();
        for c in [x, y] {
            let c = counted(c);
            total = (
                total.0 + c.0,
                total.1 + c.1,
                total.2 + c.2,
                total.3 + c.3,
                total.4 + c.4,
            );
        }
    }
    // Per id: inserted then deleted, or deleted then stale.
    assert_eq!(total.4, 40, "{total:?}");
    assert_eq!(total.0 + total.3, 40, "{total:?}");
    assert_eq!(deleted_rows(&app, "interactions").await, 40);
    assert_eq!(app.count("interactions").await, 40);
    assert_eq!(anna(&mut kpi).await.0, 0.0, "the rollups agree");
}

#[tokio::test]
async fn a_bad_deletion_names_its_field() {
    let (app, _kpi) = setup().await;
    let no_type = deletion(RecordType::Unspecified, "d1", at(V1));
    let no_id = deletion(RecordType::Deal, "", at(V1));
    let mut no_version = deletion(RecordType::Deal, "d2", at(V1));
    if let Some(pb::activity_record::Record::Deletion(d)) = no_version.record.as_mut() {
        d.updated_at = None;
    }
    let future = deletion(RecordType::Deal, "d3", at("2199-01-01T00:00:00Z"));
    let status = app
        .record(vec![no_type, no_id, no_version, future])
        .await
        .unwrap_err();
    assert_invalid(
        &status,
        &[
            "records[0].deletion.record_type",
            "records[1].deletion.record_id",
            "records[2].deletion.updated_at",
            "records[3].deletion.updated_at",
        ],
    );
    assert_eq!(app.count("deals").await, 0);
}
