//! Currencies and exchange rates: ISO 4217 codes (the list of the
//! maintained `iso_currency` crate), exact rates, and the conversion of a
//! deal's amount into the reporting currency.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};

use super::activity::{Amount, Deal, DealStage};

/// Most significant digits of a rate: with them, an amount (at most 10^24
/// nanos) times a rate's digits stays below 2^128, so conversion is exact
/// integer arithmetic.
pub const MAX_RATE_DIGITS: usize = 14;
/// Most decimals of a rate.
pub const MAX_RATE_DECIMALS: u32 = 18;

/// An ISO 4217 code the standard list knows (`EUR`), or why not.
pub fn check_currency(code: &str) -> Result<(), String> {
    if iso_currency::Currency::from_code(code).is_some() {
        Ok(())
    } else {
        Err(format!(
            "must be an ISO 4217 currency code such as USD or EUR (got {})",
            super::ids::echo(code)
        ))
    }
}

/// An exchange rate: how many units of the reporting currency one unit of
/// a currency is worth, as an exact decimal `digits` x 10^-`scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    digits: u64,
    scale: u32,
}

impl Rate {
    /// The identity: a deal in the reporting currency.
    pub const ONE: Rate = Rate {
        digits: 1,
        scale: 0,
    };

    /// Parses decimal text (`1.0845`, `0.0000393`, `150`): digits with at
    /// most one point, greater than zero, at most `MAX_RATE_DIGITS`
    /// significant digits and `MAX_RATE_DECIMALS` decimals. No sign, no
    /// exponent, no grouping: a rate is never rounded on the way in.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let shown = super::ids::echo(text);
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && fraction.is_empty() || !digits_only(whole) || !digits_only(fraction)
        {
            return Err(format!(
                "must be a decimal number such as 1.0845 (got {shown})"
            ));
        }
        let fraction = fraction.trim_end_matches('0');
        let scale = u32::try_from(fraction.len()).unwrap_or(u32::MAX);
        if scale > MAX_RATE_DECIMALS {
            return Err(format!(
                "must have at most {MAX_RATE_DECIMALS} decimals (got {shown})"
            ));
        }
        let all = format!("{whole}{fraction}");
        let significant = all.trim_start_matches('0');
        if significant.is_empty() {
            return Err(format!("must be greater than zero (got {shown})"));
        }
        if significant.len() > MAX_RATE_DIGITS {
            return Err(format!(
                "must have at most {MAX_RATE_DIGITS} significant digits (got {shown})"
            ));
        }
        let digits: u64 = significant
            .parse()
            .map_err(|_| format!("must be a decimal number (got {shown})"))?;
        Ok(Rate { digits, scale })
    }

    /// Canonical decimal text: `1.0845`, `0.0000393`, `150`.
    pub fn to_decimal(self) -> String {
        let digits = self.digits.to_string();
        let scale = self.scale as usize;
        if scale == 0 {
            return digits;
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        format!("{whole}.{fraction}")
    }

    /// `amount` x this rate, in nanos of the reporting currency: the exact
    /// product, rounded once to the nano, half to even.
    pub fn convert(self, amount: Amount) -> i128 {
        let nanos = u128::try_from(amount_nanos(amount)).unwrap_or(0);
        // Below 10^24 x 10^14 = 10^38 < 2^128: exact.
        let product = nanos * u128::from(self.digits);
        let divisor = 10u128.pow(self.scale);
        let (quotient, remainder) = (product / divisor, product % divisor);
        let twice = remainder * 2;
        let up = twice > divisor || (twice == divisor && quotient % 2 == 1);
        i128::try_from(quotient + u128::from(up)).unwrap_or(i128::MAX)
    }
}

/// Won deals left out of REVENUE and AVERAGE_DEAL_SIZE for want of an
/// exchange rate at their closed_at: the currencies, and the earliest
/// closed_at among them (the first date a rate is missing for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingRates {
    pub currencies: Vec<String>,
    pub earliest_closed_at: DateTime<Utc>,
}

/// An amount in nanos (billionths of a unit).
pub fn amount_nanos(amount: Amount) -> i128 {
    i128::from(amount.units()) * 1_000_000_000 + i128::from(amount.nanos())
}

/// The rates of some currencies, each dated: a rate applies from 00:00 UTC
/// of its date until the next rate of its currency.
#[derive(Debug, Clone, Default)]
pub struct RateBook {
    reporting: String,
    rates: HashMap<String, BTreeMap<NaiveDate, Rate>>,
}

impl RateBook {
    pub fn new(reporting: &str) -> Self {
        Self {
            reporting: reporting.to_owned(),
            rates: HashMap::new(),
        }
    }

    pub fn reporting(&self) -> &str {
        &self.reporting
    }

