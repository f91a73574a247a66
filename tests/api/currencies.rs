//! Deals in any ISO 4217 currency, converted at dated exchange rates,
//! exactly; rates set, corrected and listed; deals without a rate counted
//! everywhere but in money, and said so.

use kpi_service::{
    domain::access::Role,
    proto::pb::{
        self, exchange_rate_service_client::ExchangeRateServiceClient,
        kpi_service_client::KpiServiceClient,
    },
    testkit::records,
};
use tonic::Code;

use crate::{
    helpers::{Authed, Bearer, TestApp, assert_invalid, at},
    kpi::{rep_subject, scorecard, value},
};

fn q2() -> Option<pb::Period> {
    Some(pb::Period {
        start_date: "2026-04-01".into(),
        end_date: "2026-06-30".into(),
        time_zone: "UTC".into(),
        ..Default::default()
    })
}

fn money(currency: &str, units: i64, nanos: i32) -> pb::Money {
    pb::Money {
        currency_code: currency.into(),
        units,
        nanos,
    }
}

fn won(id: &str, amount: pb::Money, closed: &str, version: &str) -> pb::ActivityRecord {
    records::deal(
        id,
        "anna",
        pb::DealStage::Won,
        amount,
        at("2026-03-01T09:00:00Z"),
        Some(at(closed)),
    )
    .with_updated(at(version))
    .record()
}

fn rate(currency: &str, date: &str, rate: &str) -> pb::ExchangeRate {
    pb::ExchangeRate {
        currency_code: currency.into(),
        effective_date: date.into(),
        rate: rate.into(),
    }
}

struct Org {
    app: TestApp,
    kpi: KpiServiceClient<Authed>,
    rates: ExchangeRateServiceClient<Authed>,
}

impl Org {
    async fn new() -> Self {
        let app = TestApp::spawn().await;
        app.upsert_team("t1", "Team 1", "").await.unwrap();
        app.rep_in("anna", "t1").await;
        let kpi =
            KpiServiceClient::with_interceptor(app.channel.clone(), Bearer::new(&app.admin_key));
        let rates = ExchangeRateServiceClient::with_interceptor(
            app.channel.clone(),
            Bearer::new(&app.admin_key),
        );
        Self { app, kpi, rates }
    }

    async fn set(&mut self, rates: Vec<pb::ExchangeRate>) -> pb::SetExchangeRatesResponse {
        self.rates
            .set_exchange_rates(pb::SetExchangeRatesRequest { rates })
            .await
            .unwrap()
            .into_inner()
    }

    /// anna's Q2 (REVENUE, AVERAGE_DEAL_SIZE, DEALS_WON).
    async fn money(&mut self) -> (pb::KpiValue, pb::KpiValue, pb::KpiValue) {
        let card = scorecard(&mut self.kpi, rep_subject("anna"), q2()).await;
        (
            value(&card, pb::Kpi::Revenue),
            value(&card, pb::Kpi::AverageDealSize),
            value(&card, pb::Kpi::DealsWon),
        )
    }
}

