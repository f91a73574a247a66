//! Exchange rates: a SetExchangeRates request's rates, every violation by
//! its path (`rates[3].rate`), and a rate back.

use std::collections::HashSet;

use crate::{
    Error,
    domain::{
        Violations,
        money::{Rate, RateEntry, check_currency},
        period,
    },
    proto::pb,
};

/// Most rates per SetExchangeRates call.
pub const MAX_RATES: usize = 1000;

/// Every rate of a request, or every violation by path
/// (`rates[3].rate`).
pub fn parse_rates(rates: Vec<pb::ExchangeRate>, reporting: &str) -> Result<Vec<RateEntry>, Error> {
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

pub fn rate_to_pb(entry: RateEntry) -> pb::ExchangeRate {
    pb::ExchangeRate {
        currency_code: entry.currency,
        effective_date: entry.date.to_string(),
        rate: entry.rate.to_decimal(),
    }
}
