//! `thermalert-notifier`: subscribe -> show -> answer.
//!
//! Runs on an operator's workstation. Subscribes at QoS 2 to every
//! gateway's alerts and status with a persistent session, prints one line
//! (or one JSON object) per alert and status change, answers every alert on
//! its ResponseTopic with its CorrelationData, and never shows the same
//! alert id twice.
//!
//! - [`settings`]: every option once, for its flag and its file key.
//! - [`core`]: the decisions, pure (what to show, to notify, to answer).
//! - [`run`]: the I/O shell carrying them out; one shutdown; [`answer`]:
//!   the answers it publishes.
//! - [`render`]: the alert and status lines (shared with [`status`]).
//! - [`channels`] (desktop, --exec hooks), [`filter`], [`watch`] (the
//!   watchers), [`seen`] (alert ids shown), [`status`] (the `status`
//!   command).

pub mod answer;
pub mod channels;
pub mod core;
pub mod filter;
pub mod render;
pub mod run;
pub mod seen;
pub mod settings;
pub mod status;
pub mod watch;

use std::time::Duration;

use clap::Parser;

pub use crate::notifier::run::{run, run_with, NotifierError, OutputError};
pub use crate::notifier::seen::Seen;
pub use crate::notifier::settings::{Cli, NotifierCommand, Options, Settings, SettingsError};

/// The notifier's entry point; returns the process exit code.
pub fn main() -> i32 {
    crate::sys::logging::init();
    let cli = Cli::parse();
    let settings = match Settings::resolve(&cli) {
        Ok(s) => s,
        Err(e) => {
            log::error!("invalid configuration: {e}");
            return crate::EXIT_CONFIG;
        }
    };
    if let Some(NotifierCommand::Status { timeout }) = cli.command {
        return status::main(settings, Duration::from_secs(timeout));
    }
    let channels = match settings.options.channels() {
        Ok(c) => c,
        Err(e) => {
            log::error!("invalid configuration: {e}");
            return crate::EXIT_CONFIG;
        }
    };
    // One thread: the MQTT client, this loop and the channels' tasks take
    // turns, so that a batch of messages is handled and answered in one go
    // (one checkpoint, one write) instead of each crossing between worker
    // threads (see BENCHMARKS.md).
    let Some(rt) = crate::mqtt::oneshot::runtime() else {
        return 1;
    };
    match rt.block_on(run_with(settings, channels)) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}
