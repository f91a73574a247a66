//! Conversions between protobuf messages and domain types, one module per
//! area. Converting a request is validating it: every violation is
//! collected with its field path, so the caller hears of all of them at
//! once; answers convert back infallibly.

pub mod activity;
pub mod directory;
pub mod kpi;
pub mod rates;
pub mod targets;
