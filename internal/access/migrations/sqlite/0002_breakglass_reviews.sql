-- Break-glass and access reviews.

-- A break-glass role's rotate_accounts are vault account ids
-- ("target/username", space-separated; '' none) whose credentials are
-- rotated when a grant of the role ends.
ALTER TABLE access_roles ADD COLUMN rotate_accounts TEXT NOT NULL DEFAULT '';

-- allow_emergency lets the subject open a break-glass role at once, as an
-- emergency, without approvals.
ALTER TABLE access_eligibility ADD COLUMN allow_emergency BOOLEAN NOT NULL DEFAULT FALSE;

-- emergency marks a request fulfilled at once as a break-glass emergency.
ALTER TABLE access_requests ADD COLUMN emergency BOOLEAN NOT NULL DEFAULT FALSE;

-- A grant's emergency is its request's; rotate_accounts is copied from its
-- role when it is created; rotate_pending is set in the transaction that
-- ends a grant with rotate_accounts and cleared once the rotations were
-- triggered, so a crash between the two only repeats the trigger.
ALTER TABLE access_grants ADD COLUMN emergency BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE access_grants ADD COLUMN rotate_accounts TEXT NOT NULL DEFAULT '';
ALTER TABLE access_grants ADD COLUMN rotate_pending BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX access_grants_rotate ON access_grants (rotate_pending);

-- access_incident_reviews: the mandatory post-incident review of an
-- emergency grant, open while reviewed_at is 0. A member of approver_group
-- other than the grantee closes it.
CREATE TABLE access_incident_reviews (
    id             TEXT    PRIMARY KEY,
    grant_id       TEXT    NOT NULL REFERENCES access_grants (id),
    request_id     TEXT    NOT NULL,
    role           TEXT    NOT NULL,
    principal      TEXT    NOT NULL,
    approver_group TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    ticket         TEXT    NOT NULL,
    opened_at      BIGINT  NOT NULL,
    reviewed_at    BIGINT  NOT NULL DEFAULT 0,
    reviewer       TEXT    NOT NULL DEFAULT '',
    notes          TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX access_incident_reviews_open ON access_incident_reviews (reviewed_at);

-- access_review_campaigns: an access review. scope 'role' or 'group';
-- target the role or group reviewed ('' every one); reviewer_group the
-- group whose members decide; default_decision ('keep', 'revoke') what
-- undecided items get at the deadline; status 'open' or 'closed'.
CREATE TABLE access_review_campaigns (
    id               TEXT    PRIMARY KEY,
    scope            TEXT    NOT NULL,
    target           TEXT    NOT NULL,
    reviewer_group   TEXT    NOT NULL,
    default_decision TEXT    NOT NULL,
    deadline         BIGINT  NOT NULL,
    status           TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL,
    created_by       TEXT    NOT NULL,
    closed_at        BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX access_review_campaigns_due ON access_review_campaigns (status, deadline);

-- access_review_items: one standing assignment under review, numbered
-- from 1 in its campaign. kind 'eligibility' (role, subject), 'grant'
-- (grant_id, subject the grantee) or 'membership' (group_name, subject the
-- member). decision '' until decided; defaulted when the deadline decided
-- it; applied once a revocation took effect (or at once for keep);
-- apply_error is why the last attempt failed.
CREATE TABLE access_review_items (
    campaign_id TEXT    NOT NULL REFERENCES access_review_campaigns (id),
    seq         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    role        TEXT    NOT NULL DEFAULT '',
    group_name  TEXT    NOT NULL DEFAULT '',
    grant_id    TEXT    NOT NULL DEFAULT '',
    detail      TEXT    NOT NULL,
    decision    TEXT    NOT NULL DEFAULT '',
    defaulted   BOOLEAN NOT NULL DEFAULT FALSE,
    decided_by  TEXT    NOT NULL DEFAULT '',
    decided_at  BIGINT  NOT NULL DEFAULT 0,
    comment     TEXT    NOT NULL DEFAULT '',
    applied     BOOLEAN NOT NULL DEFAULT FALSE,
    apply_error TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (campaign_id, seq)
);
CREATE INDEX access_review_items_unapplied ON access_review_items (decision, applied);
