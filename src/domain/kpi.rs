//! The KPI catalog and its math. Everything a KPI is computed from is a
//! `Tally` of exact sums (`sums`); each KPI is a formula over a tally.
//! Formulas and worked examples: docs/KPIS.md.
//!
//! One concern in one file, on purpose: the catalog (half the lines: one
//! definition with its formula text per KPI), the formulas that must match
//! it, the intervals, and their hand-worked tests read best side by side.

use super::{
    money::MissingRates,
    sums::{Metric, MetricSet, Tally},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kpi {
    Leads,
    NewCustomers,
    ConversionRate,
    RetentionRate,
    ChurnRate,
    Nps,
    Csat,
    WinRate,
    Revenue,
    DealsWon,
    AverageDealSize,
    SalesCycleDays,
    Interactions,
    Calls,
    Emails,
    Meetings,
    FirstResponseMinutes,
    RequestResolutionRate,
}

/// A stored KPI code that this build does not know (a newer build wrote
/// it, or the row was edited by hand).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown KPI code '{0}'")]
pub struct UnknownKpiCode(pub String);

impl Kpi {
    /// Every KPI, in catalog order.
    pub const ALL: [Kpi; 18] = [
        Kpi::Leads,
        Kpi::NewCustomers,
        Kpi::ConversionRate,
        Kpi::RetentionRate,
        Kpi::ChurnRate,
        Kpi::Nps,
        Kpi::Csat,
        Kpi::WinRate,
        Kpi::Revenue,
        Kpi::DealsWon,
        Kpi::AverageDealSize,
        Kpi::SalesCycleDays,
        Kpi::Interactions,
        Kpi::Calls,
        Kpi::Emails,
        Kpi::Meetings,
        Kpi::FirstResponseMinutes,
        Kpi::RequestResolutionRate,
    ];

    /// The KPI's stable code, as stored in the database (`targets.kpi`).
    /// The service's own names, independent of the protobuf numbering.
    pub fn code(self) -> &'static str {
        match self {
            Kpi::Leads => "leads",
            Kpi::NewCustomers => "new_customers",
            Kpi::ConversionRate => "conversion_rate",
            Kpi::RetentionRate => "retention_rate",
            Kpi::ChurnRate => "churn_rate",
            Kpi::Nps => "nps",
            Kpi::Csat => "csat",
            Kpi::WinRate => "win_rate",
            Kpi::Revenue => "revenue",
            Kpi::DealsWon => "deals_won",
            Kpi::AverageDealSize => "average_deal_size",
            Kpi::SalesCycleDays => "sales_cycle_days",
            Kpi::Interactions => "interactions",
            Kpi::Calls => "calls",
            Kpi::Emails => "emails",
            Kpi::Meetings => "meetings",
            Kpi::FirstResponseMinutes => "first_response_minutes",
            Kpi::RequestResolutionRate => "request_resolution_rate",
        }
    }

    /// The KPI of a stored code; an unknown code is an error, never a
    /// default.
    pub fn from_code(code: &str) -> Result<Kpi, UnknownKpiCode> {
        Kpi::ALL
            .into_iter()
            .find(|k| k.code() == code)
            .ok_or_else(|| UnknownKpiCode(code.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Percent,
    Nps,
    Money,
    Days,
    Minutes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    HigherIsBetter,
    LowerIsBetter,
}

/// What kind of number a KPI is, which decides pacing and sample rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A count or a sum: accumulates over the period.
    Total,
    /// A percentage of yes/no outcomes (Wilson interval).
    Proportion,
    /// NPS.
    Nps,
    /// A mean (or ratio of sums).
    Mean,
}

pub struct Definition {
    pub kpi: Kpi,
    pub name: &'static str,
    pub description: &'static str,
    pub unit: Unit,
    pub direction: Direction,
    pub shape: Shape,
    pub formula: &'static str,
}

pub const CATALOG: [Definition; 18] = [
    Definition {
        kpi: Kpi::Leads,
        name: "Leads",
        description: "New leads.",
        unit: Unit::Count,
        direction: Direction::HigherIsBetter,
        shape: Shape::Total,
        formula: "count of customers whose lead_at is in the period (credited at lead_at)",
    },
    Definition {
        kpi: Kpi::NewCustomers,
        name: "New customers",
        description: "Leads that became paying customers.",
        unit: Unit::Count,
        direction: Direction::HigherIsBetter,
        shape: Shape::Total,
        formula: "count of customers whose converted_at is in the period (credited at converted_at)",
    },
    Definition {
        kpi: Kpi::ConversionRate,
        name: "Conversion rate",
        description: "Share of the period's leads that converted (at any time so far).",
        unit: Unit::Percent,
        direction: Direction::HigherIsBetter,
        shape: Shape::Proportion,
        formula: "100 x (leads of the period with a converted_at) / (leads of the period); credited at lead_at",
    },
    Definition {
        kpi: Kpi::RetentionRate,
        name: "Retention rate",
        description: "Share of the customers active at the period start who did not churn in it.",
        unit: Unit::Percent,
        direction: Direction::HigherIsBetter,
        shape: Shape::Proportion,
        formula: "S = customers converted before the period start and not churned before it; C = those of S with churned_at in the period; 100 x (S - C) / S; credited to the owning rep's team at the period start",
    },
    Definition {
        kpi: Kpi::ChurnRate,
        name: "Churn rate",
        description: "Share of the customers active at the period start who churned in it.",
        unit: Unit::Percent,
        direction: Direction::LowerIsBetter,
        shape: Shape::Proportion,
        formula: "100 x C / S (see RETENTION_RATE)",
    },
    Definition {
        kpi: Kpi::Nps,
        name: "Net Promoter Score",
        description: "Promoters minus detractors, per 100 NPS responses.",
        unit: Unit::Nps,
        direction: Direction::HigherIsBetter,
        shape: Shape::Nps,
        formula: "100 x (promoters (9-10) - detractors (0-6)) / NPS responses submitted in the period (credited at submitted_at)",
    },
    Definition {
        kpi: Kpi::Csat,
        name: "Customer satisfaction",
        description: "Share of CSAT responses scoring 4 or 5.",
        unit: Unit::Percent,
        direction: Direction::HigherIsBetter,
        shape: Shape::Proportion,
        formula: "100 x (CSAT responses scoring 4 or 5) / CSAT responses submitted in the period (credited at submitted_at)",
    },
    Definition {
        kpi: Kpi::WinRate,
        name: "Win rate",
        description: "Share of closed deals that were won.",
        unit: Unit::Percent,
        direction: Direction::HigherIsBetter,
        shape: Shape::Proportion,
        formula: "100 x won / (won + lost), deals closed in the period (credited at closed_at); open deals do not count",
    },
    Definition {
        kpi: Kpi::Revenue,
        name: "Revenue",
        description: "Sum of won deal amounts.",
        unit: Unit::Money,
        direction: Direction::HigherIsBetter,
        shape: Shape::Total,
        formula: "sum of amounts of WON deals closed in the period (credited at closed_at), each converted into the reporting currency at the rate of its currency in effect at closed_at, exact; deals without a rate are left out and counted in missing_rates",
    },
    Definition {
        kpi: Kpi::DealsWon,
        name: "Deals won",
        description: "Deals closed as won.",
        unit: Unit::Count,
        direction: Direction::HigherIsBetter,
        shape: Shape::Total,
        formula: "count of WON deals closed in the period (credited at closed_at)",
    },
    Definition {
        kpi: Kpi::AverageDealSize,
        name: "Average deal size",
        description: "Revenue per won deal.",
        unit: Unit::Money,
        direction: Direction::HigherIsBetter,
        shape: Shape::Mean,
        formula: "REVENUE / (DEALS_WON whose amount could be converted), rounded to the nano",
    },
    Definition {
        kpi: Kpi::SalesCycleDays,
        name: "Sales cycle",
        description: "Mean days from creation to close of won deals.",
        unit: Unit::Days,
        direction: Direction::LowerIsBetter,
        shape: Shape::Mean,
        formula: "mean of (closed_at - created_at) in days over WON deals closed in the period (credited at closed_at)",
    },
    Definition {
        kpi: Kpi::Interactions,
        name: "Interactions",
        description: "Calls, emails, meetings, messages and demos.",
        unit: Unit::Count,
        direction: Direction::HigherIsBetter,
        shape: Shape::Total,
        formula: "count of interactions that occurred in the period (credited at occurred_at)",
    },
    Definition {
        kpi: Kpi::Calls,
        name: "Calls",
        description: "Calls.",
        unit: Unit::Count,
        direction: Direction::HigherIsBetter,
        shape: Shape::Total,
        formula: "count of CALL interactions that occurred in the period",
    },
    Definition {
        kpi: Kpi::Emails,
        name: "Emails",
        description: "Emails.",
        unit: Unit::Count,
        direction: Direction::HigherIsBetter,
        shape: Shape::Total,
        formula: "count of EMAIL interactions that occurred in the period",
    },
    Definition {
        kpi: Kpi::Meetings,
        name: "Meetings",
        description: "Meetings.",
        unit: Unit::Count,
        direction: Direction::HigherIsBetter,
        shape: Shape::Total,
        formula: "count of MEETING interactions that occurred in the period",
    },
    Definition {
        kpi: Kpi::FirstResponseMinutes,
        name: "First response time",
        description: "Mean minutes to the first response to a customer request.",
        unit: Unit::Minutes,
        direction: Direction::LowerIsBetter,
        shape: Shape::Mean,
        formula: "mean of (first_response_at - opened_at) in minutes over requests opened in the period that have a first response (credited at opened_at)",
    },
    Definition {
        kpi: Kpi::RequestResolutionRate,
        name: "Request resolution rate",
        description: "Share of requests opened in the period that are resolved.",
        unit: Unit::Percent,
        direction: Direction::HigherIsBetter,
        shape: Shape::Proportion,
        formula: "100 x resolved / opened, over requests opened in the period (credited at opened_at)",
    },
];

/// The catalog entry of `kpi`. `CATALOG` lists the KPIs in the order of
/// `Kpi::ALL` (a test checks it), so this is an index, never a fallback.
pub fn definition(kpi: Kpi) -> &'static Definition {
    &CATALOG[kpi as usize]
}

/// A 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    pub method: &'static str,
}

