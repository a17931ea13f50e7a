//! thermalert: DS18B20 temperature alerts over MQTT v5 + TLS.
//!
//! Layout:
//! - [`config`]: the daemon's TOML configuration (serde, then `validate()`),
//!   errors that name file, key and line.
//! - [`alert`]: the pure alert engine (levels, hysteresis, faults).
//! - [`sensor`]: the backend trait and the backends (`sim`, `w1-sysfs`, `gpio`).
//! - [`onewire`]: CRC-8, ROM ids, DS18B20 scratchpad decoding, and a
//!   wire-level simulator of DS18B20s for tests and benchmarks.
//! - [`mqtt`]: the MQTT contract shared by daemon and notifier (topics,
//!   payloads), TLS set-up and the connection supervisor.
//! - [`daemon`] / [`notifier`]: the two programs; `src/bin/*` only call
//!   their `main()`.
//! - [`filter`], [`watch`], [`channels`], [`notifier_status`]: the
//!   notifier's `--filter`, its watchers of the alerting path, its
//!   desktop and `--exec` channels, and `thermalert-notifier status`.
//! - [`certwatch`]: certificate expiry warnings (daemon and notifier).
//! - [`drill`]: `thermalertd drill`, a TEST alert end to end.
//! - [`oneshot`]: what `drill` and `status` share (runtime, a short-lived
//!   connection with its own client id and a clean session).
//! - [`homeassistant`]: Home Assistant MQTT discovery payloads and the
//!   exchange that publishes and removes them.
//! - [`logging`]: the journal (native protocol, one entry per alert with
//!   its priority and fields) under systemd, stderr otherwise.
//! - [`systemd`]: sd_notify (`READY`, `STATUS`, `WATCHDOG`, `RELOADING`,
//!   `STOPPING`) and the watchdog's heartbeats.
//! - [`reload`]: what a SIGHUP applies, and what waits for a restart.
//! - [`outbox`]: the daemon's crash-safe outbox (an append-only log in the
//!   state directory).
//! - [`escalation`]: re-publishing alerts nobody answered.
//! - [`seen`]: the notifier's persistent memory of the alert ids it showed.
//! - [`alarm`]: the optional local alarm output (a GPIO pin).
//! - [`clock`]: whether the wall clock is synchronised (a Pi has no RTC).

pub mod alarm;
pub mod alert;
pub mod backoff;
pub mod certwatch;
pub mod channels;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod drill;
pub mod escalation;
pub mod filter;
pub mod homeassistant;
pub mod logging;
pub mod mqtt;
pub mod notifier;
pub mod notifier_status;
pub mod oneshot;
pub mod onewire;
pub mod outbox;
pub mod reload;
pub mod seen;
pub mod sensor;
pub mod systemd;
pub mod timefmt;
pub mod watch;

/// Exit code for a configuration error (`EX_CONFIG` from sysexits.h), so a
/// systemd unit can say `RestartPreventExitStatus=78`.
pub const EXIT_CONFIG: i32 = 78;
