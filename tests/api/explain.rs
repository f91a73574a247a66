//! ExplainKpi: the records behind every value add up to its numerator and
//! denominator exactly, for every KPI and subject of the hand-worked data
//! set; each says the team it counted for and, for money, both amounts.

use kpi_service::{
    proto::pb::{
        self, exchange_rate_service_client::ExchangeRateServiceClient,
        kpi_service_client::KpiServiceClient,
    },
    testkit::records,
};
use tonic::Code;

use crate::{
    helpers::{Authed, Bearer, TestApp, assert_invalid, at, micros},
    kpi::{q2, rep_subject, sales_org, team_subject},
};

/// Exact decimal text ("-1", "2000.25", "0.000000001") in nanos.
pub(crate) fn nanos(text: &str) -> i128 {
    let (sign, digits) = text.strip_prefix('-').map_or((1, text), |rest| (-1, rest));
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    assert!(fraction.len() <= 9, "more than nine decimals: {text}");
    let whole: i128 = whole
        .parse()
        .unwrap_or_else(|_| panic!("not decimal: {text}"));
    let fraction: i128 = format!("{fraction:0<9}")
        .parse()
        .unwrap_or_else(|_| panic!("not decimal: {text}"));
    sign * (whole * 1_000_000_000 + fraction)
}

/// Every page of an explanation: the value (of the last page) and every
/// contribution.
pub(crate) async fn all_pages(
    client: &mut KpiServiceClient<Authed>,
    request: pb::ExplainKpiRequest,
) -> (pb::KpiValue, Vec<pb::KpiContribution>) {
    let mut token = String::new();
    let mut contributions = Vec::new();
    for _ in 0..1000 {
        let page = client
            .explain_kpi(pb::ExplainKpiRequest {
                page_token: token.clone(),
                ..request.clone()
            })
            .await
            .unwrap_or_else(|s| panic!("{request:?}: {s:?}"))
            .into_inner();
        assert!(page.contributions.len() <= request.page_size as usize);
        contributions.extend(page.contributions);
        if page.next_page_token.is_empty() {
            return (page.value.unwrap(), contributions);
        }
        token = page.next_page_token;
    }
    panic!("more than 1000 pages");
}

/// KPIs whose denominator is the constant 1 (counts and sums).
/// cara's deals in other currencies: won EUR 1,234.56 closed 2026-06-10
/// (EUR 1.0845 from 2026-06-01) and, with `chf`, won CHF 99 closed
/// 2026-06-11 (CHF has no rate).
async fn add_foreign_deals(app: &TestApp, chf: bool) {
    let won = |id: &str, currency: &str, units: i64, nanos: i32, closed: &str| {
        let amount = pb::Money {
            currency_code: currency.into(),
            units,
            nanos,
        };
        pb::ActivityRecord {
            record: Some(pb::activity_record::Record::Deal(records::deal(
                id,
                "cara",
                pb::DealStage::Won,
                amount,
                at("2026-05-01T00:00:00Z"),
                Some(at(closed)),
            ))),
        }
    };
    let mut deals = vec![won(
        "d-eur",
        "EUR",
        1234,
        560_000_000,
        "2026-06-10T10:00:00Z",
    )];
    if chf {
        deals.push(won("d-chf", "CHF", 99, 0, "2026-06-11T10:00:00Z"));
    }
    app.record(deals).await.unwrap();
    ExchangeRateServiceClient::with_interceptor(app.channel.clone(), Bearer::new(&app.admin_key))
        .set_exchange_rates(pb::SetExchangeRatesRequest {
            rates: vec![pb::ExchangeRate {
                currency_code: "EUR".into(),
                effective_date: "2026-06-01".into(),
                rate: "1.0845".into(),
            }],
        })
        .await
        .unwrap();
}

pub(crate) const CONSTANT_DENOMINATOR: [pb::Kpi; 8] = [
    pb::Kpi::Leads,
    pb::Kpi::NewCustomers,
    pb::Kpi::Revenue,
    pb::Kpi::DealsWon,
    pb::Kpi::Interactions,
    pb::Kpi::Calls,
    pb::Kpi::Emails,
    pb::Kpi::Meetings,
];

fn explain(
    subject: Option<pb::Subject>,
    kpi: pb::Kpi,
    part: pb::ExplainPart,
) -> pb::ExplainKpiRequest {
    pb::ExplainKpiRequest {
        subject,
        kpi: kpi as i32,
        period: q2(),
        part: part as i32,
        page_size: 3,
        page_token: String::new(),
    }
}

