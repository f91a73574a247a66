//! ActivityService: idempotent, atomic, validated ingestion.

use std::collections::HashMap;

use chrono::{Duration as TimeDelta, Utc};
use kpi_service::{
    proto::pb,
    testkit::records::{self, usd},
};
use pbjson_types::Timestamp;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{TestApp, assert_invalid, at, ts};

const V1: &str = "2026-06-01T00:00:00Z";
const V2: &str = "2026-06-02T00:00:00Z";

fn interaction(id: &str, rep: &str, updated: &str) -> pb::Interaction {
    records::interaction(id, rep, pb::Channel::Call, at("2026-05-04T10:00:00Z"))
        .with_duration(300)
        .with_updated(at(updated))
}

fn call(id: &str) -> pb::ActivityRecord {
    interaction(id, "anna", V1).record()
}

fn deal(id: &str) -> pb::Deal {
    records::deal(
        id,
        "anna",
        pb::DealStage::Won,
        usd(12_500, 500_000_000),
        at("2026-04-01T09:00:00Z"),
        Some(at("2026-05-15T17:30:00Z")),
    )
    .with_customer("c1")
    .with_updated(at(V1))
}

fn customer(id: &str) -> pb::Customer {
    records::customer(id, "anna", at("2026-01-10T08:00:00Z"))
        .with_converted(Some(at("2026-02-10T08:00:00Z")))
        .with_updated(at(V1))
}

fn feedback(id: &str, kind: pb::FeedbackKind, score: i32) -> pb::Feedback {
    records::feedback(id, "anna", kind, score, at("2026-05-20T12:00:00Z"))
        .with_customer("c1")
        .with_comment("Quick and friendly")
        .with_updated(at(V1))
}

fn request(id: &str) -> pb::CustomerRequest {
    records::request(id, "anna", at("2026-05-21T09:00:00Z"))
        .with_customer("c1")
        .with_first_response(Some(at("2026-05-21T09:42:00Z")))
        .with_resolved(Some(at("2026-05-22T15:00:00Z")))
        .with_updated(at(V1))
}

/// One record of every type.
fn mixed_batch() -> Vec<pb::ActivityRecord> {
    vec![
        customer("c1").record(),
        call("i1"),
        deal("d1").record(),
        feedback("f1", pb::FeedbackKind::Nps, 9).record(),
        request("r1").record(),
    ]
}

pub(crate) fn counts(inserted: i64, updated: i64, unchanged: i64, stale: i64) -> pb::RecordCounts {
    pb::RecordCounts {
        inserted,
        updated,
        unchanged,
        stale,
        deleted: 0,
    }
}

async fn app_with_anna() -> TestApp {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.rep_in("anna", "t1").await;
    app
}

async fn stored_rows(app: &TestApp) -> i64 {
    let mut total = 0;
    for table in [
        "customers",
        "interactions",
        "deals",
        "feedback",
        "customer_requests",
    ] {
        total += app.count(table).await;
    }
    total
}

