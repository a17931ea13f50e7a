//! The pure cores shared by the daemon's decisions: no I/O, no clock.
//! - [`alert`]: the alert engine (levels, hysteresis, faults).
//! - [`escalation`]: re-publishing alerts nobody answered.

pub mod alert;
pub mod escalation;
