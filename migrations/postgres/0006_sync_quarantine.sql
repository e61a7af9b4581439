-- Log entries a reader could not apply after retries: recorded with the error and skipped, so
-- one event the store cannot hold never stalls sync for everything after it.
CREATE TABLE sync_quarantine (
    reader         TEXT    NOT NULL,
    seq            BIGINT  NOT NULL,
    event_id       TEXT    NOT NULL,
    event          TEXT    NOT NULL,
    error          TEXT    NOT NULL,
    quarantined_at BIGINT  NOT NULL,   -- epoch ms
    PRIMARY KEY (reader, seq)
);

