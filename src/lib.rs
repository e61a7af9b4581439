//! zoomhook — a self-hosted gateway for Zoom events.
//!
//! Data flow (SPEC.md): [`ingest`] verifies Zoom's webhooks, and [`source`] reads Zoom's
//! WebSocket; both append to the event log in [`store`] (acknowledging only after a durable
//! commit). From the log, [`sync`] keeps entity state, [`deliver`] fans out to subscriptions and
//! [`stream`] serves WebSocket clients; [`cluster`] decides which instance runs the single-reader
//! work. The [`api`] reads it all, and [`ui`] is the web dashboard on top of it. [`zoom`] holds
//! the protocol facts, [`config`] the typed configuration, [`cli`] the command line.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod core;
pub mod deliver;
pub mod http_error;
pub mod ingest;
pub mod metrics;
pub mod server;
pub mod source;
pub mod store;
pub mod stream;
pub mod sync;
pub mod ui;
pub mod zoom;
