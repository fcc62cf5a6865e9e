-- identity_login_failures: the lockout state of every user name that has
-- recently failed to log in, whether or not a user of that name exists.
-- name_mac is the barrier's HMAC-SHA256 of the name (purpose
-- "identity.login_name"), so the table does not reveal which names were
-- tried (a name may be a mistyped password). failures counts consecutive
-- failures, each less than the lockout duration after the one before;
-- last_failure_at (micros) is the latest; locked_until (micros) is when a
-- lockout ends, 0 when never locked. Rows whose lock has ended and whose
-- last failure is older than the lockout duration no longer count and are
-- deleted opportunistically, by failed logins.
CREATE TABLE identity_login_failures (
    name_mac        BYTEA   PRIMARY KEY,
    failures        INTEGER NOT NULL,
    last_failure_at BIGINT  NOT NULL,
    locked_until    BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX identity_login_failures_last ON identity_login_failures (last_failure_at);

-- Lockouts now live in identity_login_failures, for every name alike.
-- Lockouts in force at upgrade are not carried over: the name's MAC needs
-- the unsealed barrier, and they would end within the lockout duration.
ALTER TABLE identity_users DROP COLUMN failures;
ALTER TABLE identity_users DROP COLUMN locked_until;
