-- Tessera server schema, SQLite backend. Times are RFC 3339 UTC text; ids are UUID text; hashes are BLOBs.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT REFERENCES tenants(id),
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    token_hash   BLOB NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT
);
CREATE INDEX api_tokens_tenant ON api_tokens(tenant_id);

CREATE TABLE customers (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    email       TEXT,
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX customers_tenant ON customers(tenant_id, id);

CREATE TABLE products (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    code        TEXT NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (tenant_id, code)
);

CREATE TABLE templates (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    product_id  TEXT NOT NULL REFERENCES products(id),
    name        TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX templates_tenant ON templates(tenant_id, id);

CREATE TABLE licenses (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    product_id      TEXT NOT NULL REFERENCES products(id),
    customer_id     TEXT REFERENCES customers(id),
    template_id     TEXT,
    key_hash        BLOB NOT NULL UNIQUE,
    key_hint        BLOB NOT NULL,
    status          TEXT NOT NULL,
    license_type    TEXT NOT NULL,
    expires_at      TEXT,
    body            TEXT NOT NULL,
    policy          TEXT NOT NULL,
    expiring_notice_for TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX licenses_tenant ON licenses(tenant_id, id);
CREATE INDEX licenses_hint ON licenses(key_hint);
CREATE INDEX licenses_expiry ON licenses(status, expires_at);

CREATE TABLE activations (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    license_id         TEXT NOT NULL REFERENCES licenses(id),
    device_public_key  BLOB NOT NULL,
    fingerprint        TEXT NOT NULL,
    metadata           TEXT NOT NULL DEFAULT '{}',
    status             TEXT NOT NULL,
    offline            INTEGER NOT NULL DEFAULT 0,
    floating           INTEGER NOT NULL DEFAULT 0,
    created_at         TEXT NOT NULL,
    last_seen_at       TEXT NOT NULL,
    lease_expires_at   TEXT,
    deactivated_at     TEXT,
    deactivation_reason TEXT
);
CREATE INDEX activations_license ON activations(license_id, status);
CREATE INDEX activations_cull ON activations(status, floating, lease_expires_at);
CREATE INDEX activations_purge ON activations(status, deactivated_at);

CREATE TABLE usage_events (
    id             TEXT PRIMARY KEY,
    activation_id  TEXT NOT NULL,
    license_id     TEXT NOT NULL,
    feature        TEXT NOT NULL,
    amount         INTEGER NOT NULL,
    recorded_at    TEXT NOT NULL,
    received_at    TEXT NOT NULL
);
CREATE INDEX usage_license_feature ON usage_events(license_id, feature);

CREATE TABLE blocked_devices (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    device_public_key  BLOB,
    fingerprint_hash   TEXT,
    reason             TEXT NOT NULL,
    created_at         TEXT NOT NULL
);
CREATE INDEX blocked_devices_key ON blocked_devices(tenant_id, device_public_key);

CREATE TABLE suspicious_reports (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    license_id     TEXT,
    activation_id  TEXT,
    kind           TEXT NOT NULL,
    details        TEXT NOT NULL,
    created_at     TEXT NOT NULL
);

CREATE TABLE emergency_codes (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    license_id    TEXT NOT NULL REFERENCES licenses(id),
    serial        INTEGER NOT NULL,
    reason        TEXT NOT NULL,
    issued_by     TEXT NOT NULL,
    issued_at     TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    bound_device  BLOB,
    code          TEXT NOT NULL,
    UNIQUE (license_id, serial)
);
CREATE INDEX emergency_codes_license ON emergency_codes(license_id, issued_at);

CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    license_id  TEXT,
    kind        TEXT NOT NULL,
    at          TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX events_tenant ON events(tenant_id, at);

-- Append-only, hash-chained: hash = SHA-256(prev_hash || canonical row).
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    tenant_id   TEXT,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    ip          TEXT,
    outcome     TEXT NOT NULL,
    details     TEXT NOT NULL,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
);
CREATE INDEX audit_tenant ON audit_log(tenant_id, seq);
