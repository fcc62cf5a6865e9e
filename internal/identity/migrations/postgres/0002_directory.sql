-- Nothing was deployed with 0001: its token table is replaced by one that
-- names a principal (user or machine) instead of a free-form subject.
DROP TABLE identity_tokens;

-- identity_users: people. password_hash is an Argon2id PHC string, '' when
-- the user has no password. failures counts consecutive failed logins;
-- locked_until (micros) is when a lockout ends, 0 when not locked.
CREATE TABLE identity_users (
    name          TEXT    PRIMARY KEY,
    display_name  TEXT    NOT NULL DEFAULT '',
    email         TEXT    NOT NULL DEFAULT '',
    status        TEXT    NOT NULL,
    password_hash TEXT    NOT NULL DEFAULT '',
    failures      INTEGER NOT NULL DEFAULT 0,
    locked_until  BIGINT  NOT NULL DEFAULT 0,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);

-- identity_totp: one row per user who ever enrolled. secret_ct is the TOTP
-- secret encrypted by the barrier with AAD {identity.totp, user, version};
-- version grows with each enrollment. last_step is the highest accepted
-- time step (replay guard).
CREATE TABLE identity_totp (
    user_name TEXT    PRIMARY KEY REFERENCES identity_users (name) ON DELETE CASCADE,
    version   BIGINT  NOT NULL,
    secret_ct BYTEA,
    confirmed BOOLEAN NOT NULL DEFAULT FALSE,
    last_step BIGINT  NOT NULL DEFAULT 0
);

-- identity_recovery_codes: SHA-256 of single-use MFA recovery codes.
CREATE TABLE identity_recovery_codes (
    user_name TEXT   NOT NULL REFERENCES identity_users (name) ON DELETE CASCADE,
    code_hash BYTEA  NOT NULL,
    used_at   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_name, code_hash)
);

-- identity_machines: AppRole-like machine principals. TTLs in microseconds.
CREATE TABLE identity_machines (
    name          TEXT   PRIMARY KEY,
    role_id       TEXT   NOT NULL UNIQUE,
    token_ttl     BIGINT NOT NULL,
    token_max_ttl BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);

-- identity_secret_ids: SHA-256 of machine secret ids. uses 0 means
-- unlimited; otherwise uses_left counts down. cidrs is a comma-separated
-- list of prefixes, '' for any source.
CREATE TABLE identity_secret_ids (
    accessor     TEXT    PRIMARY KEY,
    machine_name TEXT    NOT NULL REFERENCES identity_machines (name) ON DELETE CASCADE,
    secret_hash  BYTEA   NOT NULL,
    uses         INTEGER NOT NULL,
    uses_left    INTEGER NOT NULL,
    cidrs        TEXT    NOT NULL DEFAULT '',
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL
);
CREATE INDEX identity_secret_ids_machine ON identity_secret_ids (machine_name);

CREATE TABLE identity_groups (
    name        TEXT   PRIMARY KEY,
    description TEXT   NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);

-- identity_group_members: member_kind is user, machine or group.
CREATE TABLE identity_group_members (
    group_name  TEXT   NOT NULL REFERENCES identity_groups (name) ON DELETE CASCADE,
    member_kind TEXT   NOT NULL,
    member_name TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (group_name, member_kind, member_name)
);
CREATE INDEX identity_group_members_member ON identity_group_members (member_kind, member_name);

-- identity_tokens: API tokens, by id; only a SHA-256 of the secret is kept.
-- ttl (micros) is what Renew extends by; 0 with expires_at 0: no expiry.
CREATE TABLE identity_tokens (
    id             TEXT    PRIMARY KEY,
    secret_hash    BYTEA   NOT NULL,
    principal_kind TEXT    NOT NULL,
    principal_name TEXT    NOT NULL,
    mfa_at         BIGINT  NOT NULL DEFAULT 0,
    ttl            BIGINT  NOT NULL DEFAULT 0,
    created_at     BIGINT  NOT NULL,
    expires_at     BIGINT  NOT NULL DEFAULT 0,
    max_expires_at BIGINT  NOT NULL DEFAULT 0,
    bootstrap      BOOLEAN NOT NULL DEFAULT FALSE,
    revoked_at     BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX identity_tokens_principal ON identity_tokens (principal_kind, principal_name);

-- identity_meta: counters. groups_version grows with every membership
-- change, so other processes know to reload their cache of parents.
CREATE TABLE identity_meta (
    name  TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO identity_meta (name, value) VALUES ('groups_version', 0);
