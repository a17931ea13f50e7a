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
use crate::onewire::{check_scratchpad, family_code_of_id, ThermFamily};

mod bulk;
mod format;
mod timing;

pub use format::*;
pub use timing::*;

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
