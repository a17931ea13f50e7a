//! The `w1-sysfs` backend: the kernel's w1-gpio + w1_therm drivers, read
//! through sysfs under a configurable root (`/sys/bus/w1/devices`).
//!
//! Every w1_therm family is read (DS18S20 `10-`, DS1822 `22-`, DS18B20
//! `28-`, DS1825 / MAX31850 `3b-`, DS28EA00 `42-`; [`ThermFamily`]).
//!
//! A sweep writes `trigger\n` (exactly the 8 bytes `therm_bulk_read_store()`
//! in `drivers/w1/slaves/w1_therm.c` acts on) to each bus master's
//! `therm_bulk_read`, then reads the file back: the kernel says `-1` while
//! the conversion runs and `1` once it is done, and `0` when it ignored the
//! write (it reports success to the writer either way). Only a confirmed
//! bulk conversion counts: then every sensor of a family with bulk read
//! costs one scratchpad read, and N sensors one conversion time. Without
//! one (bulk read disabled, no `therm_bulk_read`, no write permission, the
//! kernel not starting it) each sensor converts when it is read; the
//! backend says so once in the log and in the status, with what it costs,
//! and sizes its sweep deadline and its watchdog budget for that mode.
//! DS28EA00 has no bulk read in the kernel and always converts on its own.
//!
//! Both modes read each sensor's `w1_slave`: after a bulk conversion the
//! kernel's `w1_slave_show()` returns the converted scratchpad without
//! converting again (`SLAVE_CONVERT_TRIGGERED > 0`: `read_scratchpad()`,
//! then the flag is cleared), so the CRC verdict and the nine scratchpad
//! bytes are there on every path, and a scratchpad that cannot be a
//! reading (all zeros: `crc=00 YES`, `t=0`) is a FAULT, not 0 °C
//! ([`check_scratchpad`]).
//!
//! The file formats are the kernel's (`Documentation/ABI/testing/
//! sysfs-driver-w1_therm`). Parsing and timing are pure
//! ([`parse_w1_slave`], [`parse_w1_slave_scratchpad`], [`parse_bulk_state`],
//! [`sweep_timing`]); the I/O around them blocks, which is fine on the
//! backend's own thread.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Backend, BackendError, DeadlineHook, Found, ReadFault, Sample};
use crate::config::{SensorConfig, W1Config};
use crate::onewire::{check_scratchpad, crc8, family_code_of_id, ThermFamily};

/// Failed reads of one sensor are retried this many times within a sweep,
/// while the sweep's deadline leaves time for them.
pub const RETRIES: u32 = 2;

/// How long past its conversion time a bulk conversion may take before the
/// sweep reads anyway; also the slack in the sweep's own bounds.
pub const BULK_MARGIN: Duration = Duration::from_millis(250);

/// How often `therm_bulk_read` is polled during a conversion.
pub const BULK_POLL: Duration = Duration::from_millis(10);

/// One read of `w1_slave` that does not convert: reset, Match ROM, Read
/// Scratchpad and nine bytes, about 12 ms on the wire at standard speed
/// (datasheet timing), plus the bit-banged w1-gpio master's and the
/// scheduler's overhead: counted generously.
pub const READ_COST: Duration = Duration::from_millis(50);

/// What `therm_bulk_read_store()` acts on: `size == sizeof("trigger")`, the
/// literal's NUL counted, so the 8 bytes `echo trigger >` writes. Any
/// other write is ignored (a kernel log line) and still reported written.
pub const BULK_TRIGGER: &[u8] = b"trigger\n";

/// The conversion time w1_therm waits at 12 bits, and for DS18S20
/// (`w1_DS18B20_convert_time()`, `w1_DS18S20_convert_time()`).
pub const DEFAULT_CONVERSION: Duration = Duration::from_millis(750);

/// The kernel's conversion time for a resolution when `conv_time` is not
/// there to say it (`w1_DS18B20_convert_time()`: 95 / 190 / 375 / 750 ms).
pub fn kernel_conversion_time(bits: Option<u8>) -> Duration {
    Duration::from_millis(match bits {
        Some(9) => 95,
        Some(10) => 190,
        Some(11) => 375,
        _ => 750,
    })
}

/// What a sysfs file said, when it did not say a temperature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// An empty read: a conversion is pending, the bus failed, or (from
    /// kernel 5.10) the scratchpad failed its CRC.
    #[error("empty read (conversion pending, bus error, or a CRC failure on kernels from 5.10)")]
    Empty,
    /// `w1_slave`'s first line ended `NO` (kernels before 5.10).
    #[error("CRC check failed (crc=.. NO)")]
    CrcNo,
    #[error("unexpected content {0:?}")]
    Malformed(String),
}

