-- KPI rollups: per rep and UTC hour, day and month, the exact sums every KPI
-- is computed from (see src/domain/kpi.rs, Metric). They are maintained in
-- the same transaction as the records, from each written record's
-- contributions (an update subtracts the old version's), so they never
-- disagree with the records. A period in any time zone is covered by month,
-- day and hour buckets plus raw records for the sub-hour edges of zones
-- with :30 and :45 offsets (src/domain/rollup.rs).
CREATE TABLE kpi_rollups (
    rep_id              text NOT NULL,
    -- 1 hour, 2 day, 3 month.
    level               smallint NOT NULL,
    bucket              timestamptz NOT NULL,
    calls               bigint NOT NULL DEFAULT 0,
    emails              bigint NOT NULL DEFAULT 0,
    meetings            bigint NOT NULL DEFAULT 0,
    messages            bigint NOT NULL DEFAULT 0,
    demos               bigint NOT NULL DEFAULT 0,
    leads               bigint NOT NULL DEFAULT 0,
    leads_converted     bigint NOT NULL DEFAULT 0,
    conversions         bigint NOT NULL DEFAULT 0,
    churns              bigint NOT NULL DEFAULT 0,
    deals_won           bigint NOT NULL DEFAULT 0,
    deals_lost          bigint NOT NULL DEFAULT 0,
    revenue_nanos       numeric NOT NULL DEFAULT 0,
    cycle_micros        numeric NOT NULL DEFAULT 0,
    nps_responses       bigint NOT NULL DEFAULT 0,
    nps_promoters       bigint NOT NULL DEFAULT 0,
    nps_detractors      bigint NOT NULL DEFAULT 0,
    csat_responses      bigint NOT NULL DEFAULT 0,
    csat_satisfied      bigint NOT NULL DEFAULT 0,
    requests_opened     bigint NOT NULL DEFAULT 0,
    requests_resolved   bigint NOT NULL DEFAULT 0,
    requests_responded  bigint NOT NULL DEFAULT 0,
    response_micros     numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (rep_id, level, bucket)
);

-- Retention counts the churns of a period among customers active at its
-- start straight from the records.
CREATE INDEX customers_rep_churned_idx ON customers (rep_id, churned_at)
    WHERE churned_at IS NOT NULL;

-- Targets: one value per KPI, subject and period (dates in a time zone).
CREATE TABLE targets (
    target_id    text PRIMARY KEY,
    -- kpi.v1.Kpi number.
    kpi          smallint NOT NULL,
    subject_kind text NOT NULL CHECK (subject_kind IN ('rep', 'team')),
    subject_id   text NOT NULL,
    start_date   date NOT NULL,
    end_date     date NOT NULL,
    time_zone    text NOT NULL,
    value        double precision NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (end_date >= start_date),
    UNIQUE (kpi, subject_kind, subject_id, start_date, end_date)
);
CREATE INDEX targets_subject_idx ON targets (subject_kind, subject_id, kpi);
