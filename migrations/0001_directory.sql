-- Conventions for every migration of kpi-service:
-- * ids are the caller's (CRM's) ids, stored as text exactly as received;
-- * instants are timestamptz; created_at/updated_at are the service's own
--   bookkeeping, never the source system's;
-- * an applied migration is never edited: changes go in a new file.

CREATE TABLE teams (
    team_id        text PRIMARY KEY,
    display_name   text NOT NULL,
    -- NULL for a top-level team. Cycles are prevented by the service, which
    -- serialises tree changes with an advisory lock.
    parent_team_id text REFERENCES teams (team_id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (parent_team_id <> team_id)
);

CREATE INDEX teams_parent_idx ON teams (parent_team_id, team_id);

CREATE TABLE reps (
    rep_id       text PRIMARY KEY,
    display_name text NOT NULL,
    -- '' when the CRM has no address for the rep.
    email        text NOT NULL DEFAULT '',
    active       boolean NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- A rep's team membership, stored as change points: from effective_from
-- until the rep's next change point, the rep belongs to team_id (NULL: to no
-- team). '-infinity' means "since the beginning of time", so backfilled
-- activity of a rep whose first team had no effective time lands in it.
-- KPIs credit each record to the team of the change point in force at the
-- record's moment.
CREATE TABLE rep_team_history (
    rep_id         text NOT NULL REFERENCES reps (rep_id),
    effective_from timestamptz NOT NULL,
    team_id        text REFERENCES teams (team_id),
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rep_id, effective_from)
);

CREATE INDEX rep_team_history_team_idx ON rep_team_history (team_id, rep_id);
