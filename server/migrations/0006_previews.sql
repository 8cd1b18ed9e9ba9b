-- Previews: a deployment built without being made production, the branch it is of, and
-- each branch's alias (the newest ready preview of the branch).
ALTER TABLE deployments ADD COLUMN preview BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN branch TEXT;
CREATE TABLE aliases (
    slug        TEXT NOT NULL,
    label       TEXT NOT NULL,
    deployment  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (slug, label)
);
