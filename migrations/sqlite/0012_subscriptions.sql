-- Subscriptions to plans, and their history. The record is `body` (JSON); the columns beside it are what lists
-- filter on, what the lifecycle job scans, and the version an update must still find (`updated_at`).
CREATE TABLE subscriptions (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    product_id      TEXT NOT NULL REFERENCES products(id),
    license_id      TEXT NOT NULL UNIQUE REFERENCES licenses(id),
    status          TEXT NOT NULL,
    -- When the lifecycle job next has work on it: the trial's end while trialing, the period's end while active.
    due_at          TEXT,
    body            TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX subscriptions_tenant ON subscriptions(tenant_id, id);
CREATE INDEX subscriptions_customer ON subscriptions(customer_id, id);
CREATE INDEX subscriptions_due ON subscriptions(due_at) WHERE due_at IS NOT NULL;

CREATE TABLE subscription_events (
    id              TEXT PRIMARY KEY,
    subscription_id TEXT NOT NULL REFERENCES subscriptions(id),
    tenant_id       TEXT NOT NULL,
    at              TEXT NOT NULL,
    body            TEXT NOT NULL
);
CREATE INDEX subscription_events_of ON subscription_events(subscription_id, id);
