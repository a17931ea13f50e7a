//! Sensor backends. A backend reads every configured sensor once per
//! sweep; it is blocking code and runs on its own thread, never on a
//! runtime worker. Expected failures (CRC, missing sensor) are values.

pub mod error;
pub mod gpio;
pub mod sim;
pub mod w1_sysfs;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Backend as BackendKind, SensorConfig, SensorsConfig};
pub use error::{BackendError, BusFault, Cause, ReadFault};

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
    /// The device family's name (`DS18B20`, `DS18S20`, ...), when known.
    pub family: Option<&'static str>,
    pub celsius: Result<f64, ReadFault>,
    pub resolution_bits: Option<u8>,
    /// `Some(true)` for parasite power, when the backend can tell.
    pub parasite: Option<bool>,
}

/// What the poll loop hands a backend to re-promise, during a sweep, how
/// much longer the sweep will take (its watchdog heartbeat).
pub type DeadlineHook = Arc<dyn Fn(Duration) + Send + Sync>;

/// A source of temperatures.
pub trait Backend: Send {
    /// Reads each sensor in `ids` once (with whatever retries the backend
    /// does internally) and returns one sample per id, in order.
    fn sweep(&mut self, ids: &[String]) -> Vec<Sample>;

    /// Takes a reloaded configuration's sensors (new sensors' settings,
    /// scripts); the backend itself (its kind, bus, pin) stays.
    fn reconfigure(&mut self, _sensors: &[SensorConfig]) {}

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

    /// Takes the poll loop's [`DeadlineHook`]: a backend that learns during
    /// a sweep that it will take longer or shorter than
    /// [`Backend::sweep_budget`] said calls it with the time still needed.
    fn set_deadline_hook(&mut self, _hook: DeadlineHook) {}

    /// A short line for the service status when the backend runs in a
    /// slower mode than it could (and why), `None` otherwise.
    fn status_note(&self) -> Option<String> {
        None
    }
}

/// A backend that could not be opened (the w1 bus is not there yet, the
/// GPIO device is not accessible): every read fails with the reason, so
/// each configured sensor raises a FAULT that reaches the operators,
/// instead of the gateway going quiet; it tries to open the backend again
/// every [`Reopening::RETRY`].
pub struct Reopening {
    section: SensorsConfig,
    sensors: Vec<SensorConfig>,
    inner: Option<Box<dyn Backend>>,
    hook: Option<DeadlineHook>,
    last_try: std::time::Instant,
    /// Why `inner` is `None`.
    reason: Option<Cause>,
}

impl Reopening {
    pub const RETRY: Duration = Duration::from_secs(30);

    /// Opens the backend, or keeps the reason it could not.
    pub fn open(section: &SensorsConfig, sensors: &[SensorConfig]) -> Self {
        let (inner, reason) = match open(section, sensors) {
            Ok(b) => (Some(b), None),
            Err(e) => {
                log::error!(
                    "sensor backend unavailable: {e}; retrying every {}s",
                    Self::RETRY.as_secs()
                );
                (None, Some(Cause::new(e)))
            }
        };
        Self {
            section: section.clone(),
            sensors: sensors.to_vec(),
            inner,
            hook: None,
            last_try: std::time::Instant::now(),
            reason,
        }
    }

    pub fn is_open(&self) -> bool {
        self.inner.is_some()
    }

    /// Why the backend is closed, for every read and listing meanwhile.
    fn reason(&self) -> Cause {
        self.reason
            .clone()
            .unwrap_or_else(|| Cause::new(std::io::Error::other("sensor backend not open")))
    }
}

impl Backend for Reopening {
    fn sweep(&mut self, ids: &[String]) -> Vec<Sample> {
        if self.inner.is_none() && self.last_try.elapsed() >= Self::RETRY {
            self.last_try = std::time::Instant::now();
            match open(&self.section, &self.sensors) {
                Ok(mut b) => {
                    log::info!("sensor backend available again");
                    if let Some(h) = &self.hook {
                        b.set_deadline_hook(h.clone());
                    }
                    self.inner = Some(b);
                    self.reason = None;
                }
                Err(e) => self.reason = Some(Cause::new(e)),
            }
        }
        if let Some(b) = &mut self.inner {
            return b.sweep(ids);
        }
        let reason = self.reason();
        ids.iter()
            .map(|id| Sample {
                id: id.clone(),
                read: Err(ReadFault::Unavailable(reason.clone())),
            })
            .collect()
    }

