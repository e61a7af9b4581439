//! Stable identifiers: a type prefix and a ULID (`evt_01J…`), sortable by creation time.

/// A new id such as `evt_01JD3…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::generate())
}
