//! The MQTT side, shared by the daemon and the notifier so that they
//! cannot drift: topic names, payloads, TLS, and the connection options.

pub mod conn;
pub mod oneshot;
pub mod payload;
pub mod store;
pub mod tls;
pub mod topics;

/// The content type of every JSON payload.
pub const CONTENT_TYPE_JSON: &str = "application/json";
