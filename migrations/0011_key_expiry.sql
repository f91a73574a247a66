-- Keys that end by themselves (share links: `keys share --expires 30d`).
-- An expired key is refused like a revoked one, within the key cache's
-- refresh; its row stays for `keys list`.
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;
