//! The operating system around both programs.
//! - [`systemd`]: sd_notify and the watchdog's heartbeats.
//! - [`logging`]: the journal under systemd, stderr otherwise.
//! - [`clock`]: whether the wall clock is synchronised (a Pi has no RTC).
//! - [`backoff`]: reconnect back-off.
//! - [`certwatch`]: certificate expiry warnings.
//! - [`timefmt`]: time stamps for lines people read.
//! - [`shutdown`]: the one shutdown signal and the tracked tasks.

pub mod backoff;
pub mod certwatch;
pub mod clock;
pub mod logging;
pub mod shutdown;
pub mod systemd;
pub mod timefmt;