#[tokio::test]
async fn deals_in_four_currencies_convert_at_the_rate_of_their_closing_day() {
    let mut org = Org::new().await;
    let set = org
        .set(vec![
            rate("EUR", "2026-04-01", "1.10"),
            rate("EUR", "2026-05-01", "1.2"),
            rate("GBP", "2026-04-01", "1.25"),
            rate("JPY", "2026-01-01", "0.0067"),
        ])
        .await;
    assert_eq!((set.inserted, set.deals_reconverted), (4, 0));
    assert_eq!(set.reporting_currency, "USD");
    let v1 = "2026-06-10T00:00:00Z";
    org.app
        .record(vec![
            won("d-usd", money("USD", 1000, 0), "2026-04-10T12:00:00Z", v1),
            // The last second under 1.10, the first under 1.2.
            won("d-eur1", money("EUR", 1000, 0), "2026-04-30T23:59:59Z", v1),
            won("d-eur2", money("EUR", 1000, 0), "2026-05-01T00:00:00Z", v1),
            won(
                "d-gbp",
                money("GBP", 200, 500_000_000),
                "2026-05-15T10:00:00Z",
                v1,
            ),
            won(
                "d-jpy",
                money("JPY", 150_000, 0),
                "2026-06-01T10:00:00Z",
                v1,
            ),
        ])
        .await
        .unwrap();
    // 1000 + 1100 + 1200 + 250.625 + 1005 = 4555.625; / 5 = 911.125.
    let (revenue, average, won_deals) = org.money().await;
    assert_eq!(revenue.numerator, "4555.625");
    let m = revenue.money.unwrap();
    assert_eq!(
        (m.currency_code.as_str(), m.units, m.nanos),
        ("USD", 4555, 625_000_000)
    );
    assert_eq!(average.numerator, "4555.625");
    assert_eq!(average.denominator, "5");
    assert_eq!(
        average.money.map(|m| (m.units, m.nanos)),
        Some((911, 125_000_000))
    );
    assert_eq!(won_deals.value, Some(5.0));
    assert!(revenue.missing_rates.is_none());

    // A correction of May's EUR rate re-converts d-eur2 only.
    let set = org.set(vec![rate("EUR", "2026-05-01", "1.25")]).await;
    assert_eq!((set.updated, set.deals_reconverted), (1, 1));
    assert_eq!(org.money().await.0.numerator, "4605.625");
    // A rate dated between the two moves d-eur1 (closed 30 April).
    let set = org.set(vec![rate("EUR", "2026-04-15", "1.15")]).await;
    assert_eq!((set.inserted, set.deals_reconverted), (1, 1));
    assert_eq!(org.money().await.0.numerator, "4655.625");
    // Set again: nothing changes.
    let set = org.set(vec![rate("EUR", "2026-04-15", "1.150")]).await;
    assert_eq!((set.unchanged, set.deals_reconverted), (1, 0));
    assert_eq!(org.money().await.0.numerator, "4655.625");
}

#[tokio::test]
async fn a_won_deal_without_a_rate_counts_everywhere_but_in_money_and_says_so() {
    let mut org = Org::new().await;
    let v1 = "2026-06-10T00:00:00Z";
    org.app
        .record(vec![
            won("d-chf", money("CHF", 500, 0), "2026-05-10T08:00:00Z", v1),
            won("d-chf2", money("CHF", 20, 0), "2026-06-02T08:00:00Z", v1),
            won("d-usd", money("USD", 100, 0), "2026-05-11T08:00:00Z", v1),
        ])
        .await
        .unwrap();
    let (revenue, average, won_deals) = org.money().await;
    assert_eq!(won_deals.value, Some(3.0));
    assert_eq!(revenue.numerator, "100");
    let missing = revenue.missing_rates.unwrap();
    assert_eq!(missing.deals, 2);
    assert_eq!(missing.currency_codes, ["CHF"]);
    assert_eq!(
        missing.earliest_closed_at.map(|t| t.seconds),
        Some(at("2026-05-10T08:00:00Z").timestamp())
    );
    // The average is over the converted deal alone.
    assert_eq!(
        (average.numerator.as_str(), average.denominator.as_str()),
        ("100", "1")
    );
    assert_eq!(average.missing_rates.map(|m| m.deals), Some(2));
    let card = scorecard(&mut org.kpi, rep_subject("anna"), q2()).await;
    assert_eq!(value(&card, pb::Kpi::WinRate).numerator, "3");
    assert!(value(&card, pb::Kpi::SalesCycleDays).value.is_some());

    // A rate from 1 June converts d-chf2; d-chf still waits.
    let set = org.set(vec![rate("CHF", "2026-06-01", "1.1")]).await;
    assert_eq!(set.deals_reconverted, 1);
    let (revenue, _, _) = org.money().await;
    assert_eq!(revenue.numerator, "122");
    assert_eq!(revenue.missing_rates.map(|m| m.deals), Some(1));
    // One from 1 May converts it.
    org.set(vec![rate("CHF", "2026-05-01", "1.08")]).await;
    let (revenue, average, _) = org.money().await;
    assert_eq!(revenue.numerator, "662");
    assert!(revenue.missing_rates.is_none());
    assert_eq!(average.denominator, "3");
}

