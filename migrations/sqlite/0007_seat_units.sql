-- License models are enforced: a PER_CPU / PER_CORE activation takes as many seats as the machine has sockets /
-- cores, and a NAMED_USER license counts one seat per user, whatever number of devices the user activates.
ALTER TABLE activations ADD COLUMN seats INTEGER NOT NULL DEFAULT 1;
ALTER TABLE activations ADD COLUMN user_id TEXT;
CREATE INDEX activations_user ON activations(license_id, user_id) WHERE user_id IS NOT NULL;
