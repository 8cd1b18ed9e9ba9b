-- Dashboard sessions: a browser's sign-in, made from an API token whose role and
-- projects it acts with (and which it ends with), kept as the SHA-256 of its cookie.
-- `csrf` is what every change made in the session must carry in `X-CSRF-Token`.
-- Sign-in links (`cdeploy dashboard`) are one-time codes, kept as their SHA-256 until
-- used or a minute old.
CREATE TABLE dashboard_sessions (
    id            TEXT PRIMARY KEY,
    hash          TEXT NOT NULL UNIQUE,
    token_id      TEXT NOT NULL,
    csrf          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    last_seen_us  BIGINT NOT NULL,
    expires_us    BIGINT NOT NULL
);
CREATE INDEX dashboard_sessions_by_token ON dashboard_sessions (token_id);
CREATE TABLE dashboard_links (
    hash        TEXT PRIMARY KEY,
    token_id    TEXT NOT NULL,
    expires_us  BIGINT NOT NULL
);
