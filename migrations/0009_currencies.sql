-- Deals in any ISO 4217 currency, converted into the reporting currency at
-- the rate in effect at their closed_at (src/domain/money.rs).
--
-- A rate applies from 00:00 UTC of its date until the next rate of its
-- currency. It is kept as the exact decimal it was set as (numeric without
-- a scale: never rounded).
CREATE TABLE exchange_rates (
    currency       text NOT NULL,
    effective_date date NOT NULL,
    rate           numeric NOT NULL CHECK (rate > 0),
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (currency, effective_date)
);

-- Won deals whose currency has no rate at their closed_at: they count in
-- DEALS_WON, WIN_RATE and SALES_CYCLE_DAYS but not in revenue, and the
-- average deal size leaves them out of its denominator too. Next to the
-- other deal sums so that a batch of deals writes one column group.
ALTER TABLE kpi_rollups ADD COLUMN won_unconverted bigint NOT NULL DEFAULT 0;

-- A rate set or corrected later re-converts the won deals of its currency
-- closed from its date on.
CREATE INDEX deals_currency_closed_idx ON deals (currency, closed_at) WHERE stage = 2;
