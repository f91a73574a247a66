//! KpiService against small datasets worked out by hand (docs/KPIS.md
//! walks through the same numbers); `targets` reuses the data set. One
//! concern: most of the length is the data set and its hand-worked values.

use kpi_service::{
    proto::pb::{
        self, kpi_service_client::KpiServiceClient, target_service_client::TargetServiceClient,
    },
    testkit::records::{self, usd},
};
use tonic::Code;

use crate::helpers::{Authed, Bearer, TestApp, assert_invalid, at, rep, ts};

const V: &str = "2026-07-10T00:00:00Z";

// The records of these tests, on `testkit::records`: every version is V.

pub(crate) fn interaction(
    id: &str,
    rep: &str,
    channel: pb::Channel,
    when: &str,
) -> pb::ActivityRecord {
    records::interaction(id, rep, channel, at(when))
        .with_updated(at(V))
        .record()
}

pub(crate) fn customer(
    id: &str,
    rep: &str,
    lead: &str,
    converted: Option<&str>,
    churned: Option<&str>,
) -> pb::ActivityRecord {
    records::customer(id, rep, at(lead))
        .with_converted(converted.map(at))
        .with_churned(churned.map(at))
        .with_updated(at(V))
        .record()
}

pub(crate) fn deal(
    id: &str,
    rep: &str,
    stage: pb::DealStage,
    units: i64,
    nanos: i32,
    created: &str,
    closed: Option<&str>,
) -> pb::ActivityRecord {
    records::deal(
        id,
        rep,
        stage,
        usd(units, nanos),
        at(created),
        closed.map(at),
    )
    .with_updated(at(V))
    .record()
}

pub(crate) fn feedback(
    id: &str,
    rep: &str,
    kind: pb::FeedbackKind,
    score: i32,
    when: &str,
) -> pb::ActivityRecord {
    records::feedback(id, rep, kind, score, at(when))
        .with_updated(at(V))
        .record()
}

pub(crate) fn request(
    id: &str,
    rep: &str,
    opened: &str,
    responded: Option<&str>,
    resolved: Option<&str>,
) -> pb::ActivityRecord {
    records::request(id, rep, at(opened))
        .with_first_response(responded.map(at))
        .with_resolved(resolved.map(at))
        .with_updated(at(V))
        .record()
}

