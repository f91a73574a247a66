//! The records behind a KPI value, as ExplainKpi lists them: which side of
//! the value to list, and what each record contributes.

use chrono::{DateTime, Utc};

use super::money::Rate;

/// Which side of the value the listed records must add to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExplainPart {
    #[default]
    Either,
    Numerator,
    Denominator,
}

/// One record's contribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordContribution {
    pub record_type: &'static str,
    pub record_id: String,
    pub rep_id: String,
    pub team_id: Option<String>,
    pub credited_at: DateTime<Utc>,
    /// In the units of the value's numerator text: a count, ±1, nanos of
    /// a second (durations) or nanos of the reporting currency (money).
    pub numerator_nanos_or_count: i128,
    pub denominator: i128,
    /// Whether `numerator_nanos_or_count` is in nanos.
    pub in_nanos: bool,
    /// Deals in money KPIs: currency, amount in nanos, the rate.
    pub deal: Option<(String, i128, Rate)>,
}
