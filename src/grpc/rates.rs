//! `kpi.v1.ExchangeRateService`: parse -> `service::rates` -> convert.

use std::collections::HashSet;

use tonic::{Request, Response, Status};

use super::{
    auth::principal,
    pb::{self, exchange_rate_service_server::ExchangeRateService},
};
use crate::{
    Error,
    domain::money::RateEntry,
    domain::{
        Violations,
        money::{Rate, check_currency},
        paging::PageRequest,
        period,
    },
    service::{Services, rates::paging_key},
};

/// Most rates per SetExchangeRates call.
pub const MAX_RATES: usize = 1000;

#[derive(Debug, Clone)]
pub struct RatesApi {
    services: Services,
}

impl RatesApi {
    pub fn new(services: Services) -> Self {
        Self { services }
    }
}

/// Every rate of a request, or every violation by path
/// (`rates[3].rate`).
fn parse_rates(rates: Vec<pb::ExchangeRate>, reporting: &str) -> Result<Vec<RateEntry>, Error> {
    let mut v = Violations::new();
    if rates.is_empty() {
        v.add("rates", "must not be empty");
    }
    if rates.len() > MAX_RATES {
        v.add(
            "rates",
            format!("at most {MAX_RATES} rates per call (got {})", rates.len()),
        );
        return v.finish(|| None);
    }
    let mut seen = HashSet::new();
    let mut entries = Vec::with_capacity(rates.len());
    for (i, rate) in rates.into_iter().enumerate() {
        let field = |name: &str| format!("rates[{i}].{name}");
        let currency = v.check(
            field("currency_code"),
            check_currency(&rate.currency_code).and_then(|()| {
                if rate.currency_code == reporting {
                    Err(format!(
                        "is the reporting currency {reporting}, whose rate is always 1"
                    ))
                } else {
                    Ok(rate.currency_code.clone())
                }
            }),
        );
        let date = v.check(
            field("effective_date"),
            period::parse_date(&rate.effective_date),
        );
        let parsed = v.check(field("rate"), Rate::parse(&rate.rate));
        if let (Some(currency), Some(date), Some(rate)) = (currency, date, parsed) {
            if seen.insert((currency.clone(), date)) {
                entries.push(RateEntry {
                    currency,
                    date,
                    rate,
                });
            } else {
                v.add(
                    field("effective_date"),
                    format!("{currency} on {date} is set twice in this call"),
                );
            }
        }
    }
    v.finish(|| Some(entries))
}

fn rate_to_pb(entry: RateEntry) -> pb::ExchangeRate {
    pb::ExchangeRate {
        currency_code: entry.currency,
        effective_date: entry.date.to_string(),
        rate: entry.rate.to_decimal(),
    }
}

#[tonic::async_trait]
impl ExchangeRateService for RatesApi {
    async fn set_exchange_rates(
        &self,
        request: Request<pb::SetExchangeRatesRequest>,
    ) -> Result<Response<pb::SetExchangeRatesResponse>, Status> {
        let caller = principal(&request)?;
        let rates = &self.services.rates;
        let entries = parse_rates(request.into_inner().rates, rates.reporting_currency())?;
        let outcome = rates.set(&caller, &entries).await?;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(Response::new(pb::SetExchangeRatesResponse {
            inserted: n(outcome.inserted),
            updated: n(outcome.updated),
            unchanged: n(outcome.unchanged),
            deals_reconverted: n(outcome.deals_reconverted),
            reporting_currency: rates.reporting_currency().to_owned(),
        }))
    }

    async fn list_exchange_rates(
        &self,
        request: Request<pb::ListExchangeRatesRequest>,
    ) -> Result<Response<pb::ListExchangeRatesResponse>, Status> {
        let req = request.into_inner();
        let currency = if req.currency_code.is_empty() {
            None
        } else {
            check_currency(&req.currency_code)
                .map_err(|problem| Error::invalid("currency_code", problem))?;
            Some(req.currency_code.as_str())
        };
        let page = PageRequest::parse(req.page_size, &req.page_token, &paging_key(currency))?;
        let rates = &self.services.rates;
        let page = rates.list(currency, &page).await?;
        Ok(Response::new(pb::ListExchangeRatesResponse {
            rates: page.items.into_iter().map(rate_to_pb).collect(),
            next_page_token: page.next_page_token,
            reporting_currency: rates.reporting_currency().to_owned(),
        }))
    }
}
