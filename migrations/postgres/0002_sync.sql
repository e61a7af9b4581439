-- Synchronised entities: the current state of meetings, their occurrences, participants,
-- recordings, users, webinars and registrants, maintained by the sync reader from the event log.
-- `doc` is the convergent document (every field with the version that wrote it); `state` is the
-- current state users read; the other columns are projections of it for filtering.
CREATE TABLE sync_entities (
    kind        TEXT    NOT NULL,   -- meeting | meeting_instance | participant | recording | user | webinar | registrant
    key         TEXT    NOT NULL,   -- meeting id, instance uuid, uuid|participant, user id …
    parent      TEXT,               -- meeting id of an instance or recording, uuid of a participant's instance, webinar id of a registrant
    status      TEXT,
    host_id     TEXT,
    email       TEXT,
    label       TEXT,               -- topic or name
    start_at    BIGINT,             -- epoch ms
    end_at      BIGINT,
    updated_seq BIGINT NOT NULL,
    doc         TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX sync_entities_parent ON sync_entities (kind, parent, key);
CREATE INDEX sync_entities_host ON sync_entities (kind, host_id) WHERE host_id IS NOT NULL;
CREATE INDEX sync_entities_start ON sync_entities (kind, start_at);

-- Durable positions of the log readers: the last seq applied and how many events that was.
CREATE TABLE sync_cursors (
    name    TEXT   PRIMARY KEY,
    seq     BIGINT NOT NULL,
    applied BIGINT NOT NULL
);

-- One view per entity kind, for people who query the database directly.
CREATE VIEW sync_meetings AS SELECT key AS meeting_id, label AS topic, host_id, status, start_at, updated_seq, state::jsonb AS state FROM sync_entities WHERE kind = 'meeting';
CREATE VIEW sync_meeting_instances AS SELECT key AS uuid, parent AS meeting_id, label AS topic, host_id, status, start_at AS started_at, end_at AS ended_at, updated_seq, state::jsonb AS state FROM sync_entities WHERE kind = 'meeting_instance';
CREATE VIEW sync_participants AS SELECT key, parent AS meeting_uuid, label AS name, email, status, start_at AS first_join, end_at AS last_leave, updated_seq, state::jsonb AS state FROM sync_entities WHERE kind = 'participant';
CREATE VIEW sync_recordings AS SELECT key AS meeting_uuid, parent AS meeting_id, label AS topic, host_id, status, start_at, updated_seq, state::jsonb AS state FROM sync_entities WHERE kind = 'recording';
CREATE VIEW sync_users AS SELECT key AS user_id, label AS name, email, status, updated_seq, state::jsonb AS state FROM sync_entities WHERE kind = 'user';
CREATE VIEW sync_webinars AS SELECT key AS webinar_id, label AS topic, host_id, status, start_at, updated_seq, state::jsonb AS state FROM sync_entities WHERE kind = 'webinar';
CREATE VIEW sync_webinar_registrants AS SELECT key, parent AS webinar_id, label AS name, email, status, updated_seq, state::jsonb AS state FROM sync_entities WHERE kind = 'registrant';
