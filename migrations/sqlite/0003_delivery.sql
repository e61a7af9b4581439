-- Outbound delivery: subscriptions (webhook or email), one delivery per (event, subscription),
-- and every attempt.
CREATE TABLE subscriptions (
    id              TEXT    PRIMARY KEY,          -- sub_<ULID>
    kind            TEXT    NOT NULL,             -- webhook | email
    url             TEXT    NOT NULL,             -- webhook destination ('' for email)
    events          TEXT    NOT NULL,             -- comma-separated event patterns
    secret          TEXT    NOT NULL,             -- whsec_…
    previous_secret TEXT,                         -- still signs until previous_until (rotation)
    previous_until  INTEGER,
    scheme          TEXT    NOT NULL,             -- standard | zoom
    headers         TEXT    NOT NULL,             -- JSON object of custom headers
    timeout_ms      INTEGER  NOT NULL,
    max_in_flight   INTEGER  NOT NULL,
    rate_limit      INTEGER,                       -- deliveries per second; NULL = unlimited
    ordering        TEXT    NOT NULL,             -- none | entity
    https_only      INTEGER  NOT NULL,
    enabled         INTEGER  NOT NULL,
    disabled_reason TEXT,
    failing_since   INTEGER,                       -- start of the current run of failures
    email_to        TEXT,                         -- email: recipients template
    email_subject   TEXT,
    email_body      TEXT,
    description     TEXT    NOT NULL,
    created_at      INTEGER  NOT NULL,
    updated_at      INTEGER  NOT NULL
);

CREATE TABLE deliveries (
    id              TEXT    PRIMARY KEY,          -- msg_<ULID>: the webhook-id, the same on every attempt
    subscription_id TEXT    NOT NULL,
    event_seq       INTEGER  NOT NULL,
    event_id        TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    entity          TEXT,                         -- ordering key: object id, else uuid
    status          TEXT    NOT NULL,             -- pending | delivering | succeeded | failed
    attempts        INTEGER  NOT NULL,             -- attempts made in all (never reset)
    schedule_base   INTEGER  NOT NULL DEFAULT 0,   -- attempts made before the current retry schedule began
    next_attempt_at INTEGER  NOT NULL,               -- epoch ms
    locked_until    INTEGER,                       -- lease of the worker sending it
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER  NOT NULL,
    updated_at      INTEGER  NOT NULL
);
CREATE UNIQUE INDEX deliveries_subscription_event ON deliveries (subscription_id, event_seq);
CREATE INDEX deliveries_due ON deliveries (subscription_id, next_attempt_at) WHERE status IN ('pending', 'delivering');
CREATE INDEX deliveries_entity ON deliveries (subscription_id, entity, event_seq) WHERE status IN ('pending', 'delivering');
CREATE INDEX deliveries_finished ON deliveries (updated_at) WHERE status IN ('succeeded', 'failed');

CREATE TABLE delivery_attempts (
    delivery_id      TEXT   NOT NULL,
    attempt          INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    status_code      INTEGER,
    response_excerpt TEXT,
    error            TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
