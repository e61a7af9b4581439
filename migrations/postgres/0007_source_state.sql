-- Where each Zoom WebSocket source stands, shared by every instance on the database: which
-- instance holds the connection, since when, and the last moment it was known to be alive. A new
-- leader (after a restart or a failover) records the gap from `alive_at` to its own connection.
CREATE TABLE source_state (
    name            TEXT    PRIMARY KEY,
    instance        TEXT    NOT NULL,
    connected_since BIGINT,             -- epoch ms; NULL while not connected
    alive_at        BIGINT  NOT NULL    -- epoch ms
);
