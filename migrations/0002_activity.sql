-- Activity records, one table per record type, keyed by the caller's id.
-- source_updated_at is the source system's version: a record is replaced
-- only by a strictly newer one (see src/domain/activity.rs). recorded_at is
-- when this service last wrote the row.
--
-- rep_id is validated against reps for every batch; it has no foreign key
-- because reps are never deleted and the check per row would slow bulk
-- ingestion for nothing. customer_id is a free reference: a record may
-- arrive before its customer does.
--
-- The (rep_id, <credited at>) indexes serve the KPI queries: every KPI is
-- computed per rep over a time range of the instant the record is credited
-- at.

CREATE TABLE customers (
    customer_id       text PRIMARY KEY,
    rep_id            text NOT NULL,
    lead_at           timestamptz NOT NULL,
    converted_at      timestamptz,
    churned_at        timestamptz,
    source_updated_at timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (converted_at >= lead_at),
    CHECK (churned_at IS NULL OR churned_at >= converted_at)
);
CREATE INDEX customers_rep_lead_idx ON customers (rep_id, lead_at);
CREATE INDEX customers_rep_converted_idx ON customers (rep_id, converted_at)
    WHERE converted_at IS NOT NULL;

CREATE TABLE interactions (
    interaction_id    text PRIMARY KEY,
    rep_id            text NOT NULL,
    customer_id       text,
    -- 1 call, 2 email, 3 meeting, 4 message, 5 demo (kpi.v1.Channel).
    channel           smallint NOT NULL CHECK (channel BETWEEN 1 AND 5),
    occurred_at       timestamptz NOT NULL,
    duration_seconds  integer CHECK (duration_seconds >= 0),
    source_updated_at timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX interactions_rep_occurred_idx ON interactions (rep_id, occurred_at);

CREATE TABLE deals (
    deal_id           text PRIMARY KEY,
    rep_id            text NOT NULL,
    customer_id       text,
    currency          text NOT NULL,
    -- Exact: nine decimals as google.type.Money's nanos.
    amount            numeric(30, 9) NOT NULL CHECK (amount >= 0),
    -- 1 open, 2 won, 3 lost (kpi.v1.DealStage).
    stage             smallint NOT NULL CHECK (stage BETWEEN 1 AND 3),
    created_at        timestamptz NOT NULL,
    closed_at         timestamptz,
    source_updated_at timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((stage = 1) = (closed_at IS NULL)),
    CHECK (closed_at >= created_at)
);
CREATE INDEX deals_rep_closed_idx ON deals (rep_id, closed_at) WHERE closed_at IS NOT NULL;

CREATE TABLE feedback (
    feedback_id       text PRIMARY KEY,
    rep_id            text NOT NULL,
    customer_id       text,
    -- 1 NPS (score 0-10), 2 CSAT (score 1-5) (kpi.v1.FeedbackKind).
    kind              smallint NOT NULL,
    score             smallint NOT NULL,
    submitted_at      timestamptz NOT NULL,
    comment           text,
    source_updated_at timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 1 AND score BETWEEN 0 AND 10) OR (kind = 2 AND score BETWEEN 1 AND 5))
);
CREATE INDEX feedback_rep_submitted_idx ON feedback (rep_id, submitted_at);

CREATE TABLE customer_requests (
    request_id        text PRIMARY KEY,
    rep_id            text NOT NULL,
    customer_id       text,
    opened_at         timestamptz NOT NULL,
    first_response_at timestamptz,
    resolved_at       timestamptz,
    source_updated_at timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (first_response_at >= opened_at),
    CHECK (resolved_at >= opened_at)
);
CREATE INDEX customer_requests_rep_opened_idx ON customer_requests (rep_id, opened_at);
