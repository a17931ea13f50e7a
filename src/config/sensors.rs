//! `[sensors]` and `[[sensor]]`: the backend and its settings, and each
//! sensor's thresholds (and script, for the simulated backend). The sensor
//! backends take these sections, not the whole [`super::Config`].

use std::path::PathBuf;

use serde::Deserialize;

use crate::core::alert::Thresholds;

use super::default_true;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Backend {
    #[serde(rename = "sim")]
    Sim,
    /// The kernel's w1-gpio + w1_therm drivers, read through sysfs.
    #[serde(rename = "w1-sysfs")]
    W1Sysfs,
    /// Bit-banged 1-Wire on a GPIO pin, in user space.
    #[serde(rename = "gpio")]
    Gpio,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorsConfig {
    pub backend: Backend,
    #[serde(default = "default_poll_interval")]
    pub poll_interval_ms: u64,
    /// Consecutive failed reads before a sensor raises FAULT.
    #[serde(default = "default_fault_after")]
    pub fault_after: u32,
    /// Whether sensors found on the bus but absent from the config are
    /// monitored with default thresholds.
    #[serde(default)]
    pub monitor_unconfigured: bool,
    /// `[sensors.defaults]`: thresholds for sensors monitored without a
    /// `[[sensor]]` entry.
    #[serde(default)]
    pub defaults: DefaultThresholds,
    /// `[sensors.w1]`: the kernel backend's settings.
    #[serde(default)]
    pub w1: W1Config,
    /// `[sensors.gpio]`: the bit-banging backend's settings.
    #[serde(default)]
    pub gpio: GpioConfig,
}

/// Thresholds for unconfigured sensors (`monitor_unconfigured = true`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultThresholds {
    pub warning_above: Option<f64>,
    pub critical_above: Option<f64>,
    pub warning_below: Option<f64>,
    pub critical_below: Option<f64>,
    pub hysteresis: Option<f64>,
}

impl DefaultThresholds {
    /// A `[[sensor]]` entry for an unconfigured sensor found on the bus.
    pub fn sensor(&self, id: &str) -> SensorConfig {
        SensorConfig {
            id: id.to_string(),
            name: None,
            warning_above: self.warning_above,
            critical_above: self.critical_above,
            warning_below: self.warning_below,
            critical_below: self.critical_below,
            hysteresis: self.hysteresis.unwrap_or_else(default_hysteresis),
            resolution: None,
            sim: None,
        }
    }
}

/// Where the kernel's w1 devices are and how to read them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct W1Config {
    #[serde(default = "default_w1_root")]
    pub root: PathBuf,
    /// Use the bus master's `therm_bulk_read` when the kernel offers it.
    #[serde(default = "default_true")]
    pub bulk_read: bool,
}

impl Default for W1Config {
    fn default() -> Self {
        Self {
            root: default_w1_root(),
            bulk_read: true,
        }
    }
}

fn default_w1_root() -> PathBuf {
    PathBuf::from("/sys/bus/w1/devices")
}

/// The 1-Wire data pin for the bit-banging backend.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    /// How the pin is driven: `rppal` (Raspberry Pi, /dev/gpiomem) or
    /// `cdev` (any Linux board: the GPIO character device `chip`, through
    /// linux-embedded-hal, with the line requested open-drain).
    #[serde(default)]
    pub driver: GpioDriver,
    /// BCM GPIO number of the data line (`rppal`), or line offset on `chip` (`cdev`).
    #[serde(default = "default_gpio_pin")]
    pub pin: u8,
    /// The GPIO character device (named in permission errors).
    #[serde(default = "default_gpio_chip")]
    pub chip: PathBuf,
    /// Attempts per sensor and sweep before a read counts as failed
    /// (user-space timing can be preempted mid-slot).
    #[serde(default = "default_gpio_attempts")]
    pub attempts: u32,
}

impl Default for GpioConfig {
    fn default() -> Self {
        Self {
            driver: GpioDriver::default(),
            pin: default_gpio_pin(),
            chip: default_gpio_chip(),
            attempts: default_gpio_attempts(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpioDriver {
    #[default]
    Rppal,
    Cdev,
}

fn default_gpio_pin() -> u8 {
    4
}
fn default_gpio_chip() -> PathBuf {
    PathBuf::from("/dev/gpiochip0")
}
fn default_gpio_attempts() -> u32 {
    3
}

fn default_poll_interval() -> u64 {
    1000
}
fn default_fault_after() -> u32 {
    3
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// The sensor's ROM id as the kernel names it, e.g. `28-0316a2791dff`.
    pub id: String,
    /// A human name, e.g. `freezer`; defaults to the id.
    pub name: Option<String>,
    pub warning_above: Option<f64>,
    pub critical_above: Option<f64>,
    pub warning_below: Option<f64>,
    pub critical_below: Option<f64>,
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f64,
    /// Conversion resolution in bits (9..=12) for the hardware backends;
    /// unset leaves the sensor's own setting (12 bit from the factory).
    pub resolution: Option<u8>,
    /// Script for the simulated backend.
    pub sim: Option<SimConfig>,
}

fn default_hysteresis() -> f64 {
    0.5
}

impl SensorConfig {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            warning_above: self.warning_above,
            critical_above: self.critical_above,
            warning_below: self.warning_below,
            critical_below: self.critical_below,
            hysteresis: self.hysteresis,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// `[seconds since start, celsius]`: the temperature steps to that value at that time.
    #[serde(default)]
    pub steps: Vec<[f64; 2]>,
    /// When set, the script starts over every `loop_secs` seconds.
    pub loop_secs: Option<f64>,
    /// Injected faults: `{ from = 10.0, until = 15.0, kind = "missing" }`.
    #[serde(default)]
    pub faults: Vec<SimFault>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimFault {
    pub from: f64,
    pub until: f64,
    pub kind: SimFaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimFaultKind {
    /// The sensor does not answer (vanished from the bus).
    Missing,
    /// Every read fails its CRC.
    Crc,
    /// The sensor lost power: it reads the 85.000 C power-on value.
    PowerOnReset,
    /// For tests: a sweep that starts in the window blocks until it ends
    /// (a hung bus), so the sensor loop stops making progress.
    Stall,
}
