-- Rollups partitioned by level: the month and day rows that every period
-- reads (and retention reads from the beginning) sit together in small
-- tables instead of scattered among the hour rows, so a team scorecard
-- reads a few dozen pages for them instead of one page per row.
ALTER TABLE kpi_rollups RENAME TO kpi_rollups_unpartitioned;
ALTER TABLE kpi_rollups_unpartitioned RENAME CONSTRAINT kpi_rollups_pkey TO kpi_rollups_unpartitioned_pkey;

CREATE TABLE kpi_rollups (LIKE kpi_rollups_unpartitioned INCLUDING DEFAULTS)
    PARTITION BY LIST (level);
ALTER TABLE kpi_rollups ADD PRIMARY KEY (rep_id, level, bucket);
-- Rows are updated in place by every batch that touches their bucket:
-- leave room in each page so the updates can be HOT.
CREATE TABLE kpi_rollups_hour PARTITION OF kpi_rollups FOR VALUES IN (1)
    WITH (fillfactor = 50);
CREATE TABLE kpi_rollups_day PARTITION OF kpi_rollups FOR VALUES IN (2)
    WITH (fillfactor = 50);
CREATE TABLE kpi_rollups_month PARTITION OF kpi_rollups FOR VALUES IN (3)
    WITH (fillfactor = 50);

INSERT INTO kpi_rollups SELECT * FROM kpi_rollups_unpartitioned;
DROP TABLE kpi_rollups_unpartitioned;
