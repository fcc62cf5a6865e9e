-- authz_policies holds the Cedar policies by name. ids lists the policy ids
-- inside, space-separated; version is authz_version.version when the row
-- was last written.
CREATE TABLE authz_policies (
    name       TEXT    PRIMARY KEY,
    text       TEXT    NOT NULL,
    ids        TEXT    NOT NULL,
    builtin    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL,
    version    BIGINT  NOT NULL
);

-- authz_version counts changes to authz_policies, so that servers sharing
-- the database notice them.
CREATE TABLE authz_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT  NOT NULL
);
INSERT INTO authz_version (id, version) VALUES (1, 0);
