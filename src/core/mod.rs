//! The pure cores shared by the daemon's decisions: no I/O, no clock.
//! - [`alert`]: the alert engine (levels, hysteresis, faults).
//! - [`escalation`]: re-publishing alerts nobody answered.
//! - [`alarm`]: whether the local alarm output is on.
//! - [`reload`]: a configuration reload as a pure step.
//! - [`gateway`]: the daemon's decisions, returning actions.

pub mod alarm;
pub mod alert;
pub mod escalation;
pub mod gateway;
pub mod reload;
