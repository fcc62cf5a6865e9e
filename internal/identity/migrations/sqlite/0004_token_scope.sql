-- scope limits a token to one use outside the API ('' : an API token).
-- The only scope today is the database gateway's, 'db:TARGET/ACCOUNT'
-- (ACCOUNT empty when the client names only the target); the API refuses
-- every scoped token. parent_id is the token that issued a scoped token
-- ('' for others): revoking a token revokes the tokens it issued.
ALTER TABLE identity_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT '';
ALTER TABLE identity_tokens ADD COLUMN parent_id TEXT NOT NULL DEFAULT '';
CREATE INDEX identity_tokens_parent ON identity_tokens (parent_id);
