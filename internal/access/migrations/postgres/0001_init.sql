-- Just-in-time access. Times are µs since the epoch; durations µs.
-- Principals are stored as audit actors ("user:alice").

-- access_roles: what a grant of the role permits (template, a Cedar policy
-- with the slot ?principal) and optionally an ephemeral database user on
-- eph_target ('' none) made a member of eph_roles (space-separated).
-- break_glass marks roles that need the break-glass procedure.
CREATE TABLE access_roles (
    name        TEXT    PRIMARY KEY,
    description TEXT    NOT NULL,
    template    TEXT    NOT NULL,
    eph_target  TEXT    NOT NULL DEFAULT '',
    eph_roles   TEXT    NOT NULL DEFAULT '',
    break_glass BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT  NOT NULL
);

-- access_eligibility: who may request a role, on which terms.
-- require_ticket is a regular expression ('' none).
CREATE TABLE access_eligibility (
    role            TEXT    NOT NULL REFERENCES access_roles (name),
    subject_kind    TEXT    NOT NULL,
    subject_name    TEXT    NOT NULL,
    approvals       INTEGER NOT NULL,
    approver_group  TEXT    NOT NULL,
    max_ttl         BIGINT  NOT NULL,
    require_ticket  TEXT    NOT NULL,
    reason_optional BOOLEAN NOT NULL,
    require_mfa     BOOLEAN NOT NULL,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (role, subject_kind, subject_name)
);

-- access_requests: a request to activate a role (kind 'activation') or
-- to extend a grant (kind 'extension', grant_id names it). The terms of
-- the eligibility it was made under are copied into it. grant_id is the
-- grant created (activation) or extended (extension); '' before.
CREATE TABLE access_requests (
    id                 TEXT    PRIMARY KEY,
    kind               TEXT    NOT NULL,
    role               TEXT    NOT NULL,
    requester          TEXT    NOT NULL,
    ttl                BIGINT  NOT NULL,
    reason             TEXT    NOT NULL,
    ticket             TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    approvals_required INTEGER NOT NULL,
    approver_group     TEXT    NOT NULL,
    require_mfa        BOOLEAN NOT NULL,
    eligible_as        TEXT    NOT NULL,
    grant_id           TEXT    NOT NULL DEFAULT '',
    created_at         BIGINT  NOT NULL,
    expires_at         BIGINT  NOT NULL,
    decided_at         BIGINT  NOT NULL DEFAULT 0,
    decided_by         TEXT    NOT NULL DEFAULT '',
    comment            TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX access_requests_pending ON access_requests (status, expires_at);
CREATE INDEX access_requests_requester ON access_requests (requester);

-- access_approvals: one row per approver of a request.
CREATE TABLE access_approvals (
    request_id TEXT    NOT NULL REFERENCES access_requests (id),
    approver   TEXT    NOT NULL,
    comment    TEXT    NOT NULL,
    mfa        BOOLEAN NOT NULL,
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (request_id, approver)
);

-- access_grants: an activated role. ended_at is 0 while the grant lasts
-- (until expires_at); end_reason says why it ended ('expired', 'revoked').
-- The ephemeral user, if any: eph_state 'pending' (to be created),
-- 'created', 'dropped'; eph_password_ct its password encrypted by the
-- barrier (AAD access.ephemeral/<grant id>), cleared once dropped.
CREATE TABLE access_grants (
    id              TEXT   PRIMARY KEY,
    role            TEXT   NOT NULL,
    principal       TEXT   NOT NULL,
    request_id      TEXT   NOT NULL,
    starts_at       BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    ended_at        BIGINT NOT NULL DEFAULT 0,
    end_reason      TEXT   NOT NULL DEFAULT '',
    ended_by        TEXT   NOT NULL DEFAULT '',
    eph_target      TEXT   NOT NULL DEFAULT '',
    eph_username    TEXT   NOT NULL DEFAULT '',
    eph_roles       TEXT   NOT NULL DEFAULT '',
    eph_state       TEXT   NOT NULL DEFAULT '',
    eph_error       TEXT   NOT NULL DEFAULT '',
    eph_password_ct BYTEA
);
CREATE INDEX access_grants_active ON access_grants (ended_at, expires_at);
CREATE INDEX access_grants_principal ON access_grants (principal);
CREATE INDEX access_grants_eph ON access_grants (eph_target, eph_state);
