//! What each record adds to the exact sums the KPIs are computed from:
//! the metrics (one column of the rollups each), a `Tally` of them, and
//! each record kind's contributions, credited at an instant.

use chrono::{DateTime, Utc};

use super::{
    activity::{
        Channel, Customer, CustomerRequest, Deal, DealStage, Feedback, FeedbackKind, Interaction,
    },
    money::RateBook,
};

/// The sums every KPI is computed from, one per column of the rollups.
/// Each record adds to some of them at the instant it is credited at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Calls,
    Emails,
    Meetings,
    Messages,
    Demos,
    /// Customers whose lead_at is in the range.
    Leads,
    /// Of those, the ones with a converted_at (at any time).
    LeadsConverted,
    /// Customers whose converted_at is in the range.
    Conversions,
    /// Customers whose churned_at is in the range.
    Churns,
    /// Deals closed (closed_at in the range) as WON.
    DealsWon,
    DealsLost,
    /// Sum of the amounts of WON deals converted into the reporting
    /// currency (at the rate in effect at closed_at), in billionths (nanos).
    RevenueNanos,
    /// Sum of closed_at - created_at of WON deals, in microseconds.
    CycleMicros,
    /// WON deals whose currency has no exchange rate at their closed_at:
    /// in DealsWon, not in RevenueNanos.
    WonUnconverted,
    NpsResponses,
    NpsPromoters,
    NpsDetractors,
    CsatResponses,
    /// CSAT responses scoring 4 or 5.
    CsatSatisfied,
    /// Requests whose opened_at is in the range.
    RequestsOpened,
    RequestsResolved,
    RequestsResponded,
    /// Sum of first_response_at - opened_at, in microseconds.
    ResponseMicros,
}

pub const METRICS: [Metric; 23] = [
    Metric::Calls,
    Metric::Emails,
    Metric::Meetings,
    Metric::Messages,
    Metric::Demos,
    Metric::Leads,
    Metric::LeadsConverted,
    Metric::Conversions,
    Metric::Churns,
    Metric::DealsWon,
    Metric::DealsLost,
    Metric::RevenueNanos,
    Metric::CycleMicros,
    Metric::WonUnconverted,
    Metric::NpsResponses,
    Metric::NpsPromoters,
    Metric::NpsDetractors,
    Metric::CsatResponses,
    Metric::CsatSatisfied,
    Metric::RequestsOpened,
    Metric::RequestsResolved,
    Metric::RequestsResponded,
    Metric::ResponseMicros,
];

/// A set of metrics: what a call's KPIs are made of, so that the sums of
/// the others are not read at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricSet(u32);

impl MetricSet {
    pub const ALL: Self = Self((1 << METRICS.len()) - 1);
    pub const NONE: Self = Self(0);

    pub fn of(metrics: &[Metric]) -> Self {
        Self(metrics.iter().fold(0, |bits, m| bits | (1 << *m as u32)))
    }

    pub fn contains(self, metric: Metric) -> bool {
        self.0 & (1 << metric as u32) != 0
    }

    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl Default for MetricSet {
    /// Every metric: a query that says nothing reads everything.
    fn default() -> Self {
        Self::ALL
    }
}

/// Exact sums of every metric (plus retention's two numbers, which are not
/// sums over a range: see `Retention`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub sums: [i128; METRICS.len()],
    pub retention: Retention,
}

/// S: customers active at the period start (converted before it, not
/// churned before it); C: those of S whose churned_at is in the period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub active_at_start: i128,
    pub churned: i128,
}

impl Tally {
    pub fn get(&self, metric: Metric) -> i128 {
        self.sums[metric as usize]
    }

    pub fn add(&mut self, metric: Metric, value: i128) {
        self.sums[metric as usize] += value;
    }

    pub fn merge(&mut self, other: &Tally) {
        for (a, b) in self.sums.iter_mut().zip(other.sums.iter()) {
            *a += b;
        }
        self.retention.active_at_start += other.retention.active_at_start;
        self.retention.churned += other.retention.churned;
    }
}

