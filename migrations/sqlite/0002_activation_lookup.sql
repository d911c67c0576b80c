-- Activation lookups that stay fast on licenses with very many seats, and running usage totals.

ALTER TABLE activations ADD COLUMN machine_hash TEXT;
CREATE INDEX activations_device ON activations(license_id, device_public_key, status);
CREATE INDEX activations_machine ON activations(license_id, machine_hash, status);

CREATE TABLE usage_totals (
    license_id  TEXT NOT NULL,
    feature     TEXT NOT NULL,
    total       INTEGER NOT NULL,
    PRIMARY KEY (license_id, feature)
) WITHOUT ROWID;
INSERT INTO usage_totals (license_id, feature, total)
    SELECT license_id, feature, SUM(amount) FROM usage_events GROUP BY license_id, feature;
