-- The catalog: plans (rungs of a product's ladder) and add-ons. The record is `body` (JSON); the columns beside
-- it are what lists filter on and what must be unique.
CREATE TABLE plans (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    product_id  TEXT NOT NULL REFERENCES products(id),
    code        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('PLAN', 'ADD_ON')),
    rank        INTEGER NOT NULL,
    tier        TEXT NOT NULL,
    category    TEXT,
    public      INTEGER NOT NULL,
    archived_at TEXT,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
-- A code names one plan of a product for good (archived ones too: old subscriptions keep referring to it).
CREATE UNIQUE INDEX plans_code ON plans(product_id, code);
-- One current plan per rung, and per tier name.
CREATE UNIQUE INDEX plans_rank ON plans(product_id, rank) WHERE kind = 'PLAN' AND archived_at IS NULL;
CREATE UNIQUE INDEX plans_tier ON plans(product_id, tier) WHERE kind = 'PLAN' AND archived_at IS NULL;
CREATE INDEX plans_tenant ON plans(tenant_id, product_id, kind, rank);