/// A computed KPI.
#[derive(Debug, Clone, PartialEq)]
pub struct KpiValue {
    pub kpi: Kpi,
    /// `None` when the denominator is zero.
    pub value: Option<f64>,
    pub undefined_reason: Option<&'static str>,
    /// Exact, for money KPIs, in nanos.
    pub money_nanos: Option<i128>,
    /// Exact decimal text.
    pub numerator: String,
    pub denominator: String,
    pub sample_size: i64,
    pub interval: Option<Interval>,
    pub promoters: i64,
    pub detractors: i64,
    /// REVENUE and AVERAGE_DEAL_SIZE: won deals left out for want of an
    /// exchange rate at their closed_at (they still count in DEALS_WON,
    /// WIN_RATE and SALES_CYCLE_DAYS).
    pub unconverted_deals: i64,
    /// Which currencies lack a rate, and since when (filled in by the
    /// service when `unconverted_deals` > 0).
    pub missing_rates: Option<MissingRates>,
}

const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score interval for `successes` of `n`, as percentages.
pub fn wilson(successes: i128, n: i128) -> Option<Interval> {
    if n <= 0 {
        return None;
    }
    let n = n as f64;
    let p = successes as f64 / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Interval {
        low: (100.0 * (centre - half)).max(0.0),
        high: (100.0 * (centre + half)).min(100.0),
        method: "wilson",
    })
}