/// region > team-a, team-b. anna in team-a; bob in team-a until he moves
/// to team-b on 2026-05-02; cara and dan in team-b. Q2 2026 is the period.
pub(crate) async fn sales_org() -> (
    TestApp,
    KpiServiceClient<Authed>,
    TargetServiceClient<Authed>,
) {
    use pb::{Channel::*, DealStage::*, FeedbackKind::*};
    let app = TestApp::spawn().await;
    app.upsert_team("region", "Region", "").await.unwrap();
    app.upsert_team("team-a", "Team A", "region").await.unwrap();
    app.upsert_team("team-b", "Team B", "region").await.unwrap();
    for (r, team) in [
        ("anna", "team-a"),
        ("bob", "team-a"),
        ("cara", "team-b"),
        ("dan", "team-b"),
    ] {
        app.rep_in(r, team).await;
    }
    let mut moved = rep("bob", "team-b");
    moved.team_effective_time = Some(ts("2026-05-02T00:00:00Z"));
    app.upsert_rep(moved).await.unwrap();

    let records = vec![
        // anna: 3 calls, 2 emails, 1 meeting in Q2; one call just before it.
        interaction("a-i1", "anna", Call, "2026-04-01T00:00:00Z"),
        interaction("a-i2", "anna", Call, "2026-05-15T12:00:00Z"),
        interaction("a-i3", "anna", Call, "2026-06-30T23:59:59Z"),
        interaction("a-i4", "anna", Email, "2026-04-03T09:00:00Z"),
        interaction("a-i5", "anna", Email, "2026-04-04T09:00:00Z"),
        interaction("a-i6", "anna", Meeting, "2026-06-01T15:00:00Z"),
        interaction("a-i7", "anna", Call, "2026-03-31T23:30:00Z"),
        // anna's customers.
        customer(
            "c1",
            "anna",
            "2026-04-02T10:00:00Z",
            Some("2026-04-20T10:00:00Z"),
            None,
        ),
        customer("c2", "anna", "2026-04-05T10:00:00Z", None, None),
        customer(
            "c3",
            "anna",
            "2026-05-01T10:00:00Z",
            Some("2026-07-02T10:00:00Z"),
            None,
        ),
        customer(
            "c4",
            "anna",
            "2026-01-10T10:00:00Z",
            Some("2026-02-01T10:00:00Z"),
            Some("2026-05-15T10:00:00Z"),
        ),
        customer(
            "c5",
            "anna",
            "2026-01-05T10:00:00Z",
            Some("2026-01-20T10:00:00Z"),
            None,
        ),
        customer(
            "c6",
            "anna",
            "2025-12-01T10:00:00Z",
            Some("2025-12-15T10:00:00Z"),
            Some("2026-03-01T10:00:00Z"),
        ),
        // anna's deals: won 1000.50 in 10 days, won 2000.25 in 60 days,
        // one lost, one open.
        deal(
            "d1",
            "anna",
            Won,
            1000,
            500_000_000,
            "2026-04-01T00:00:00Z",
            Some("2026-04-11T00:00:00Z"),
        ),
        deal(
            "d2",
            "anna",
            Won,
            2000,
            250_000_000,
            "2026-03-02T00:00:00Z",
            Some("2026-05-01T00:00:00Z"),
        ),
        deal(
            "d3",
            "anna",
            Lost,
            700,
            0,
            "2026-04-01T00:00:00Z",
            Some("2026-05-10T00:00:00Z"),
        ),
        deal("d4", "anna", Open, 900, 0, "2026-06-01T00:00:00Z", None),
        // anna's feedback: NPS 10, 9, 8, 6, 3; CSAT 5, 4, 2.
        feedback("f1", "anna", Nps, 10, "2026-04-10T00:00:00Z"),
        feedback("f2", "anna", Nps, 9, "2026-04-11T00:00:00Z"),
        feedback("f3", "anna", Nps, 8, "2026-04-12T00:00:00Z"),
        feedback("f4", "anna", Nps, 6, "2026-04-13T00:00:00Z"),
        feedback("f5", "anna", Nps, 3, "2026-04-14T00:00:00Z"),
        feedback("f6", "anna", Csat, 5, "2026-04-15T00:00:00Z"),
        feedback("f7", "anna", Csat, 4, "2026-04-16T00:00:00Z"),
        feedback("f8", "anna", Csat, 2, "2026-04-17T00:00:00Z"),
        // anna's requests: answered in 30 and 90 minutes, one unanswered;
        // two of three resolved.
        request(
            "r1",
            "anna",
            "2026-04-10T10:00:00Z",
            Some("2026-04-10T10:30:00Z"),
            Some("2026-04-11T10:00:00Z"),
        ),
        request(
            "r2",
            "anna",
            "2026-04-11T10:00:00Z",
            Some("2026-04-11T11:30:00Z"),
            None,
        ),
        request(
            "r3",
            "anna",
            "2026-04-12T10:00:00Z",
            None,
            Some("2026-04-13T10:00:00Z"),
        ),
        // bob: one call in team-a, one in team-b; a deal won in team-b.
        interaction("b-i1", "bob", Call, "2026-05-01T12:00:00Z"),
        interaction("b-i2", "bob", Call, "2026-05-20T12:00:00Z"),
        deal(
            "d5",
            "bob",
            Won,
            500,
            0,
            "2026-05-01T00:00:00Z",
            Some("2026-05-03T00:00:00Z"),
        ),
        // cara: 4 emails, one promoter.
        interaction("c-i1", "cara", Email, "2026-06-01T08:00:00Z"),
        interaction("c-i2", "cara", Email, "2026-06-02T08:00:00Z"),
        interaction("c-i3", "cara", Email, "2026-06-03T08:00:00Z"),
        interaction("c-i4", "cara", Email, "2026-06-04T08:00:00Z"),
        feedback("f9", "cara", Nps, 10, "2026-06-05T00:00:00Z"),
        // dan: 2 calls (ties with bob).
        interaction("d-i1", "dan", Call, "2026-04-20T08:00:00Z"),
        interaction("d-i2", "dan", Call, "2026-04-21T08:00:00Z"),
    ];
    app.record(records).await.unwrap();
    let bearer = Bearer::new(&app.admin_key);
    let kpi = KpiServiceClient::with_interceptor(app.channel.clone(), bearer.clone());
    let targets = TargetServiceClient::with_interceptor(app.channel.clone(), bearer);
    (app, kpi, targets)
}

