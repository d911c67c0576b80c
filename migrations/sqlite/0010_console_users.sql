-- People who sign in to the console with a username and a password. Each has an API token of its own whose
-- secret nobody holds: its role, its tenant and its revocation are the token's, so a revoked user's sessions end
-- at the next page exactly as a revoked token's do. The password is kept as an argon2id PHC string.
CREATE TABLE console_users (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT REFERENCES tenants(id),
    username            TEXT NOT NULL UNIQUE,
    password_hash       TEXT NOT NULL,
    token_id            TEXT NOT NULL UNIQUE REFERENCES api_tokens(id),
    created_at          TEXT NOT NULL,
    password_changed_at TEXT NOT NULL
);
CREATE INDEX console_users_tenant ON console_users(tenant_id);
