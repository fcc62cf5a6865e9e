-- Command and statement rules the gateways apply to a target's sessions:
-- a JSON array of {"pattern", "action", "message"}.
ALTER TABLE vault_targets ADD COLUMN rules TEXT NOT NULL DEFAULT '[]';
