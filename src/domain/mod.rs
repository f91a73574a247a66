//! Pure types and rules. A value that passed the boundary is one of these
//! types and cannot be wrong; nothing here knows protobuf or SQL.

pub mod access;
pub mod activity;
pub mod directory;
pub mod explain;
pub mod ids;
pub mod kpi;
pub mod money;
pub mod paging;
pub mod period;
pub mod report;
pub mod rollup;
pub mod sums;
pub mod tally;
pub mod target;

use crate::error::FieldViolation;

/// Collects every violation of a request so the caller hears about all of
/// them at once, not one per attempt.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the value of a successful parse; records the failure otherwise.
    pub fn check<T>(&mut self, field: impl Into<String>, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(description) => {
                self.0.push(FieldViolation::new(field, description));
                None
            }
        }
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<FieldViolation> {
        self.0
    }

    /// `Ok(value)` when nothing was recorded, the violations otherwise. The
    /// value is only built when it is needed.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, crate::Error> {
        if self.0.is_empty()
            && let Some(value) = build()
        {
            return Ok(value);
        }
        Err(crate::Error::InvalidArgument(self.0))
    }
}