/// NPS interval: mean +- z x sqrt(((p + d) - (p - d)^2) / n) of the
/// per-response score (+1 promoter, 0 passive, -1 detractor), x 100,
/// clamped to [-100, 100]; p and d are the promoter and detractor shares.
pub fn nps_interval(promoters: i128, detractors: i128, n: i128) -> Option<Interval> {
    if n <= 0 {
        return None;
    }
    let nf = n as f64;
    let (p, d) = (promoters as f64 / nf, detractors as f64 / nf);
    let mean = p - d;
    let half = Z95 * (((p + d) - mean * mean).max(0.0) / nf).sqrt();
    Some(Interval {
        low: (100.0 * (mean - half)).max(-100.0),
        high: (100.0 * (mean + half)).min(100.0),
        method: "nps",
    })
}

/// Decimal text of `nanos` billionths, trailing zeros trimmed ("1250.5").
pub fn nanos_text(nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.unsigned_abs();
    let units = abs / 1_000_000_000;
    let frac = abs % 1_000_000_000;
    if frac == 0 {
        format!("{sign}{units}")
    } else {
        let frac = format!("{frac:09}");
        format!("{sign}{units}.{}", frac.trim_end_matches('0'))
    }
}

const TOO_LARGE_FOR_MONEY: &str =
    "the amount exceeds the largest Money (9223372036854775807 units); numerator holds it exactly";