    fn reconfigure(&mut self, sensors: &[SensorConfig]) {
        // A later reopen uses the reloaded sensors too.
        self.sensors = sensors.to_vec();
        if let Some(b) = &mut self.inner {
            b.reconfigure(sensors);
        }
    }

    fn scan(&mut self) -> Result<Vec<Found>, BackendError> {
        match &mut self.inner {
            Some(b) => b.scan(),
            None => Err(BackendError::Unavailable(self.reason())),
        }
    }

    fn discover(&mut self) -> Result<Vec<String>, BackendError> {
        match &mut self.inner {
            Some(b) => b.discover(),
            None => Err(BackendError::Unavailable(self.reason())),
        }
    }

    fn sweep_budget(&self, sensors: usize) -> Duration {
        self.inner
            .as_ref()
            .map_or(Duration::from_millis(100), |b| b.sweep_budget(sensors))
    }

    fn set_deadline_hook(&mut self, hook: DeadlineHook) {
        if let Some(b) = &mut self.inner {
            b.set_deadline_hook(hook.clone());
        }
        self.hook = Some(hook);
    }

    fn status_note(&self) -> Option<String> {
        match &self.inner {
            Some(b) => b.status_note(),
            None => Some(format!("sensor backend unavailable: {}", self.reason())),
        }
    }
}

/// Opens the backend `section` (`[sensors]`) names, for `sensors`
/// (`[[sensor]]`).
pub fn open(
    section: &SensorsConfig,
    sensors: &[SensorConfig],
) -> Result<Box<dyn Backend>, BackendError> {
    match section.backend {
        BackendKind::Sim => Ok(Box::new(sim::SimBackend::from_config(sensors))),
        BackendKind::W1Sysfs => Ok(Box::new(w1_sysfs::W1SysfsBackend::from_config(
            &section.w1,
            sensors,
        )?)),
        BackendKind::Gpio => gpio::drivers::open(&section.gpio, sensors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DefaultThresholds, GpioConfig, W1Config};

    fn w1_section(root: &std::path::Path) -> SensorsConfig {
        SensorsConfig {
            backend: BackendKind::W1Sysfs,
            poll_interval_ms: 1000,
            fault_after: 3,
            monitor_unconfigured: false,
            defaults: DefaultThresholds::default(),
            w1: W1Config {
                root: root.to_path_buf(),
                bulk_read: false,
            },
            gpio: GpioConfig::default(),
        }
    }

    #[test]
    fn a_closed_backend_fails_every_read_with_its_typed_reason() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("devices");
        let mut b = Reopening::open(&w1_section(&root), &[]);
        assert!(!b.is_open());
        let ids = ["28-000000000001".to_string(), "28-000000000002".to_string()];
        let samples = b.sweep(&ids);
        assert_eq!(samples.len(), 2);
        for s in &samples {
            let Err(fault @ ReadFault::Unavailable(cause)) = &s.read else {
                panic!("{s:?}");
            };
            let m = fault.to_string();
            assert!(m.starts_with("read error: w1 bus not found at "), "{m}");
            assert!(m.contains(&root.display().to_string()), "{m}");
            let e = cause.get().downcast_ref::<BackendError>();
            assert!(
                matches!(e, Some(BackendError::W1BusMissing { root: r, .. }) if *r == root),
                "{e:?}"
            );
        }
        let e = b.scan().expect_err("closed");
        assert!(e.to_string().starts_with("w1 bus not found at "), "{e}");
    }

    #[test]
    fn the_backend_opens_from_its_sections_only() {
        let d = tempfile::tempdir().expect("tempdir");
        let b = open(&w1_section(d.path()), &[]);
        assert!(b.is_ok());
        let mut sim = w1_section(d.path());
        sim.backend = BackendKind::Sim;
        let mut b = open(&sim, &[DefaultThresholds::default().sensor("28-1")]).expect("sim");
        assert_eq!(b.sweep(&["28-1".to_string()])[0].read, Ok(sim::DEFAULT_C));
    }
}
