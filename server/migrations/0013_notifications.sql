-- Deploy events out: a project's notification endpoints (each with its signing secret,
-- sealed), the outbox of events to send (written in the same transaction as the status
-- change each reports, so none is lost to a crash), and every attempt at sending one.
CREATE TABLE notify_hooks (
    id            TEXT PRIMARY KEY,
    slug          TEXT NOT NULL,
    url           TEXT NOT NULL,
    -- The subscribed events, each between commas: `,ready,failed,`.
    events        TEXT NOT NULL,
    format        TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    sealed_secret TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX notify_hooks_by_slug ON notify_hooks (slug);
CREATE TABLE notify_outbox (
    -- The message id (`webhook-id`): the hook's id, the deployment's, the event's.
    id          TEXT PRIMARY KEY,
    hook        TEXT NOT NULL,
    slug        TEXT NOT NULL,
    event       TEXT NOT NULL,
    deployment  TEXT NOT NULL,
    error       TEXT,
    at          TEXT NOT NULL,
    at_us       BIGINT NOT NULL,
    -- `pending`, `delivered` or `failed` (given up).
    state       TEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    next_us     BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX notify_outbox_due ON notify_outbox (state, next_us);
CREATE INDEX notify_outbox_by_hook ON notify_outbox (hook);
CREATE TABLE notify_attempts (
    id          TEXT PRIMARY KEY,
    message     TEXT NOT NULL,
    hook        TEXT NOT NULL,
    event       TEXT NOT NULL,
    deployment  TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    at          TEXT NOT NULL,
    at_us       BIGINT NOT NULL,
    status      BIGINT,
    error       TEXT,
    ms          BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    next_us     BIGINT
);
CREATE INDEX notify_attempts_by_hook ON notify_attempts (hook, at_us);
-- A pull request's deployments report to one comment on it, edited as they change: the
-- pull request a deployment was made for, and the comment's id on the forge.
ALTER TABLE commit_targets ADD COLUMN pr BIGINT;
-- `comment_id` is empty while one reporter creates the comment; `deployment_at` is
-- the creation time of the deployment it shows (an older one's late report is not
-- shown over it).
CREATE TABLE pr_comments (
    slug          TEXT NOT NULL,
    forge         TEXT NOT NULL,
    repo          TEXT NOT NULL,
    pr            BIGINT NOT NULL,
    comment_id    TEXT NOT NULL,
    deployment_at TEXT NOT NULL,
    updated_us    BIGINT NOT NULL,
    PRIMARY KEY (slug, forge, repo, pr)
);
