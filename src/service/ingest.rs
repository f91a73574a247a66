//! Recording activity: a validated batch in, what happened to its records
//! out.

use std::sync::Arc;

use sqlx::PgPool;

use crate::{
    Error,
    domain::activity::{Batch, Counts},
    store::activity::{self as store, KnownReps},
};

#[derive(Debug, Clone)]
pub struct Ingest {
    pool: PgPool,
    reporting_currency: String,
    known_reps: Arc<KnownReps>,
}

impl Ingest {
    pub fn new(pool: PgPool, reporting_currency: String) -> Self {
        Self {
            pool,
            reporting_currency,
            known_reps: Arc::default(),
        }
    }

    /// The currency KPIs report money in.
    pub fn reporting_currency(&self) -> &str {
        &self.reporting_currency
    }

    /// Records a batch atomically. With any violation (found while
    /// parsing, `batch.invalid`, or by the database) nothing is written and
    /// all of them are returned together (`Error::InvalidRecords`).
    pub async fn record(&self, batch: Batch) -> Result<Counts, Error> {
        store::record_batch(
            &self.pool,
            &self.known_reps,
            &self.reporting_currency,
            batch,
        )
        .await
    }
}
