-- An audit log no token can bury: the project an entry is of, what it changed, refusals
-- counted per token, action, target, status and minute (`bucket`), and the indexes its
-- filters use.
ALTER TABLE audit ADD COLUMN project TEXT;
ALTER TABLE audit ADD COLUMN detail TEXT;
ALTER TABLE audit ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
ALTER TABLE audit ADD COLUMN bucket TEXT;
CREATE UNIQUE INDEX audit_by_bucket ON audit (bucket);
CREATE INDEX audit_by_token ON audit (token_id, at_us);
CREATE INDEX audit_by_project ON audit (project, at_us);
