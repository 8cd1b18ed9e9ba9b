-- Builds skipped by content: what each build read (the digest over it, and each part's
-- hash for `inspect --why`), the commit a git build cloned, the deployment whose output
-- a skipped build reused, and whether a deployment's output names its own id (then it
-- is never reused: NULL until checked). A git link's build root (a monorepo's app).
ALTER TABLE deployments ADD COLUMN input_digest TEXT;
ALTER TABLE deployments ADD COLUMN inputs TEXT;
ALTER TABLE deployments ADD COLUMN commit_sha TEXT;
ALTER TABLE deployments ADD COLUMN reused_from TEXT;
ALTER TABLE deployments ADD COLUMN names_itself BIGINT;
CREATE INDEX deployments_by_digest ON deployments (slug, input_digest);
ALTER TABLE git_links ADD COLUMN root TEXT;
