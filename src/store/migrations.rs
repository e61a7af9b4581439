//! Embedded schema migrations, applied in order at start (and by `zoomhook migrate`).
//!
//! Each backend records applied versions in `schema_migrations`; a migration runs in the same
//! transaction as its record, so a crash mid-migration leaves nothing half applied.

/// One migration: a version number and the SQL to run.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Refuses a database whose newest applied migration (`applied`) is past every one this build
/// knows (`known`, the newest of the lists that file can have): a newer build migrated it, and
/// this one would run against a schema it was not written for — silently slower (an index it
/// relies on replaced) or wrong. `database` names it in the error.
pub fn refuse_newer(
    database: &str,
    applied: Option<i64>,
    known: i64,
) -> Result<(), crate::store::StoreError> {
    match applied {
        Some(found) if found > known => Err(crate::store::StoreError::NewerSchema {
            database: database.to_owned(),
            found,
            known,
        }),
        _ => Ok(()),
    }
}

/// The newest version among `lists`.
pub fn newest(lists: &[&[Migration]]) -> i64 {
    lists
        .iter()
        .flat_map(|list| list.iter().map(|m| m.version))
        .max()
        .unwrap_or(0)
}

/// Migrations of the SQLite log file, oldest first (then [`SQLITE_SPLIT`]).
pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_log",
        sql: include_str!("../../migrations/sqlite/0001_event_log.sql"),
    },
    Migration {
        version: 2,
        name: "sync",
        sql: include_str!("../../migrations/sqlite/0002_sync.sql"),
    },
    Migration {
        version: 3,
        name: "delivery",
        sql: include_str!("../../migrations/sqlite/0003_delivery.sql"),
    },
    Migration {
        version: 4,
        name: "subscription_revision",
        sql: include_str!("../../migrations/sqlite/0004_subscription_revision.sql"),
    },
    Migration {
        version: 5,
        name: "in_flight_index",
        sql: include_str!("../../migrations/sqlite/0005_in_flight_index.sql"),
    },
    Migration {
        version: 6,
        name: "sync_quarantine",
        sql: include_str!("../../migrations/sqlite/0006_sync_quarantine.sql"),
    },
    Migration {
        version: 7,
        name: "source_state",
        sql: include_str!("../../migrations/sqlite/0007_source_state.sql"),
    },
    Migration {
        version: 8,
        name: "rate_buckets",
        sql: include_str!("../../migrations/sqlite/0008_rate_buckets.sql"),
    },
];

/// Versions a SQLite log file may hold from builds before they moved to the state database: 10
/// (`subscription_body_format`, a log migration until `276adb4`). Known, so never "newer".
pub const SQLITE_LOG_RETIRED: &[Migration] = &[Migration {
    version: 10,
    name: "subscription_body_format",
    sql: "",
}];

/// The SQLite log migration that moves derived state out of the log file; it runs only after
/// the state database has adopted those tables (see `store/sqlite/state.rs`).
pub const SQLITE_SPLIT: &[Migration] = &[Migration {
    version: 9,
    name: "split_state",
    sql: include_str!("../../migrations/sqlite/0009_split_state.sql"),
}];

/// Migrations of the SQLite state database (`<name>.state.db`), oldest first. Versions 2–8 are
/// the derived tables as the log file had them (same DDL, so an older file's rows copy over
/// column for column); from 9 on, the state database has its own.
pub const SQLITE_STATE: &[Migration] = &[
    Migration {
        version: 2,
        name: "sync",
        sql: include_str!("../../migrations/sqlite/0002_sync.sql"),
    },
    Migration {
        version: 3,
        name: "delivery",
        sql: include_str!("../../migrations/sqlite/0003_delivery.sql"),
    },
    Migration {
        version: 4,
        name: "subscription_revision",
        sql: include_str!("../../migrations/sqlite/0004_subscription_revision.sql"),
    },
    Migration {
        version: 5,
        name: "in_flight_index",
        sql: include_str!("../../migrations/sqlite/0005_in_flight_index.sql"),
    },
    Migration {
        version: 6,
        name: "sync_quarantine",
        sql: include_str!("../../migrations/sqlite/0006_sync_quarantine.sql"),
    },
    Migration {
        version: 7,
        name: "source_state",
        sql: include_str!("../../migrations/sqlite/0007_source_state.sql"),
    },
    Migration {
        version: 8,
        name: "rate_buckets",
        sql: include_str!("../../migrations/sqlite/0008_rate_buckets.sql"),
    },
    Migration {
        version: 9,
        name: "log_index",
        sql: include_str!("../../migrations/sqlite/state_0009_log_index.sql"),
    },
    Migration {
        version: 10,
        name: "subscription_body_format",
        sql: include_str!("../../migrations/sqlite/state_0010_subscription_body_format.sql"),
    },
    Migration {
        version: 11,
        name: "delivery_order_key",
        sql: include_str!("../../migrations/sqlite/state_0011_delivery_order_key.sql"),
    },
    Migration {
        version: 12,
        name: "delivery_pending_index",
        sql: include_str!("../../migrations/sqlite/state_0012_delivery_pending_index.sql"),
    },
];

/// PostgreSQL migrations, oldest first.
pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_log",
        sql: include_str!("../../migrations/postgres/0001_event_log.sql"),
    },
    Migration {
        version: 2,
        name: "sync",
        sql: include_str!("../../migrations/postgres/0002_sync.sql"),
    },
    Migration {
        version: 3,
        name: "delivery",
        sql: include_str!("../../migrations/postgres/0003_delivery.sql"),
    },
    Migration {
        version: 4,
        name: "subscription_revision",
        sql: include_str!("../../migrations/postgres/0004_subscription_revision.sql"),
    },
    Migration {
        version: 5,
        name: "in_flight_index",
        sql: include_str!("../../migrations/postgres/0005_in_flight_index.sql"),
    },
    Migration {
        version: 6,
        name: "sync_quarantine",
        sql: include_str!("../../migrations/postgres/0006_sync_quarantine.sql"),
    },
    Migration {
        version: 7,
        name: "source_state",
        sql: include_str!("../../migrations/postgres/0007_source_state.sql"),
    },
    Migration {
        version: 8,
        name: "rate_buckets",
        sql: include_str!("../../migrations/postgres/0008_rate_buckets.sql"),
    },
    // 0009 is taken by another change in progress.
    Migration {
        version: 10,
        name: "subscription_body_format",
        sql: include_str!("../../migrations/postgres/0010_subscription_body_format.sql"),
    },
    Migration {
        version: 11,
        name: "delivery_order_key",
        sql: include_str!("../../migrations/postgres/0011_delivery_order_key.sql"),
    },
    Migration {
        version: 12,
        name: "delivery_pending_index",
        sql: include_str!("../../migrations/postgres/0012_delivery_pending_index.sql"),
    },
    Migration {
        version: 13,
        name: "drop_delivery_due_index",
        sql: include_str!("../../migrations/postgres/0013_drop_delivery_due_index.sql"),
    },
    Migration {
        version: 14,
        name: "key_collation",
        sql: include_str!("../../migrations/postgres/0014_key_collation.sql"),
    },
];

/// The table that records applied versions (same DDL on both backends).
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";
