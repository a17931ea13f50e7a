//! thermalert: DS18B20 temperature alerts over MQTT v5 + TLS.
//!
//! The map of the house. Shared rooms first; the two programs last. A
//! shared room never imports a program.
//!
//! - [`config`]: the daemon's TOML configuration (serde, then `validate()`),
//!   errors that name file, key and line.
//! - [`core`]: pure decisions, no I/O and no clock: the alert engine
//!   ([`core::alert`]), escalation ([`core::escalation`]), and the
//!   gateway's decisions ([`core::gateway`]: events and `now` in, actions
//!   out).
//! - [`sensor`]: the backend trait and the backends (`sim`, `w1-sysfs`, `gpio`).
//! - [`onewire`]: CRC-8, ROM ids, DS18B20 scratchpad decoding, and a
//!   wire-level simulator of DS18B20s for tests and benchmarks.
//! - [`outbox`]: the daemon's crash-safe outbox: record codec (pure), disk
//!   log, queue (pure, takes `now`).
//! - [`mqtt`]: the MQTT contract shared by daemon and notifier (topics,
//!   payloads), TLS set-up, the connection supervisor, the notifier's
//!   session store and the one-shot connection of `drill` and `status`.
//! - [`sys`]: the operating system around both programs: systemd notify and
//!   watchdog, the journal, clock sync, back-off, certificate expiry.
//! - [`daemon`]: `thermalertd`: the command line, the I/O shell that carries
//!   out the gateway core's actions under one shutdown, the sensor thread,
//!   the status, `drill`, Home Assistant discovery, the alarm output.
//! - [`notifier`]: `thermalert-notifier` (channels, filter, watchers, seen
//!   ids, `status`).
//!
//! `src/bin/*` only call [`daemon::main`] and [`notifier::main`].

pub mod config;
pub mod core;
pub mod daemon;
pub mod mqtt;
pub mod notifier;
pub mod onewire;
pub mod outbox;
pub mod sensor;
pub mod sys;

/// Exit code for a configuration error (`EX_CONFIG` from sysexits.h), so a
/// systemd unit can say `RestartPreventExitStatus=78`.
pub const EXIT_CONFIG: i32 = 78;