#[tokio::test]
async fn a_deal_moving_between_currencies_converts_as_its_newest_version_says() {
    let mut org = Org::new().await;
    org.set(vec![rate("EUR", "2026-01-01", "1.2")]).await;
    let closed = "2026-05-02T10:00:00Z";
    let mut revenue_after = Vec::new();
    for (version, amount) in [
        ("2026-06-01T00:00:00Z", money("EUR", 1000, 0)),
        ("2026-06-02T00:00:00Z", money("USD", 1300, 0)),
        ("2026-06-03T00:00:00Z", money("EUR", 1000, 500_000_000)),
    ] {
        org.app
            .record(vec![won("d1", amount, closed, version)])
            .await
            .unwrap();
        revenue_after.push(org.money().await.0.numerator);
    }
    assert_eq!(revenue_after, ["1200", "1300", "1200.6"]);
}

#[tokio::test]
async fn bad_currencies_and_rates_name_their_field() {
    let mut org = Org::new().await;
    let status = org
        .app
        .record(vec![won(
            "d1",
            money("EURO", 1, 0),
            "2026-05-02T10:00:00Z",
            "2026-06-01T00:00:00Z",
        )])
        .await
        .unwrap_err();
    assert_invalid(&status, &["records[0].deal.amount.currency_code"]);
    let status = org
        .rates
        .set_exchange_rates(pb::SetExchangeRatesRequest {
            rates: vec![
                rate("usd", "2026-01-01", "1"),
                rate("USD", "2026-01-01", "1"),
                rate("EUR", "2026-02-30", "1"),
                rate("EUR", "2026-01-01", "0"),
                rate("EUR", "2026-01-02", "1e3"),
                rate("GBP", "2026-01-01", "1.2"),
                rate("GBP", "2026-01-01", "1.3"),
            ],
        })
        .await
        .unwrap_err();
    assert_invalid(
        &status,
        &[
            "rates[0].currency_code",
            "rates[1].currency_code",
            "rates[2].effective_date",
            "rates[3].rate",
            "rates[4].rate",
            "rates[6].effective_date",
        ],
    );
    let listed = org
        .rates
        .list_exchange_rates(pb::ListExchangeRatesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.rates.is_empty(), "nothing was set");
}

#[tokio::test]
async fn rates_are_listed_in_pages_and_only_ingest_and_admin_keys_set_them() {
    let mut org = Org::new().await;
    org.set(vec![
        rate("GBP", "2026-01-01", "1.25"),
        rate("EUR", "2026-02-01", "1.2"),
        rate("EUR", "2026-01-01", "1.1"),
        rate("JPY", "2026-01-01", "0.0067"),
        rate("EUR", "2026-03-01", "1.3"),
    ])
    .await;
    let read = org.app.key(Role::Read, None).await;
    let ingest = org.app.key(Role::Ingest, None).await;
    org.app.keys_refreshed().await;
    let mut reader =
        ExchangeRateServiceClient::with_interceptor(org.app.channel.clone(), Bearer::new(&read));
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = reader
            .list_exchange_rates(pb::ListExchangeRatesRequest {
                currency_code: String::new(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(
            page.rates
                .into_iter()
                .map(|r| format!("{} {} {}", r.currency_code, r.effective_date, r.rate)),
        );
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        [
            "EUR 2026-01-01 1.1",
            "EUR 2026-02-01 1.2",
            "EUR 2026-03-01 1.3",
            "GBP 2026-01-01 1.25",
            "JPY 2026-01-01 0.0067"
        ]
    );
    let only_eur = reader
        .list_exchange_rates(pb::ListExchangeRatesRequest {
            currency_code: "EUR".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_eur.rates.len(), 3);
    // A read key may not set rates; an ingest key may.
    let refused = reader
        .set_exchange_rates(pb::SetExchangeRatesRequest {
            rates: vec![rate("CHF", "2026-01-01", "1.1")],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut writer =
        ExchangeRateServiceClient::with_interceptor(org.app.channel.clone(), Bearer::new(&ingest));
    let set = writer
        .set_exchange_rates(pb::SetExchangeRatesRequest {
            rates: vec![rate("CHF", "2026-01-01", "1.1")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.inserted, 1);
}
