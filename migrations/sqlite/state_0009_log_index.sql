-- The log index: what the state database knows of the event log, kept by the log indexer a few
-- milliseconds behind the log (store/sqlite/indexer.rs), in large batches and off the ack path.

-- Up to where the log has been indexed: every entry with seq <= this is in event_index and its
-- dedupe keys are in dedupe_keys. Entries after it are looked up in the log itself (queries) or
-- in the committer's memory (dedupe), so nothing is missed while the index is behind.
CREATE TABLE log_index (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO log_index (id, seq) VALUES (1, 0);

-- The filterable columns of each log entry, with the indexes that queries by event, entity,
-- source and time use; the body and the rest stay in the log (joined by seq).
CREATE TABLE event_index (
    seq         INTEGER PRIMARY KEY,
    source      TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    object_id   TEXT,
    object_uuid TEXT
);
CREATE INDEX event_index_event ON event_index (event, seq);
CREATE INDEX event_index_object_id ON event_index (object_id) WHERE object_id IS NOT NULL;
CREATE INDEX event_index_object_uuid ON event_index (object_uuid) WHERE object_uuid IS NOT NULL;
CREATE INDEX event_index_received_at ON event_index (received_at);

-- Dedupe keys (rid:<x-zm-request-id>, sem:<semantic hash>) of indexed entries, for the window.
CREATE TABLE dedupe_keys (
    key        TEXT    PRIMARY KEY,
    event_id   TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX dedupe_keys_expires_at ON dedupe_keys (expires_at);

-- Facts about this state database itself (e.g. that it adopted the tables of an older log file).
CREATE TABLE state_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
