-- Rollup rows are updated in place by every batch that touches their
-- bucket: leave room in each page so the updates can be HOT (no new index
-- entries, no index bloat).
ALTER TABLE kpi_rollups SET (fillfactor = 50);
