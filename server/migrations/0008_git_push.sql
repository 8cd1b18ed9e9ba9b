-- Git push deploys: a project's repository link (with its sealed webhook secret), every
-- delivery and its decision, deploy hooks, and where commit statuses go.
CREATE TABLE git_links (
    slug              TEXT PRIMARY KEY,
    repo              TEXT NOT NULL,
    production_branch TEXT NOT NULL,
    key_id            TEXT NOT NULL,
    sealed_secret     TEXT NOT NULL,
    created_at        TEXT NOT NULL
);
CREATE TABLE deliveries (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL,
    at          TEXT NOT NULL,
    at_us       BIGINT NOT NULL,
    forge       TEXT NOT NULL,
    event       TEXT NOT NULL,
    delivery    TEXT,
    decision    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    deployment  TEXT,
    payload     TEXT
);
CREATE INDEX deliveries_by_slug ON deliveries (slug, at_us);
CREATE TABLE deploy_hooks (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL,
    name        TEXT NOT NULL,
    branch      TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);
CREATE TABLE commit_targets (
    deployment  TEXT PRIMARY KEY,
    forge       TEXT NOT NULL,
    repo        TEXT NOT NULL,
    sha         TEXT NOT NULL
);