    pub fn insert(&mut self, currency: &str, date: NaiveDate, rate: Rate) {
        self.rates
            .entry(currency.to_owned())
            .or_default()
            .insert(date, rate);
    }

    /// The rate of `currency` in effect at `at` (1 for the reporting
    /// currency), if any.
    pub fn rate(&self, currency: &str, at: DateTime<Utc>) -> Option<Rate> {
        if currency == self.reporting {
            return Some(Rate::ONE);
        }
        self.rates
            .get(currency)?
            .range(..=at.date_naive())
            .next_back()
            .map(|(_, rate)| *rate)
    }

    /// A won deal's amount in nanos of the reporting currency, converted at
    /// the rate in effect at its `closed_at`; `None` without a rate (or for
    /// a deal that is not won).
    pub fn converted(&self, deal: &Deal) -> Option<i128> {
        match (deal.stage, deal.closed_at) {
            (DealStage::Won, Some(closed)) => self
                .rate(&deal.currency, closed)
                .map(|rate| rate.convert(deal.amount)),
            _ => None,
        }
    }
}

/// One rate to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateEntry {
    pub currency: String,
    pub date: NaiveDate,
    pub rate: Rate,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(text: &str) -> Rate {
        Rate::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn amount(units: i64, nanos: i32) -> Amount {
        Amount::new(units, nanos).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn currencies_come_from_the_iso_list() {
        for code in ["USD", "EUR", "JPY", "KWD", "CHF"] {
            assert_eq!(check_currency(code), Ok(()), "{code}");
        }
        for code in ["usd", "EURO", "XYZ", "", "€"] {
            assert!(check_currency(code).is_err(), "{code}");
        }
    }

    #[test]
    fn rates_are_exact_decimals_within_their_limits() {
        assert_eq!(rate("1.0845").to_decimal(), "1.0845");
        assert_eq!(rate("0.0000393").to_decimal(), "0.0000393");
        assert_eq!(rate("150").to_decimal(), "150");
        assert_eq!(rate("150.000").to_decimal(), "150");
        assert_eq!(rate(".5").to_decimal(), "0.5");
        assert_eq!(rate("007.10").to_decimal(), "7.1");
        assert_eq!(rate("12345678901234").to_decimal(), "12345678901234");
        for bad in [
            "",
            ".",
            "0",
            "0.000",
            "-1",
            "+1",
            "1e3",
            "1,5",
            "1.2.3",
            " 1",
            "NaN",
            "123456789012345",
            "0.0000000000000000001",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn conversion_is_exact_and_rounds_once_half_to_even() {
        // The worked example of docs/KPIS.md: EUR 1,234.56 at 1.0845 is
        // exactly 1,338.88032 USD.
        assert_eq!(
            rate("1.0845").convert(amount(1234, 560_000_000)),
            1_338_880_320_000
        );
        // 0.000000001 x 0.5 = 0.0000000005: half, to even (0).
        assert_eq!(rate("0.5").convert(amount(0, 1)), 0);
        // 0.000000003 x 0.5 = 0.0000000015: half, to even (2).
        assert_eq!(rate("0.5").convert(amount(0, 3)), 2);
        // 0.000000001 x 0.51: above half, up.
        assert_eq!(rate("0.51").convert(amount(0, 1)), 1);
        // The largest amount at the largest rate does not overflow.
        let big = amount(999_999_999_999_999, 999_999_999);
        let most = rate("99999999999999");
        assert_eq!(
            most.convert(big),
            99_999_999_999_999 * (1_000_000_000_000_000_000_000_000 - 1)
        );
        assert_eq!(Rate::ONE.convert(amount(7, 5)), 7_000_000_005);
    }

    #[test]
    fn a_rate_applies_from_its_date_until_the_next() {
        let mut book = RateBook::new("USD");
        let day = |d: &str| d.parse::<NaiveDate>().unwrap_or_default();
        let at = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
        };
        book.insert("EUR", day("2026-01-01"), rate("1.10"));
        book.insert("EUR", day("2026-02-01"), rate("1.20"));
        assert_eq!(book.rate("EUR", at("2025-12-31T23:59:59Z")), None);
        assert_eq!(
            book.rate("EUR", at("2026-01-01T00:00:00Z")),
            Some(rate("1.1"))
        );
        assert_eq!(
            book.rate("EUR", at("2026-01-31T23:59:59Z")),
            Some(rate("1.1"))
        );
        assert_eq!(
            book.rate("EUR", at("2026-02-01T00:00:00Z")),
            Some(rate("1.2"))
        );
        assert_eq!(
            book.rate("USD", at("1999-01-01T00:00:00Z")),
            Some(Rate::ONE)
        );
        assert_eq!(book.rate("GBP", at("2026-02-01T00:00:00Z")), None);
    }
}
