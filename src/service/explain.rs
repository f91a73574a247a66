//! ExplainKpi: the records behind one KPI value, paged, with the value
//! they add up to.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{KpiSettings, authorize, plan::Planner};
use crate::{
    Error,
    domain::explain::{ExplainPart, RecordContribution},
    domain::{
        kpi::{self, Kpi, KpiValue},
        paging::{Page, PageRequest},
        period::{Period, PeriodSpec},
        target::Subject,
    },
    service::access::Principal,
    store::reads::Reads,
    store::{
        explain::{self as store},
        kpi::{self as tallies, Source},
    },
};

/// One page of the records behind a value.
#[derive(Debug, Clone)]
pub struct ExplainQuery {
    pub subject: Subject,
    pub kpi: Kpi,
    pub period: PeriodSpec,
    pub part: ExplainPart,
}

impl ExplainQuery {
    /// What a page token is bound to: every field but the page.
    pub fn paging_key(&self) -> String {
        format!(
            "explain|{:?}|{}|{:?}|{:?}",
            self.subject,
            self.kpi.code(),
            self.period,
            self.part
        )
    }
}

/// A page of contributions and the value they belong to.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub period: Period,
    pub value: KpiValue,
    pub currency: String,
    pub page: Page<RecordContribution>,
}

#[derive(Debug, Clone)]
pub struct Explainer {
    /// The primary (authorization) and where the KPI and its records are
    /// read: it or a caught-up replica.
    reads: Reads,
    settings: Arc<KpiSettings>,
}

/// A page cursor: `<credited at, microseconds>:<record id>`.
fn cursor(c: &RecordContribution) -> String {
    format!("{}:{}", c.credited_at.timestamp_micros(), c.record_id)
}

fn parse_cursor(raw: &str) -> Result<(DateTime<Utc>, String), Error> {
    let invalid = || Error::invalid("page_token", "is not a page token issued by this service");
    let (micros, id) = raw.split_once(':').ok_or_else(invalid)?;
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
    Ok((at, id.to_owned()))
}

impl Explainer {
    pub fn new(reads: Reads, settings: Arc<KpiSettings>) -> Self {
        Self { reads, settings }
    }

    pub async fn explain(
        &self,
        caller: &Principal,
        query: ExplainQuery,
        page: &PageRequest,
    ) -> Result<Explanation, Error> {
        let after = page.after.as_deref().map(parse_cursor).transpose()?;
        let period = self.settings.resolve(&query.period);
        authorize::read(self.reads.primary(), caller, &query.subject).await?;
        let db = self.reads.pool().await;
        let queries = Planner::new(&db)
            .queries_for(&query.subject, &[period], &[query.kpi])
            .await?;
        let Some(tally_query) = queries.first() else {
            return Err(Error::internal(anyhow::anyhow!("no tally query planned")));
        };
        let reporting = &self.settings.reporting_currency;
        let fetch = i64::from(page.fetch());
        let (tallies, rows) = tokio::try_join!(
            tallies::tallies(&db, &queries, Source::Rollups, reporting),
            store::contributions(
                &db,
                tally_query,
                query.kpi,
                query.part,
                after,
                fetch,
                reporting
            )
        )?;
        let Some(tally) = tallies.first() else {
            return Err(Error::internal(anyhow::anyhow!("no tally computed")));
        };
        let mut value = kpi::evaluate(query.kpi, tally);
        self.settings
            .explain_unconverted(&db, &queries, vec![(0, &mut value)])
            .await?;
        Ok(Explanation {
            period,
            value,
            currency: reporting.clone(),
            page: Page::cut(rows, page, &query.paging_key(), cursor),
        })
    }
}
