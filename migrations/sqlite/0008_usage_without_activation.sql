-- Usage can be recorded for a license without an activation: a backend meters it over gRPC (RecordUsage) by
-- license key. Such events have no activation_id.
CREATE TABLE usage_events_any (
    id             TEXT NOT NULL,
    activation_id  TEXT,
    license_id     TEXT NOT NULL,
    feature        TEXT NOT NULL,
    amount         INTEGER NOT NULL,
    recorded_at    TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    PRIMARY KEY (license_id, id)
) WITHOUT ROWID;
INSERT INTO usage_events_any (id, activation_id, license_id, feature, amount, recorded_at, received_at)
    SELECT id, activation_id, license_id, feature, amount, recorded_at, received_at FROM usage_events;
DROP TABLE usage_events;
ALTER TABLE usage_events_any RENAME TO usage_events;
CREATE INDEX usage_license_feature ON usage_events(license_id, feature);
