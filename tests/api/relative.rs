//! Relative periods (CURRENT_MONTH, LAST_N_DAYS, ...): resolved against
//! today in the period's zone at each call, the dates shown in the answer.

use chrono::{Datelike, Days, NaiveDate, TimeDelta, Utc};
use kpi_service::{
    proto::pb::{
        self, RelativePeriod as R, kpi_service_client::KpiServiceClient,
        target_service_client::TargetServiceClient,
    },
    testkit::records,
};

use crate::helpers::{Bearer, TestApp, assert_invalid};

fn relative(r: R, n: i32) -> Option<pb::Period> {
    Some(pb::Period {
        time_zone: "UTC".into(),
        relative: r as i32,
        last_n_days: n,
        ..Default::default()
    })
}

#[tokio::test]
async fn relative_periods_resolve_against_today_and_say_which_dates() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.rep_in("anna", "t1").await;
    let now = Utc::now();
    let today = now.date_naive();
    let just_now = now - TimeDelta::seconds(1);
    let three_days_ago = (today - Days::new(3))
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc();
    if just_now.date_naive() != today {
        return; // a second after midnight: "today" has no record yet
    }
    app.record(vec![
        records::interaction("i-now", "anna", pb::Channel::Call, just_now)
            .with_updated(just_now)
            .record(),
        records::interaction("i-3d", "anna", pb::Channel::Call, three_days_ago)
            .with_updated(just_now)
            .record(),
    ])
    .await
    .unwrap();

    let mut kpis =
        KpiServiceClient::with_interceptor(app.channel.clone(), Bearer::new(&app.admin_key));
    let mut ask = async |period: Option<pb::Period>| {
        let answer = kpis
            .get_scorecard(pb::GetScorecardRequest {
                subject: Some(pb::Subject {
                    subject: Some(pb::subject::Subject::RepId("anna".into())),
                }),
                period,
                kpis: vec![pb::Kpi::Interactions as i32],
            })
            .await
            .map(tonic::Response::into_inner);
        answer.map(|a| {
            let p = a.period.unwrap_or_default();
            let value = a.entries[0].current.as_ref().and_then(|v| v.value);
            (p.start_date, p.end_date, p.relative, value)
        })
    };
    let day = |d: NaiveDate| d.to_string();
    let month_start = today.with_day(1).unwrap();
    let month_end = (month_start + chrono::Months::new(1)) - Days::new(1);
    let in_month = |d: NaiveDate| d >= month_start;

    let answers = [
        (R::CurrentDay, 0, day(today), day(today), 1.0),
        (
            R::PreviousDay,
            0,
            day(today - Days::new(1)),
            day(today - Days::new(1)),
            0.0,
        ),
        (R::LastNDays, 7, day(today - Days::new(6)), day(today), 2.0),
        (R::LastNDays, 3, day(today - Days::new(2)), day(today), 1.0),
        (
            R::CurrentMonth,
            0,
            day(month_start),
            day(month_end),
            if in_month(today - Days::new(3)) {
                2.0
            } else {
                1.0
            },
        ),
    ];
    for (r, n, start, end, interactions) in answers {
        let got = ask(relative(r, n)).await.unwrap();
        if Utc::now().date_naive() != today {
            return; // midnight passed during the test: "today" moved on
        }
        assert_eq!(got, (start, end, r as i32, Some(interactions)), "{r:?} {n}");
    }

    // Dates and a relative period together, a count without LAST_N_DAYS
    // (or LAST_N_DAYS without one), an unknown value: each names its field.
    let both = pb::Period {
        start_date: "2026-01-01".into(),
        ..relative(R::CurrentMonth, 0).unwrap()
    };
    assert_invalid(&ask(Some(both)).await.unwrap_err(), &["period.start_date"]);
    assert_invalid(
        &ask(relative(R::CurrentWeek, 5)).await.unwrap_err(),
        &["period.last_n_days"],
    );
    assert_invalid(
        &ask(relative(R::LastNDays, 0)).await.unwrap_err(),
        &["period.last_n_days"],
    );
    assert_invalid(
        &ask(relative(R::LastNDays, 3651)).await.unwrap_err(),
        &["period.last_n_days"],
    );
    let unknown = pb::Period {
        relative: 99,
        ..relative(R::CurrentDay, 0).unwrap()
    };
    assert_invalid(&ask(Some(unknown)).await.unwrap_err(), &["period.relative"]);

    // The targets of the current month, by relative period.
    let mut targets =
        TargetServiceClient::with_interceptor(app.channel.clone(), Bearer::new(&app.admin_key));
    targets
        .set_target(pb::SetTargetRequest {
            kpi: pb::Kpi::Interactions as i32,
            subject: Some(pb::Subject {
                subject: Some(pb::subject::Subject::RepId("anna".into())),
            }),
            start_date: day(month_start),
            end_date: day(month_end),
            time_zone: "UTC".into(),
            value: 40.0,
        })
        .await
        .unwrap();
    let mut listed = async |r: R| {
        targets
            .list_targets(pb::ListTargetsRequest {
                period: relative(r, 0),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .targets
            .len()
    };
    assert_eq!(listed(R::CurrentMonth).await, 1);
    assert_eq!(listed(R::PreviousMonth).await, 0);
    assert_eq!(listed(R::CurrentYear).await, 0);
}
