//! What goes in and out of the gateway core: the time of an event, the
//! id source, the actions for the shell, and the outcome of a publish.

use std::time::{Instant, SystemTime};

use bytes::Bytes;

#[cfg(doc)]
use super::Gateway;
use crate::config::Config;
use crate::mqtt::payload::Alert;
use crate::outbox::Item;

/// The time of an event, read once by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// For every duration and deadline.
    pub mono: Instant,
    /// For the timestamps on alerts and readings, and the outbox's records.
    pub wall: SystemTime,
    /// Whether the wall clock is synchronised (alerts say so).
    pub clock_synced: bool,
}

/// Makes alert ids (UUID v4 in the daemon, a counter in tests).
pub type IdSource = Box<dyn FnMut() -> String + Send>;

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A log line.
    Log { level: log::Level, line: String },
    /// The structured alert record (`sys::logging::alert`).
    LogAlert(Alert),
    /// Write the outbox record of entry `seq` (not yet fsynced); report a
    /// failure with [`Gateway::on_store_failed`].
    Store { seq: u64, at_ms: u64, item: Item },
    /// Mark entry `seq` done in the outbox log (`what` names it).
    Forget { seq: u64, what: String },
    /// Start one `fdatasync` of the outbox log off the runtime, covering
    /// the records up to `upto`; report with [`Gateway::on_synced`].
    Sync { upto: u64 },
    /// `fdatasync` the outbox log now, on this thread (shutdown); report
    /// with [`Gateway::on_synced_now`].
    SyncNow { upto: u64 },
    /// Publish a message.
    Publish(Publish),
    /// Subscribe (QoS 1) to the answers' topic.
    Subscribe { topic: String },
    /// Publish the retained `online` status.
    PublishOnline,
    /// The link is up: run Home Assistant discovery's hook here.
    HomeAssistant { session_present: bool },
    /// Drive the local alarm output (on while a CRITICAL is unanswered).
    SetAlarm(bool),
    /// Hand the sensor thread a reloaded configuration.
    ReconfigureSensors(Box<Config>),
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// JSON properties (`mqtt::payload::json_properties`) with this
    /// message expiry; `None` for an empty retained clear (no properties).
    pub expiry: Option<u32>,
    /// ResponseTopic and CorrelationData (alerts).
    pub response: Option<(String, Bytes)>,
    pub kind: Kind,
}

/// How a message goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// QoS 0, dropped when the client is busy.
    Reading,
    /// QoS 2, tracked: report with [`Gateway::on_published`], or
    /// [`Gateway::on_client_busy`] when the client would not take it now
    /// (its queue is full; [`Outcome::Rejected`] when it never will).
    Entry(u64),
}

/// What became of a tracked publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// PUBCOMP.
    Completed,
    /// The broker refused it at PUBREC (reason).
    Refused(String),
    /// Any other acknowledgement (described).
    Other(String),
    /// It did not complete (connection lost...): publish it again.
    Failed(String),
    /// Refused for good: the client or the broker will refuse it every
    /// time (an invalid topic, an invalid payload): dropped with an error
    /// line and forgotten, so that the entries behind it go out.
    Rejected(String),
}
