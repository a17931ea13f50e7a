//! Opening the bus on real hardware: the pin the configuration names,
//! with the driver it names (rppal on the Raspberry Pi, or the GPIO
//! character device on any Linux board).

#[cfg(target_os = "linux")]
use super::{configure, GpioBackend, OpenDrain};
use crate::config::{GpioConfig, SensorConfig};
use crate::sensor::{Backend, BackendError};

/// Opens the pin `g` (`[sensors.gpio]`) names, with the driver it names,
/// for `sensors`.
#[cfg(target_os = "linux")]
pub fn open(g: &GpioConfig, sensors: &[SensorConfig]) -> Result<Box<dyn Backend>, BackendError> {
    match g.driver {
        crate::config::GpioDriver::Rppal => open_rppal(g, sensors),
        crate::config::GpioDriver::Cdev => open_cdev(g, sensors),
    }
}

/// Any Linux board: the line is requested from the GPIO character device
/// as an open-drain output (writing 1 releases it to the pull-up, and
/// reading returns the line's level), wrapped in linux-embedded-hal's
/// `CdevPin`. Timing still uses rppal's busy-waiting `Delay`, which is
/// plain Rust and not tied to the Pi (linux-embedded-hal's `Delay` sleeps
/// and is tens of microseconds late: too coarse for 1-Wire slots).
#[cfg(target_os = "linux")]
fn open_cdev(g: &GpioConfig, sensors: &[SensorConfig]) -> Result<Box<dyn Backend>, BackendError> {
    use crate::sensor::error::CdevStep;
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
    use linux_embedded_hal::CdevPin;
    let failed = |step: CdevStep| {
        move |e: linux_embedded_hal::gpio_cdev::Error| BackendError::Cdev {
            chip: g.chip.clone(),
            step,
            source: Box::new(e),
        }
    };
    let mut chip = Chip::new(&g.chip).map_err(failed(CdevStep::OpenChip))?;
    let line = chip
        .get_line(u32::from(g.pin))
        .map_err(failed(CdevStep::GetLine(g.pin)))?;
    let handle = line
        .request(
            LineRequestFlags::OUTPUT | LineRequestFlags::OPEN_DRAIN,
            1,
            "thermalertd",
        )
        .map_err(failed(CdevStep::RequestLine(g.pin)))?;
    let pin = CdevPin::new(handle).map_err(failed(CdevStep::UseLine))?;
    let mut b = GpioBackend::new(pin, rppal::hal::Delay::new(), g.attempts)?;
    b.set_pin_number(g.pin);
    configure(&mut b, sensors);
    Ok(Box::new(b))
}

/// The Raspberry Pi: rppal's I/O pin behind the open-drain wrapper.
#[cfg(target_os = "linux")]
fn open_rppal(g: &GpioConfig, sensors: &[SensorConfig]) -> Result<Box<dyn Backend>, BackendError> {
    use rppal::gpio::{Error as GpioError, Gpio, Mode};
    let gpio = Gpio::new().map_err(|e| match e {
        GpioError::PermissionDenied(device) => BackendError::GpioDenied {
            device,
            hint: " (sudo usermod -aG gpio thermalert) and restart the service",
        },
        other => BackendError::GpioOpen {
            chip: g.chip.clone(),
            source: Box::new(other),
        },
    })?;
    let pin = gpio
        .get(g.pin)
        .map_err(|e| match e {
            GpioError::PermissionDenied(device) => BackendError::GpioDenied { device, hint: "" },
            other => BackendError::Gpio {
                pin: g.pin,
                source: Box::new(other),
            },
        })?
        .into_io(Mode::Input);
    let pin = OpenDrain::new(pin).map_err(|e| match e {})?;
    let mut b = GpioBackend::new(pin, rppal::hal::Delay::new(), g.attempts)?;
    b.set_pin_number(g.pin);
    configure(&mut b, sensors);
    Ok(Box::new(b))
}

#[cfg(not(target_os = "linux"))]
pub fn open(_g: &GpioConfig, _sensors: &[SensorConfig]) -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::NotLinux)
}
