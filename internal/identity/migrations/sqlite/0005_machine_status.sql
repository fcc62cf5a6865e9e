-- status is 'active' or 'disabled'. A disabled machine cannot log in and
-- no secret id can be issued for it; its tokens were revoked when it was
-- disabled. Its secret ids are kept, for when it is enabled again.
ALTER TABLE identity_machines ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
