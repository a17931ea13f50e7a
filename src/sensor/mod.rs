//! Sensor backends. A backend reads every configured sensor once per
//! sweep; it is blocking code and runs on its own thread, never on a
//! runtime worker. Expected failures (CRC, missing sensor) are values.

pub mod gpio;
pub mod sim;
pub mod w1_sysfs;

use std::time::Duration;

use crate::config::{Backend as BackendKind, Config};
use crate::core::alert::ReadFault;

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

    /// Lists every sensor the backend can find, with a reading each.
    fn scan(&mut self) -> Result<Vec<Found>, BackendError>;

    /// The ids of the sensors on the bus, without reading them (cheap
    /// where the backend allows: a directory listing, a ROM search).
    fn discover(&mut self) -> Result<Vec<String>, BackendError> {
        Ok(self.scan()?.into_iter().map(|f| f.id).collect())
    }

    /// How long one sweep takes at most (conversion time), so the poll
    /// loop can tell a stalled backend from a slow one.
    fn sweep_budget(&self, sensors: usize) -> Duration {
        Duration::from_millis(100 + 20 * sensors as u64)
    }
}

/// A backend that could not be opened (the w1 bus is not there yet, the
/// GPIO device is not accessible): every read fails with the reason, so
/// each configured sensor raises a FAULT that reaches the operators,
/// instead of the gateway going quiet; it tries to open the backend again
/// every [`Reopening::RETRY`].
pub struct Reopening {
    cfg: Config,
    inner: Option<Box<dyn Backend>>,
    last_try: std::time::Instant,
    reason: String,
}

impl Reopening {
    pub const RETRY: Duration = Duration::from_secs(30);

    /// Opens the backend, or keeps the reason it could not.
    pub fn open(cfg: &Config) -> Self {
        let (inner, reason) = match open(cfg) {
            Ok(b) => (Some(b), String::new()),
            Err(e) => {
                log::error!(
                    "sensor backend unavailable: {e}; retrying every {}s",
                    Self::RETRY.as_secs()
                );
                (None, e.to_string())
            }
        };
        Self {
            cfg: cfg.clone(),
            inner,
            last_try: std::time::Instant::now(),
            reason,
        }
    }

    pub fn is_open(&self) -> bool {
        self.inner.is_some()
    }
}

impl Backend for Reopening {
    fn sweep(&mut self, ids: &[String]) -> Vec<Sample> {
        if self.inner.is_none() && self.last_try.elapsed() >= Self::RETRY {
            self.last_try = std::time::Instant::now();
            match open(&self.cfg) {
                Ok(b) => {
                    log::info!("sensor backend available again");
                    self.inner = Some(b);
                }
                Err(e) => self.reason = e.to_string(),
            }
        }
        match &mut self.inner {
            Some(b) => b.sweep(ids),
            None => ids
                .iter()
                .map(|id| Sample {
                    id: id.clone(),
                    read: Err(ReadFault::Io(self.reason.clone())),
                })
                .collect(),
        }
    }

    fn reconfigure(&mut self, cfg: &Config) {
        // A later reopen uses the reloaded sensors too.
        self.cfg = cfg.clone();
        if let Some(b) = &mut self.inner {
            b.reconfigure(cfg);
        }
    }

    fn scan(&mut self) -> Result<Vec<Found>, BackendError> {
        match &mut self.inner {
            Some(b) => b.scan(),
            None => Err(BackendError::Unavailable(self.reason.clone())),
        }
    }

    fn discover(&mut self) -> Result<Vec<String>, BackendError> {
        match &mut self.inner {
            Some(b) => b.discover(),
            None => Err(BackendError::Unavailable(self.reason.clone())),
        }
    }

    fn sweep_budget(&self, sensors: usize) -> Duration {
        self.inner
            .as_ref()
            .map_or(Duration::from_millis(100), |b| b.sweep_budget(sensors))
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
