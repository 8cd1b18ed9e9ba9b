-- The builder API: a build's one-time claim and, once claimed, its capability (both
-- stored as SHA-256 hashes; the capability is valid only while the deployment runs, the
-- claim only until it is spent).
ALTER TABLE deployments ADD COLUMN claim_hash TEXT;
ALTER TABLE deployments ADD COLUMN build_token_hash TEXT;