/// Whether `nanos` billionths fit a `Money` (whole units in an i64).
pub fn fits_money(nanos: i128) -> bool {
    i64::try_from(nanos / 1_000_000_000).is_ok()
}

/// Rounds `num / den` to the nearest integer, halves away from zero.
pub fn div_round(num: i128, den: i128) -> i128 {
    if den == 0 {
        return 0;
    }
    let q = num / den;
    let r = num % den;
    if 2 * r.abs() >= den.abs() {
        q + num.signum() * den.signum()
    } else {
        q
    }
}

fn count_value(kpi: Kpi, n: i128) -> KpiValue {
    KpiValue {
        kpi,
        value: Some(n as f64),
        undefined_reason: None,
        money_nanos: None,
        numerator: n.to_string(),
        denominator: "1".into(),
        sample_size: i64::try_from(n).unwrap_or(i64::MAX),
        interval: None,
        promoters: 0,
        detractors: 0,
        unconverted_deals: 0,
        missing_rates: None,
    }
}

fn undefined(kpi: Kpi, numerator: String, reason: &'static str) -> KpiValue {
    KpiValue {
        kpi,
        value: None,
        undefined_reason: Some(reason),
        money_nanos: None,
        numerator,
        denominator: "0".into(),
        sample_size: 0,
        interval: None,
        promoters: 0,
        detractors: 0,
        unconverted_deals: 0,
        missing_rates: None,
    }
}

fn proportion(kpi: Kpi, yes: i128, n: i128, reason: &'static str) -> KpiValue {
    if n <= 0 {
        return undefined(kpi, yes.to_string(), reason);
    }
    KpiValue {
        kpi,
        value: Some(100.0 * yes as f64 / n as f64),
        undefined_reason: None,
        money_nanos: None,
        numerator: yes.to_string(),
        denominator: n.to_string(),
        sample_size: i64::try_from(n).unwrap_or(i64::MAX),
        interval: wilson(yes, n),
        promoters: 0,
        detractors: 0,
        unconverted_deals: 0,
        missing_rates: None,
    }
}

/// A mean duration: `sum_micros` over `n`, in units of `unit_micros`. The
/// numerator is the exact sum in seconds.
fn mean_of_micros(
    kpi: Kpi,
    sum_micros: i128,
    n: i128,
    unit_micros: f64,
    reason: &'static str,
) -> KpiValue {
    let numerator_seconds = nanos_text(sum_micros * 1000);
    if n <= 0 {
        return undefined(kpi, numerator_seconds, reason);
    }
    KpiValue {
        kpi,
        value: Some(sum_micros as f64 / unit_micros / n as f64),
        undefined_reason: None,
        money_nanos: None,
        numerator: numerator_seconds,
        denominator: n.to_string(),
        sample_size: i64::try_from(n).unwrap_or(i64::MAX),
        interval: None,
        promoters: 0,
        detractors: 0,
        unconverted_deals: 0,
        missing_rates: None,
    }
}

