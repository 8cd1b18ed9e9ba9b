-- Distributed mode: the ECS task of a build, and an insertion order finer than the
-- millisecond timestamps (deployments made in the same millisecond stay in order).
ALTER TABLE deployments ADD COLUMN task TEXT;
ALTER TABLE deployments ADD COLUMN created_us BIGINT NOT NULL DEFAULT 0;
