CREATE TABLE identity_tokens (
    id          TEXT    PRIMARY KEY,
    secret_hash BYTEA   NOT NULL,
    subject     TEXT    NOT NULL,
    root        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL DEFAULT 0,
    revoked_at  BIGINT  NOT NULL DEFAULT 0
);