/// Whether `evaluate(kpi, …)` reads `Tally::retention` (the customers
/// active at the period start, the costliest part of a tally).
pub fn needs_retention(kpi: Kpi) -> bool {
    matches!(kpi, Kpi::RetentionRate | Kpi::ChurnRate)
}

/// The sums `evaluate` reads for `kpi` (retention also reads conversions
/// and churns: customers active at a period start are those converted
/// before it minus those churned before it). A test checks that no other
/// sum changes the value.
pub fn metrics_of(kpi: Kpi) -> &'static [Metric] {
    use Metric as M;
    match kpi {
        Kpi::Leads => &[M::Leads],
        Kpi::NewCustomers => &[M::Conversions],
        Kpi::ConversionRate => &[M::LeadsConverted, M::Leads],
        Kpi::RetentionRate | Kpi::ChurnRate => &[M::Conversions, M::Churns],
        Kpi::Nps => &[M::NpsPromoters, M::NpsDetractors, M::NpsResponses],
        Kpi::Csat => &[M::CsatSatisfied, M::CsatResponses],
        Kpi::WinRate => &[M::DealsWon, M::DealsLost],
        Kpi::Revenue | Kpi::AverageDealSize => &[M::RevenueNanos, M::DealsWon, M::WonUnconverted],
        Kpi::DealsWon => &[M::DealsWon],
        Kpi::SalesCycleDays => &[M::CycleMicros, M::DealsWon],
        Kpi::Interactions => &[M::Calls, M::Emails, M::Meetings, M::Messages, M::Demos],
        Kpi::Calls => &[M::Calls],
        Kpi::Emails => &[M::Emails],
        Kpi::Meetings => &[M::Meetings],
        Kpi::FirstResponseMinutes => &[M::ResponseMicros, M::RequestsResponded],
        Kpi::RequestResolutionRate => &[M::RequestsResolved, M::RequestsOpened],
    }
}

/// The sums any of `kpis` reads.
pub fn metrics_for(kpis: &[Kpi]) -> MetricSet {
    kpis.iter().fold(MetricSet::NONE, |set, kpi| {
        set.union(MetricSet::of(metrics_of(*kpi)))
    })
}

