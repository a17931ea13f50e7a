//! The sensor layer's errors, each naming what it concerns (file, pin,
//! chip): [`BackendError`] when a backend cannot open or list its bus,
//! [`ReadFault`] when one read of one sensor failed. A `ReadFault` is a
//! value the alert engine keeps and compares, so it is `Clone + PartialEq`
//! and holds its cause in a shared [`Cause`].

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A boxed cause from a driver crate (rppal, gpio-cdev).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// An error shared by clones of a fault. Two are equal when they say the
/// same (an `io::Error` is not `PartialEq`); the original is kept for
/// [`Cause::get`] and `source()`.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn StdError + Send + Sync + 'static>);

impl Cause {
    pub fn new(e: impl StdError + Send + Sync + 'static) -> Self {
        Self(Arc::new(e))
    }

    /// The original error (downcast it to match on it).
    pub fn get(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.0
    }

    /// The kind, when the cause is an I/O error.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        self.0
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for Cause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// Why one read of one sensor failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadFault {
    #[error("CRC check failed")]
    Crc,
    #[error("sensor not found on the bus")]
    Missing,
    /// A file of the sensor could not be read, or did not hold a reading
    /// (the cause is an `io::Error` or the backend's parse error).
    #[error("read error: {}: {source}", path.display())]
    Io { path: PathBuf, source: Cause },
    /// The 1-Wire bus itself failed (the GPIO backend); `pin` when known.
    #[error("read error: {fault}{}", on_pin(*pin))]
    Bus { pin: Option<u8>, fault: BusFault },
    /// An id the backend cannot address.
    #[error("read error: {id:?} is not {expected}")]
    BadId { id: String, expected: &'static str },
    /// The backend could not be opened: every read fails with its reason.
    #[error("read error: {0}")]
    Unavailable(Cause),
    #[error("85.000 C power-on value without a plausible history (the sensor lost power)")]
    PowerOnReset,
    #[error("{0} C is outside the DS18B20's range of -55..+125 C")]
    OutOfRange(f64),
    /// The sensor answered with bytes that pass the CRC but cannot be a
    /// measurement (all zeros, an impossible configuration byte).
    #[error("sensor not ready: {0}")]
    NotReady(crate::onewire::NotReady),
}

fn on_pin(pin: Option<u8>) -> String {
    pin.map(|p| format!(" (GPIO {p})")).unwrap_or_default()
}

impl ReadFault {
    /// An I/O (or content) fault of the file at `path`.
    pub fn io(path: impl Into<PathBuf>, source: impl StdError + Send + Sync + 'static) -> Self {
        Self::Io {
            path: path.into(),
            source: Cause::new(source),
        }
    }
}

/// What went wrong on a bit-banged 1-Wire bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusFault {
    #[error("the 1-Wire line stays low: check the 4.7 kOhm pull-up to 3.3 V and for a short")]
    LineLow,
    /// The pin driver's error, as its `Debug` shows it (embedded-hal 0.2
    /// pin errors are only `Debug`).
    #[error("GPIO pin error: {0}")]
    Pin(String),
    #[error("1-Wire timeout")]
    Timeout,
}

/// Which step of opening a GPIO character device line failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdevStep {
    OpenChip,
    GetLine(u8),
    RequestLine(u8),
    UseLine,
}

impl fmt::Display for CdevStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CdevStep::OpenChip => f.write_str("cannot open"),
            CdevStep::GetLine(n) => write!(f, "no line {n} on"),
            CdevStep::RequestLine(n) => write!(f, "cannot request line {n} on"),
            CdevStep::UseLine => f.write_str("cannot use"),
        }
    }
}

