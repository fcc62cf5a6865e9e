CREATE TABLE recording_sessions (
    id             TEXT    PRIMARY KEY,
    kind           TEXT    NOT NULL,
    principal      TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    account        TEXT    NOT NULL,
    source         TEXT    NOT NULL,
    command        TEXT    NOT NULL,
    pty            INTEGER NOT NULL,
    width          INTEGER NOT NULL,
    height         INTEGER NOT NULL,
    grant_id       TEXT    NOT NULL,
    lease_id       TEXT    NOT NULL,
    started_at     BIGINT  NOT NULL,
    ended_at       BIGINT  NOT NULL DEFAULT 0,
    status         TEXT    NOT NULL,
    bytes_in       BIGINT  NOT NULL DEFAULT 0,
    bytes_out      BIGINT  NOT NULL DEFAULT 0,
    events         BIGINT  NOT NULL DEFAULT 0,
    recorded_bytes BIGINT  NOT NULL DEFAULT 0,
    sha256         TEXT    NOT NULL DEFAULT '',
    kill_requested INTEGER NOT NULL DEFAULT 0,
    kill_message   TEXT    NOT NULL DEFAULT '',
    owner          TEXT    NOT NULL,
    heartbeat_at   BIGINT  NOT NULL
);
CREATE INDEX recording_sessions_started ON recording_sessions (started_at);
CREATE INDEX recording_sessions_active ON recording_sessions (status, owner);

CREATE TABLE recording_chunks (
    session_id TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    data_ct    BLOB   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