/// Computes `kpi` from `tally`.
pub fn evaluate(kpi: Kpi, t: &Tally) -> KpiValue {
    use Metric as M;
    match kpi {
        Kpi::Leads => count_value(kpi, t.get(M::Leads)),
        Kpi::NewCustomers => count_value(kpi, t.get(M::Conversions)),
        Kpi::DealsWon => count_value(kpi, t.get(M::DealsWon)),
        Kpi::Calls => count_value(kpi, t.get(M::Calls)),
        Kpi::Emails => count_value(kpi, t.get(M::Emails)),
        Kpi::Meetings => count_value(kpi, t.get(M::Meetings)),
        Kpi::Interactions => count_value(
            kpi,
            t.get(M::Calls)
                + t.get(M::Emails)
                + t.get(M::Meetings)
                + t.get(M::Messages)
                + t.get(M::Demos),
        ),
        Kpi::Revenue => {
            let nanos = t.get(M::RevenueNanos);
            let fits = fits_money(nanos);
            let unconverted = t.get(M::WonUnconverted);
            KpiValue {
                value: fits.then_some(nanos as f64 / 1e9),
                undefined_reason: (!fits).then_some(TOO_LARGE_FOR_MONEY),
                money_nanos: fits.then_some(nanos),
                numerator: nanos_text(nanos),
                sample_size: i64::try_from(t.get(M::DealsWon) - unconverted).unwrap_or(i64::MAX),
                unconverted_deals: i64::try_from(unconverted).unwrap_or(i64::MAX),
                ..count_value(kpi, 0)
            }
        }
        Kpi::ConversionRate => proportion(
            kpi,
            t.get(M::LeadsConverted),
            t.get(M::Leads),
            "no leads in the period",
        ),
        Kpi::RetentionRate => {
            let r = t.retention;
            proportion(
                kpi,
                r.active_at_start - r.churned,
                r.active_at_start,
                "no active customers at the period start",
            )
        }
        Kpi::ChurnRate => {
            let r = t.retention;
            proportion(
                kpi,
                r.churned,
                r.active_at_start,
                "no active customers at the period start",
            )
        }
        Kpi::Csat => proportion(
            kpi,
            t.get(M::CsatSatisfied),
            t.get(M::CsatResponses),
            "no CSAT responses in the period",
        ),
        Kpi::WinRate => {
            let won = t.get(M::DealsWon);
            proportion(
                kpi,
                won,
                won + t.get(M::DealsLost),
                "no deals closed in the period",
            )
        }
        Kpi::RequestResolutionRate => proportion(
            kpi,
            t.get(M::RequestsResolved),
            t.get(M::RequestsOpened),
            "no requests opened in the period",
        ),
        Kpi::Nps => {
            let (p, d, n) = (
                t.get(M::NpsPromoters),
                t.get(M::NpsDetractors),
                t.get(M::NpsResponses),
            );
            if n <= 0 {
                return undefined(kpi, "0".into(), "no NPS responses in the period");
            }
            KpiValue {
                kpi,
                value: Some(100.0 * (p - d) as f64 / n as f64),
                undefined_reason: None,
                money_nanos: None,
                numerator: (p - d).to_string(),
                denominator: n.to_string(),
                sample_size: i64::try_from(n).unwrap_or(i64::MAX),
                interval: nps_interval(p, d, n),
                promoters: i64::try_from(p).unwrap_or(i64::MAX),
                detractors: i64::try_from(d).unwrap_or(i64::MAX),
                unconverted_deals: 0,
                missing_rates: None,
            }
        }
        Kpi::AverageDealSize => {
            // Over the won deals whose amount could be converted.
            let unconverted = t.get(M::WonUnconverted);
            let (revenue, won) = (t.get(M::RevenueNanos), t.get(M::DealsWon) - unconverted);
            if won <= 0 {
                let reason = if unconverted > 0 {
                    "no deal won in the period has an exchange rate at its closed_at"
                } else {
                    "no deals won in the period"
                };
                return KpiValue {
                    unconverted_deals: i64::try_from(unconverted).unwrap_or(i64::MAX),
                    ..undefined(kpi, nanos_text(revenue), reason)
                };
            }
            let mean = div_round(revenue, won);
            let fits = fits_money(mean);
            KpiValue {
                kpi,
                value: fits.then_some(revenue as f64 / 1e9 / won as f64),
                undefined_reason: (!fits).then_some(TOO_LARGE_FOR_MONEY),
                money_nanos: fits.then_some(mean),
                numerator: nanos_text(revenue),
                denominator: won.to_string(),
                sample_size: i64::try_from(won).unwrap_or(i64::MAX),
                interval: None,
                promoters: 0,
                detractors: 0,
                unconverted_deals: i64::try_from(unconverted).unwrap_or(i64::MAX),
                missing_rates: None,
            }
        }
        Kpi::SalesCycleDays => mean_of_micros(
            kpi,
            t.get(M::CycleMicros),
            t.get(M::DealsWon),
            86_400e6,
            "no deals won in the period",
        ),
        Kpi::FirstResponseMinutes => mean_of_micros(
            kpi,
            t.get(M::ResponseMicros),
            t.get(M::RequestsResponded),
            60e6,
            "no requests with a first response opened in the period",
        ),
    }
}

/// Progress against a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub target: f64,
    pub actual: Option<f64>,
    pub attainment: Option<f64>,
    pub elapsed_fraction: f64,
    pub expected_to_date: Option<f64>,
    pub projected: Option<f64>,
    pub on_track: bool,
}

