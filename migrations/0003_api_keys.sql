-- API keys. The secret part is never stored: only its SHA-256 (the secret
-- has 256 bits from the OS RNG, so a plain hash is as strong as a slow one
-- would be). A revoked key keeps its row, so `keys list` shows its history.
CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('ingest', 'read', 'admin')),
    -- Only for read keys: the team (with its sub-teams) the key may see.
    team_id      text REFERENCES teams (team_id),
    secret_hash  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz,
    CHECK (team_id IS NULL OR role = 'read')
);
