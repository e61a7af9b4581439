//! Small domain facts shared by every part of zoomhook.

pub mod alloc_count;
pub mod clock;
pub mod ids;
pub mod own_thread;
pub mod panics;
pub mod pattern;
pub mod storable;