fn malformed(text: &str) -> ParseError {
    let mut s: String = text.chars().take(80).collect();
    if text.chars().count() > 80 {
        s.push_str("...");
    }
    ParseError::Malformed(s)
}

/// Parses a millidegree integer, as in `temperature` and after `t=`.
fn parse_millis(s: &str, whole: &str) -> Result<i32, ParseError> {
    s.trim().parse::<i32>().map_err(|_| malformed(whole))
}

/// Parses `w1_slave`: two lines, the first ending `crc=xx YES` or `NO`, the
/// second ending `t=<millidegrees>`. Returns the millidegrees.
pub fn parse_w1_slave(text: &str) -> Result<i32, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default().trim_end();
    let verdict = first
        .rsplit_once("crc=")
        .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>())
        .ok_or_else(|| malformed(text))?;
    match verdict.as_slice() {
        [_, "YES"] => {}
        [_, "NO"] => return Err(ParseError::CrcNo),
        _ => return Err(malformed(text)),
    }
    let second = lines.next().ok_or_else(|| malformed(text))?;
    let (_, t) = second.rsplit_once("t=").ok_or_else(|| malformed(text))?;
    parse_millis(t, text)
}

/// A `w1_slave` read: the scratchpad the kernel read, and its temperature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct W1Slave {
    pub scratchpad: [u8; 9],
    pub millis: i32,
}

/// Parses `w1_slave` with the nine scratchpad bytes of its first line, as
/// `w1_slave_show()` prints them (`"%02x "` each, then `": crc=%02x %s\n"`).
/// A `YES` over bytes whose CRC fails is not the kernel's and counts as a
/// CRC failure.
pub fn parse_w1_slave_scratchpad(text: &str) -> Result<W1Slave, ParseError> {
    let millis = parse_w1_slave(text)?;
    let first = text.lines().next().unwrap_or_default();
    let (hex, _) = first.rsplit_once("crc=").ok_or_else(|| malformed(text))?;
    let hex = hex.trim_end().trim_end_matches(':');
    let mut scratchpad = [0u8; 9];
    let mut n = 0;
    for tok in hex.split_whitespace() {
        let slot = scratchpad.get_mut(n).ok_or_else(|| malformed(text))?;
        if tok.len() != 2 {
            return Err(malformed(text));
        }
        *slot = u8::from_str_radix(tok, 16).map_err(|_| malformed(text))?;
        n += 1;
    }
    if n != 9 {
        return Err(malformed(text));
    }
    if crc8(&scratchpad) != 0 {
        return Err(ParseError::CrcNo);
    }
    Ok(W1Slave { scratchpad, millis })
}

/// Parses `temperature`: one line of millidegrees, empty while a
/// conversion is pending or after an error.
pub fn parse_temperature(text: &str) -> Result<i32, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    parse_millis(text, text)
}

/// What to do about a w1 file the daemon may not write.
fn permission_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::PermissionDenied => {
            " (systemd/60-thermalert-w1.rules gives the gpio group write access; the Debian package installs it)"
        }
        ErrorKind::ReadOnlyFilesystem => {
            " (the unit's ReadWritePaths= names w1_bus_master1..4; a bus master that appeared after the start needs a restart)"
        }
        _ => "",
    }
}

/// The state `therm_bulk_read` reports (`therm_bulk_read_show()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkState {
    /// `0`: no bulk conversion pending.
    Idle,
    /// `-1`: at least one sensor is still converting.
    Converting,
    /// `1`: converted, some sensors not read yet.
    Ready,
}

pub fn parse_bulk_state(text: &str) -> Result<BulkState, ParseError> {
    match text.trim() {
        "" => Err(ParseError::Empty),
        "0" => Ok(BulkState::Idle),
        "-1" => Ok(BulkState::Converting),
        "1" => Ok(BulkState::Ready),
        _ => Err(malformed(text)),
    }
}

/// Millidegrees to degrees.
pub fn millis_to_celsius(m: i32) -> f64 {
    f64::from(m) / 1000.0
}

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

/// A bus master under the root.
#[derive(Debug, Clone)]
struct Master {
    name: String,
    /// `therm_bulk_read`, when the kernel offers it.
    bulk_file: Option<PathBuf>,
    /// The w1_therm devices the master lists (its subdirectories).
    slaves: Vec<String>,
}

