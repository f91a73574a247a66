//! The records behind a KPI value (ExplainKpi): the same selection the raw
//! reference computes the KPI from (`kpi::raw::RAW_SQL`), one row per record
//! with its contribution, ordered by (credited at, id) and paged by that
//! key.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

use crate::{
    Error,
    domain::{
        activity::Amount,
        explain::{ExplainPart, RecordContribution},
        kpi::Kpi,
        money::{Rate, amount_nanos},
        tally::TallyQuery,
    },
};

/// How a KPI's records are selected and what each contributes, in SQL
/// over `x` (the record) and, for deals, `dr.rate` (the rate at closed_at).
struct Selection {
    record_type: &'static str,
    table: &'static str,
    id: &'static str,
    /// The column the record is credited at.
    time: &'static str,
    filter: &'static str,
    /// Integer contribution: a count, ±1 (NPS) or microseconds; for money
    /// 1 (the amount is converted in Rust, as the rollups convert it).
    numerator: &'static str,
    denominator: &'static str,
}

/// The unit of a contribution's integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Count,
    Micros,
    Money,
}

const CYCLE: &str = "(extract(epoch FROM (x.closed_at - x.created_at)) * 1000000)::bigint";
const RESPONSE: &str =
    "(extract(epoch FROM (x.first_response_at - x.opened_at)) * 1000000)::bigint";

fn selection(kpi: Kpi) -> (Selection, Unit) {
    let customers = |time, filter, numerator, denominator| Selection {
        record_type: "customer",
        table: "customers",
        id: "customer_id",
        time,
        filter,
        numerator,
        denominator,
    };
    let interactions = |filter| Selection {
        record_type: "interaction",
        table: "interactions",
        id: "interaction_id",
        time: "occurred_at",
        filter,
        numerator: "1",
        denominator: "0",
    };
    let deals = |filter, numerator, denominator| Selection {
        record_type: "deal",
        table: "deals",
        id: "deal_id",
        time: "closed_at",
        filter,
        numerator,
        denominator,
    };
    let feedback = |filter, numerator| Selection {
        record_type: "feedback",
        table: "feedback",
        id: "feedback_id",
        time: "submitted_at",
        filter,
        numerator,
        denominator: "1",
    };
    let requests = |filter, numerator| Selection {
        record_type: "customer_request",
        table: "customer_requests",
        id: "request_id",
        time: "opened_at",
        filter,
        numerator,
        denominator: "1",
    };
    use Unit::{Count, Micros, Money};
    match kpi {
        Kpi::Leads => (customers("lead_at", "true", "1", "0"), Count),
        Kpi::NewCustomers => (customers("converted_at", "true", "1", "0"), Count),
        Kpi::ConversionRate => (
            customers("lead_at", "true", "(x.converted_at IS NOT NULL)::int", "1"),
            Count,
        ),
        // Selected by `retention_sql`; these are the contributions.
        Kpi::RetentionRate => (
            customers(
                "",
                "",
                "(x.churned_at IS NULL OR x.churned_at >= $3)::int",
                "1",
            ),
            Count,
        ),
        Kpi::ChurnRate => (
            customers("", "", "coalesce(x.churned_at < $3, false)::int", "1"),
            Count,
        ),
        Kpi::Nps => (
            feedback(
                "x.kind = 1",
                "CASE WHEN x.score >= 9 THEN 1 WHEN x.score <= 6 THEN -1 ELSE 0 END",
            ),
            Count,
        ),
        Kpi::Csat => (feedback("x.kind = 2", "(x.score >= 4)::int"), Count),
        Kpi::WinRate => (deals("x.stage IN (2, 3)", "(x.stage = 2)::int", "1"), Count),
        Kpi::Revenue => (
            deals("x.stage = 2 AND dr.rate IS NOT NULL", "1", "0"),
            Money,
        ),
        Kpi::DealsWon => (deals("x.stage = 2", "1", "0"), Count),
        Kpi::AverageDealSize => (
            deals("x.stage = 2 AND dr.rate IS NOT NULL", "1", "1"),
            Money,
        ),
        Kpi::SalesCycleDays => (deals("x.stage = 2", CYCLE, "1"), Micros),
        Kpi::Interactions => (interactions("true"), Count),
        Kpi::Calls => (interactions("x.channel = 1"), Count),
        Kpi::Emails => (interactions("x.channel = 2"), Count),
        Kpi::Meetings => (interactions("x.channel = 3"), Count),
        Kpi::FirstResponseMinutes => (
            requests("x.first_response_at IS NOT NULL", RESPONSE),
            Micros,
        ),
        Kpi::RequestResolutionRate => (requests("true", "(x.resolved_at IS NOT NULL)::int"), Count),
    }
}

