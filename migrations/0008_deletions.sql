-- Deletions (kpi.v1.Deletion): a deleted record stays in its table as a
-- tombstone, its id and the deletion's version (source_updated_at) with
-- `deleted` set and every other column NULL. Keeping it under the record's
-- own primary key means a deletion and a concurrent insert of the same id
-- collide on one unique index (the later one waits, fails with a unique
-- violation, and its batch is retried against what was committed), and an
-- older version arriving after the deletion finds it and counts as stale.
-- With rep_id and every timestamp NULL, no KPI query (all of them select
-- by rep and a time range) can see a tombstone.
--
-- The CHECKs are NOT VALID: the rows already stored had every one of these
-- columns NOT NULL until now, so they hold; new and updated rows are
-- checked.

ALTER TABLE customers
    ADD COLUMN deleted boolean NOT NULL DEFAULT false,
    ALTER COLUMN rep_id DROP NOT NULL,
    ALTER COLUMN lead_at DROP NOT NULL,
    ADD CONSTRAINT customers_tombstone CHECK (CASE WHEN deleted
        THEN rep_id IS NULL AND lead_at IS NULL AND converted_at IS NULL AND churned_at IS NULL
        ELSE rep_id IS NOT NULL AND lead_at IS NOT NULL END) NOT VALID;

ALTER TABLE interactions
    ADD COLUMN deleted boolean NOT NULL DEFAULT false,
    ALTER COLUMN rep_id DROP NOT NULL,
    ALTER COLUMN channel DROP NOT NULL,
    ALTER COLUMN occurred_at DROP NOT NULL,
    ADD CONSTRAINT interactions_tombstone CHECK (CASE WHEN deleted
        THEN rep_id IS NULL AND channel IS NULL AND occurred_at IS NULL
             AND customer_id IS NULL AND duration_seconds IS NULL
        ELSE rep_id IS NOT NULL AND channel IS NOT NULL AND occurred_at IS NOT NULL END) NOT VALID;

ALTER TABLE deals
    ADD COLUMN deleted boolean NOT NULL DEFAULT false,
    ALTER COLUMN rep_id DROP NOT NULL,
    ALTER COLUMN currency DROP NOT NULL,
    ALTER COLUMN amount DROP NOT NULL,
    ALTER COLUMN stage DROP NOT NULL,
    ALTER COLUMN created_at DROP NOT NULL,
    ADD CONSTRAINT deals_tombstone CHECK (CASE WHEN deleted
        THEN rep_id IS NULL AND currency IS NULL AND amount IS NULL AND stage IS NULL
             AND created_at IS NULL AND closed_at IS NULL AND customer_id IS NULL
        ELSE rep_id IS NOT NULL AND currency IS NOT NULL AND amount IS NOT NULL
             AND stage IS NOT NULL AND created_at IS NOT NULL END) NOT VALID;

ALTER TABLE feedback
    ADD COLUMN deleted boolean NOT NULL DEFAULT false,
    ALTER COLUMN rep_id DROP NOT NULL,
    ALTER COLUMN kind DROP NOT NULL,
    ALTER COLUMN score DROP NOT NULL,
    ALTER COLUMN submitted_at DROP NOT NULL,
    ADD CONSTRAINT feedback_tombstone CHECK (CASE WHEN deleted
        THEN rep_id IS NULL AND kind IS NULL AND score IS NULL AND submitted_at IS NULL
             AND comment IS NULL AND customer_id IS NULL
        ELSE rep_id IS NOT NULL AND kind IS NOT NULL AND score IS NOT NULL
             AND submitted_at IS NOT NULL END) NOT VALID;

ALTER TABLE customer_requests
    ADD COLUMN deleted boolean NOT NULL DEFAULT false,
    ALTER COLUMN rep_id DROP NOT NULL,
    ALTER COLUMN opened_at DROP NOT NULL,
    ADD CONSTRAINT customer_requests_tombstone CHECK (CASE WHEN deleted
        THEN rep_id IS NULL AND opened_at IS NULL AND first_response_at IS NULL
             AND resolved_at IS NULL AND customer_id IS NULL
        ELSE rep_id IS NOT NULL AND opened_at IS NOT NULL END) NOT VALID;
