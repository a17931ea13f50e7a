//! The `w1-sysfs` backend: the kernel's w1-gpio + w1_therm drivers, read
//! through sysfs under a configurable root (`/sys/bus/w1/devices`).
//!
//! With the bus master's `therm_bulk_read` a sweep starts one conversion on
//! every sensor at once (write `trigger`), waits until the file stops
//! saying `-1`, then reads each sensor's `temperature`: N sensors cost one
//! conversion time. Without it each sensor's `w1_slave` is read, which runs
//! a conversion per sensor and carries the CRC verdict. The file formats
//! are the kernel's (`Documentation/ABI/testing/sysfs-driver-w1_therm`).
//! Parsing is pure ([`parse_w1_slave`], [`parse_temperature`],
//! [`parse_bulk_state`]); the I/O around it blocks, which is fine on the
//! backend's own thread.

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Backend, BackendError, Found, Sample};
use crate::config::{SensorConfig, W1Config};
use crate::core::alert::ReadFault;
use crate::onewire::Resolution;

/// Failed reads of one sensor are retried this many times within a sweep.
pub const RETRIES: u32 = 2;

/// How long past the datasheet's 750 ms conversion time (tCONV at 12 bit)
/// a bulk conversion may take before the sweep reads anyway.
pub const BULK_MARGIN: Duration = Duration::from_millis(250);

/// How often `therm_bulk_read` is polled during a conversion.
pub const BULK_POLL: Duration = Duration::from_millis(10);

/// What a sysfs file said, when it did not say a temperature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// An empty read: a conversion is pending, or the bus failed.
    #[error("empty read (conversion pending or bus error)")]
    Empty,
    /// `w1_slave`'s first line ended `NO`.
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

/// The state `therm_bulk_read` reports.
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

/// The kernel's w1 devices under a root.
#[derive(Debug)]
pub struct W1SysfsBackend {
    root: PathBuf,
    bulk_read: bool,
    wanted: HashMap<String, u8>,
    applied: HashSet<String>,
    warned: HashSet<String>,
    bulk_timeout: Duration,
}

fn io_fault(path: &Path, e: std::io::Error) -> ReadFault {
    ReadFault::io(path, e)
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
            bulk_timeout: Resolution::Bits12.conversion_time() + BULK_MARGIN,
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

    /// The longest a sweep waits for a bulk conversion.
    pub fn set_bulk_timeout(&mut self, t: Duration) {
        self.bulk_timeout = t;
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

    /// One read of `file` (`w1_slave` or `temperature`), parsed.
    fn read_once(&self, id: &str, file: &str) -> Result<f64, ReadFault> {
        let (path, text) = self.read_device_file(id, file)?;
        let parsed = if file == "w1_slave" {
            parse_w1_slave(&text)
        } else {
            parse_temperature(&text)
        };
        match parsed {
            Ok(m) => Ok(millis_to_celsius(m)),
            Err(ParseError::CrcNo) => Err(ReadFault::Crc),
            Err(e) => Err(ReadFault::io(path, e)),
        }
    }

    /// Reads with up to [`RETRIES`] retries; a missing device is not retried.
    fn read_retrying(&self, id: &str, file: &str) -> Result<f64, ReadFault> {
        let mut last = ReadFault::Missing;
        for attempt in 0..=RETRIES {
            match self.read_once(id, file) {
                Ok(c) => return Ok(c),
                Err(ReadFault::Missing) => return Err(ReadFault::Missing),
                Err(e) => {
                    log::debug!("{id}: {file} read {} failed: {e}", attempt + 1);
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
            let path = dir.join("resolution");
            match std::fs::write(&path, format!("{bits}\n")) {
                Ok(()) => {
                    log::info!("{id}: resolution set to {bits} bits");
                    self.applied.insert(id.clone());
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

    /// The bus masters' `therm_bulk_read` files.
    fn bulk_files(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut v: Vec<PathBuf> = rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("w1_bus_master"))
            .map(|e| e.path().join("therm_bulk_read"))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    }

    /// Triggers a bulk conversion on every master and waits, bounded, until
    /// none reports `-1`. False when there is no bulk read to use.
    fn bulk_convert(&mut self) -> bool {
        if !self.bulk_read {
            return false;
        }
        let files = self.bulk_files();
        if files.is_empty() {
            return false;
        }
        for f in &files {
            if let Err(e) = std::fs::write(f, "trigger") {
                if self.warned.insert(f.display().to_string()) {
                    log::warn!(
                        "{}: {e}: reading each sensor instead (one conversion each){}",
                        f.display(),
                        permission_hint(&e)
                    );
                }
                return false;
            }
        }
        let deadline = Instant::now() + self.bulk_timeout;
        loop {
            let busy = files.iter().any(|f| {
                let state = std::fs::read_to_string(f)
                    .map_err(|e| malformed(&e.to_string()))
                    .and_then(|s| parse_bulk_state(&s));
                // Anything but a clear 0 or 1 counts as still converting.
                !matches!(state, Ok(BulkState::Idle | BulkState::Ready))
            });
            if !busy {
                return true;
            }
            if Instant::now() >= deadline {
                log::warn!(
                    "bulk conversion still pending after {} ms: reading anyway",
                    self.bulk_timeout.as_millis()
                );
                return true;
            }
            std::thread::sleep(BULK_POLL);
        }
    }

    /// The `28-*` device directories under the root, sorted.
    fn list_devices(&self) -> Result<Vec<String>, BackendError> {
        self.check_root()?;
        let rd = std::fs::read_dir(&self.root).map_err(|source| BackendError::Io {
            path: self.root.clone(),
            source,
        })?;
        let mut ids: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| n.starts_with("28-"))
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn read_small(&self, id: &str, file: &str) -> Option<String> {
        self.read_device_file(id, file)
            .ok()
            .map(|(_, s)| s.trim().to_string())
    }
}

impl Backend for W1SysfsBackend {
    fn sweep(&mut self, ids: &[String]) -> Vec<Sample> {
        self.apply_resolutions(ids);
        let file = if self.bulk_convert() {
            "temperature"
        } else {
            "w1_slave"
        };
        ids.iter()
            .map(|id| Sample {
                id: id.clone(),
                read: self.read_retrying(id, file),
            })
            .collect()
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
            .map(|s| Found {
                resolution_bits: self
                    .read_small(&s.id, "resolution")
                    .and_then(|r| r.parse::<u8>().ok()),
                parasite: match self.read_small(&s.id, "ext_power").as_deref() {
                    Some("0") => Some(true),
                    Some("1") => Some(false),
                    _ => None,
                },
                id: s.id,
                celsius: s.read,
            })
            .collect())
    }

    fn sweep_budget(&self, sensors: usize) -> Duration {
        let n = u32::try_from(sensors).unwrap_or(u32::MAX);
        let conv = Resolution::Bits12.conversion_time();
        if self.bulk_read {
            // One bulk conversion; a retried read costs a conversion.
            self.bulk_timeout + (conv / 10) * n
        } else {
            // A conversion per w1_slave read, retries included.
            conv * (RETRIES + 1) * n + BULK_MARGIN
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
