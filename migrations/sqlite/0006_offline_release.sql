-- Offline grants hand their seat back on a schedule. A released activation can keep holding its seat until the
-- lease of the grant it ended would have run out (a copy of the device's state keeps working until then), and
-- immediate releases are counted per license over 30 days.
ALTER TABLE activations ADD COLUMN seat_held_until TEXT;
ALTER TABLE activations ADD COLUMN release_kind TEXT;
CREATE INDEX activations_held ON activations(license_id, seat_held_until) WHERE seat_held_until IS NOT NULL;
CREATE INDEX activations_released ON activations(license_id, release_kind, deactivated_at)
    WHERE release_kind IS NOT NULL;

-- Emergency codes must be bound to a device unless a template says otherwise; templates and licenses stored
-- before the setting existed keep what they did (unbound codes allowed).
UPDATE templates SET body = json_set(body, '$.emergency.require_binding', json('false'))
    WHERE json_type(body, '$.emergency') = 'object';
UPDATE licenses SET policy = json_set(policy, '$.emergency.require_binding', json('false'))
    WHERE json_type(policy, '$.emergency') = 'object';
