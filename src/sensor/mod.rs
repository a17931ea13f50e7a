//! Sensor backends. A backend reads every configured sensor once per
//! sweep; it is blocking code and runs on its own thread, never on a
//! runtime worker. Expected failures (CRC, missing sensor) are values.

pub mod gpio;
pub mod sim;
pub mod w1_sysfs;

use std::time::Duration;

use crate::alert::ReadFault;
use crate::config::{Backend as BackendKind, Config};

/// One sensor's result from a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub id: String,
    pub read: Result<f64, ReadFault>,
}

/// A sensor found on the bus, for `thermalertd scan`.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub id: String,
    pub celsius: Result<f64, ReadFault>,
    pub resolution_bits: Option<u8>,
    /// `Some(true)` for parasite power, when the backend can tell.
    pub parasite: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    Unavailable(String),
}

/// A source of temperatures.
pub trait Backend: Send {
    /// Reads each sensor in `ids` once (with whatever retries the backend
    /// does internally) and returns one sample per id, in order.
    fn sweep(&mut self, ids: &[String]) -> Vec<Sample>;

    /// Takes a reloaded configuration's sensors (new sensors' settings,
    /// scripts); the backend itself (its kind, bus, pin) stays.
    fn reconfigure(&mut self, _cfg: &Config) {}

    /// Lists every sensor the backend can find.
    fn scan(&mut self) -> Result<Vec<Found>, BackendError>;

    /// How long one sweep takes at most (conversion time), so the poll
    /// loop can tell a stalled backend from a slow one.
    fn sweep_budget(&self, sensors: usize) -> Duration {
        Duration::from_millis(100 + 20 * sensors as u64)
    }
}

/// Opens the backend the configuration names.
pub fn open(cfg: &Config) -> Result<Box<dyn Backend>, BackendError> {
    match cfg.sensors.backend {
        BackendKind::Sim => Ok(Box::new(sim::SimBackend::from_config(cfg))),
        BackendKind::W1Sysfs => Ok(Box::new(w1_sysfs::W1SysfsBackend::from_config(cfg)?)),
        BackendKind::Gpio => gpio::open(cfg),
    }
}
