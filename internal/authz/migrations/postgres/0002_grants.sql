-- authz_grants holds grant policies: a role's template linked to one
-- principal (see LinkTx), in force until expires_at (µs since the epoch).
-- id is the policy id ("grant.<id>"), text the linked policy, version
-- authz_version.version when the row was last written. A change bumps
-- authz_version like a change to authz_policies.
CREATE TABLE authz_grants (
    id         TEXT   PRIMARY KEY,
    principal  TEXT   NOT NULL,
    text       TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    version    BIGINT NOT NULL
);
CREATE INDEX authz_grants_expires ON authz_grants (expires_at);
