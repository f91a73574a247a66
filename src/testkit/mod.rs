//! Builders and throwaway infrastructure shared by the integration tests
//! and the benches, so that each is written once. Compiled only for them
//! (the `testkit` feature, which the package's dev-dependency on itself
//! turns on): the released binary has none of it.
//!
//! - `records`: the demo's builders (`demo::records`): the minimal valid
//!   activity record of each kind, with `with_*` setters for the optional
//!   fields;
//! - `org`: organisations to load (teams, reps);
//! - `cluster`: a throwaway PostgreSQL cluster in a directory that a
//!   watchdog removes when the process ends, however it ends;
//! - `process`: the `kpi-service` binary run as its own process, as a user
//!   runs it;
//! - `load`: the same call, many at a time, for the benches' rates.
//!
//! The service itself uses none of this.

pub mod cluster;
pub mod load;
pub mod org;
pub mod process;

pub use crate::demo::records;
