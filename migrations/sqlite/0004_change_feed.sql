-- A change feed: every change to a row that servers cache (licenses, activations, usage totals, device blocks)
-- appends its id here, from whichever process makes it (the server, the `tessera-server offline …` CLI, later
-- other nodes). Servers apply the feed to their caches after each of their own commits and poll it for everyone else's.
-- Last-seen times are not fed (every heartbeat moves them; caches do not rely on them); a lease is fed only when
-- it actually changes (a renewal, a re-activation), which is rare next to heartbeats.
CREATE TABLE changes (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    kind  TEXT NOT NULL,              -- 'license' | 'activation' | 'usage' (license id) | 'blocks' (tenant id)
    id    TEXT NOT NULL,
    at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TRIGGER licenses_fed_update AFTER UPDATE ON licenses
BEGIN INSERT INTO changes (kind, id) VALUES ('license', OLD.id); END;
CREATE TRIGGER licenses_fed_delete AFTER DELETE ON licenses
BEGIN INSERT INTO changes (kind, id) VALUES ('license', OLD.id); END;

CREATE TRIGGER activations_fed_update
AFTER UPDATE OF tenant_id, license_id, device_public_key, fingerprint, metadata, status, offline, floating,
                deactivated_at, deactivation_reason, machine_hash ON activations
BEGIN INSERT INTO changes (kind, id) VALUES ('activation', OLD.id); END;
CREATE TRIGGER activations_fed_lease AFTER UPDATE OF lease_expires_at ON activations
WHEN OLD.lease_expires_at IS NOT NEW.lease_expires_at
BEGIN INSERT INTO changes (kind, id) VALUES ('activation', OLD.id); END;
CREATE TRIGGER activations_fed_delete AFTER DELETE ON activations
BEGIN INSERT INTO changes (kind, id) VALUES ('activation', OLD.id); END;

CREATE TRIGGER usage_fed_insert AFTER INSERT ON usage_totals
BEGIN INSERT INTO changes (kind, id) VALUES ('usage', NEW.license_id); END;
CREATE TRIGGER usage_fed_update AFTER UPDATE ON usage_totals
BEGIN INSERT INTO changes (kind, id) VALUES ('usage', NEW.license_id); END;
CREATE TRIGGER usage_fed_delete AFTER DELETE ON usage_totals
BEGIN INSERT INTO changes (kind, id) VALUES ('usage', OLD.license_id); END;

-- Device blocks, per tenant: heartbeats and activations skip the block lookup for tenants that have none.
CREATE TRIGGER blocks_fed_insert AFTER INSERT ON blocked_devices
BEGIN INSERT INTO changes (kind, id) VALUES ('blocks', NEW.tenant_id); END;
CREATE TRIGGER blocks_fed_delete AFTER DELETE ON blocked_devices
BEGIN INSERT INTO changes (kind, id) VALUES ('blocks', OLD.tenant_id); END;
