CREATE TABLE identity_tokens (
    id          TEXT    PRIMARY KEY,
    secret_hash BLOB    NOT NULL,
    subject     TEXT    NOT NULL,
    root        INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL DEFAULT 0,
    revoked_at  BIGINT  NOT NULL DEFAULT 0
);
