//! The wire types of the admin API: what every answer looks like, one file per resource.
//!
//! They are separate from the store's rows on purpose. A row carries bookkeeping the API must not
//! leak (revisions, schedule bases) and store-friendly encodings (epoch milliseconds, comma lists,
//! JSON strings); the types here are the contract of `docs/api.md` — RFC 3339 times, arrays as
//! arrays, maps as objects, `null` for a missing value, one name per fact — and they derive the
//! OpenAPI schemas, so the document and the answers cannot drift apart.

pub mod common;
pub mod delivery;
pub mod entity;
pub mod event;
pub mod subscription;

pub use common::{ApiError, Page, format_duration, seq_cursor, time, time_opt};