pub(crate) fn q2() -> Option<pb::Period> {
    Some(pb::Period {
        start_date: "2026-04-01".into(),
        end_date: "2026-06-30".into(),
        time_zone: "UTC".into(),
        ..Default::default()
    })
}

pub(crate) fn rep_subject(id: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        subject: Some(pb::subject::Subject::RepId(id.into())),
    })
}

pub(crate) fn team_subject(id: &str) -> Option<pb::Subject> {
    Some(pb::Subject {
        subject: Some(pb::subject::Subject::TeamId(id.into())),
    })
}

pub(crate) async fn scorecard(
    client: &mut KpiServiceClient<Authed>,
    subject: Option<pb::Subject>,
    period: Option<pb::Period>,
) -> Vec<pb::ScorecardEntry> {
    client
        .get_scorecard(pb::GetScorecardRequest {
            subject,
            period,
            kpis: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}

pub(crate) fn find(entries: &[pb::ScorecardEntry], kpi: pb::Kpi) -> pb::ScorecardEntry {
    entries
        .iter()
        .find(|e| e.current.as_ref().is_some_and(|c| c.kpi == kpi as i32))
        .cloned()
        .unwrap_or_else(|| panic!("{kpi:?} missing"))
}

pub(crate) fn value(entries: &[pb::ScorecardEntry], kpi: pb::Kpi) -> pb::KpiValue {
    find(entries, kpi).current.unwrap()
}

#[track_caller]
pub(crate) fn assert_close(actual: Option<f64>, expected: f64) {
    let actual = actual.unwrap_or(f64::NAN);
    assert!((actual - expected).abs() < 1e-6, "{actual} != {expected}");
}

#[tokio::test]
async fn a_reps_scorecard_matches_the_hand_worked_values() {
    let (_app, mut kpi, _) = sales_org().await;
    let anna = scorecard(&mut kpi, rep_subject("anna"), q2()).await;
    assert_eq!(anna.len(), 18, "all KPIs by default");
    use pb::Kpi as K;

    let calls = value(&anna, K::Calls);
    assert_eq!(
        (
            calls.value,
            calls.numerator.as_str(),
            calls.denominator.as_str()
        ),
        (Some(3.0), "3", "1")
    );
    assert_close(value(&anna, K::Emails).value, 2.0);
    assert_close(value(&anna, K::Meetings).value, 1.0);
    assert_close(value(&anna, K::Interactions).value, 6.0);
    assert_close(value(&anna, K::Leads).value, 3.0);
    assert_close(value(&anna, K::NewCustomers).value, 1.0);

    let conversion = value(&anna, K::ConversionRate);
    assert_close(conversion.value, 200.0 / 3.0);
    assert_eq!(
        (
            conversion.numerator.as_str(),
            conversion.denominator.as_str(),
            conversion.sample_size
        ),
        ("2", "3", 3)
    );
    let interval = conversion.interval.unwrap();
    assert_eq!(interval.method, "wilson");
    assert!(
        (interval.low - 20.765960).abs() < 1e-4 && (interval.high - 93.850806).abs() < 1e-4,
        "{interval:?}"
    );

    let retention = value(&anna, K::RetentionRate);
    assert_close(retention.value, 50.0);
    assert_eq!(
        (retention.numerator.as_str(), retention.denominator.as_str()),
        ("1", "2")
    );
    assert_close(value(&anna, K::ChurnRate).value, 50.0);

    let nps = value(&anna, K::Nps);
    assert_close(nps.value, 0.0);
    assert_eq!((nps.promoters, nps.detractors, nps.sample_size), (2, 2, 5));
    let interval = nps.interval.unwrap();
    assert!(
        (interval.low + 78.398559).abs() < 1e-4 && (interval.high - 78.398559).abs() < 1e-4,
        "{interval:?}"
    );
    assert_close(value(&anna, K::Csat).value, 200.0 / 3.0);

    let win = value(&anna, K::WinRate);
    assert_close(win.value, 200.0 / 3.0);
    assert_eq!(
        (win.numerator.as_str(), win.denominator.as_str()),
        ("2", "3")
    );
    let revenue = value(&anna, K::Revenue);
    assert_eq!(revenue.numerator, "3000.75");
    let money = revenue.money.unwrap();
    assert_eq!(
        (money.currency_code.as_str(), money.units, money.nanos),
        ("USD", 3000, 750_000_000)
    );
    assert_close(value(&anna, K::DealsWon).value, 2.0);
    let average = value(&anna, K::AverageDealSize);
    assert_eq!(
        average.money.map(|m| (m.units, m.nanos)),
        Some((1500, 375_000_000))
    );
    let cycle = value(&anna, K::SalesCycleDays);
    assert_close(cycle.value, 35.0);
    assert_eq!(
        (cycle.numerator.as_str(), cycle.denominator.as_str()),
        ("6048000", "2"),
        "seconds over deals"
    );

    let response = value(&anna, K::FirstResponseMinutes);
    assert_close(response.value, 60.0);
    assert_eq!(
        (response.numerator.as_str(), response.denominator.as_str()),
        ("7200", "2")
    );
    assert_close(value(&anna, K::RequestResolutionRate).value, 200.0 / 3.0);

    // The previous period of equal length (91 days: 2025-12-31 to
    // 2026-03-31) and the change.
    let calls = find(&anna, K::Calls);
    assert_close(calls.previous.unwrap().value, 1.0);
    assert_close(calls.change, 2.0);
    let new_customers = find(&anna, K::NewCustomers);
    assert_close(new_customers.previous.unwrap().value, 2.0);
    assert_close(new_customers.change, -1.0);
}

#[tokio::test]
async fn undefined_kpis_have_no_value_and_say_why() {
    let (_app, mut kpi, _) = sales_org().await;
    let cara = scorecard(&mut kpi, rep_subject("cara"), q2()).await;
    for k in [
        pb::Kpi::WinRate,
        pb::Kpi::ConversionRate,
        pb::Kpi::RetentionRate,
        pb::Kpi::Csat,
        pb::Kpi::SalesCycleDays,
        pb::Kpi::AverageDealSize,
        pb::Kpi::FirstResponseMinutes,
    ] {
        let v = value(&cara, k);
        assert_eq!(v.value, None, "{k:?}");
        assert!(!v.undefined_reason.is_empty(), "{k:?}");
        assert_eq!(v.denominator, "0");
    }
    assert_close(value(&cara, pb::Kpi::Nps).value, 100.0);
    assert_close(value(&cara, pb::Kpi::Revenue).value, 0.0);
    let change = find(&cara, pb::Kpi::WinRate).change;
    assert_eq!(change, None);
}

#[tokio::test]
async fn teams_pool_their_members_and_credit_the_team_of_the_moment() {
    let (_app, mut kpi, _) = sales_org().await;
    use pb::Kpi as K;
    // bob's first call (1 May) is team-a's, his second (20 May) and his
    // won deal (3 May) are team-b's: he moved on 2 May.
    let a = scorecard(&mut kpi, team_subject("team-a"), q2()).await;
    assert_close(value(&a, K::Calls).value, 4.0);
    assert_close(value(&a, K::Interactions).value, 7.0);
    assert_close(value(&a, K::DealsWon).value, 2.0);
    assert_eq!(value(&a, K::Revenue).numerator, "3000.75");
    let b = scorecard(&mut kpi, team_subject("team-b"), q2()).await;
    assert_close(value(&b, K::Calls).value, 3.0);
    assert_close(value(&b, K::Emails).value, 4.0);
    assert_close(value(&b, K::WinRate).value, 100.0);
    assert_close(value(&b, K::SalesCycleDays).value, 2.0);

    // The region includes both teams and pools numerators and
    // denominators, never averages rates.
    let region = scorecard(&mut kpi, team_subject("region"), q2()).await;
    assert_close(value(&region, K::Interactions).value, 14.0);
    let win = value(&region, K::WinRate);
    assert_eq!(
        (win.numerator.as_str(), win.denominator.as_str()),
        ("3", "4")
    );
    assert_close(win.value, 75.0);
    assert_eq!(value(&region, K::Revenue).numerator, "3500.75");
    let average = value(&region, K::AverageDealSize);
    assert_eq!(
        average.money.map(|m| (m.units, m.nanos)),
        Some((1166, 916_666_667))
    );
    assert_close(value(&region, K::SalesCycleDays).value, 24.0);
    let nps = value(&region, K::Nps);
    assert_eq!((nps.promoters, nps.detractors, nps.sample_size), (3, 2, 6));
    assert_close(nps.value, 100.0 / 6.0);

    // Before the move, the whole of April and 1 May: bob's first call is
    // team-a's.
    let april = scorecard(
        &mut kpi,
        team_subject("team-a"),
        Some(pb::Period {
            start_date: "2026-04-01".into(),
            end_date: "2026-05-01".into(),
            time_zone: "UTC".into(),
            ..Default::default()
        }),
    )
    .await;
    assert_close(value(&april, K::Calls).value, 2.0);
}

async fn daily_counts(
    kpi: &mut KpiServiceClient<Authed>,
    zone: &str,
    start: &str,
    end: &str,
) -> Vec<(String, f64)> {
    kpi.get_kpi_series(pb::GetKpiSeriesRequest {
        subject: rep_subject("dst"),
        kpi: pb::Kpi::Interactions as i32,
        period: Some(pb::Period {
            start_date: start.into(),
            end_date: end.into(),
            time_zone: zone.into(),
            ..Default::default()
        }),
        granularity: pb::Granularity::Day as i32,
    })
    .await
    .unwrap()
    .into_inner()
    .points
    .into_iter()
    .map(|p| (p.start_date, p.value.and_then(|v| v.value).unwrap_or(-1.0)))
    .collect()
}

#[tokio::test]
async fn dst_days_in_new_york_and_berlin_count_their_own_hours() {
    let (app, mut kpi, _) = sales_org().await;
    app.rep_in("dst", "team-a").await;
    use pb::Channel::Call;
    app.record(vec![
        // New York, spring forward on 2026-03-08 (a 23-hour day).
        interaction("ny1", "dst", Call, "2026-03-08T04:59:59Z"), // 7 Mar 23:59:59 EST
        interaction("ny2", "dst", Call, "2026-03-08T05:00:00Z"), // 8 Mar 00:00 EST
        interaction("ny3", "dst", Call, "2026-03-09T03:59:59Z"), // 8 Mar 23:59:59 EDT
        interaction("ny4", "dst", Call, "2026-03-09T04:00:00Z"), // 9 Mar 00:00 EDT
        // Berlin, fall back on 2026-10-25 (a 25-hour day).
        interaction("be1", "dst", Call, "2026-10-24T21:59:59Z"), // 24 Oct 23:59:59 CEST
        interaction("be2", "dst", Call, "2026-10-24T22:00:00Z"), // 25 Oct 00:00 CEST
        interaction("be3", "dst", Call, "2026-10-25T22:59:59Z"), // 25 Oct 23:59:59 CET
        interaction("be4", "dst", Call, "2026-10-25T23:00:00Z"), // 26 Oct 00:00 CET
    ])
    .await
    .unwrap();
    assert_eq!(
        daily_counts(&mut kpi, "America/New_York", "2026-03-07", "2026-03-09").await,
        [
            ("2026-03-07".into(), 1.0),
            ("2026-03-08".into(), 2.0),
            ("2026-03-09".into(), 1.0)
        ]
    );
    assert_eq!(
        daily_counts(&mut kpi, "Europe/Berlin", "2026-10-24", "2026-10-26").await,
        [
            ("2026-10-24".into(), 1.0),
            ("2026-10-25".into(), 2.0),
            ("2026-10-26".into(), 1.0)
        ]
    );
}

/// A daily series long enough that the days without activity are not
/// planned (none of the subject's reps active in their months) gives, day
/// by day, what a scorecard of that day gives; retention (which cannot
/// skip quiet days) too.
#[tokio::test]
async fn a_long_daily_series_skips_quiet_months_and_keeps_every_value() {
    let (_app, mut kpi, _) = sales_org().await;
    let period = |start: &str, end: &str| {
        Some(pb::Period {
            start_date: start.into(),
            end_date: end.into(),
            time_zone: "Europe/Berlin".into(),
            ..Default::default()
        })
    };
    let mut checked = 0;
    let mut nonzero = 0;
    for subject in [team_subject("region"), rep_subject("anna")] {
        for kpi_id in [
            pb::Kpi::Interactions,
            pb::Kpi::WinRate,
            pb::Kpi::RetentionRate,
        ] {
            let points = kpi
                .get_kpi_series(pb::GetKpiSeriesRequest {
                    subject: subject.clone(),
                    kpi: kpi_id as i32,
                    period: period("2025-11-01", "2026-07-31"),
                    granularity: pb::Granularity::Day as i32,
                })
                .await
                .unwrap()
                .into_inner()
                .points;
            assert_eq!(points.len(), 273);
            for point in points {
                let day = kpi
                    .get_scorecard(pb::GetScorecardRequest {
                        subject: subject.clone(),
                        period: period(&point.start_date, &point.end_date),
                        kpis: vec![kpi_id as i32],
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .entries;
                let expected = value(&day, kpi_id);
                let got = point.value.unwrap();
                assert_eq!(
                    (&got.numerator, &got.denominator, got.value),
                    (&expected.numerator, &expected.denominator, expected.value),
                    "{kpi_id:?} on {}",
                    point.start_date
                );
                checked += 1;
                nonzero += usize::from(got.numerator != "0");
            }
        }
    }
    assert_eq!(checked, 2 * 3 * 273);
    assert!(nonzero > 20, "only {nonzero} days with activity");
}

#[tokio::test]
async fn a_monthly_series_computes_each_point_from_its_own_parts() {
    let (_app, mut kpi, _) = sales_org().await;
    let points = kpi
        .get_kpi_series(pb::GetKpiSeriesRequest {
            subject: rep_subject("anna"),
            kpi: pb::Kpi::WinRate as i32,
            period: q2(),
            granularity: pb::Granularity::Month as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .points;
    let shown: Vec<_> = points
        .iter()
        .map(|p| {
            let v = p.value.clone().unwrap();
            (p.start_date.as_str(), v.numerator, v.denominator, v.value)
        })
        .map(|(d, n, den, v)| (d.to_owned(), n, den, v))
        .collect();
    // April: d1 won; May: d2 won, d3 lost; June: nothing closed.
    assert_eq!(
        shown,
        [
            (
                "2026-04-01".to_owned(),
                "1".to_owned(),
                "1".to_owned(),
                Some(100.0)
            ),
            (
                "2026-05-01".to_owned(),
                "1".to_owned(),
                "2".to_owned(),
                Some(50.0)
            ),
            (
                "2026-06-01".to_owned(),
                "0".to_owned(),
                "0".to_owned(),
                None
            ),
        ]
    );
}

#[tokio::test]
async fn a_leaderboard_ranks_with_ties_and_lists_small_samples_after() {
    let (_app, mut kpi, _) = sales_org().await;
    let board = |kpi_id: pb::Kpi, min_sample: Option<i64>| pb::GetLeaderboardRequest {
        kpi: kpi_id as i32,
        team_id: "region".into(),
        period: q2(),
        min_sample,
        limit: 0,
    };
    let calls = kpi
        .get_leaderboard(board(pb::Kpi::Calls, None))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let shown: Vec<_> = calls
        .iter()
        .map(|e| (e.rep_id.as_str(), e.rank, e.ranked))
        .collect();
    assert_eq!(
        shown,
        [
            ("anna", 1, true),
            ("bob", 2, true),
            ("dan", 2, true),
            ("cara", 4, true)
        ]
    );
    assert_eq!(calls[0].display_name, "Rep anna");

    // Win rates rest on 3 and 1 closed deals: below the default 10, so
    // nobody is ranked; cara and dan have none (undefined).
    let wins = kpi
        .get_leaderboard(board(pb::Kpi::WinRate, None))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(wins.iter().all(|e| !e.ranked && e.rank == 0));
    let reasons: Vec<_> = wins
        .iter()
        .map(|e| (e.rep_id.as_str(), e.not_ranked_reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("anna", "sample 3 below 10"),
            ("bob", "sample 1 below 10"),
            ("cara", "undefined"),
            ("dan", "undefined")
        ]
    );
    let wins = kpi
        .get_leaderboard(board(pb::Kpi::WinRate, Some(1)))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let shown: Vec<_> = wins.iter().map(|e| (e.rep_id.as_str(), e.rank)).collect();
    assert_eq!(shown, [("bob", 1), ("anna", 2), ("cara", 0), ("dan", 0)]);
    // 1 of 1 (Wilson 20.7-100%) and 2 of 3 (20.8-93.9%) overlap: the data
    // cannot tell bob from anna, and the board says so.
    let tied: Vec<_> = wins
        .iter()
        .map(|e| e.statistically_tied_with_previous)
        .collect();
    assert_eq!(tied, [false, true, false, false]);
    assert!(calls.iter().all(|e| !e.statistically_tied_with_previous));

    // Lower is better for the sales cycle: bob (2 days) before anna (35).
    let cycle = kpi
        .get_leaderboard(board(pb::Kpi::SalesCycleDays, Some(1)))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(cycle[0].rep_id, "bob");
    assert_eq!(cycle[1].rep_id, "anna");

    let limited = kpi
        .get_leaderboard(pb::GetLeaderboardRequest {
            limit: 2,
            ..board(pb::Kpi::Calls, None)
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(limited.len(), 2);
}

#[tokio::test]
async fn bad_kpi_requests_name_their_fields() {
    let (_app, mut kpi, mut targets) = sales_org().await;
    let status = kpi
        .get_scorecard(pb::GetScorecardRequest {
            subject: None,
            period: Some(pb::Period {
                start_date: "2026-02-30".into(),
                end_date: "2026-01-01".into(),
                time_zone: "Mars/Olympus".into(),
                ..Default::default()
            }),
            kpis: vec![0],
        })
        .await
        .unwrap_err();
    assert_invalid(
        &status,
        &[
            "subject",
            "period.start_date",
            "period.time_zone",
            "kpis[0]",
        ],
    );
    let reversed = kpi
        .get_scorecard(pb::GetScorecardRequest {
            subject: rep_subject("anna"),
            period: Some(pb::Period {
                start_date: "2026-02-01".into(),
                end_date: "2026-01-01".into(),
                time_zone: String::new(),
                ..Default::default()
            }),
            kpis: vec![],
        })
        .await
        .unwrap_err();
    assert_invalid(&reversed, &["period.end_date"]);
    let too_long = kpi
        .get_scorecard(pb::GetScorecardRequest {
            subject: rep_subject("anna"),
            period: Some(pb::Period {
                start_date: "2016-01-01".into(),
                end_date: "2026-01-01".into(),
                time_zone: String::new(),
                ..Default::default()
            }),
            kpis: vec![],
        })
        .await
        .unwrap_err();
    assert_invalid(&too_long, &["period.end_date"]);
    let unknown = kpi
        .get_scorecard(pb::GetScorecardRequest {
            subject: rep_subject("ghost"),
            period: q2(),
            kpis: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let bad_target = targets
        .set_target(pb::SetTargetRequest {
            kpi: pb::Kpi::WinRate as i32,
            subject: rep_subject("anna"),
            start_date: "2026-04-01".into(),
            end_date: "2026-06-30".into(),
            time_zone: String::new(),
            value: 120.0,
        })
        .await
        .unwrap_err();
    assert_invalid(&bad_target, &["value"]);
    // A bad value is listed together with a bad period.
    let bad_both = targets
        .set_target(pb::SetTargetRequest {
            kpi: pb::Kpi::WinRate as i32,
            subject: rep_subject("anna"),
            start_date: "2026-04-01".into(),
            end_date: "2026-03-01".into(),
            time_zone: String::new(),
            value: 120.0,
        })
        .await
        .unwrap_err();
    assert_invalid(&bad_both, &["end_date", "value"]);
    let kpis = kpi
        .list_kpis(pb::ListKpisRequest {})
        .await
        .unwrap()
        .into_inner()
        .kpis;
    assert_eq!(kpis.len(), 18);
    let churn = kpis
        .iter()
        .find(|d| d.kpi == pb::Kpi::ChurnRate as i32)
        .unwrap();
    assert_eq!(churn.direction, pb::Direction::LowerIsBetter as i32);
    assert!(!churn.formula.is_empty());
}

#[tokio::test]
async fn dates_outside_1900_to_2199_are_invalid_arguments_and_the_service_keeps_answering() {
    let (_app, mut kpi, mut targets) = sales_org().await;
    let hostile = |start: &str, end: &str| {
        Some(pb::Period {
            start_date: start.into(),
            end_date: end.into(),
            time_zone: "Pacific/Kiritimati".into(),
            ..Default::default()
        })
    };
    let both = ["period.start_date", "period.end_date"];
    for (start, end) in [
        ("-262143-01-01", "-262143-01-01"),
        ("+262142-12-31", "+262142-12-31"),
        ("0001-01-01", "9999-12-31"),
        ("1899-12-31", "2200-01-01"),
    ] {
        let status = kpi
            .get_scorecard(pb::GetScorecardRequest {
                subject: team_subject("team-a"),
                period: hostile(start, end),
                kpis: vec![],
            })
            .await
            .unwrap_err();
        assert_invalid(&status, &both);
        let status = kpi
            .get_kpi_series(pb::GetKpiSeriesRequest {
                subject: rep_subject("anna"),
                kpi: pb::Kpi::Calls as i32,
                period: hostile(start, end),
                granularity: pb::Granularity::Week as i32,
            })
            .await
            .unwrap_err();
        assert_invalid(&status, &both);
        let status = kpi
            .get_leaderboard(pb::GetLeaderboardRequest {
                kpi: pb::Kpi::Calls as i32,
                team_id: "team-a".into(),
                period: hostile(start, end),
                min_sample: None,
                limit: 0,
            })
            .await
            .unwrap_err();
        assert_invalid(&status, &both);
        let status = targets
            .set_target(pb::SetTargetRequest {
                kpi: pb::Kpi::Calls as i32,
                subject: team_subject("team-a"),
                start_date: start.into(),
                end_date: end.into(),
                time_zone: String::new(),
                value: 1.0,
            })
            .await
            .unwrap_err();
        assert_invalid(&status, &["start_date", "end_date"]);
        let status = targets
            .list_targets(pb::ListTargetsRequest {
                as_of: end.into(),
                active_on: start.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_invalid(&status, &["active_on", "as_of"]);
        // Still serving.
        scorecard(&mut kpi, team_subject("team-a"), q2()).await;
    }
    // The edges of the range work, in the zones furthest from UTC, and a
    // ten-year period's previous period reaches before 1900 without a panic.
    for (start, end) in [("1900-01-01", "1909-12-31"), ("2190-01-01", "2199-12-31")] {
        let card = kpi
            .get_scorecard(pb::GetScorecardRequest {
                subject: team_subject("team-a"),
                period: hostile(start, end),
                kpis: vec![pb::Kpi::Calls as i32],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(card.period.unwrap().start_date, start);
    }
}
