-- Data versions (issue #13). Every transaction that changes KPI inputs
-- bumps, in the same transaction, the version of each scope it changed:
-- 'rep:<rep_id>' (that rep's records and rollups), 'directory' (teams,
-- reps, memberships), 'targets', 'rates'. A cached answer stays valid
-- while the versions of the scopes it read are unchanged; the same
-- transaction NOTIFYs channel kpi_changes with what changed.
CREATE TABLE kpi_versions (
    scope   text PRIMARY KEY,
    version bigint NOT NULL
);