#[tokio::test]
async fn contributions_add_up_to_every_kpi_of_every_subject_exactly() {
    let (app, mut client, _) = sales_org().await;
    // Money in other currencies: a EUR deal with a rate, a CHF one without.
    add_foreign_deals(&app, true).await;

    let subjects = [
        rep_subject("anna"),
        rep_subject("bob"),
        rep_subject("cara"),
        rep_subject("dan"),
        team_subject("team-a"),
        team_subject("team-b"),
        team_subject("region"),
    ];
    let mut checked = 0;
    for subject in &subjects {
        for kpi in (1..=18).map(|n| pb::Kpi::try_from(n).unwrap()) {
            let (value, all) = all_pages(
                &mut client,
                explain(subject.clone(), kpi, pb::ExplainPart::Unspecified),
            )
            .await;
            let numerator: i128 = all.iter().map(|c| nanos(&c.numerator)).sum();
            let denominator: i128 = all.iter().map(|c| nanos(&c.denominator)).sum();
            let what = format!("{kpi:?} of {subject:?}");
            assert_eq!(numerator, nanos(&value.numerator), "numerator of {what}");
            if CONSTANT_DENOMINATOR.contains(&kpi) {
                assert_eq!(value.denominator, "1", "{what}");
                assert_eq!(denominator, 0, "{what}");
            } else {
                assert_eq!(
                    denominator,
                    nanos(&value.denominator),
                    "denominator of {what}"
                );
            }
            // Ordered by (credited at, id), each record once.
            let keys: Vec<(i64, String)> = all
                .iter()
                .map(|c| (micros(&c.credited_at), c.record_id.clone()))
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(keys, sorted, "{what}");
            // Each side alone lists exactly the records adding to it.
            for (part, side) in [
                (pb::ExplainPart::Numerator, 0),
                (pb::ExplainPart::Denominator, 1),
            ] {
                let (_, listed) = all_pages(&mut client, explain(subject.clone(), kpi, part)).await;
                let expected: Vec<&str> = all
                    .iter()
                    .filter(|c| {
                        nanos(if side == 0 {
                            &c.numerator
                        } else {
                            &c.denominator
                        }) != 0
                    })
                    .map(|c| c.record_id.as_str())
                    .collect();
                let got: Vec<&str> = listed.iter().map(|c| c.record_id.as_str()).collect();
                assert_eq!(got, expected, "{part:?} of {what}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 7 * 18);
}

#[tokio::test]
async fn each_record_says_its_team_instant_and_amounts() {
    let (app, mut client, _) = sales_org().await;
    // REVENUE of the region in Q2: anna's d1 and d2, bob's d5 (closed
    // 2026-05-03, after his move to team-b on 2026-05-02), cara's EUR deal.
    add_foreign_deals(&app, false).await;
    let (value, all) = all_pages(
        &mut client,
        explain(
            team_subject("region"),
            pb::Kpi::Revenue,
            pb::ExplainPart::Unspecified,
        ),
    )
    .await;
    // 1000.5 + 2000.25 + 500 + 1234.56 x 1.0845 (= 1338.88032, exact).
    assert_eq!(value.numerator, "4839.63032");
    let rows: Vec<(&str, &str, &str, i64, &str)> = all
        .iter()
        .map(|c| {
            (
                c.record_id.as_str(),
                c.rep_id.as_str(),
                c.team_id.as_str(),
                micros(&c.credited_at),
                c.numerator.as_str(),
            )
        })
        .collect();
    let t = |s: &str| micros(&Some(crate::helpers::ts(s)));
    assert_eq!(
        rows,
        [
            ("d1", "anna", "team-a", t("2026-04-11T00:00:00Z"), "1000.5"),
            ("d2", "anna", "team-a", t("2026-05-01T00:00:00Z"), "2000.25"),
            ("d5", "bob", "team-b", t("2026-05-03T00:00:00Z"), "500"),
            (
                "d-eur",
                "cara",
                "team-b",
                t("2026-06-10T10:00:00Z"),
                "1338.88032"
            ),
        ]
    );
    let eur = &all[3];
    assert_eq!(eur.record_type, "deal");
    assert_eq!(eur.exchange_rate, "1.0845");
    let amount = |m: &Option<pb::Money>| {
        m.as_ref()
            .map(|m| (m.currency_code.clone(), m.units, m.nanos))
    };
    assert_eq!(
        amount(&eur.original_amount),
        Some(("EUR".into(), 1234, 560_000_000))
    );
    assert_eq!(
        amount(&eur.converted_amount),
        Some(("USD".into(), 1338, 880_320_000))
    );
    assert_eq!(
        amount(&all[0].original_amount),
        Some(("USD".into(), 1000, 500_000_000))
    );
    assert_eq!(all[0].exchange_rate, "1");

    // bob's calls: one before his move (team-a), one after (team-b).
    let (_, calls) = all_pages(
        &mut client,
        explain(
            rep_subject("bob"),
            pb::Kpi::Calls,
            pb::ExplainPart::Unspecified,
        ),
    )
    .await;
    let teams: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.record_id.as_str(), c.team_id.as_str()))
        .collect();
    assert_eq!(teams, [("b-i1", "team-a"), ("b-i2", "team-b")]);

    // anna's churn in Q2: customers active on April 1 (c4, c5; c6 churned
    // in March), credited at the period start; c4 churned in May.
    let (value, churn) = all_pages(
        &mut client,
        explain(
            rep_subject("anna"),
            pb::Kpi::ChurnRate,
            pb::ExplainPart::Unspecified,
        ),
    )
    .await;
    let rows: Vec<(&str, i64, &str, &str)> = churn
        .iter()
        .map(|c| {
            (
                c.record_id.as_str(),
                micros(&c.credited_at),
                c.numerator.as_str(),
                c.denominator.as_str(),
            )
        })
        .collect();
    let start = t("2026-04-01T00:00:00Z");
    assert_eq!(rows, [("c4", start, "1", "1"), ("c5", start, "0", "1")]);
    assert_eq!(
        (value.numerator.as_str(), value.denominator.as_str()),
        ("1", "2")
    );

    // anna's NPS: promoters +1, passives 0, detractors -1.
    let (_, nps) = all_pages(
        &mut client,
        explain(
            rep_subject("anna"),
            pb::Kpi::Nps,
            pb::ExplainPart::Unspecified,
        ),
    )
    .await;
    let shares: Vec<&str> = nps.iter().map(|c| c.numerator.as_str()).collect();
    assert_eq!(shares, ["1", "1", "0", "-1", "-1"]);
    // anna's sales cycle: 10 days and 60 days, in seconds.
    let (_, cycle) = all_pages(
        &mut client,
        explain(
            rep_subject("anna"),
            pb::Kpi::SalesCycleDays,
            pb::ExplainPart::Unspecified,
        ),
    )
    .await;
    let shares: Vec<&str> = cycle.iter().map(|c| c.numerator.as_str()).collect();
    assert_eq!(shares, ["864000", "5184000"]);
}

#[tokio::test]
async fn pages_resume_where_they_stopped_and_bad_requests_name_their_fields() {
    let (_app, mut client, _) = sales_org().await;
    let request = pb::ExplainKpiRequest {
        page_size: 2,
        ..explain(
            rep_subject("anna"),
            pb::Kpi::Interactions,
            pb::ExplainPart::Unspecified,
        )
    };
    let first = client
        .explain_kpi(request.clone())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = first
        .contributions
        .iter()
        .map(|c| c.record_id.as_str())
        .collect();
    assert_eq!(ids, ["a-i1", "a-i4"]);
    assert!(!first.next_page_token.is_empty());
    assert_eq!(
        first
            .period
            .as_ref()
            .map(|p| (p.start_date.as_str(), p.end_date.as_str())),
        Some(("2026-04-01", "2026-06-30"))
    );
    let (_, all) = all_pages(&mut client, request.clone()).await;
    let ids: Vec<&str> = all.iter().map(|c| c.record_id.as_str()).collect();
    assert_eq!(ids, ["a-i1", "a-i4", "a-i5", "a-i2", "a-i6", "a-i3"]);

    // A token is for its own request only.
    let status = client
        .explain_kpi(pb::ExplainKpiRequest {
            page_token: first.next_page_token.clone(),
            ..explain(
                rep_subject("anna"),
                pb::Kpi::Calls,
                pb::ExplainPart::Unspecified,
            )
        })
        .await
        .unwrap_err();
    assert_invalid(&status, &["page_token"]);
    let status = client
        .explain_kpi(pb::ExplainKpiRequest {
            subject: None,
            kpi: 0,
            part: 9,
            page_size: 0,
            page_token: String::new(),
            period: q2(),
        })
        .await
        .unwrap_err();
    assert_invalid(&status, &["subject", "kpi", "part"]);
    let status = client
        .explain_kpi(explain(
            team_subject("nowhere"),
            pb::Kpi::Revenue,
            pb::ExplainPart::Unspecified,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}
