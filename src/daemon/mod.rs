//! `thermalertd`: CLI -> logging -> config -> sensor thread + MQTT link ->
//! alerts -> clean shutdown.
//!
//! - [`cli`]: the command line, [`main`], `check-config`, `scan`.
//! - [`run`](mod@run): the I/O shell carrying out the gateway core's actions
//!   ([`crate::core::gateway`]), and the one shutdown.
//! - [`poller`]: the sensors to watch, and the sensor thread.
//! - [`status`]: the retained status message and the systemd status line.
//! - [`drill`], [`homeassistant`], [`alarm`]: the fire drill, Home
//!   Assistant discovery, the local alarm output.

pub mod alarm;
pub mod cli;
pub mod drill;
pub mod homeassistant;
pub mod poller;
pub mod run;
pub mod status;

pub use cli::{main, Cli, Command};
pub use run::{run, DaemonError};
