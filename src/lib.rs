//! zoomhook — a self-hosted gateway for Zoom events.
//!
//! Data flow (SPEC.md): [`ingest`] verifies Zoom's webhooks and appends them to the event log in
//! [`store`] (acknowledging only after a durable commit); the [`api`] reads the log. [`zoom`] holds
//! the protocol facts, [`config`] the typed configuration, [`cli`] the command line.

pub mod api;
pub mod cli;
pub mod config;
pub mod core;
pub mod deliver;
pub mod http_error;
pub mod ingest;
pub mod metrics;
pub mod server;
pub mod store;
pub mod stream;
pub mod sync;
pub mod zoom;