/// One sensor of a sweep.
#[derive(Debug, Clone)]
struct Planned {
    id: String,
    family: Option<ThermFamily>,
    master: Option<usize>,
    conv: Duration,
    /// Its master confirmed a bulk conversion this sweep.
    bulk: bool,
}

fn io_fault(path: &Path, e: std::io::Error) -> ReadFault {
    ReadFault::io(path, e)
}

/// Writes an existing attribute (never creates one: sysfs cannot).
fn write_attr(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(bytes)
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// The kernel's w1 devices under a root.
pub struct W1SysfsBackend {
    root: PathBuf,
    bulk_read: bool,
    wanted: HashMap<String, u8>,
    applied: HashSet<String>,
    warned: HashSet<String>,
    /// Each sensor's conversion time as the kernel last said it.
    conv: HashMap<String, Duration>,
    /// How the last sweep converted, and its timing (for `ids.len()`).
    last: Option<(Conversion, usize, SweepTiming)>,
    /// Sensors whose family converts on its own, already logged.
    told_solo: HashSet<String>,
    hook: Option<DeadlineHook>,
}

impl fmt::Debug for W1SysfsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("W1SysfsBackend")
            .field("root", &self.root)
            .field("bulk_read", &self.bulk_read)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl W1SysfsBackend {
    /// A backend reading under `root`, using the bulk read when `bulk_read`
    /// and the kernel offers it.
    pub fn new(root: impl Into<PathBuf>, bulk_read: bool) -> Self {
        Self {
            root: root.into(),
            bulk_read,
            wanted: HashMap::new(),
            applied: HashSet::new(),
            warned: HashSet::new(),
            conv: HashMap::new(),
            last: None,
            told_solo: HashSet::new(),
            hook: None,
        }
    }

    /// From the config; fails when the root is missing or unreadable.
    pub fn from_config(w1: &W1Config, sensors: &[SensorConfig]) -> Result<Self, BackendError> {
        let mut b = Self::new(&w1.root, w1.bulk_read);
        for s in sensors {
            if let Some(bits) = s.resolution {
                b.want_resolution(&s.id, bits);
            }
        }
        b.check_root()?;
        Ok(b)
    }

    /// Asks for `bits` (9..=12) on sensor `id`, written before its next read.
    pub fn want_resolution(&mut self, id: &str, bits: u8) {
        self.wanted.insert(id.to_string(), bits);
        self.applied.remove(id);
    }

    /// How the last sweep converted.
    pub fn conversion(&self) -> Option<&Conversion> {
        self.last.as_ref().map(|(c, _, _)| c)
    }

    /// The last sweep's timing.
    pub fn timing(&self) -> Option<SweepTiming> {
        self.last.as_ref().map(|(_, _, t)| *t)
    }

    fn check_root(&self) -> Result<(), BackendError> {
        let root = self.root.clone();
        match std::fs::read_dir(&self.root) {
            Ok(_) => Ok(()),
            Err(source) if source.kind() == ErrorKind::NotFound => {
                Err(BackendError::W1BusMissing { root, source })
            }
            Err(source) if source.kind() == ErrorKind::PermissionDenied => {
                Err(BackendError::W1Denied { root, source })
            }
            Err(source) => Err(BackendError::Io { path: root, source }),
        }
    }

    fn device_dir(&self, id: &str) -> Result<PathBuf, ReadFault> {
        // An id is a single path component: no '/', no '..'.
        if id.is_empty() || id.contains(['/', '\0']) || id == "." || id == ".." {
            return Err(ReadFault::BadId {
                id: id.to_string(),
                expected: "a w1 device name",
            });
        }
        let dir = self.root.join(id);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(ReadFault::Missing)
        }
    }

    /// Reads a file of a device: `Missing` when the device directory is
    /// gone, `Io` naming the path otherwise.
    fn read_device_file(&self, id: &str, file: &str) -> Result<(PathBuf, String), ReadFault> {
        let dir = self.device_dir(id)?;
        let path = dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok((path, s)),
            Err(_) if !dir.is_dir() => Err(ReadFault::Missing),
            Err(e) => Err(io_fault(&path, e)),
        }
    }

    fn read_small(&self, id: &str, file: &str) -> Option<String> {
        self.read_device_file(id, file)
            .ok()
            .map(|(_, s)| s.trim().to_string())
    }

    /// One read of `w1_slave`, its scratchpad checked.
    fn read_once(&self, p: &Planned) -> Result<f64, ReadFault> {
        let (path, text) = self.read_device_file(&p.id, "w1_slave")?;
        match parse_w1_slave_scratchpad(&text) {
            Ok(w) => {
                let family = p
                    .family
                    .map(|f| f.code)
                    .or_else(|| family_code_of_id(&p.id))
                    .unwrap_or(0);
                check_scratchpad(family, &w.scratchpad).map_err(ReadFault::NotReady)?;
                Ok(millis_to_celsius(w.millis))
            }
            Err(ParseError::CrcNo) => Err(ReadFault::Crc),
            Err(e) => Err(ReadFault::io(path, e)),
        }
    }

    /// Reads with up to [`RETRIES`] retries while `deadline` leaves time
    /// for one (a retry converts: the first read cleared the kernel's bulk
    /// flag); a missing device is not retried.
    fn read_retrying(&self, p: &Planned, deadline: Instant) -> Result<f64, ReadFault> {
        let mut last = ReadFault::Missing;
        for attempt in 0..=RETRIES {
            if attempt > 0 && Instant::now() + p.conv + READ_COST > deadline {
                log::debug!("{}: no time left in this sweep for retry {attempt}", p.id);
                break;
            }
            match self.read_once(p) {
                Ok(c) => return Ok(c),
                Err(ReadFault::Missing) => return Err(ReadFault::Missing),
                Err(e) => {
                    log::debug!("{}: w1_slave read {} failed: {e}", p.id, attempt + 1);
                    last = e;
                }
            }
        }
        Err(last)
    }

    fn apply_resolutions(&mut self, ids: &[String]) {
        for id in ids {
            let Some(&bits) = self.wanted.get(id) else {
                continue;
            };
            if self.applied.contains(id) {
                continue;
            }
            let Ok(dir) = self.device_dir(id) else {
                continue;
            };
            if ThermFamily::of_id(id).is_some_and(|f| !f.resolution) {
                if self.warned.insert(id.clone()) {
                    log::warn!(
                        "{id}: a DS18S20 has no resolution setting; `resolution = {bits}` is ignored"
                    );
                }
                continue;
            }
            let path = dir.join("resolution");
            match write_attr(&path, format!("{bits}\n").as_bytes()) {
                Ok(()) => {
                    log::info!("{id}: resolution set to {bits} bits");
                    self.applied.insert(id.clone());
                    // resolution_store() resets the kernel's conversion time.
                    self.conv.remove(id);
                }
                Err(e) => {
                    if self.warned.insert(id.clone()) {
                        log::warn!(
                            "{id}: cannot set the resolution: {}: {e}{}",
                            path.display(),
                            permission_hint(&e)
                        );
                    }
                }
            }
        }
    }

    /// The bus masters under the root, with the devices each lists.
    fn masters(&self) -> Vec<Master> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut v: Vec<Master> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                name.starts_with("w1_bus_master")
                    .then_some((name, e.path()))
            })
            .filter(|(_, p)| p.is_dir())
            .map(|(name, dir)| {
                let f = dir.join("therm_bulk_read");
                let bulk_file = f.metadata().ok().filter(|m| !m.is_dir()).map(|_| f.clone());
                let mut slaves: Vec<String> = std::fs::read_dir(&dir)
                    .map(|rd| {
                        rd.flatten()
                            .filter_map(|e| e.file_name().to_str().map(str::to_string))
                            .filter(|n| ThermFamily::of_id(n).is_some())
                            .collect()
                    })
                    .unwrap_or_default();
                slaves.sort();
                Master {
                    name,
                    bulk_file,
                    slaves,
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A sensor's conversion time: the kernel's `conv_time` (it includes a
    /// user's override), else from `resolution`, else 750 ms.
    fn conversion_time(&mut self, id: &str, family: Option<ThermFamily>) -> Duration {
        let from_file = self
            .read_small(id, "conv_time")
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        if let Some(c) = from_file {
            self.conv.insert(id.to_string(), c);
            return c;
        }
        if let Some(&c) = self.conv.get(id) {
            return c;
        }
        let c = if family.is_none_or(|f| f.resolution) {
            kernel_conversion_time(
                self.read_small(id, "resolution")
                    .and_then(|r| r.parse::<u8>().ok()),
            )
        } else {
            DEFAULT_CONVERSION
        };
        if self.device_dir(id).is_ok() {
            self.conv.insert(id.to_string(), c);
        }
        c
    }

    fn plan(&mut self, ids: &[String], masters: &[Master]) -> Vec<Planned> {
        ids.iter()
            .map(|id| {
                let family = ThermFamily::of_id(id);
                let master = masters
                    .iter()
                    .position(|m| m.slaves.iter().any(|s| s == id))
                    .or_else(|| (masters.len() == 1).then_some(0));
                Planned {
                    id: id.clone(),
                    family,
                    master,
                    conv: self.conversion_time(id, family),
                    bulk: false,
                }
            })
            .collect()
    }

    fn bulk_state(file: &Path) -> Result<BulkState, String> {
        std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|s| parse_bulk_state(&s).map_err(|e| e.to_string()))
    }

    /// Triggers a bulk conversion on `m` and confirms from the read-back
    /// that the kernel started it.
    fn trigger(&self, m: &Master) -> Result<PathBuf, PerSensorReason> {
        let Some(file) = &m.bulk_file else {
            return Err(PerSensorReason::NoBulkRead(m.name.clone()));
        };
        let before = Self::bulk_state(file);
        if let Err(e) = write_attr(file, BULK_TRIGGER) {
            return Err(PerSensorReason::WriteFailed(format!(
                "{}: {e}{}",
                file.display(),
                permission_hint(&e)
            )));
        }
        match Self::bulk_state(file) {
            Ok(BulkState::Converting | BulkState::Ready) => {
                if before == Ok(BulkState::Ready) {
                    log::debug!(
                        "{}: said 1 before the trigger too (another reader?)",
                        file.display()
                    );
                }
                Ok(file.clone())
            }
            Ok(BulkState::Idle) => Err(PerSensorReason::NotStarted(format!(
                "{} read 0 after the trigger",
                file.display()
            ))),
            Err(e) => Err(PerSensorReason::NotStarted(format!(
                "{} after the trigger: {e}",
                file.display()
            ))),
        }
    }

    /// Starts the bulk conversions the planned sensors can use, waits for
    /// them, and marks the sensors whose master confirmed one.
    fn convert(
        &mut self,
        plan: &mut [Planned],
        masters: &[Master],
    ) -> (Conversion, Vec<usize>, Duration) {
        if !self.bulk_read {
            return (
                Conversion::PerSensor(PerSensorReason::Disabled),
                Vec::new(),
                Duration::ZERO,
            );
        }
        let wanted: BTreeSet<usize> = plan
            .iter()
            .filter(|p| p.family.is_some_and(|f| f.bulk_read))
            .filter_map(|p| p.master)
            .collect();
        if wanted.is_empty() {
            let reason = if plan.iter().any(|p| p.family.is_some_and(|f| f.bulk_read)) {
                PerSensorReason::NoBulkRead(format!("{} (no bus master)", self.root.display()))
            } else {
                PerSensorReason::NoBulkFamily
            };
            return (Conversion::PerSensor(reason), Vec::new(), Duration::ZERO);
        }
        let started = Instant::now();
        let mut confirmed = Vec::new();
        let mut files = Vec::new();
        let mut failure = None;
        for &m in &wanted {
            match self.trigger(&masters[m]) {
                Ok(f) => {
                    confirmed.push(m);
                    files.push(f);
                }
                Err(r) => {
                    failure.get_or_insert(r);
                }
            }
        }
        for p in plan.iter_mut() {
            p.bulk = p.family.is_some_and(|f| f.bulk_read)
                && p.master.is_some_and(|m| confirmed.contains(&m));
        }
        // The kernel waits for the slowest sensor with bulk read on each
        // bus, configured or not.
        let mut slowest = plan
            .iter()
            .filter(|p| p.bulk)
            .map(|p| p.conv)
            .max()
            .unwrap_or_default();
        for &m in &confirmed {
            for s in &masters[m].slaves {
                let family = ThermFamily::of_id(s);
                if family.is_some_and(|f| f.bulk_read) && !plan.iter().any(|p| &p.id == s) {
                    slowest = slowest.max(self.conversion_time(s, family));
                }
            }
        }
        if !files.is_empty() {
            Self::wait_conversion(&files, started + slowest + BULK_MARGIN);
        }
        let conversion = match failure {
            None => Conversion::Bulk,
            Some(r) => Conversion::PerSensor(r),
        };
        (conversion, confirmed, slowest)
    }

    /// Waits, bounded, until no `therm_bulk_read` says `-1`.
    fn wait_conversion(files: &[PathBuf], until: Instant) {
        loop {
            // Anything but a clear 0 or 1 counts as still converting.
            let busy = files
                .iter()
                .any(|f| !matches!(Self::bulk_state(f), Ok(BulkState::Idle | BulkState::Ready)));
            if !busy {
                return;
            }
            let now = Instant::now();
            if now >= until {
                log::warn!("bulk conversion still pending at its time bound: reading anyway");
                return;
            }
            std::thread::sleep(BULK_POLL.min(until - now));
        }
    }

    /// Reads the devices of confirmed masters that the sweep did not read,
    /// so the kernel has no bulk result left pending (`therm_bulk_read`
    /// back to 0) and the next trigger can be confirmed.
    fn drain(&self, masters: &[Master], confirmed: &[usize], ids: &[String]) {
        for &m in confirmed {
            let master = &masters[m];
            let Some(file) = &master.bulk_file else {
                continue;
            };
            if Self::bulk_state(file) != Ok(BulkState::Ready) {
                continue;
            }
            for s in &master.slaves {
                if ids.contains(s) || !ThermFamily::of_id(s).is_some_and(|f| f.bulk_read) {
                    continue;
                }
                log::debug!("{s}: not configured; reading it to clear its bulk result");
                let _ = self.read_device_file(s, "w1_slave");
            }
        }
    }

    /// Logs, once per change, how the sweeps convert and what it costs.
    fn report(&mut self, conversion: &Conversion, plan: &[Planned], timing: SweepTiming) {
        if plan.is_empty() {
            return;
        }
        for p in plan {
            if let Some(f) = p.family.filter(|f| !f.bulk_read) {
                if self.bulk_read && self.told_solo.insert(p.id.clone()) {
                    log::info!(
                        "{} ({}): the kernel has no bulk read for this family: it converts on its own when read, {} ms per sweep",
                        p.id,
                        f.name,
                        ms(p.conv)
                    );
                }
            }
        }
        if self.conversion() == Some(conversion) {
            return;
        }
        let secs = timing.expected.as_secs_f64();
        match conversion {
            Conversion::Bulk => {
                let k = plan.iter().filter(|p| p.bulk).count();
                let conv = plan
                    .iter()
                    .filter(|p| p.bulk)
                    .map(|p| p.conv)
                    .max()
                    .unwrap_or_default();
                log::info!(
                    "w1: bulk conversion confirmed by therm_bulk_read: {k} of {} sensor(s) in one conversion ({} ms); about {secs:.1} s per sweep",
                    plan.len(),
                    ms(conv)
                );
            }
            Conversion::PerSensor(reason) => {
                let could: Vec<(Duration, bool)> = plan
                    .iter()
                    .map(|p| (p.conv, p.family.is_some_and(|f| f.bulk_read)))
                    .collect();
                let bulk_secs = sweep_timing(&could).expected.as_secs_f64();
                let line = format!(
                    "w1: converting per sensor ({reason}): each sensor converts when read, about {secs:.1} s per sweep for {} sensor(s) (one bulk conversion: about {bulk_secs:.1} s)",
                    plan.len()
                );
                if *reason == PerSensorReason::Disabled {
                    log::info!("{line}");
                } else {
                    log::warn!("{line}");
                }
            }
        }
    }

    /// The w1_therm devices under the root, sorted.
    fn list_devices(&self) -> Result<Vec<String>, BackendError> {
        self.check_root()?;
        let rd = std::fs::read_dir(&self.root).map_err(|source| BackendError::Io {
            path: self.root.clone(),
            source,
        })?;
        let mut ids: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| ThermFamily::of_id(n).is_some())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

impl Backend for W1SysfsBackend {
    fn sweep(&mut self, ids: &[String]) -> Vec<Sample> {
        let start = Instant::now();
        self.apply_resolutions(ids);
        let masters = self.masters();
        let mut plan = self.plan(ids, &masters);
        let (conversion, confirmed, bus_slowest) = self.convert(&mut plan, &masters);
        let timing = sweep_timing_on_bus(
            &plan.iter().map(|p| (p.conv, p.bulk)).collect::<Vec<_>>(),
            bus_slowest,
        );
        self.report(&conversion, &plan, timing);
        let deadline = start + timing.deadline;
        if let Some(hook) = &self.hook {
            // The mode is known now: promise the rest of this sweep.
            hook(deadline.saturating_duration_since(Instant::now()) + BULK_MARGIN);
        }
        let samples = plan
            .iter()
            .map(|p| Sample {
                id: p.id.clone(),
                read: self.read_retrying(p, deadline),
            })
            .collect();
        self.drain(&masters, &confirmed, ids);
        self.last = Some((conversion, ids.len(), timing));
        samples
    }

    fn reconfigure(&mut self, sensors: &[SensorConfig]) {
        for s in sensors {
            if let Some(bits) = s.resolution {
                if self.wanted.get(&s.id) != Some(&bits) {
                    self.want_resolution(&s.id, bits);
                }
            }
        }
    }

    fn discover(&mut self) -> Result<Vec<String>, BackendError> {
        self.list_devices()
    }

    fn scan(&mut self) -> Result<Vec<Found>, BackendError> {
        let ids = self.list_devices()?;
        let samples = self.sweep(&ids);
        Ok(samples
            .into_iter()
            .map(|s| {
                let family = ThermFamily::of_id(&s.id);
                Found {
                    family: family.map(|f| f.name),
                    resolution_bits: if family.is_some_and(|f| f.resolution) {
                        self.read_small(&s.id, "resolution")
                            .and_then(|r| r.parse::<u8>().ok())
                    } else {
                        None
                    },
                    parasite: match self.read_small(&s.id, "ext_power").as_deref() {
                        Some("0") => Some(true),
                        Some("1") => Some(false),
                        _ => None,
                    },
                    id: s.id,
                    celsius: s.read,
                }
            })
            .collect())
    }

    fn sweep_budget(&self, sensors: usize) -> Duration {
        match &self.last {
            Some((_, n, t)) if *n == sensors => t.budget,
            // Not swept yet (or other sensors): each converting on its own
            // at 12 bits, the most a sweep of them can take.
            _ => sweep_timing(&vec![(DEFAULT_CONVERSION, false); sensors]).budget,
        }
    }

    fn set_deadline_hook(&mut self, hook: DeadlineHook) {
        self.hook = Some(hook);
    }

    fn status_note(&self) -> Option<String> {
        let (conversion, _, timing) = self.last.as_ref()?;
        let secs = timing.expected.as_secs_f64();
        match conversion {
            Conversion::PerSensor(r) => Some(format!(
                "w1: converting per sensor ({r}), about {secs:.1} s per sweep"
            )),
            Conversion::Bulk if !self.told_solo.is_empty() => Some(format!(
                "w1: bulk conversion; {} sensor(s) without bulk read convert on their own, about {secs:.1} s per sweep",
                self.told_solo.len()
            )),
            Conversion::Bulk => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str =
        "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";

    #[test]
    fn w1_slave_yes_gives_the_temperature() {
        assert_eq!(parse_w1_slave(GOOD), Ok(23125));
        let neg = "5e ff 4b 46 7f ff 02 10 d7 : crc=d7 YES\n5e ff 4b 46 7f ff 02 10 d7 t=-10125\n";
        assert_eq!(parse_w1_slave(neg), Ok(-10125));
    }

    #[test]
    fn w1_slave_no_is_a_crc_failure() {
        let bad = GOOD.replace("YES", "NO");
        assert_eq!(parse_w1_slave(&bad), Err(ParseError::CrcNo));
    }

    #[test]
    fn w1_slave_empty_or_cut_is_an_error() {
        assert_eq!(parse_w1_slave(""), Err(ParseError::Empty));
        assert_eq!(parse_w1_slave("\n"), Err(ParseError::Empty));
        let first_line_only = GOOD.lines().next().unwrap_or_default();
        assert!(matches!(
            parse_w1_slave(first_line_only),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse_w1_slave("garbage\n"),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse_w1_slave(&GOOD.replace("t=23125", "t=")),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse_w1_slave(&GOOD.replace("YES", "MAYBE")),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn w1_slave_gives_its_scratchpad_bytes() {
        let w = parse_w1_slave_scratchpad(GOOD).expect("good");
        assert_eq!(
            w.scratchpad,
            [0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x57]
        );
        assert_eq!(w.millis, 23125);
        // What a half-connected sensor gives: a good CRC over zeros.
        let zeros = "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n";
        let w = parse_w1_slave_scratchpad(zeros).expect("parses");
        assert_eq!((w.scratchpad, w.millis), ([0; 9], 0));
        assert_eq!(
            check_scratchpad(0x28, &w.scratchpad),
            Err(crate::onewire::NotReady::AllZero)
        );
        // Eight bytes, a byte that is not hex, a YES over a bad CRC.
        for bad in [
            GOOD.replacen("72 ", "", 1),
            GOOD.replacen("72", "7g", 1),
            GOOD.replacen("4b", "4", 1),
        ] {
            assert!(
                matches!(
                    parse_w1_slave_scratchpad(&bad),
                    Err(ParseError::Malformed(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            parse_w1_slave_scratchpad(&GOOD.replacen("72 01", "73 01", 1)),
            Err(ParseError::CrcNo)
        );
        assert_eq!(
            parse_w1_slave_scratchpad(&GOOD.replace("YES", "NO")),
            Err(ParseError::CrcNo)
        );
        assert_eq!(parse_w1_slave_scratchpad(""), Err(ParseError::Empty));
    }

    #[test]
    fn the_trigger_is_the_eight_bytes_the_kernel_acts_on() {
        // therm_bulk_read_store(): size == sizeof("trigger"), NUL counted.
        assert_eq!(BULK_TRIGGER.len(), "trigger".len() + 1);
        assert!(BULK_TRIGGER.starts_with(b"trigger"));
    }

    #[test]
    fn twenty_sensors_at_12_bits_fit_their_budget_in_either_mode() {
        let conv = DEFAULT_CONVERSION;
        // What a real bus costs per read through w1-gpio (~12 ms) and per
        // conversion (the kernel sleeps conv_time), generously.
        let wire = Duration::from_millis(15);
        for n in 1..=20u32 {
            let bulk = sweep_timing(&vec![(conv, true); n as usize]);
            let real_bulk = conv + wire * n;
            assert!(bulk.expected >= real_bulk, "{n}: {bulk:?}");
            assert!(bulk.budget > bulk.deadline && bulk.deadline > bulk.expected);
            // About one conversion, not one per sensor.
            assert!(
                bulk.expected < conv + READ_COST * n + conv / 2,
                "{n}: {bulk:?}"
            );

            let per = sweep_timing(&vec![(conv, false); n as usize]);
            let real_per = (conv + wire) * n;
            assert!(per.expected >= real_per, "{n}: {per:?}");
            // Room for a retry of one sensor that failed (a conversion each).
            assert!(
                per.deadline >= per.expected + (conv + wire) * RETRIES,
                "{n}: {per:?}"
            );
        }
        let per20 = sweep_timing(&vec![(conv, false); 20]);
        assert!(per20.budget >= Duration::from_millis(20 * 765), "{per20:?}");
        // A DS28EA00 among bulk sensors adds its own conversion.
        let mixed = sweep_timing(&[(conv, true), (conv, true), (conv, false)]);
        assert!(mixed.expected >= conv * 2, "{mixed:?}");
        assert_eq!(sweep_timing(&[]).expected, Duration::ZERO);
    }

    #[test]
    fn the_kernels_conversion_times_by_resolution() {
        assert_eq!(kernel_conversion_time(Some(9)), Duration::from_millis(95));
        assert_eq!(kernel_conversion_time(Some(10)), Duration::from_millis(190));
        assert_eq!(kernel_conversion_time(Some(11)), Duration::from_millis(375));
        assert_eq!(kernel_conversion_time(Some(12)), DEFAULT_CONVERSION);
        assert_eq!(kernel_conversion_time(None), DEFAULT_CONVERSION);
    }

    #[test]
    fn temperature_file_parses_millidegrees() {
        assert_eq!(parse_temperature("23125\n"), Ok(23125));
        assert_eq!(parse_temperature("-18062\n"), Ok(-18062));
        assert_eq!(parse_temperature(""), Err(ParseError::Empty));
        assert!(matches!(
            parse_temperature("23.1\n"),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn bulk_states_parse() {
        assert_eq!(parse_bulk_state("-1\n"), Ok(BulkState::Converting));
        assert_eq!(parse_bulk_state("1\n"), Ok(BulkState::Ready));
        assert_eq!(parse_bulk_state("0\n"), Ok(BulkState::Idle));
        assert_eq!(parse_bulk_state(""), Err(ParseError::Empty));
        assert!(matches!(
            parse_bulk_state("trigger"),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_messages_are_bounded() {
        let long = "x".repeat(10_000);
        match parse_temperature(&long) {
            Err(ParseError::Malformed(m)) => assert!(m.len() <= 84, "{}", m.len()),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = parse_w1_slave(&s);
            let _ = parse_w1_slave_scratchpad(&s);
            let _ = parse_temperature(&s);
            let _ = parse_bulk_state(&s);
        }

        #[test]
        fn parsers_never_panic_on_near_misses(
            bytes in "[0-9a-f ]{0,30}",
            verdict in "(YES|NO|yes|)",
            t in any::<i64>(),
            sep in "[ :\n=]{0,3}",
        ) {
            let s = format!("{bytes}: crc=57 {verdict}{sep}\n{bytes} t={t}\n");
            let r = parse_w1_slave(&s);
            if verdict == "YES" && sep.is_empty() {
                prop_assert_eq!(r.ok(), i32::try_from(t).ok());
            }
        }

        #[test]
        fn any_millidegree_value_round_trips(m in any::<i32>()) {
            prop_assert_eq!(parse_temperature(&format!("{m}\n")), Ok(m));
        }
    }
}