/// Attainment: actual / target, or target / actual for lower-is-better.
pub fn attainment(kpi: Kpi, target: f64, actual: Option<f64>) -> Option<f64> {
    let actual = actual?;
    let ratio = match definition(kpi).direction {
        Direction::HigherIsBetter => (target != 0.0).then(|| actual / target),
        Direction::LowerIsBetter => (actual != 0.0).then(|| target / actual),
    };
    ratio.filter(|r| r.is_finite())
}

pub fn progress(kpi: Kpi, target: f64, actual: Option<f64>, elapsed_fraction: f64) -> Progress {
    let def = definition(kpi);
    let attainment = attainment(kpi, target, actual);
    let (expected_to_date, projected, on_track) = if def.shape == Shape::Total {
        let expected = target * elapsed_fraction;
        let projected = (elapsed_fraction > 0.0).then(|| actual.unwrap_or(0.0) / elapsed_fraction);
        (Some(expected), projected, actual.unwrap_or(0.0) >= expected)
    } else {
        (None, None, attainment.is_some_and(|a| a >= 1.0))
    };
    Progress {
        target,
        actual,
        attainment,
        elapsed_fraction,
        expected_to_date,
        projected,
        on_track,
    }
}

/// The default minimum sample for ranking: 10 for rates and means, none for
/// counts and sums.
pub fn default_min_sample(kpi: Kpi) -> i64 {
    if definition(kpi).shape == Shape::Total {
        0
    } else {
        10
    }
}

