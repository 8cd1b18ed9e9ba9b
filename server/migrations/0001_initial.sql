-- Projects, their deployments and API tokens.
CREATE TABLE projects (
    slug        TEXT PRIMARY KEY,
    git         TEXT,
    production  TEXT,
    created_at  TEXT NOT NULL
);
CREATE TABLE deployments (
    id               TEXT PRIMARY KEY,
    slug             TEXT NOT NULL,
    status           TEXT NOT NULL,
    source           TEXT NOT NULL,
    git_url          TEXT,
    git_ref          TEXT,
    build            TEXT NOT NULL,
    env              TEXT NOT NULL,
    site             TEXT NOT NULL,
    error            TEXT,
    idempotency_key  TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX deployments_by_slug ON deployments (slug, created_at);
CREATE INDEX deployments_by_status ON deployments (status);
CREATE UNIQUE INDEX deployments_idempotency ON deployments (slug, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE tokens (
    hash        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
