-- Trusted publishing: the OIDC issuers a project trusts, each with the claims a token
-- must carry (JSON: claim -> value), and every identity token spent (its issuer and
-- `jti`, kept until it expires) so none is accepted twice.
CREATE TABLE oidc_trusts (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL,
    issuer      TEXT NOT NULL,
    claims      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX oidc_trusts_by_slug ON oidc_trusts (slug);
CREATE TABLE oidc_spent (
    issuer      TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_us  BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti)
);
