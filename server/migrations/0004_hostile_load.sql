-- Hostile load: a project being deleted refuses deployments and activations; an
-- Idempotency-Key remembers its request body; tokens get a scope; garbage collection's
-- record of blobs recently referenced or being deleted.
ALTER TABLE projects ADD COLUMN deleting BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN request_hash TEXT;
ALTER TABLE tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin';
CREATE TABLE blob_state (
    hash        TEXT PRIMARY KEY,
    touched_at  BIGINT NOT NULL,
    deleting    BIGINT NOT NULL DEFAULT 0
);
