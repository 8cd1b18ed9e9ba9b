-- Stored secrets: one sealed value per project, name and target.
CREATE TABLE secrets (
    slug        TEXT NOT NULL,
    name        TEXT NOT NULL,
    target      TEXT NOT NULL,
    sensitive   BIGINT NOT NULL DEFAULT 0,
    key_id      TEXT NOT NULL,
    sealed      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (slug, name, target)
);
