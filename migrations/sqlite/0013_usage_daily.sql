-- Usage per license, feature and UTC day of the events' recorded time. Quota periods are whole UTC days (DAY,
-- MONTH, BILLING_PERIOD: see tessera_core::model::LimitPeriod), so a period's use is the sum of at most 366 rows
-- whatever the number of events.
CREATE TABLE usage_daily (
    license_id TEXT NOT NULL,
    feature    TEXT NOT NULL,
    day        TEXT NOT NULL,      -- YYYY-MM-DD, UTC
    total      INTEGER NOT NULL,   -- units, saturating at i64::MAX like usage_totals
    events     INTEGER NOT NULL,
    PRIMARY KEY (license_id, feature, day)
) WITHOUT ROWID;
INSERT INTO usage_daily (license_id, feature, day, total, events)
    SELECT license_id, feature, substr(recorded_at, 1, 10), SUM(amount), COUNT(*) FROM usage_events
    GROUP BY license_id, feature, substr(recorded_at, 1, 10);
-- Usage by license and metric in time order: what period sums and summaries over a window read (in place of the
-- index on license and metric alone, which made them read a license's whole history).
DROP INDEX usage_license_feature;
CREATE INDEX usage_license_feature ON usage_events(license_id, feature, recorded_at);
