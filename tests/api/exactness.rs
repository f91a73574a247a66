//! The rollups give exactly the answer of the raw records: generated data
//! (with corrections that move records between buckets and reps), many
//! periods, time zones with :30 and :45 offsets and DST, every subject.

use chrono::{Days, NaiveDate};
use kpi_service::{
    config::DemoOptions,
    demo,
    domain::{
        period::{Period, parse_zone},
        tally::{TallyQuery, rep_query, team_query},
    },
    proto::pb::{self, activity_record::Record},
    store::kpi::{self as store, Source},
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::helpers::TestApp;

fn options() -> DemoOptions {
    DemoOptions {
        client: Default::default(),
        seed: 7,
        reps: 6,
        days: 150,
        end_date: NaiveDate::from_ymd_opt(2026, 6, 30),
        interactions_per_day: 5.0,
        concurrency: 1,
        batch_size: 1000,
    }
}

/// A CRM correction: a newer version with other content.
fn corrected(record: &pb::ActivityRecord, n: usize) -> Option<pb::ActivityRecord> {
    let bump = |ts: &Option<pbjson_types::Timestamp>| {
        ts.map(|t| pbjson_types::Timestamp {
            seconds: t.seconds + 86_400 * 30,
            nanos: 0,
        })
    };
    let record = match record.record.clone()? {
        Record::Interaction(mut r) => {
            r.channel = (r.channel % 5) + 1;
            r.occurred_at = r.occurred_at.map(|t| pbjson_types::Timestamp {
                seconds: t.seconds + 3 * 3600 + 15 * 60,
                nanos: 0,
            });
            r.updated_at = bump(&r.updated_at);
            Record::Interaction(r)
        }
        Record::Customer(mut r) => {
            // Hand the customer to another rep.
            r.rep_id = format!("rep-{:03}", (n % 6 + 1) % 6);
            r.updated_at = bump(&r.updated_at);
            Record::Customer(r)
        }
        Record::Deal(mut r) => {
            if let Some(amount) = r.amount.as_mut() {
                amount.units += 1;
                // Other currencies (CHF without a rate until late), and
                // nanos that exercise the rounding.
                amount.currency_code = ["EUR", "GBP", "CHF", "USD"][n % 4].into();
                amount.nanos = i32::try_from(n * 7_654_321 % 1_000_000_000).unwrap();
            }
            r.updated_at = bump(&r.updated_at);
            Record::Deal(r)
        }
        _ => return None,
    };
    Some(pb::ActivityRecord {
        record: Some(record),
    })
}

/// A record's type, id and version (`updated_at`).
fn identity(
    record: &pb::ActivityRecord,
) -> Option<(pb::RecordType, String, pbjson_types::Timestamp)> {
    use pb::RecordType as T;
    Some(match record.record.as_ref()? {
        Record::Customer(r) => (T::Customer, r.customer_id.clone(), r.updated_at?),
        Record::Interaction(r) => (T::Interaction, r.interaction_id.clone(), r.updated_at?),
        Record::Deal(r) => (T::Deal, r.deal_id.clone(), r.updated_at?),
        Record::Feedback(r) => (T::Feedback, r.feedback_id.clone(), r.updated_at?),
        Record::CustomerRequest(r) => (T::CustomerRequest, r.request_id.clone(), r.updated_at?),
        Record::Deletion(_) => return None,
    })
}

/// The record's deletion, `seconds` after its original version.
fn deletion_of(record: &pb::ActivityRecord, seconds: i64) -> Option<pb::ActivityRecord> {
    let (record_type, id, version) = identity(record)?;
    Some(pb::ActivityRecord {
        record: Some(Record::Deletion(pb::Deletion {
            record_type: record_type as i32,
            record_id: id,
            updated_at: Some(pbjson_types::Timestamp {
                seconds: version.seconds + seconds,
                nanos: 0,
            }),
        })),
    })
}

/// The record as it was first sent, `seconds` after its original version.
fn reversioned(record: &pb::ActivityRecord, seconds: i64) -> Option<pb::ActivityRecord> {
    let bump = |ts: &mut Option<pbjson_types::Timestamp>| {
        if let Some(t) = ts.as_mut() {
            t.seconds += seconds;
            t.nanos = 0;
        }
    };
    let mut record = record.clone();
    match record.record.as_mut()? {
        Record::Customer(r) => bump(&mut r.updated_at),
        Record::Interaction(r) => bump(&mut r.updated_at),
        Record::Deal(r) => bump(&mut r.updated_at),
        Record::Feedback(r) => bump(&mut r.updated_at),
        Record::CustomerRequest(r) => bump(&mut r.updated_at),
        Record::Deletion(_) => return None,
    }
    Some(record)
}

#[tokio::test]
async fn rollups_equal_raw_records_in_every_zone_and_for_every_subject() {
    let app = TestApp::spawn().await;
    let options = options();
    for team in demo::teams() {
        app.upsert_team(&team.team_id, &team.display_name, &team.parent_team_id)
            .await
            .unwrap();
    }
    let now = chrono::Utc::now();
    let (start, end) = demo::span(&options, now);
    for rep in demo::reps(&options)
        .into_iter()
        .chain(demo::moves(&options, start, end))
    {
        app.upsert_rep(rep).await.unwrap();
    }
    let mut all = Vec::new();
    for batch in demo::batches(&options, start, end) {
        app.record(batch.clone()).await.unwrap();
        all.extend(batch);
    }
    // Correct every fifth record.
    let corrections: Vec<_> = all
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 5 == 0)
        .filter_map(|(n, r)| corrected(r, n))
        .collect();
    // EUR rates before the deals move to EUR, GBP after (the re-conversion
    // path), CHF only from day 75 (earlier CHF deals stay unconverted),
    // then a correction of EUR's second rate.
    let mut rates = kpi_service::proto::pb::exchange_rate_service_client::ExchangeRateServiceClient::with_interceptor(
        app.channel.clone(),
        crate::helpers::Bearer::new(&app.admin_key),
    );
    let day = |d: i64| {
        (start + chrono::TimeDelta::days(d))
            .date_naive()
            .to_string()
    };
    let mut set_rates = async |list: &[(&str, String, &str)]| {
        let rates_list = list
            .iter()
            .map(|(c, d, r)| pb::ExchangeRate {
                currency_code: (*c).into(),
                effective_date: d.clone(),
                rate: (*r).into(),
            })
            .collect();
        rates
            .set_exchange_rates(pb::SetExchangeRatesRequest { rates: rates_list })
            .await
            .unwrap()
            .into_inner()
    };
    set_rates(&[("EUR", day(-400), "1.0845"), ("EUR", day(60), "1.0912345")]).await;
    for chunk in corrections.chunks(1000) {
        let counts = app.record(chunk.to_vec()).await.unwrap();
        assert_eq!(counts.updated as usize, chunk.len());
    }
    let gbp = set_rates(&[
        ("GBP", day(-400), "1.2673915"),
        ("CHF", day(75), "0.9876543"),
    ])
    .await;
    assert!(gbp.deals_reconverted > 0, "{gbp:?}");
    let eur = set_rates(&[("EUR", day(60), "1.0912346")]).await;
    assert!(eur.deals_reconverted > 0, "{eur:?}");
    assert!(all.len() > 3000, "only {} records", all.len());
    // Delete every seventh record (after its correction), restore every
    // third of those with a newer version, send stale deletions of every
    // eleventh and delete ids never seen: the rollups must follow.
    let deletions: Vec<_> = all
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 7 == 3)
        .filter_map(|(_, r)| deletion_of(r, 86_400 * 60))
        .collect();
    for chunk in deletions.chunks(1000) {
        let counts = app.record(chunk.to_vec()).await.unwrap();
        assert_eq!(counts.deleted as usize, chunk.len());
    }
    let restored: Vec<_> = all
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 21 == 3)
        .filter_map(|(_, r)| reversioned(r, 86_400 * 90))
        .collect();
    let stale: Vec<_> = all
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 11 == 5)
        .filter_map(|(_, r)| deletion_of(r, -86_400))
        .collect();
    let ghosts: Vec<_> = (0..20)
        .map(|n| {
            kpi_service::testkit::records::deletion(
                pb::RecordType::Deal,
                format!("ghost-{n}"),
                now - chrono::TimeDelta::days(1),
            )
        })
        .collect();
    let counts = app.record(restored.clone()).await.unwrap();
    assert_eq!(counts.inserted as usize, restored.len());
    for chunk in stale.chunks(1000) {
        let counts = app.record(chunk.to_vec()).await.unwrap();
        assert_eq!(counts.stale as usize, chunk.len());
    }
    assert_eq!(app.record(ghosts).await.unwrap().deleted, 20);

    let zones = [
        "UTC",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "America/New_York",
        "Europe/Berlin",
        "Pacific/Chatham",
        "Australia/Lord_Howe",
    ];
    let mut subjects: Vec<(bool, String)> =
        (0..6).map(|i| (false, format!("rep-{i:03}"))).collect();
    subjects.extend(demo::teams().into_iter().map(|t| (true, t.team_id)));
    let first = start.date_naive();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut checked = 0;
    for zone in zones {
        let zone = parse_zone(zone).unwrap();
        // Periods of 1 day to 4 months, plus ones around the DST changes.
        let mut periods: Vec<Period> = (0..6)
            .map(|_| {
                let s = first + Days::new(rng.random_range(0..140));
                let e = s + Days::new(rng.random_range(0..120));
                Period::new(s, e, zone).unwrap()
            })
            .collect();
        for (s, e) in [
            ("2026-03-08", "2026-03-08"),
            ("2026-03-29", "2026-04-05"),
            ("2026-04-05", "2026-04-05"),
            ("2026-02-01", "2026-06-30"),
        ] {
            let (s, e) = (s.parse().unwrap(), e.parse().unwrap());
            periods.push(Period::new(s, e, zone).unwrap());
        }
        // Each with its previous period, as a scorecard asks (the rollup
        // path then chains retention counts; the raw path never does).
        let mut periods: Vec<Period> = periods.iter().flat_map(|p| [*p, p.previous()]).collect();
        // And a daily series of 60 days: one group read by 60+ parts per
        // level, which the rollup path reads once over their span.
        periods.extend((0..60).map(|d| {
            let day = first + Days::new(d);
            Period::new(day, day, zone).unwrap()
        }));
        // Days and a long period that start before the first record: the
        // rollup path skips the months without activity, and must still
        // count the ones with it (the edge month included).
        periods.extend((0..40).map(|d| {
            let day = first - Days::new(20) + Days::new(d);
            Period::new(day, day, zone).unwrap()
        }));
        periods.push(Period::new(first - Days::new(400), first + Days::new(20), zone).unwrap());
        let mut queries: Vec<TallyQuery> = Vec::new();
        for (is_team, id) in &subjects {
            if *is_team {
                let team = kpi_service::store::directory::membership(&app.db, id)
                    .await
                    .unwrap()
                    .unwrap();
                for p in &periods {
                    queries.push(team_query(&team, p.start_time(), p.end_time()));
                }
            } else {
                for p in &periods {
                    queries.push(rep_query(id, p.start_time(), p.end_time()));
                }
            }
        }
        let fast = store::tallies(&app.db, &queries, Source::Rollups, "USD")
            .await
            .unwrap();
        let slow = store::tallies(&app.db, &queries, Source::Raw, "USD")
            .await
            .unwrap();
        assert_eq!(fast.len(), slow.len());
        for (i, (f, s)) in fast.iter().zip(&slow).enumerate() {
            assert_eq!(f, s, "zone {zone}, query {i}");
        }
        assert!(
            slow.iter().any(|t| t.sums.iter().any(|v| *v != 0)),
            "nothing counted in {zone}"
        );
        assert!(
            slow.iter()
                .any(|t| t.retention.active_at_start > 0 && t.retention.churned > 0),
            "no retention counted in {zone}"
        );
        assert!(
            slow.iter()
                .any(|t| t.get(kpi_service::domain::sums::Metric::WonUnconverted) > 0),
            "no deal without a rate in {zone}"
        );
        checked += queries.len();
    }
    eprintln!("{checked} tallies identical from rollups and raw records");

    // ExplainKpi lists records that add up to every value exactly, after
    // the corrections, deletions and re-conversions above.
    let mut client = kpi_service::proto::pb::kpi_service_client::KpiServiceClient::with_interceptor(
        app.channel.clone(),
        crate::helpers::Bearer::new(&app.admin_key),
    );
    let mut explained = 0;
    for (zone, s, e) in [
        (
            "Pacific/Chatham",
            first + Days::new(10),
            first + Days::new(130),
        ),
        (
            "America/New_York",
            first + Days::new(40),
            first + Days::new(70),
        ),
    ] {
        for (is_team, id) in &subjects {
            let subject = Some(pb::Subject {
                subject: Some(if *is_team {
                    pb::subject::Subject::TeamId(id.clone())
                } else {
                    pb::subject::Subject::RepId(id.clone())
                }),
            });
            for kpi in (1..=18).map(|n| pb::Kpi::try_from(n).unwrap()) {
                let request = pb::ExplainKpiRequest {
                    subject: subject.clone(),
                    kpi: kpi as i32,
                    period: Some(pb::Period {
                        start_date: s.to_string(),
                        end_date: e.to_string(),
                        time_zone: zone.into(),
                        ..Default::default()
                    }),
                    part: 0,
                    page_size: 1000,
                    page_token: String::new(),
                };
                let (value, all) = crate::explain::all_pages(&mut client, request).await;
                let sum = |side: fn(&pb::KpiContribution) -> &str| -> i128 {
                    all.iter().map(|c| crate::explain::nanos(side(c))).sum()
                };
                let what = format!("{kpi:?} of {id} in {zone}");
                assert_eq!(
                    sum(|c| &c.numerator),
                    crate::explain::nanos(&value.numerator),
                    "{what}"
                );
                let denominator = if crate::explain::CONSTANT_DENOMINATOR.contains(&kpi) {
                    "0"
                } else {
                    &value.denominator
                };
                assert_eq!(
                    sum(|c| &c.denominator),
                    crate::explain::nanos(denominator),
                    "{what}"
                );
                explained += all.len();
            }
        }
    }
    assert!(explained > 10_000, "only {explained} contributions");
    eprintln!("{explained} contributions add up to their values");
}
