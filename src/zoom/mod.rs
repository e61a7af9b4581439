//! Zoom's protocol: the envelope, signatures and URL validation, and realistic event templates.

pub mod envelope;
pub mod sender;
pub mod signature;
pub mod templates;
