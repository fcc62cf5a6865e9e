-- audit_events is the hash-chained audit trail. seq is the rowid alias, so
-- reading the head (the highest seq) is one B-tree descent.
CREATE TABLE audit_events (
    seq        INTEGER PRIMARY KEY,
    time_us    BIGINT  NOT NULL,
    actor      TEXT    NOT NULL DEFAULT '',
    action     TEXT    NOT NULL,
    resource   TEXT    NOT NULL DEFAULT '',
    outcome    TEXT    NOT NULL,
    source     TEXT    NOT NULL DEFAULT '',
    request_id TEXT    NOT NULL DEFAULT '',
    details    TEXT    NOT NULL DEFAULT '{}',
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
);
CREATE INDEX audit_events_actor ON audit_events (actor, seq);
CREATE INDEX audit_events_action ON audit_events (action, seq);
CREATE INDEX audit_events_time ON audit_events (time_us);

-- audit_checkpoints holds signed statements "the chain had head hash H at seq S".
CREATE TABLE audit_checkpoints (
    seq       INTEGER PRIMARY KEY,
    hash      TEXT    NOT NULL,
    time_us   BIGINT  NOT NULL,
    signature TEXT    NOT NULL
);