/// The team of rep `rep` at the instant `at` (SQL expressions).
fn team_at(rep: &str, at: &str) -> String {
    format!(
        "(SELECT h.team_id FROM rep_team_history h WHERE h.rep_id = {rep} \
         AND h.effective_from <= {at} ORDER BY h.effective_from DESC LIMIT 1)"
    )
}

fn part_filter(part: ExplainPart, s: &Selection) -> String {
    match part {
        ExplainPart::Either => format!("(({}) <> 0 OR ({}) <> 0)", s.numerator, s.denominator),
        ExplainPart::Numerator => format!("({}) <> 0", s.numerator),
        ExplainPart::Denominator => format!("({}) <> 0", s.denominator),
    }
}

/// The rate of a deal's currency at its closed_at (1 in the reporting
/// currency, $7), as `dr.rate`: the rollups' rule.
const DEAL_RATE: &str = "LEFT JOIN LATERAL (SELECT CASE WHEN x.currency = $7 THEN 1::numeric ELSE ( \
     SELECT r.rate FROM exchange_rates r \
     WHERE r.currency = x.currency AND r.effective_date <= (x.closed_at AT TIME ZONE 'UTC')::date \
     ORDER BY r.effective_date DESC LIMIT 1) END AS rate) dr ON true";

/// Records credited in the segments: $1 reps, $2 froms, $3 tos; after the
/// key ($4 instant, $5 id); at most $6; reporting currency $7.
///
/// Each segment reads its own first rows in key order from the (rep,
/// credited at) index, starting at the cursor, so a page costs about
/// (segments x page size) rows however many records the period holds; the
/// team of each is looked up for the page's rows only.
fn segments_sql(s: &Selection, part: ExplainPart) -> String {
    let time = format!("x.{}", s.time);
    let (money_columns, rate_join) = if s.table == "deals" {
        (
            "x.currency AS currency, x.amount::text AS amount, dr.rate::text AS rate",
            DEAL_RATE,
        )
    } else {
        (
            "NULL::text AS currency, NULL::text AS amount, NULL::text AS rate",
            "",
        )
    };
    format!(
        "SELECT p.id, p.rep_id, p.at, p.num, p.den, {team}, p.currency, p.amount, p.rate FROM ( \
           SELECT y.* FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS s (rep, f, t) \
           CROSS JOIN LATERAL ( \
             SELECT x.{id} AS id, x.rep_id, {time} AS at, ({num})::bigint AS num, \
                    ({den})::bigint AS den, {money_columns} \
             FROM {table} x {rate_join} \
             WHERE x.rep_id = s.rep AND {time} >= greatest(s.f, $4::timestamptz) AND {time} < s.t \
               AND {filter} AND {part} \
               AND ($4::timestamptz IS NULL OR {time} > $4 OR x.{id} > $5) \
             ORDER BY {time}, x.{id} LIMIT $6) y \
           ORDER BY y.at, y.id LIMIT $6) p \
         ORDER BY p.at, p.id",
        id = s.id,
        num = s.numerator,
        den = s.denominator,
        team = team_at("p.rep_id", "p.at"),
        table = s.table,
        filter = s.filter,
        part = part_filter(part, s),
    )
}

