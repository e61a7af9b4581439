//! Outbound delivery: subscriptions, the durable delivery queue fed by a fan-out reader of the
//! event log, workers that send with retries, and the SSRF guard on destinations.

pub mod attempt;
pub mod compact_json;
pub mod email;
pub mod fanout;
pub mod http;
pub mod live;
pub mod redact;
pub mod retry;
pub mod signing;
pub mod ssrf;
pub mod subscription;
mod upkeep;
pub mod worker;
