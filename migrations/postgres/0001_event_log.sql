-- The event log: one row per accepted event, body byte for byte.
CREATE TABLE events (
    seq         BIGINT  PRIMARY KEY,          -- assigned from log_head, consecutive, commit-ordered
    id          TEXT    NOT NULL UNIQUE,
    source      TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    event_ts    BIGINT,
    account_id  TEXT,
    object_id   TEXT,
    object_uuid TEXT,
    received_at BIGINT  NOT NULL,
    request_id  TEXT,
    dedupe_key  TEXT    NOT NULL,
    body        BYTEA   NOT NULL
);
CREATE INDEX events_event ON events (event, seq);
CREATE INDEX events_object_id ON events (object_id) WHERE object_id IS NOT NULL;
CREATE INDEX events_object_uuid ON events (object_uuid) WHERE object_uuid IS NOT NULL;
CREATE INDEX events_received_at ON events (received_at);

-- The head of the log. Writers lock this row first: that serialises appends across instances,
-- keeps seq gap-free (a rolled-back batch rolls back its increment) and makes seq order equal
-- commit order, so a reader that has seen seq N never later finds an N-1 appear.
CREATE TABLE log_head (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    seq       BIGINT  NOT NULL
);
INSERT INTO log_head (singleton, seq) VALUES (TRUE, 0);

CREATE TABLE dedupe_keys (
    key        TEXT   PRIMARY KEY,
    event_id   TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX dedupe_keys_expires_at ON dedupe_keys (expires_at);

CREATE TABLE admin_tokens (
    id         TEXT   PRIMARY KEY,
    name       TEXT   NOT NULL,
    token_hash TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