/// The customers of reps $1 active at the retention start $2 (their
/// credited instant), churned or not by the end $3; after id $4; at most
/// $5.
fn retention_sql(s: &Selection, part: ExplainPart) -> String {
    format!(
        "SELECT x.customer_id, x.rep_id, $2::timestamptz, ({num})::bigint, ({den})::bigint, {team}, \
                NULL::text, NULL::text, NULL::text \
         FROM customers x \
         WHERE x.rep_id = ANY ($1::text[]) AND x.converted_at < $2 \
           AND (x.churned_at IS NULL OR x.churned_at >= $2) AND {part} \
           AND ($4::text IS NULL OR x.customer_id > $4) \
         ORDER BY x.customer_id LIMIT $5",
        num = s.numerator,
        den = s.denominator,
        team = team_at("x.rep_id", "$2::timestamptz"),
        part = part_filter(part, s),
    )
}

/// A page of the records behind `kpi` over `query` (one subject, one
/// period), after `after` (credited instant, id), at most `limit`.
pub async fn contributions(
    pool: &PgPool,
    query: &TallyQuery,
    kpi: Kpi,
    part: ExplainPart,
    after: Option<(DateTime<Utc>, String)>,
    limit: i64,
    reporting: &str,
) -> Result<Vec<RecordContribution>, Error> {
    let (selection, unit) = selection(kpi);
    let rows = if matches!(kpi, Kpi::RetentionRate | Kpi::ChurnRate) {
        let Some(retention) = &query.retention else {
            return Ok(Vec::new());
        };
        let reps: Vec<&str> = retention.reps.iter().map(|r| &**r).collect();
        sqlx::query(sqlx::AssertSqlSafe(retention_sql(&selection, part)))
            .bind(reps)
            .bind(retention.start)
            .bind(retention.end)
            .bind(after.map(|(_, id)| id))
            .bind(limit)
            .fetch_all(pool)
            .await?
    } else {
        let reps: Vec<&str> = query.segments.iter().map(|s| &*s.rep).collect();
        let froms: Vec<DateTime<Utc>> = query.segments.iter().map(|s| s.from).collect();
        let tos: Vec<DateTime<Utc>> = query.segments.iter().map(|s| s.to).collect();
        let (after_at, after_id) = after.unzip();
        sqlx::query(sqlx::AssertSqlSafe(segments_sql(&selection, part)))
            .bind(reps)
            .bind(froms)
            .bind(tos)
            .bind(after_at)
            .bind(after_id)
            .bind(limit)
            .bind(reporting)
            .fetch_all(pool)
            .await?
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let count: i64 = row.try_get(3)?;
        let denominator: i64 = row.try_get(4)?;
        let currency: Option<String> = row.try_get(6)?;
        let amount: Option<String> = row.try_get(7)?;
        let rate: Option<String> = row.try_get(8)?;
        let (numerator, deal) = match unit {
            Unit::Count => (i128::from(count), None),
            Unit::Micros => (i128::from(count) * 1000, None),
            Unit::Money => {
                let bad = |what: &str| Error::internal(anyhow::anyhow!("a stored deal has {what}"));
                let amount = Amount::from_decimal(amount.as_deref().unwrap_or_default())
                    .map_err(|e| bad(&e))?;
                let rate = Rate::parse(rate.as_deref().unwrap_or_default())
                    .map_err(|e| bad(&format!("a rate that {e}")))?;
                (
                    rate.convert(amount),
                    Some((currency.unwrap_or_default(), amount_nanos(amount), rate)),
                )
            }
        };
        out.push(RecordContribution {
            record_type: selection.record_type,
            record_id: row.try_get(0)?,
            rep_id: row.try_get(1)?,
            credited_at: row.try_get(2)?,
            team_id: row.try_get(5)?,
            numerator_nanos_or_count: numerator,
            denominator: i128::from(denominator),
            in_nanos: unit != Unit::Count,
            deal,
        });
    }
    Ok(out)
}