/// A backend that cannot open or list its bus.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("w1 bus not found at {}: is dtoverlay=w1-gpio in /boot/firmware/config.txt and the w1-gpio/w1_therm modules loaded?", root.display())]
    W1BusMissing {
        root: PathBuf,
        source: std::io::Error,
    },
    #[error("permission denied reading {}: run thermalertd as a user who can read the w1 sysfs tree", root.display())]
    W1Denied {
        root: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The 1-Wire bus could not take the pin (one-wire-bus's error, `Debug`).
    #[error("1-Wire pin: {detail}")]
    Pin { detail: String },
    #[error("1-Wire ROM search failed: {0}")]
    RomSearch(#[source] ReadFault),
    #[error("no 1-Wire device answered on the GPIO pin (no presence pulse): check the wiring, the 4.7 kOhm pull-up to 3.3 V and the pin number")]
    NoPresence,
    /// rppal: the GPIO memory device is not accessible.
    #[error("permission denied on {device}: add the user to the gpio group{hint}")]
    GpioDenied { device: String, hint: &'static str },
    /// rppal: the GPIO cannot be opened at all (not a Raspberry Pi).
    #[error("cannot open the GPIO ({source}; /dev/gpiomem or {}): the gpio backend needs a Raspberry Pi", chip.display())]
    GpioOpen { chip: PathBuf, source: BoxError },
    #[error("GPIO{pin}: {source}")]
    Gpio { pin: u8, source: BoxError },
    /// The GPIO character device (`sensors.gpio.driver = "cdev"`).
    #[error("{step} {}: {source}{}", chip.display(), cdev_hint(source))]
    Cdev {
        chip: PathBuf,
        step: CdevStep,
        source: BoxError,
    },
    #[error("the gpio backend needs Linux on a Raspberry Pi")]
    NotLinux,
    /// The reason a [`super::Reopening`] backend is still closed.
    #[error(transparent)]
    Unavailable(Cause),
}

fn cdev_hint(e: &BoxError) -> &'static str {
    if e.to_string().contains("ermission") {
        ": add the user to the gpio group (or a udev rule for the chip) and restart the service"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn io_faults_name_their_file_and_compare_by_what_they_say() {
        let denied = || io::Error::from(io::ErrorKind::PermissionDenied);
        let a = ReadFault::io("/w1/28-1/w1_slave", denied());
        assert_eq!(a.clone(), a);
        assert_eq!(a, ReadFault::io("/w1/28-1/w1_slave", denied()));
        assert_ne!(a, ReadFault::io("/w1/28-2/w1_slave", denied()));
        let m = a.to_string();
        assert!(m.starts_with("read error: /w1/28-1/w1_slave: "), "{m}");
        assert!(m.to_lowercase().contains("permission denied"), "{m}");
        let ReadFault::Io { source, .. } = &a else {
            panic!("{a:?}")
        };
        assert_eq!(source.io_kind(), Some(io::ErrorKind::PermissionDenied));
        assert!(source.get().downcast_ref::<io::Error>().is_some());
    }

    #[test]
    fn bus_faults_name_the_pin_when_it_is_known() {
        let f = |pin| ReadFault::Bus {
            pin,
            fault: BusFault::Timeout,
        };
        assert_eq!(f(None).to_string(), "read error: 1-Wire timeout");
        assert_eq!(
            f(Some(4)).to_string(),
            "read error: 1-Wire timeout (GPIO 4)"
        );
    }

    #[test]
    fn backend_errors_keep_their_cause() {
        let e = BackendError::W1BusMissing {
            root: "/sys/bus/w1/devices".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(e
            .to_string()
            .starts_with("w1 bus not found at /sys/bus/w1/devices: "));
        assert!(e.source().is_some());
        let shared = Cause::new(e);
        let read = ReadFault::Unavailable(shared.clone());
        assert!(read
            .to_string()
            .starts_with("read error: w1 bus not found at"));
        let again = BackendError::Unavailable(shared);
        assert!(again.to_string().starts_with("w1 bus not found at"));
        let cdev = BackendError::Cdev {
            chip: "/dev/gpiochip0".into(),
            step: CdevStep::RequestLine(4),
            source: "Permission denied".into(),
        };
        let m = cdev.to_string();
        assert!(
            m.starts_with(
                "cannot request line 4 on /dev/gpiochip0: Permission denied: add the user"
            ),
            "{m}"
        );
    }
}