/// Competition ranks (1, 1, 3) for values sorted best first.
pub fn competition_ranks(sorted_values: &[f64]) -> Vec<i32> {
    let mut ranks = Vec::with_capacity(sorted_values.len());
    for (i, value) in sorted_values.iter().enumerate() {
        let rank = if i > 0 && sorted_values[i - 1] == *value {
            ranks[i - 1]
        } else {
            i32::try_from(i + 1).unwrap_or(i32::MAX)
        };
        ranks.push(rank);
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sums::METRICS;

    #[test]
    fn the_catalog_lists_every_kpi_in_order_and_codes_round_trip() {
        for (i, kpi) in Kpi::ALL.into_iter().enumerate() {
            assert_eq!(CATALOG[i].kpi, kpi);
            assert_eq!(definition(kpi).kpi, kpi);
            assert_eq!(Kpi::from_code(kpi.code()), Ok(kpi));
        }
        let codes: std::collections::HashSet<_> = Kpi::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), Kpi::ALL.len());
    }

    #[test]
    fn an_unknown_stored_code_is_an_error_not_a_default() {
        assert_eq!(Kpi::from_code("9"), Err(UnknownKpiCode("9".to_owned())));
        assert!(Kpi::from_code("").is_err());
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-4
    }

    #[test]
    fn wilson_matches_hand_worked_values() {
        // 8 of 10: p = 0.8, z = 1.96: centre = (0.8 + 0.19207) / 1.38415
        // = 0.716740; half = 1.96/1.38415 x sqrt(0.016 + 0.0096037) = 0.226578:
        // 49.016% to 94.332%
        let i = wilson(8, 10).unwrap_or(Interval {
            low: 0.0,
            high: 0.0,
            method: "",
        });
        assert!(close(i.low, 49.01625), "{i:?}");
        assert!(close(i.high, 94.33178), "{i:?}");
        let all = wilson(5, 5).unwrap_or(Interval {
            low: 0.0,
            high: 0.0,
            method: "",
        });
        assert!(all.high <= 100.0 && close(all.high, 100.0));
        assert!(wilson(0, 0).is_none());
    }

    #[test]
    fn nps_interval_matches_hand_worked_values() {
        // 5 promoters, 2 detractors, 10 responses: p = .5, d = .2, mean = .3,
        // var = (.7 - .09) = .61, half = 1.96 x sqrt(.061) = .484075:
        // -18.408 to 78.408
        let i = nps_interval(5, 2, 10).unwrap_or(Interval {
            low: 0.0,
            high: 0.0,
            method: "",
        });
        assert!(close(i.low, -18.40754), "{i:?}");
        assert!(close(i.high, 78.40754), "{i:?}");
        let clamped = nps_interval(1, 0, 1).unwrap_or(Interval {
            low: 0.0,
            high: 0.0,
            method: "",
        });
        assert_eq!(clamped.high, 100.0);
    }

    #[test]
    fn each_kpi_reads_only_its_metrics() {
        // Every sum distinct and non-zero, so that a missing one shows.
        let mut full = Tally::default();
        for (i, metric) in METRICS.iter().enumerate() {
            full.add(*metric, 1000 + 37 * i as i128);
        }
        full.retention.active_at_start = 900;
        full.retention.churned = 45;
        for kpi in Kpi::ALL {
            let set = metrics_for(&[kpi]);
            let mut only = full;
            for metric in METRICS {
                if !set.contains(metric) {
                    only.sums[metric as usize] = 0;
                }
            }
            assert_eq!(evaluate(kpi, &only), evaluate(kpi, &full), "{kpi:?}");
        }
    }

    #[test]
    fn money_beyond_an_i64_of_units_is_undefined_not_clamped() {
        let mut t = Tally::default();
        let max_deal = i128::from(crate::domain::activity::MAX_AMOUNT_UNITS) * 1_000_000_000;
        t.add(Metric::RevenueNanos, max_deal * 10_000);
        t.add(Metric::DealsWon, 10_000);
        let revenue = evaluate(Kpi::Revenue, &t);
        assert_eq!(revenue.value, None);
        assert_eq!(revenue.money_nanos, None);
        assert_eq!(revenue.undefined_reason, Some(TOO_LARGE_FOR_MONEY));
        assert_eq!(revenue.numerator, "9999999999999990000");
        assert_eq!(revenue.denominator, "1");
        // The mean of the same deals fits and is exact.
        let mean = evaluate(Kpi::AverageDealSize, &t);
        assert_eq!(mean.money_nanos, Some(max_deal));
        assert_eq!(mean.undefined_reason, None);
    }

    #[test]
    fn money_is_exact_text() {
        assert_eq!(nanos_text(1_250_500_000_000), "1250.5");
        assert_eq!(nanos_text(7_000_000_000), "7");
        assert_eq!(nanos_text(1), "0.000000001");
        assert_eq!(div_round(10, 4), 3);
        assert_eq!(div_round(10, 3), 3);
    }

    #[test]
    fn ties_share_a_rank_and_the_next_rank_skips() {
        assert_eq!(competition_ranks(&[90.0, 80.0, 80.0, 70.0]), [1, 2, 2, 4]);
        assert_eq!(competition_ranks(&[5.0, 5.0, 3.0]), [1, 1, 3]);
    }

    #[test]
    fn pace_for_totals_and_attainment_for_rates() {
        let p = progress(Kpi::DealsWon, 20.0, Some(8.0), 0.5);
        assert_eq!(p.expected_to_date, Some(10.0));
        assert_eq!(p.projected, Some(16.0));
        assert!(!p.on_track);
        assert_eq!(p.attainment, Some(0.4));
        let lower = progress(Kpi::SalesCycleDays, 30.0, Some(25.0), 0.5);
        assert_eq!(lower.attainment, Some(1.2));
        assert!(lower.on_track);
        assert_eq!(lower.expected_to_date, None);
    }

    #[test]
    fn zero_denominators_are_undefined_not_zero() {
        let t = Tally::default();
        for def in &CATALOG {
            let v = evaluate(def.kpi, &t);
            if def.shape == Shape::Total {
                assert_eq!(v.value, Some(0.0), "{:?}", def.kpi);
            } else {
                assert_eq!(v.value, None, "{:?}", def.kpi);
                assert!(v.undefined_reason.is_some());
            }
        }
    }
}
