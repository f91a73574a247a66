//! Sums from the raw records alone: the reference the rollups are tested
//! against (`Source::Raw`), and the naive baseline of the benches.

use std::sync::LazyLock;

use sqlx::PgPool;

use super::{
    Groups, SumsRow,
    rollups::{PARTS_CTE, Parts, parse_sums},
};
use crate::{
    Error,
    domain::sums::{METRICS, Metric},
    store::rollup::COLUMNS,
};

/// One SELECT per source table: the metrics it feeds, zero for the rest.
pub(super) static RAW_SQL: LazyLock<String> = LazyLock::new(|| {
    let part = |exprs: &[(Metric, &str)], from: &str| {
        let columns: Vec<String> = METRICS
            .iter()
            .map(|m| {
                let expr = exprs
                    .iter()
                    .find(|(metric, _)| metric == m)
                    .map_or("0::numeric", |(_, e)| e);
                format!("({expr})::numeric AS {}", COLUMNS[*m as usize])
            })
            .collect();
        format!(
            "SELECT e.slot, e.sgn, x.* FROM parts e CROSS JOIN LATERAL (SELECT {} {from}) x",
            columns.join(", ")
        )
    };
    use Metric as M;
    // Whole microseconds, as the rollups count them.
    let micros = |a: &str, b: &str| format!("(extract(epoch FROM ({b} - {a})) * 1000000)::bigint");
    let cycle = format!(
        "coalesce(sum({}) FILTER (WHERE d.stage = 2), 0)",
        micros("d.created_at", "d.closed_at")
    );
    // A won deal's amount in the reporting currency ($9: rate 1), at the
    // rate of its currency dated on or before closed_at's UTC date, rounded
    // once to the nano, half to even: PostgreSQL's own arithmetic, apart
    // from the service's (domain::money), so that each checks the other.
    let deals_from = "FROM deals d \
        LEFT JOIN LATERAL (SELECT CASE WHEN d.currency = $9 THEN 1::numeric ELSE ( \
            SELECT r.rate FROM exchange_rates r \
            WHERE r.currency = d.currency AND r.effective_date <= (d.closed_at AT TIME ZONE 'UTC')::date \
            ORDER BY r.effective_date DESC LIMIT 1) END AS rate) dr ON true \
        LEFT JOIN LATERAL (SELECT d.amount * dr.rate * 1000000000 AS y) dy ON true \
        LEFT JOIN LATERAL (SELECT trunc(dy.y) + CASE WHEN dy.y - trunc(dy.y) > 0.5 \
            OR (dy.y - trunc(dy.y) = 0.5 AND mod(trunc(dy.y), 2) = 1) THEN 1 ELSE 0 END AS nanos) dc ON true \
        WHERE d.rep_id = ANY (e.reps) AND d.closed_at >= e.f AND d.closed_at < e.t";
    let response = format!(
        "coalesce(sum({}) FILTER (WHERE q.first_response_at IS NOT NULL), 0)",
        micros("q.opened_at", "q.first_response_at")
    );
    let parts = [
        part(
            &[
                (M::Calls, "count(*) FILTER (WHERE i.channel = 1)"),
                (M::Emails, "count(*) FILTER (WHERE i.channel = 2)"),
                (M::Meetings, "count(*) FILTER (WHERE i.channel = 3)"),
                (M::Messages, "count(*) FILTER (WHERE i.channel = 4)"),
                (M::Demos, "count(*) FILTER (WHERE i.channel = 5)"),
            ],
            "FROM interactions i WHERE i.rep_id = ANY (e.reps) AND i.occurred_at >= e.f AND i.occurred_at < e.t",
        ),
        part(
            &[
                (M::Leads, "count(*)"),
                (
                    M::LeadsConverted,
                    "count(*) FILTER (WHERE c.converted_at IS NOT NULL)",
                ),
            ],
            "FROM customers c WHERE c.rep_id = ANY (e.reps) AND c.lead_at >= e.f AND c.lead_at < e.t",
        ),
        part(
            &[(M::Conversions, "count(*)")],
            "FROM customers c WHERE c.rep_id = ANY (e.reps) AND c.converted_at >= e.f AND c.converted_at < e.t",
        ),
        part(
            &[(M::Churns, "count(*)")],
            "FROM customers c WHERE c.rep_id = ANY (e.reps) AND c.churned_at >= e.f AND c.churned_at < e.t",
        ),
        part(
            &[
                (M::DealsWon, "count(*) FILTER (WHERE d.stage = 2)"),
                (M::DealsLost, "count(*) FILTER (WHERE d.stage = 3)"),
                (
                    M::RevenueNanos,
                    "coalesce(sum(dc.nanos) FILTER (WHERE d.stage = 2), 0)",
                ),
                (M::CycleMicros, cycle.as_str()),
                (
                    M::WonUnconverted,
                    "count(*) FILTER (WHERE d.stage = 2 AND dr.rate IS NULL)",
                ),
            ],
            deals_from,
        ),
        part(
            &[
                (M::NpsResponses, "count(*) FILTER (WHERE f.kind = 1)"),
                (
                    M::NpsPromoters,
                    "count(*) FILTER (WHERE f.kind = 1 AND f.score >= 9)",
                ),
                (
                    M::NpsDetractors,
                    "count(*) FILTER (WHERE f.kind = 1 AND f.score <= 6)",
                ),
                (M::CsatResponses, "count(*) FILTER (WHERE f.kind = 2)"),
                (
                    M::CsatSatisfied,
                    "count(*) FILTER (WHERE f.kind = 2 AND f.score >= 4)",
                ),
            ],
            "FROM feedback f WHERE f.rep_id = ANY (e.reps) AND f.submitted_at >= e.f AND f.submitted_at < e.t",
        ),
        part(
            &[
                (M::RequestsOpened, "count(*)"),
                (
                    M::RequestsResolved,
                    "count(*) FILTER (WHERE q.resolved_at IS NOT NULL)",
                ),
                (
                    M::RequestsResponded,
                    "count(*) FILTER (WHERE q.first_response_at IS NOT NULL)",
                ),
                (M::ResponseMicros, response.as_str()),
            ],
            "FROM customer_requests q WHERE q.rep_id = ANY (e.reps) AND q.opened_at >= e.f AND q.opened_at < e.t",
        ),
    ];
    let sums: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("sum(p.{c} * p.sgn)::text"))
        .collect();
    format!(
        "{PARTS_CTE} SELECT p.slot, {} FROM ({}) p GROUP BY p.slot",
        sums.join(", "),
        parts.join(" UNION ALL ")
    )
});

pub(super) async fn raw_sums(
    pool: &PgPool,
    parts: &Parts,
    groups: &Groups,
    reporting: &str,
) -> Result<Vec<SumsRow>, Error> {
    if parts.0.is_empty() {
        return Ok(Vec::new());
    }
    let rows = parts
        .bind(groups, sqlx::query(sqlx::AssertSqlSafe(RAW_SQL.as_str())))
        .bind(reporting)
        .fetch_all(pool)
        .await?;
    rows.iter().map(parse_sums).collect()
}