/// A record's contribution: (instant credited at, metric, amount).
pub type Contribution = (DateTime<Utc>, Metric, i128);

/// A record's contributions: at most four, kept inline (no allocation per
/// record on the ingest path).
#[derive(Debug, Clone, Copy)]
pub struct Contributions {
    items: [Contribution; 4],
    len: usize,
}

impl Contributions {
    pub fn of(items: &[Contribution]) -> Self {
        let mut out = Self {
            items: [(DateTime::<Utc>::MIN_UTC, Metric::Calls, 0); 4],
            len: 0,
        };
        for item in items {
            out.push(*item);
        }
        out
    }

    fn push(&mut self, item: Contribution) {
        // Every record type has at most four (a customer's lead,
        // converted lead, conversion and churn).
        debug_assert!(self.len < self.items.len());
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = item;
            self.len += 1;
        }
    }
}

impl std::ops::Deref for Contributions {
    type Target = [Contribution];
    fn deref(&self) -> &[Contribution] {
        &self.items[..self.len]
    }
}

fn micros(from: DateTime<Utc>, to: DateTime<Utc>) -> i128 {
    i128::from((to - from).num_microseconds().unwrap_or(i64::MAX))
}

pub fn interaction_contributions(r: &Interaction) -> Contributions {
    let metric = match r.channel {
        Channel::Call => Metric::Calls,
        Channel::Email => Metric::Emails,
        Channel::Meeting => Metric::Meetings,
        Channel::Message => Metric::Messages,
        Channel::Demo => Metric::Demos,
    };
    Contributions::of(&[(r.occurred_at, metric, 1)])
}

pub fn customer_contributions(r: &Customer) -> Contributions {
    let mut out = Contributions::of(&[(r.lead_at, Metric::Leads, 1)]);
    if let Some(converted) = r.converted_at {
        out.push((r.lead_at, Metric::LeadsConverted, 1));
        out.push((converted, Metric::Conversions, 1));
    }
    if let Some(churned) = r.churned_at {
        out.push((churned, Metric::Churns, 1));
    }
    out
}

/// A deal's contributions, its amount converted with `rates` (a won deal
/// without a rate at its closed_at counts as `WonUnconverted` instead of
/// revenue).
pub fn deal_contributions(r: &Deal, rates: &RateBook) -> Contributions {
    match (r.stage, r.closed_at) {
        (DealStage::Won, Some(closed)) => Contributions::of(&[
            (closed, Metric::DealsWon, 1),
            match rates.converted(r) {
                Some(nanos) => (closed, Metric::RevenueNanos, nanos),
                None => (closed, Metric::WonUnconverted, 1),
            },
            (closed, Metric::CycleMicros, micros(r.created_at, closed)),
        ]),
        (DealStage::Lost, Some(closed)) => Contributions::of(&[(closed, Metric::DealsLost, 1)]),
        _ => Contributions::of(&[]),
    }
}

pub fn feedback_contributions(r: &Feedback) -> Contributions {
    let at = r.submitted_at;
    match r.kind {
        FeedbackKind::Nps => {
            let mut out = Contributions::of(&[(at, Metric::NpsResponses, 1)]);
            if r.score >= 9 {
                out.push((at, Metric::NpsPromoters, 1));
            } else if r.score <= 6 {
                out.push((at, Metric::NpsDetractors, 1));
            }
            out
        }
        FeedbackKind::Csat => {
            let mut out = Contributions::of(&[(at, Metric::CsatResponses, 1)]);
            if r.score >= 4 {
                out.push((at, Metric::CsatSatisfied, 1));
            }
            out
        }
    }
}

pub fn request_contributions(r: &CustomerRequest) -> Contributions {
    let at = r.opened_at;
    let mut out = Contributions::of(&[(at, Metric::RequestsOpened, 1)]);
    if r.resolved_at.is_some() {
        out.push((at, Metric::RequestsResolved, 1));
    }
    if let Some(responded) = r.first_response_at {
        out.push((at, Metric::RequestsResponded, 1));
        out.push((at, Metric::ResponseMicros, micros(at, responded)));
    }
    out
}
