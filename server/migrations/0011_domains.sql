-- Custom domains: which project (and branch) each serves, its certificate's state, the
-- lease that lets one server at a time order its certificate, and every attempt made
-- for it (what `cdeploy domains inspect` shows).
CREATE TABLE domains (
    name            TEXT PRIMARY KEY,
    slug            TEXT NOT NULL,
    branch          TEXT,
    redirect_to     TEXT,
    https_redirect  BIGINT NOT NULL DEFAULT 1,
    hsts            TEXT,
    created_at      TEXT NOT NULL,
    state           TEXT NOT NULL,
    cert_not_before BIGINT,
    cert_not_after  BIGINT,
    failures        BIGINT NOT NULL DEFAULT 0,
    next_attempt_us BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until_us  BIGINT NOT NULL DEFAULT 0,
    verify_token    TEXT NOT NULL DEFAULT '',
    verified        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX domains_by_slug ON domains (slug);
CREATE TABLE domain_attempts (
    id     TEXT PRIMARY KEY,
    name   TEXT NOT NULL,
    at     TEXT NOT NULL,
    at_us  BIGINT NOT NULL,
    ok     BIGINT NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX domain_attempts_by_name ON domain_attempts (name, at_us);
