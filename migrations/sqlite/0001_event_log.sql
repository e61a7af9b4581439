-- The event log: one row per accepted event, body byte for byte.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,          -- assigned by zoomhook, consecutive, never reused
    id          TEXT    NOT NULL UNIQUE,      -- stable id (evt_<ULID>)
    source      TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    event_ts    INTEGER,                      -- epoch ms, when the event occurred
    account_id  TEXT,
    object_id   TEXT,                         -- normalised payload.object.id
    object_uuid TEXT,
    received_at INTEGER NOT NULL,             -- epoch ms
    request_id  TEXT,                         -- x-zm-request-id
    dedupe_key  TEXT    NOT NULL,             -- semantic key
    body        BLOB    NOT NULL
);
CREATE INDEX events_event ON events (event, seq);
CREATE INDEX events_object_id ON events (object_id) WHERE object_id IS NOT NULL;
CREATE INDEX events_object_uuid ON events (object_uuid) WHERE object_uuid IS NOT NULL;
CREATE INDEX events_received_at ON events (received_at);

-- Dedupe keys (rid:<x-zm-request-id>, sem:<semantic hash>) live for the dedupe window.
CREATE TABLE dedupe_keys (
    key        TEXT    PRIMARY KEY,
    event_id   TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX dedupe_keys_expires_at ON dedupe_keys (expires_at);

-- Admin API tokens: only a SHA-256 of the secret is stored.
CREATE TABLE admin_tokens (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    token_hash TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