#[tokio::test]
async fn a_batch_replayed_three_times_is_stored_once() {
    let app = app_with_anna().await;
    assert_eq!(app.record(mixed_batch()).await.unwrap(), counts(5, 0, 0, 0));
    assert_eq!(app.record(mixed_batch()).await.unwrap(), counts(0, 0, 5, 0));
    assert_eq!(app.record(mixed_batch()).await.unwrap(), counts(0, 0, 5, 0));
    assert_eq!(stored_rows(&app).await, 5);
    let amount: String = sqlx::query_scalar("SELECT amount::text FROM deals WHERE deal_id = 'd1'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(amount, "12500.500000000");
}

#[tokio::test]
async fn a_batch_replayed_concurrently_is_stored_once_without_errors() {
    let app = app_with_anna().await;
    let batch: Vec<_> = (0..300)
        .map(|i| call(&format!("i{i:04}")))
        .chain(mixed_batch())
        .collect();
    let replays = (0..3).map(|_| app.record(batch.clone()));
    let results = futures::future::join_all(replays).await;
    let mut inserted = 0;
    let mut unchanged = 0;
    for result in results {
        let c = result.unwrap();
        inserted += c.inserted;
        unchanged += c.unchanged;
        assert_eq!(c.inserted + c.unchanged, 305, "{c:?}");
    }
    assert_eq!(inserted, 305, "each record inserted by exactly one replay");
    assert_eq!(unchanged, 610);
    assert_eq!(app.count("interactions").await, 301);
    assert_eq!(stored_rows(&app).await, 305);
}

#[tokio::test]
async fn newer_versions_win_and_older_ones_are_stale() {
    let app = app_with_anna().await;
    app.record(vec![call("i1")]).await.unwrap();

    let mut newer = interaction("i1", "anna", V2);
    newer.channel = pb::Channel::Meeting as i32;
    assert_eq!(
        app.record(vec![newer.record()]).await.unwrap(),
        counts(0, 1, 0, 0)
    );
    // The old version redelivered late does not roll the data back.
    assert_eq!(
        app.record(vec![call("i1")]).await.unwrap(),
        counts(0, 0, 0, 1)
    );
    let channel: i16 =
        sqlx::query_scalar("SELECT channel FROM interactions WHERE interaction_id = 'i1'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(channel, pb::Channel::Meeting as i16);

    // Within one batch the newest version wins whatever the order.
    let mut v3 = interaction("i2", "anna", "2026-06-03T00:00:00Z");
    v3.duration_seconds = Some(30);
    let result = app
        .record(vec![
            interaction("i2", "anna", V2).record(),
            v3.record(),
            interaction("i2", "anna", V1).record(),
            interaction("i2", "anna", V1).record(),
        ])
        .await
        .unwrap();
    // As if one after another: v2 inserted, v3 updates it, v1 twice stale.
    assert_eq!(result, counts(1, 1, 0, 2));
    let duration: Option<i32> =
        sqlx::query_scalar("SELECT duration_seconds FROM interactions WHERE interaction_id = 'i2'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(duration, Some(30));
}

#[tokio::test]
async fn the_same_version_with_different_content_is_rejected() {
    let app = app_with_anna().await;
    app.record(vec![call("i1")]).await.unwrap();
    let mut changed = interaction("i1", "anna", V1);
    changed.duration_seconds = Some(1);
    let status = app
        .record(vec![call("i2"), changed.clone().record()])
        .await
        .unwrap_err();
    assert_invalid(&status, &["records[1].interaction.updated_at"]);

    let status = app
        .record(vec![
            call("i3"),
            call("i3"),
            {
                let mut c = interaction("i3", "anna", V1);
                c.channel = pb::Channel::Email as i32;
                c
            }
            .record(),
        ])
        .await
        .unwrap_err();
    assert_invalid(&status, &["records[2].interaction.updated_at"]);
    assert_eq!(
        app.count("interactions").await,
        1,
        "nothing of either batch was written"
    );
}

#[tokio::test]
async fn a_batch_of_1000_with_three_bad_records_is_rejected_whole() {
    let app = app_with_anna().await;
    let mut batch: Vec<_> = (0..1000).map(|i| call(&format!("i{i:04}"))).collect();
    batch[17] = pb::Deal {
        closed_at: Some(ts("2026-03-01T00:00:00Z")),
        ..deal("d17")
    }
    .record();
    batch[400] = interaction("i0400", "ghost", V1).record();
    batch[999] = feedback("f999", pb::FeedbackKind::Csat, 6).record();
    let status = app.record(batch).await.unwrap_err();
    assert_invalid(
        &status,
        &[
            "records[17].deal.closed_at",
            "records[400].interaction.rep_id",
            "records[999].feedback.score",
        ],
    );
    assert_eq!(stored_rows(&app).await, 0);
}

#[tokio::test]
async fn a_left_out_duplicate_with_an_unknown_rep_is_still_rejected() {
    // The older of two versions in one batch is left out as stale, but its
    // rep must exist like every other record's.
    let app = app_with_anna().await;
    let batch = vec![
        interaction("i0001", "anna", V2).record(),
        interaction("i0001", "ghost", V1).record(),
    ];
    let status = app.record(batch).await.unwrap_err();
    assert_invalid(&status, &["records[1].interaction.rep_id"]);
    assert_eq!(stored_rows(&app).await, 0);
}

#[tokio::test]
async fn stored_ids_are_found_wherever_they_sit_among_a_batchs_ids() {
    // The lookup of stored versions is skipped when no stored id lies
    // between a batch's least and greatest id: check both sides of that.
    let app = app_with_anna().await;
    let v2 = |id: &str| interaction(id, "anna", V2).record();
    let stored = vec![call("i0005"), call("i0010")];
    assert_eq!(app.record(stored).await.unwrap(), counts(2, 0, 0, 0));
    // Beside the stored ids, and between them: all new.
    let beside = vec![call("i0001"), call("i0004"), call("i0011")];
    assert_eq!(app.record(beside).await.unwrap(), counts(3, 0, 0, 0));
    let between = vec![call("i0006"), call("i0009")];
    assert_eq!(app.record(between).await.unwrap(), counts(2, 0, 0, 0));
    // Stored ids at either end of a batch, and only in the middle.
    let ends = vec![v2("i0005"), call("i0007"), call("i0010")];
    assert_eq!(app.record(ends).await.unwrap(), counts(1, 1, 1, 0));
    let middle = vec![call("i0000"), v2("i0006"), call("i0012")];
    assert_eq!(app.record(middle).await.unwrap(), counts(2, 1, 0, 0));
    assert_eq!(app.count("interactions").await, 10);
}

#[tokio::test]
async fn a_rep_created_after_a_rejected_batch_is_accepted() {
    // The service remembers reps that exist, never ones that do not.
    let app = app_with_anna().await;
    let batch = vec![call("i0001"), interaction("i0002", "bob", V1).record()];
    let status = app.record(batch.clone()).await.unwrap_err();
    assert_invalid(&status, &["records[1].interaction.rep_id"]);
    app.rep_in("bob", "t1").await;
    assert_eq!(app.record(batch).await.unwrap(), counts(2, 0, 0, 0));
    assert_eq!(stored_rows(&app).await, 2);
}

#[tokio::test]
async fn a_stream_that_fails_at_batch_5_keeps_batches_1_to_4() {
    let app = app_with_anna().await;
    let mut batches: Vec<Vec<_>> = (0..6)
        .map(|b| (0..100).map(|i| call(&format!("b{b}-i{i:03}"))).collect())
        .collect();
    batches[4][42] = pb::Interaction {
        channel: 0,
        ..interaction("b4-i042", "anna", V1)
    }
    .record();
    let status = app.stream(batches.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    let info = details.error_info().unwrap();
    assert_eq!(info.reason, "BATCH_REJECTED");
    assert_eq!(
        info.metadata.get("committed_batches").map(String::as_str),
        Some("4")
    );
    // ... and what those four batches did, so the caller's sums add up.
    assert_eq!(
        info.metadata.get("inserted").map(String::as_str),
        Some("400")
    );
    for other in ["updated", "unchanged", "stale", "deleted"] {
        assert_eq!(info.metadata.get(other).map(String::as_str), Some("0"));
    }
    let fields: Vec<_> = details
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["records[42].interaction.channel"]);
    assert_eq!(app.count("interactions").await, 400);

    // Resuming from batch 5 (fixed) completes the sync, counting the rest.
    batches[4][42] = call("b4-i042");
    let resumed = app.stream(batches.split_off(4)).await.unwrap();
    assert_eq!(resumed.batches, 2);
    assert_eq!(resumed.counts, Some(counts(200, 0, 0, 0)));
    assert_eq!(app.count("interactions").await, 600);
}

#[tokio::test]
async fn a_stream_sums_its_batches() {
    let app = app_with_anna().await;
    let batches = vec![mixed_batch(), mixed_batch(), vec![call("i9")]];
    let reply = app.stream(batches).await.unwrap();
    assert_eq!(reply.batches, 3);
    assert_eq!(reply.counts, Some(counts(6, 0, 5, 0)));
}

/// Each case: a record breaking one rule, and the path it must be named by.
fn invalid_records() -> Vec<(pb::ActivityRecord, &'static str)> {
    let future = Timestamp {
        seconds: (Utc::now() + TimeDelta::hours(25)).timestamp(),
        nanos: 0,
    };
    let i = |f: &dyn Fn(&mut pb::Interaction)| {
        let mut r = interaction("i1", "anna", V1);
        f(&mut r);
        r.record()
    };
    let d = |f: &dyn Fn(&mut pb::Deal)| {
        let mut r = deal("d1");
        f(&mut r);
        r.record()
    };
    let c = |f: &dyn Fn(&mut pb::Customer)| {
        let mut r = customer("c1");
        f(&mut r);
        r.record()
    };
    let fb = |f: &dyn Fn(&mut pb::Feedback)| {
        let mut r = feedback("f1", pb::FeedbackKind::Nps, 9);
        f(&mut r);
        r.record()
    };
    let rq = |f: &dyn Fn(&mut pb::CustomerRequest)| {
        let mut r = request("r1");
        f(&mut r);
        r.record()
    };
    vec![
        (
            i(&|r| r.interaction_id.clear()),
            "records[0].interaction.interaction_id",
        ),
        (
            i(&|r| r.interaction_id = "x".repeat(129)),
            "records[0].interaction.interaction_id",
        ),
        (
            i(&|r| r.rep_id = "ghost".into()),
            "records[0].interaction.rep_id",
        ),
        (i(&|r| r.rep_id.clear()), "records[0].interaction.rep_id"),
        (i(&|r| r.channel = 0), "records[0].interaction.channel"),
        (i(&|r| r.channel = 99), "records[0].interaction.channel"),
        (
            i(&|r| r.occurred_at = None),
            "records[0].interaction.occurred_at",
        ),
        (
            i(&|r| r.occurred_at = Some(future)),
            "records[0].interaction.occurred_at",
        ),
        (
            i(&|r| r.duration_seconds = Some(-1)),
            "records[0].interaction.duration_seconds",
        ),
        (
            i(&|r| r.updated_at = None),
            "records[0].interaction.updated_at",
        ),
        (
            i(&|r| r.updated_at = Some(future)),
            "records[0].interaction.updated_at",
        ),
        (d(&|r| r.stage = 0), "records[0].deal.stage"),
        (d(&|r| r.amount = None), "records[0].deal.amount"),
        (
            d(&|r| {
                r.amount = Some(pb::Money {
                    currency_code: "USD".into(),
                    units: -5,
                    nanos: 0,
                })
            }),
            "records[0].deal.amount",
        ),
        (
            d(&|r| {
                r.amount = Some(pb::Money {
                    currency_code: "EURO".into(),
                    units: 5,
                    nanos: 0,
                })
            }),
            "records[0].deal.amount.currency_code",
        ),
        (
            d(&|r| r.closed_at = Some(ts("2026-03-31T23:59:59Z"))),
            "records[0].deal.closed_at",
        ),
        (d(&|r| r.closed_at = None), "records[0].deal.closed_at"),
        (
            d(&|r| r.stage = pb::DealStage::Open as i32),
            "records[0].deal.closed_at",
        ),
        (fb(&|r| r.kind = 0), "records[0].feedback.kind"),
        (fb(&|r| r.score = 11), "records[0].feedback.score"),
        (fb(&|r| r.score = -1), "records[0].feedback.score"),
        (
            fb(&|r| {
                r.kind = pb::FeedbackKind::Csat as i32;
                r.score = 0;
            }),
            "records[0].feedback.score",
        ),
        (
            fb(&|r| r.comment = "x".repeat(4001)),
            "records[0].feedback.comment",
        ),
        (
            c(&|r| r.converted_at = Some(ts("2026-01-09T08:00:00Z"))),
            "records[0].customer.converted_at",
        ),
        (
            c(&|r| {
                r.converted_at = None;
                r.churned_at = Some(ts("2026-03-01T00:00:00Z"));
            }),
            "records[0].customer.churned_at",
        ),
        (
            c(&|r| r.churned_at = Some(ts("2026-02-01T00:00:00Z"))),
            "records[0].customer.churned_at",
        ),
        (c(&|r| r.lead_at = None), "records[0].customer.lead_at"),
        (
            rq(&|r| r.first_response_at = Some(ts("2026-05-21T08:59:59Z"))),
            "records[0].customer_request.first_response_at",
        ),
        (
            rq(&|r| r.resolved_at = Some(ts("2026-05-20T00:00:00Z"))),
            "records[0].customer_request.resolved_at",
        ),
        (
            rq(&|r| r.opened_at = None),
            "records[0].customer_request.opened_at",
        ),
        (pb::ActivityRecord { record: None }, "records[0]"),
    ]
}

#[tokio::test]
async fn every_validation_rule_names_its_field() {
    let app = app_with_anna().await;
    for (record, path) in invalid_records() {
        let status = app.record(vec![record.clone()]).await.unwrap_err();
        assert_invalid(&status, &[path]);
    }
    let empty = app.record(vec![]).await.unwrap_err();
    assert_invalid(&empty, &["records"]);
    let too_many = app
        .record((0..1001).map(|i| call(&format!("i{i}"))).collect())
        .await
        .unwrap_err();
    assert_invalid(&too_many, &["records"]);
    assert_eq!(stored_rows(&app).await, 0);

    // The boundaries themselves are fine.
    let soon = Timestamp {
        seconds: (Utc::now() + TimeDelta::hours(23)).timestamp(),
        nanos: 0,
    };
    let edge = vec![
        pb::Interaction {
            occurred_at: Some(soon),
            duration_seconds: Some(0),
            ..interaction("edge", "anna", V1)
        }
        .record(),
        feedback("nps0", pb::FeedbackKind::Nps, 0).record(),
        feedback("nps10", pb::FeedbackKind::Nps, 10).record(),
        feedback("csat1", pb::FeedbackKind::Csat, 1).record(),
        pb::Deal {
            stage: pb::DealStage::Open as i32,
            closed_at: None,
            amount: Some(pb::Money {
                currency_code: "USD".into(),
                units: 0,
                nanos: 0,
            }),
            ..deal("open")
        }
        .record(),
        pb::Deal {
            closed_at: Some(ts("2026-04-01T09:00:00Z")),
            ..deal("same-day")
        }
        .record(),
    ];
    assert_eq!(app.record(edge).await.unwrap(), counts(6, 0, 0, 0));
}

#[tokio::test]
async fn all_violations_of_a_batch_are_listed_together() {
    let app = app_with_anna().await;
    let batch: Vec<_> = invalid_records().into_iter().map(|(r, _)| r).collect();
    let expected: Vec<String> = invalid_records()
        .iter()
        .enumerate()
        .map(|(n, (_, path))| path.replacen("records[0]", &format!("records[{n}]"), 1))
        .collect();
    let status = app.record(batch).await.unwrap_err();
    let named: Vec<String> = status
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    // A record may break a rule in more than one field; each expected path
    // must be among the reported ones.
    let reported: HashMap<&str, usize> = named.iter().map(|f| (f.as_str(), 0)).collect();
    for path in &expected {
        assert!(
            reported.contains_key(path.as_str()),
            "{path} not reported: {named:?}"
        );
    }
}

#[tokio::test]
async fn an_oversized_message_gets_resource_exhausted() {
    let app = app_with_anna().await;
    // ~20 MiB: over the 16 MiB limit, whatever the records say.
    let huge: Vec<_> = (0..1000)
        .map(|n| {
            pb::Feedback {
                comment: "x".repeat(20 * 1024),
                ..feedback(&format!("f{n}"), pb::FeedbackKind::Nps, 9)
            }
            .record()
        })
        .collect();
    let status = app.record(huge.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let status = app.stream(vec![huge]).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // The service is fine afterwards.
    assert_eq!(
        app.record(vec![call("i1")]).await.unwrap(),
        counts(1, 0, 0, 0)
    );
}

#[tokio::test]
async fn timestamps_are_kept_to_the_microsecond_so_replays_match() {
    let app = app_with_anna().await;
    let mut precise = interaction("i1", "anna", V1);
    precise.occurred_at = Some(Timestamp {
        seconds: 1_780_000_000,
        nanos: 123_456_789,
    });
    let batch = vec![precise.record()];
    assert_eq!(app.record(batch.clone()).await.unwrap(), counts(1, 0, 0, 0));
    assert_eq!(app.record(batch).await.unwrap(), counts(0, 0, 1, 0));
}
