//! `kpi.v1.ExchangeRateService`: parse -> `service::rates` -> convert.

use tonic::{Request, Response, Status};

use super::{
    auth::principal,
    convert::rates::{parse_rates, rate_to_pb},
    pb::{self, exchange_rate_service_server::ExchangeRateService},
};
use crate::{
    Error,
    domain::{money::check_currency, paging::PageRequest},
    service::{Services, rates::paging_key},
};

#[derive(Debug, Clone)]
pub struct RatesApi {
    services: Services,
}

impl RatesApi {
    pub fn new(services: Services) -> Self {
        Self { services }
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
