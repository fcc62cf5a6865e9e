CREATE TABLE vault_targets (
    name                     TEXT    PRIMARY KEY,
    kind                     TEXT    NOT NULL,
    host                     TEXT    NOT NULL,
    port                     INTEGER NOT NULL,
    options                  TEXT    NOT NULL DEFAULT '{}',
    management_account       TEXT    NOT NULL DEFAULT '',
    password_policy          TEXT    NOT NULL DEFAULT '',
    max_concurrent_rotations INTEGER NOT NULL,
    created_at               BIGINT  NOT NULL
);

CREATE TABLE vault_accounts (
    id                TEXT    PRIMARY KEY,
    target            TEXT    NOT NULL REFERENCES vault_targets (name),
    username          TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    max_checkouts     INTEGER NOT NULL,
    rotate_on_checkin INTEGER NOT NULL,
    rotate_every      BIGINT  NOT NULL DEFAULT 0,
    password_policy   TEXT    NOT NULL DEFAULT '',
    dependents        TEXT    NOT NULL DEFAULT '[]',
    status            TEXT    NOT NULL,
    last_rotated_at   BIGINT  NOT NULL DEFAULT 0,
    last_verified_at  BIGINT  NOT NULL DEFAULT 0,
    next_rotation_at  BIGINT  NOT NULL DEFAULT 0,
    rotation_due_at   BIGINT  NOT NULL DEFAULT 0,
    rotating_by       TEXT    NOT NULL DEFAULT '',
    rotating_until    BIGINT  NOT NULL DEFAULT 0,
    created_at        BIGINT  NOT NULL
);
CREATE INDEX vault_accounts_target ON vault_accounts (target);

CREATE TABLE vault_credentials (
    account_id    TEXT   NOT NULL,
    version       BIGINT NOT NULL,
    state         TEXT   NOT NULL,
    kind          TEXT   NOT NULL,
    credential_ct BLOB   NOT NULL,
    public_key    TEXT   NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (account_id, version)
);
CREATE UNIQUE INDEX vault_credentials_live ON vault_credentials (account_id, state)
    WHERE state IN ('current', 'pending');

CREATE TABLE vault_leases (
    id             TEXT   PRIMARY KEY,
    account_id     TEXT   NOT NULL,
    holder         TEXT   NOT NULL,
    reason         TEXT   NOT NULL,
    ticket         TEXT   NOT NULL DEFAULT '',
    checked_out_at BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    ended_at       BIGINT,
    end_reason     TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX vault_leases_open ON vault_leases (account_id) WHERE ended_at IS NULL;
CREATE INDEX vault_leases_holder ON vault_leases (holder) WHERE ended_at IS NULL;

CREATE TABLE vault_waitlist (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT   NOT NULL UNIQUE,
    account_id  TEXT   NOT NULL,
    principal   TEXT   NOT NULL,
    enqueued_at BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL
);
CREATE INDEX vault_waitlist_account ON vault_waitlist (account_id, seq);

CREATE TABLE vault_secrets (
    path       TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    data_ct    BLOB   NOT NULL,
    keys       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (path, version)
);
