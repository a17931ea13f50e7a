//! How a sweep converts (one bulk conversion per bus, or one per sensor)
//! and what that costs: pure, no I/O.

use std::fmt;
use std::time::Duration;

use super::{BULK_MARGIN, READ_COST, RETRIES};

/// Why the sensors convert one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PerSensorReason {
    /// `sensors.w1.bulk_read = false`.
    Disabled,
    /// The bus master has no `therm_bulk_read` (an older kernel).
    NoBulkRead(String),
    /// None of the sensors is of a family with bulk read.
    NoBulkFamily,
    /// Writing the trigger failed (permissions, a read-only `/sys`).
    WriteFailed(String),
    /// The write went through but the kernel did not start a conversion.
    NotStarted(String),
}

impl fmt::Display for PerSensorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disabled => write!(f, "sensors.w1.bulk_read = false"),
            Self::NoBulkRead(m) => write!(
                f,
                "{m} has no therm_bulk_read (a kernel without w1_therm's bulk read)"
            ),
            Self::NoBulkFamily => write!(
                f,
                "no sensor is of a family with bulk read in the kernel (DS28EA00 has none)"
            ),
            Self::WriteFailed(e) => write!(f, "cannot write {e}"),
            Self::NotStarted(s) => write!(f, "the kernel did not start a bulk conversion: {s}"),
        }
    }
}

/// How a sweep converts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversion {
    /// One Skip ROM + Convert T per bus master, confirmed by the kernel.
    Bulk,
    /// Every sensor converts when its `w1_slave` is read.
    PerSensor(PerSensorReason),
}

/// What one sweep should take, and the bounds the backend holds it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepTiming {
    /// Every sensor read once, healthy.
    pub expected: Duration,
    /// After this (from the sweep's start) no retry starts.
    pub deadline: Duration,
    /// What the poll loop may promise the watchdog for the whole sweep.
    pub budget: Duration,
}

/// The timing of a sweep over sensors given as (conversion time, takes part
/// in a bulk conversion): a bulk conversion waits for the slowest of its
/// sensors, then each of them costs a scratchpad read; every other sensor
/// costs its own conversion. Retries get room for one sensor's worth
/// ([`RETRIES`] conversions of the slowest); the budget adds the margins.
pub fn sweep_timing(sensors: &[(Duration, bool)]) -> SweepTiming {
    sweep_timing_on_bus(sensors, Duration::ZERO)
}

/// [`sweep_timing`] on a bus whose bulk conversion lasts at least
/// `bus_slowest`: the kernel waits for the slowest sensor with bulk read on
/// the bus, configured or not (`trigger_bulk_read()`).
pub fn sweep_timing_on_bus(sensors: &[(Duration, bool)], bus_slowest: Duration) -> SweepTiming {
    let bulk_conv = sensors
        .iter()
        .filter(|s| s.1)
        .map(|s| s.0)
        .max()
        .map(|c| c.max(bus_slowest));
    let mut expected = bulk_conv.unwrap_or_default();
    for &(conv, bulk) in sensors {
        expected += READ_COST;
        if !bulk {
            expected += conv;
        }
    }
    let slowest = sensors.iter().map(|s| s.0).max().unwrap_or_default();
    let deadline = expected + BULK_MARGIN + (slowest + READ_COST) * RETRIES;
    SweepTiming {
        expected,
        deadline,
        budget: deadline + BULK_MARGIN,
    }
}
