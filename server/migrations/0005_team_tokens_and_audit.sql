-- The team platform: tokens get an id (to list and revoke them by), the projects a
-- deploy/read token acts on, an expiry and their last use; `scope` is their role.
-- The audit log: who (token) did what, when, and the answer.
ALTER TABLE tokens ADD COLUMN id TEXT;
ALTER TABLE tokens ADD COLUMN projects TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN expires_at TEXT;
ALTER TABLE tokens ADD COLUMN expires_us BIGINT;
ALTER TABLE tokens ADD COLUMN last_used_at TEXT;
ALTER TABLE tokens ADD COLUMN last_used_us BIGINT;
UPDATE tokens SET id = 'tok_' || substr(hash, 1, 16) WHERE id IS NULL;
CREATE UNIQUE INDEX tokens_by_id ON tokens (id);
CREATE TABLE audit (
    at_us       BIGINT NOT NULL,
    at          TEXT NOT NULL,
    token_id    TEXT,
    token_name  TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    status      INTEGER NOT NULL
);
CREATE INDEX audit_by_time ON audit (at_us);
