-- Usage idempotency ids are scoped to their license: an id already used on one license no longer makes the same
-- id on another license a silently ignored duplicate (which let usage on a metered license go uncounted).
CREATE TABLE usage_events_scoped (
    id             TEXT NOT NULL,
    activation_id  TEXT NOT NULL,
    license_id     TEXT NOT NULL,
    feature        TEXT NOT NULL,
    amount         INTEGER NOT NULL,
    recorded_at    TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    PRIMARY KEY (license_id, id)
) WITHOUT ROWID;
INSERT INTO usage_events_scoped (id, activation_id, license_id, feature, amount, recorded_at, received_at)
    SELECT id, activation_id, license_id, feature, amount, recorded_at, received_at FROM usage_events;
DROP TABLE usage_events;
ALTER TABLE usage_events_scoped RENAME TO usage_events;
CREATE INDEX usage_license_feature ON usage_events(license_id, feature);
