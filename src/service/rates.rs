//! Exchange rates: set in bulk (re-converting the deals they affect) and
//! listed, paged.

use sqlx::PgPool;

use crate::{
    Error,
    domain::money::RateEntry,
    domain::paging::{Page, PageRequest},
    service::access::Principal,
    store::rates::{self as store, SetOutcome},
};

#[derive(Debug, Clone)]
pub struct Rates {
    pool: PgPool,
    reporting_currency: String,
}

/// The query part of a list's page tokens: a token is valid only for the
/// currency filter it was made for.
pub fn paging_key(currency: Option<&str>) -> String {
    format!("currency={}", currency.unwrap_or_default())
}

impl Rates {
    pub fn new(pool: PgPool, reporting_currency: String) -> Self {
        Self {
            pool,
            reporting_currency,
        }
    }

    pub fn reporting_currency(&self) -> &str {
        &self.reporting_currency
    }

    /// Sets validated rates (distinct currency and date, none in the
    /// reporting currency). Rates hold for the whole organisation: a key
    /// limited to a team may not set them (only read keys can be limited
    /// today, and the policy keeps them out; this holds if that changes).
    pub async fn set(
        &self,
        caller: &Principal,
        entries: &[RateEntry],
    ) -> Result<SetOutcome, Error> {
        if caller.scope.is_some() {
            return Err(Error::PermissionDenied(
                "exchange rates apply to the whole organisation: a key limited to a team may not set them"
                    .to_owned(),
            ));
        }
        store::set(&self.pool, &self.reporting_currency, entries).await
    }

    pub async fn list(
        &self,
        currency: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<RateEntry>, Error> {
        let after = match page.after.as_deref() {
            None => None,
            Some(cursor) => Some(
                cursor
                    .split_once(' ')
                    .and_then(|(c, d)| Some((c.to_owned(), d.parse().ok()?)))
                    .ok_or_else(|| Error::invalid("page_token", "is not a token of this list"))?,
            ),
        };
        let rows = store::list(&self.pool, currency, after, i64::from(page.fetch())).await?;
        Ok(Page::cut(rows, page, &paging_key(currency), |r| {
            format!("{} {}", r.currency, r.date)
        }))
    }
}
