//! Subjects of KPIs (a rep or a team) and targets set for them.

use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::{
    ids::{RepId, TeamId},
    kpi::{self, Kpi, Progress, Unit},
    period::Period,
};

/// Whose KPIs: one rep's own, or a team's (its sub-teams included).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Rep(RepId),
    Team(TeamId),
}

impl Subject {
    /// `"rep"` or `"team"`, as stored in `targets.subject_kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Rep(_) => "rep",
            Subject::Team(_) => "team",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Subject::Rep(id) => id.as_str(),
            Subject::Team(id) => id.as_str(),
        }
    }

    /// A subject read back from storage (`kind`, `id`).
    pub fn from_parts(kind: &str, id: &str) -> Result<Self, String> {
        match kind {
            "rep" => RepId::parse(id).map(Subject::Rep),
            "team" => TeamId::parse(id).map(Subject::Team),
            other => Err(format!("unknown subject kind '{other}'")),
        }
    }
}

/// A target to set: validated (the value fits the KPI's unit).
#[derive(Debug, Clone, PartialEq)]
pub struct NewTarget {
    kpi: Kpi,
    subject: Subject,
    period: Period,
    value: f64,
}

impl NewTarget {
    pub fn new(kpi: Kpi, subject: Subject, period: Period, value: f64) -> Result<Self, String> {
        let value = check_value(kpi, value)?;
        Ok(Self {
            kpi,
            subject,
            period,
            value,
        })
    }

    pub fn kpi(&self) -> Kpi {
        self.kpi
    }

    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    pub fn period(&self) -> &Period {
        &self.period
    }

    pub fn value(&self) -> f64 {
        self.value
    }
}

/// A stored target.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub id: String,
    pub kpi: Kpi,
    pub subject: Subject,
    pub period: Period,
    pub value: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which targets to list; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct TargetFilter {
    pub subject: Option<Subject>,
    pub kpi: Option<Kpi>,
    /// Only targets whose period contains this day.
    pub active_on: Option<NaiveDate>,
    /// Only targets of exactly this period (dates and zone), e.g. the
    /// current quarter.
    pub period: Option<crate::domain::period::PeriodSpec>,
    /// Progress through the end of this day (default: today in each
    /// target's zone, up to now).
    pub as_of: Option<NaiveDate>,
}

/// How a subject stands against a target on a day.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetProgress {
    pub progress: Progress,
    /// The day the progress is measured through.
    pub as_of: NaiveDate,
}

/// A target with its progress.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetStatus {
    pub target: Target,
    pub progress: TargetProgress,
}

/// A target value must be finite and within the KPI's unit.
/// Largest target value of a count, money or duration KPI.
pub const MAX_TARGET: f64 = 1e18;

pub fn check_value(kpi: Kpi, value: f64) -> Result<f64, String> {
    if !value.is_finite() {
        return Err("must be a finite number".into());
    }
    let unit = kpi::definition(kpi).unit;
    let (ok, range) = match unit {
        Unit::Percent => ((0.0..=100.0).contains(&value), "0-100"),
        Unit::Nps => ((-100.0..=100.0).contains(&value), "-100 to 100"),
        // Counts, money and durations: an upper bound keeps attainment and
        // progress arithmetic finite (a Money sum tops out near 9.2e18).
        _ => ((0.0..=MAX_TARGET).contains(&value), "0 to 1e18"),
    };
    if ok {
        Ok(value)
    } else {
        Err(format!("must be {range} for this KPI (got {value})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_values_must_fit_the_unit() {
        assert!(check_value(Kpi::WinRate, 55.0).is_ok());
        assert!(check_value(Kpi::WinRate, 100.5).is_err());
        assert!(check_value(Kpi::Nps, -40.0).is_ok());
        assert!(check_value(Kpi::Nps, -100.5).is_err());
        assert!(check_value(Kpi::Revenue, -1.0).is_err());
        assert!(check_value(Kpi::Revenue, f64::INFINITY).is_err());
        assert!(check_value(Kpi::Revenue, 1e18).is_ok());
        assert!(check_value(Kpi::Revenue, f64::MAX).is_err());
        assert!(check_value(Kpi::DealsWon, f64::NAN).is_err());
    }

    #[test]
    fn subjects_round_trip_through_their_stored_parts() {
        for subject in [
            Subject::Rep(RepId::parse("anna").unwrap_or_else(|e| panic!("{e}"))),
            Subject::Team(TeamId::parse("emea").unwrap_or_else(|e| panic!("{e}"))),
        ] {
            assert_eq!(
                Subject::from_parts(subject.kind(), subject.id()),
                Ok(subject.clone())
            );
        }
        assert!(Subject::from_parts("org", "x").is_err());
    }
}
