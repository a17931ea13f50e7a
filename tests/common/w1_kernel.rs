//! A stand-in for the Linux kernel's w1_therm driver, written from its
//! source (`drivers/w1/slaves/w1_therm.c`, torvalds/linux at
//! 021da53e65fdd0e1b8492c2670dd075c0ea910fc); every behaviour below names
//! the kernel function it comes from.
//!
//! The tree it serves has the kernel's layout: `devices/` (what thermalert
//! reads as `/sys/bus/w1/devices`) holds symlinks to the bus master
//! (`w1_bus_master1`) and to each slave's directory under it, like the
//! sysfs bus directory does. Each sysfs attribute is a named pipe (FIFO)
//! served by this process, so a read runs the kernel's `*_show()` at the
//! moment of the read and blocks while it converts, and a write hands the
//! exact bytes and their count to its `*_store()`:
//! - read-only attributes (`w1_slave`, `temperature`, `ext_power`,
//!   `conv_time`) have a thread blocked opening the FIFO for writing,
//!   which wakes when a reader opens it;
//! - attributes that are also written (`therm_bulk_read`, `resolution`)
//!   alternate between two FIFO inodes: every period the path is renamed
//!   to the other inode, then the one just taken away is served (a reader
//!   waiting on it gets the `show()`, a writer's bytes go to `store()`),
//!   so no opener can arrive on an inode while it is being probed.
//!
//! Not modelled: `w1_slave_store()` (resolution / EEPROM through
//! `w1_slave`), `conv_time_store()` through the file (tests set the
//! override with [`W1Kernel::set_conv_time`], which does what it does),
//! `eeprom`, `alarms`, `features`, `w1_seq`, and errors a `*_store()`
//! returns: a real kernel hands them to the writer, a FIFO cannot (they
//! are logged as [`Kind::Log`] instead). Bus operations cost
//! [`W1Kernel::WIRE`] each; devices finish any conversion in the time the
//! kernel waits for it, so a `conv_time` override scales time.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which driver to behave like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The driver as it is now: `therm_bulk_read`, `temperature`,
    /// `resolution`, `ext_power`, `conv_time`; from 5.10 a scratchpad that
    /// fails its CRC gives an empty `w1_slave` (`read_scratchpad()` returns
    /// -EIO, `w1_slave_show()` returns 0 bytes).
    Current,
    /// Before that rework (Raspberry Pi kernels up to 5.4): only
    /// `w1_slave`, which prints the verdict `NO` on a CRC failure; no bulk
    /// read, no `conv_time`.
    Legacy,
}

/// How a device answers on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Normal,
    /// Every bit read 0 (a half-connected sensor holding the line low):
    /// nine zero bytes, whose CRC is 0.
    AllZeros,
    /// The CRC byte does not match.
    BadCrc,
    /// No presence pulse: `reset_select_slave()` fails.
    Absent,
}

/// Something the stand-in did, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: Instant,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `therm_bulk_read_store()` got `size` bytes; `triggered` when it
    /// called `trigger_bulk_read()` and that started a conversion.
    BulkStore { size: usize, triggered: bool },
    /// A bulk conversion ended (`trigger_bulk_read()`'s `set_flag`).
    BulkDone,
    /// `convert_t()`: one sensor converted on its own (ended at `at`).
    Convert { id: String },
    /// A `*_show()` served (`id` is the master's name for its attributes).
    Shown {
        id: String,
        attr: &'static str,
        text: String,
    },
    /// A `*_store()` served.
    Stored {
        id: String,
        attr: &'static str,
        bytes: Vec<u8>,
    },
    /// A kernel log line (`dev_info`, `dev_warn`).
    Log(String),
}

const W1_THERM_MAX_TRY: usize = 5;
const ENODEV: i32 = 19;
const EIO: i32 = 5;
const EINVAL: i32 = 22;
const EAGAIN: i32 = 11;

/// `w1_therm_families[]`: (family, bulk_read, has a `resolution` attribute).
fn family_info(fid: u8) -> Option<(bool, bool)> {
    match fid {
        0x10 => Some((true, false)), // DS18S20: w1_ds18s20_attrs, no resolution
        0x22 | 0x28 | 0x3B => Some((true, true)),
        0x42 => Some((false, true)), // DS28EA00: .bulk_read = false
        _ => None,
    }
}

/// w1_calc_crc8() (drivers/w1/w1_io.c), bit by bit.
fn crc8(data: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &b in data {
        let mut x = b;
        for _ in 0..8 {
            let mix = (crc ^ x) & 1;
            crc >>= 1;
            if mix != 0 {
                crc ^= 0x8C;
            }
            x >>= 1;
        }
    }
    crc
}

/// A device on the wire: its scratchpad registers and how it answers.
#[derive(Debug, Clone)]
struct Device {
    fid: u8,
    celsius: f64,
    /// Bytes 0..=7 of the scratchpad (byte 8, the CRC, computed on read).
    ram: [u8; 8],
    answer: Answer,
    parasite: bool,
}

impl Device {
    fn new(fid: u8, celsius: f64) -> Self {
        // Power-on: +85 C, byte 6 = 0x0C; configuration 12 bit (R1 R0 = 11);
        // DS1825 address pins AD3..0 = 0101 in bits 3..0, bit 4 reads 1.
        let ram = match fid {
            0x10 => [0xAA, 0x00, 0x4B, 0x46, 0xFF, 0xFF, 0x0C, 0x10],
            0x3B => [0x50, 0x05, 0x4B, 0x46, 0x75, 0xFF, 0x0C, 0x10],
            _ => [0x50, 0x05, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10],
        };
        Self {
            fid,
            celsius,
            ram,
            answer: Answer::Normal,
            parasite: false,
        }
    }

    /// Convert T finished: the temperature register takes the reading.
    fn convert(&mut self) {
        let q = (self.celsius * 16.0).round() as i32; // 1/16 C
        if self.fid == 0x10 {
            // DS18S20: 0.5 C register, COUNT_REMAIN for the rest, COUNT_PER_C 16:
            // T = TEMP_READ - 0.25 + (16 - COUNT_REMAIN) / 16.
            let k = (q + 4).div_euclid(16);
            let r = (q + 4).rem_euclid(16);
            let reg = (k * 2) as i16;
            let [lo, hi] = reg.to_le_bytes();
            self.ram[0] = lo;
            self.ram[1] = hi;
            self.ram[6] = (16 - r) as u8;
        } else {
            let bits = ((self.ram[4] >> 5) & 3) + 9;
            let mask = !((1i32 << (12 - bits)) - 1);
            let raw = (q.clamp(i16::MIN.into(), i16::MAX.into()) & mask) as i16;
            let [lo, hi] = raw.to_le_bytes();
            self.ram[0] = lo;
            self.ram[1] = hi;
            self.ram[6] = 0x10 - (lo & 0x0F);
        }
    }

    /// The nine bytes a Read Scratchpad returns.
    fn scratchpad(&self) -> [u8; 9] {
        let mut sp = [0u8; 9];
        match self.answer {
            Answer::AllZeros | Answer::Absent => {}
            Answer::Normal | Answer::BadCrc => {
                sp[..8].copy_from_slice(&self.ram);
                sp[8] = crc8(&self.ram);
                if self.answer == Answer::BadCrc {
                    sp[8] ^= 0x5A;
                }
            }
        }
        sp
    }
}

/// `struct w1_therm_family_data` plus the device behind it.
#[derive(Debug, Clone)]
struct Slave {
    /// `rom`: the last scratchpad read with a good CRC.
    rom: [u8; 9],
    external_powered: i32,
    resolution: i32,
    convert_triggered: i32,
    conv_time_override: i32,
    features: u32,
    dev: Device,
}

/// `struct therm_info`.
#[derive(Debug, Clone, Copy, Default)]
struct ThermInfo {
    rom: [u8; 9],
    crc: u8,
    verdict: bool,
}

struct Bus {
    version: Version,
    slaves: BTreeMap<String, Slave>,
    /// `bulk_read_device_counter`.
    bulk_read_device_counter: u16,
    /// `trigger_bulk_read()` is in its `msleep_interruptible(t_conv)`
    /// until then.
    bulk_done_at: Option<Instant>,
    /// With a strong pull-up the bus mutex is held through the conversion.
    bus_held_until: Option<Instant>,
    /// `w1_strong_pullup` (module parameter, default 1).
    strong_pullup: i32,
    /// Another driver holds the bus mutex longer than `bus_mutex_lock()`
    /// waits (`W1_THERM_MAX_TRY` x `W1_THERM_RETRY_DELAY`) whenever a bulk
    /// read is triggered: `trigger_bulk_read()` returns -EAGAIN.
    bus_contended: bool,
}

struct Shared {
    /// Held from before a writer can finish its write until `store()` is
    /// done: a sysfs write returns only after its store, a FIFO write as
    /// soon as its bytes are in the pipe, so every show waits here first
    /// (the writer's next read then sees what its write did).
    store_gate: Mutex<()>,
    bus: Mutex<Bus>,
    /// `dev_master->bus_mutex`.
    bus_mutex: Mutex<()>,
    events: Mutex<Vec<Event>>,
    cv: Condvar,
    wire: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn event(&self, kind: Kind) {
        self.event_at(Instant::now(), kind);
    }

    fn event_at(&self, at: Instant, kind: Kind) {
        lock(&self.events).push(Event { at, kind });
        self.cv.notify_all();
    }

    fn log(&self, line: String) {
        self.event(Kind::Log(line));
    }

    /// `bus_mutex_lock()`, waiting out a strong pull-up still held by a
    /// bulk conversion.
    fn bus_lock(&self) -> MutexGuard<'_, ()> {
        loop {
            let until = lock(&self.bus).bus_held_until;
            match until {
                Some(t) if t > Instant::now() => std::thread::sleep(t - Instant::now()),
                _ => break,
            }
        }
        lock(&self.bus_mutex)
    }

    /// Completes a bulk conversion whose time is up (`trigger_bulk_read()`
    /// wakes from its sleep, and its `set_flag` marks every slave with
    /// bulk read as converted: `SLAVE_CONVERT_TRIGGERED(sl) = 1`).
    fn settle(&self) {
        let mut bus = lock(&self.bus);
        let Some(done) = bus.bulk_done_at else {
            return;
        };
        if Instant::now() < done {
            return;
        }
        bus.bulk_done_at = None;
        bus.bus_held_until = None;
        for sl in bus.slaves.values_mut() {
            if family_info(sl.dev.fid).is_some_and(|f| f.0) {
                if sl.dev.answer == Answer::Normal {
                    sl.dev.convert();
                }
                sl.convert_triggered = 1;
            }
        }
        drop(bus);
        self.event_at(done, Kind::BulkDone);
    }

    /// `conversion_time()`: `w1_DS18S20_convert_time()` /
    /// `w1_DS18B20_convert_time()`, the override first.
    fn conversion_time(sl: &Slave) -> i32 {
        if sl.conv_time_override != 0 {
            return sl.conv_time_override;
        }
        if sl.dev.fid == 0x10 {
            return 750;
        }
        match sl.resolution {
            9 => 95,
            10 => 190,
            11 => 375,
            _ => 750,
        }
    }

    /// `temperature_from_RAM()`: `w1_DS18S20_convert_temp()` or
    /// `w1_DS18B20_convert_temp()`.
    fn temperature_from_ram(fid: u8, rom: &[u8; 9]) -> i32 {
        if fid == 0x10 {
            if rom[7] == 0 {
                return 0;
            }
            let mut t = if rom[1] == 0 {
                (i32::from(rom[0]) >> 1) * 1000
            } else {
                1000 * ((-(0x100 - i32::from(rom[0]))) >> 1)
            };
            t -= 250;
            let mut h = 1000 * (i32::from(rom[7]) - i32::from(rom[6]));
            h /= i32::from(rom[7]);
            t + h
        } else {
            let t = i16::from_le_bytes([rom[0], rom[1]]);
            i32::from(t) * 1000 / 16
        }
    }

    /// `read_scratchpad()`: reset + Match ROM + Read Scratchpad, up to
    /// `W1_THERM_MAX_TRY` times until the CRC matches; -EIO when it never
    /// does, -ENODEV when the device never answers the reset.
    fn read_scratchpad(&self, id: &str) -> Result<ThermInfo, i32> {
        let _bus = self.bus_lock();
        let mut ret = -ENODEV;
        let mut info = ThermInfo::default();
        for _ in 0..W1_THERM_MAX_TRY {
            let dev = match lock(&self.bus).slaves.get(id) {
                Some(sl) => sl.dev.clone(),
                None => return Err(-ENODEV),
            };
            if dev.answer == Answer::Absent {
                continue; // reset_select_slave(): no presence pulse
            }
            std::thread::sleep(self.wire);
            info.rom = dev.scratchpad();
            info.crc = crc8(&info.rom[..8]);
            if info.rom[8] == info.crc {
                info.verdict = true;
                ret = 0;
                break;
            }
            ret = -EIO;
        }
        if ret == 0 {
            Ok(info)
        } else {
            Err(ret)
        }
    }

    /// `convert_t()`: select, Convert T, wait `conversion_time()` (with the
    /// bus held when a strong pull-up is needed: parasite power), then
    /// `read_scratchpad()`.
    fn convert_t(&self, id: &str) -> Result<ThermInfo, i32> {
        let (t_conv, strong_pullup, absent) = {
            let bus = lock(&self.bus);
            let Some(sl) = bus.slaves.get(id) else {
                return Err(-ENODEV);
            };
            (
                Self::conversion_time(sl),
                bus.strong_pullup == 2 || (sl.external_powered == 0 && bus.strong_pullup != 0),
                sl.dev.answer == Answer::Absent,
            )
        };
        if absent {
            // reset_select_slave() fails W1_THERM_MAX_TRY times.
            return Err(-ENODEV);
        }
        let t_conv = Duration::from_millis(u64::try_from(t_conv).unwrap_or(750));
        {
            let bus = self.bus_lock();
            std::thread::sleep(self.wire);
            if strong_pullup {
                std::thread::sleep(t_conv);
                drop(bus);
            } else {
                drop(bus);
                std::thread::sleep(t_conv);
            }
        }
        if let Some(sl) = lock(&self.bus).slaves.get_mut(id) {
            if sl.dev.answer == Answer::Normal {
                sl.dev.convert();
            }
        }
        self.event(Kind::Convert { id: id.into() });
        let info = self.read_scratchpad(id)?;
        let features = lock(&self.bus).slaves.get(id).map_or(0, |s| s.features);
        // W1_THERM_CHECK_RESULT: 85.00 or 127.94 with byte 6 = 0x0C.
        if features & 1 != 0
            && info.rom[6] == 0xC
            && ((info.rom[1] == 0x5 && info.rom[0] == 0x50)
                || (info.rom[1] == 0x7 && info.rom[0] == 0xFF))
        {
            return Err(-EIO);
        }
        Ok(info)
    }

    /// The reading part shared by `w1_slave_show()` and
    /// `temperature_show()`: a pending bulk conversion gives nothing
    /// ("Conversion in progress, retry later"), a finished one is read
    /// from the device RAM without converting (and the flag cleared),
    /// otherwise `convert_t()`. `None`: the show returns 0 bytes.
    fn read_for_show(&self, id: &str, attr: &str) -> Option<ThermInfo> {
        let (bulk, flag) = {
            let bus = lock(&self.bus);
            let sl = bus.slaves.get(id)?;
            (
                family_info(sl.dev.fid).is_some_and(|f| f.0),
                sl.convert_triggered,
            )
        };
        let ret = if bulk && flag < 0 {
            self.log(format!(
                "{id}: {attr}_show: Conversion in progress, retry later"
            ));
            return None;
        } else if bulk && flag > 0 {
            let r = self.read_scratchpad(id);
            if let Some(sl) = lock(&self.bus).slaves.get_mut(id) {
                sl.convert_triggered = 0;
            }
            r
        } else {
            self.convert_t(id)
        };
        match ret {
            Ok(info) => Some(info),
            Err(e) => {
                self.log(format!(
                    "{id}: {attr}_show: Temperature data may be corrupted. err={e}"
                ));
                None
            }
        }
    }

    /// `w1_slave_show()`.
    fn w1_slave_show(&self, id: &str) -> String {
        if lock(&self.bus).version == Version::Legacy {
            return self.legacy_w1_slave_show(id);
        }
        let Some(info) = self.read_for_show(id, "w1_slave") else {
            return String::new();
        };
        self.print_w1_slave(id, &info)
    }

    /// `w1_slave_show()` before the rework: convert, read, and print the
    /// verdict whatever it is (`NO` on a CRC failure, zeros with `NO` when
    /// the device does not answer). One attempt here.
    fn legacy_w1_slave_show(&self, id: &str) -> String {
        let (t_conv, absent) = {
            let bus = lock(&self.bus);
            let Some(sl) = bus.slaves.get(id) else {
                return String::new();
            };
            (Self::conversion_time(sl), sl.dev.answer == Answer::Absent)
        };
        let mut info = ThermInfo::default();
        if !absent {
            std::thread::sleep(
                self.wire + Duration::from_millis(u64::try_from(t_conv).unwrap_or(750)),
            );
            if let Some(sl) = lock(&self.bus).slaves.get_mut(id) {
                if sl.dev.answer == Answer::Normal {
                    sl.dev.convert();
                }
            }
            self.event(Kind::Convert { id: id.into() });
            std::thread::sleep(self.wire);
            if let Some(sl) = lock(&self.bus).slaves.get(id) {
                info.rom = sl.dev.scratchpad();
            }
            info.crc = crc8(&info.rom[..8]);
            info.verdict = info.rom[8] == info.crc;
        }
        self.print_w1_slave(id, &info)
    }

    /// The two lines `w1_slave_show()` prints (both versions): the bytes
    /// read with `crc=xx YES|NO`, then the slave's last good scratchpad
    /// (updated only on a good CRC) with `t=`.
    fn print_w1_slave(&self, id: &str, info: &ThermInfo) -> String {
        let mut bus = lock(&self.bus);
        let Some(sl) = bus.slaves.get_mut(id) else {
            return String::new();
        };
        let mut out = String::new();
        for b in info.rom {
            out.push_str(&format!("{b:02x} "));
        }
        out.push_str(&format!(
            ": crc={:02x} {}\n",
            info.crc,
            if info.verdict { "YES" } else { "NO" }
        ));
        if info.verdict {
            sl.rom = info.rom;
        }
        for b in sl.rom {
            out.push_str(&format!("{b:02x} "));
        }
        out.push_str(&format!(
            "t={}\n",
            Self::temperature_from_ram(sl.dev.fid, &info.rom)
        ));
        out
    }

    /// `temperature_show()`.
    fn temperature_show(&self, id: &str) -> String {
        let Some(info) = self.read_for_show(id, "temperature") else {
            return String::new();
        };
        let fid = lock(&self.bus).slaves.get(id).map_or(0x28, |s| s.dev.fid);
        format!("{}\n", Self::temperature_from_ram(fid, &info.rom))
    }

    /// `read_powermode()`: Read Power Supply, one read slot; 1 external,
    /// 0 parasite, -ENODEV without a presence pulse.
    fn read_powermode(&self, id: &str) -> i32 {
        let _bus = self.bus_lock();
        let dev = lock(&self.bus).slaves.get(id).map(|s| s.dev.clone());
        match dev {
            Some(d) if d.answer != Answer::Absent => {
                std::thread::sleep(self.wire);
                i32::from(!d.parasite)
            }
            _ => -ENODEV,
        }
    }

    /// `ext_power_show()`.
    fn ext_power_show(&self, id: &str) -> String {
        let p = self.read_powermode(id);
        if let Some(sl) = lock(&self.bus).slaves.get_mut(id) {
            sl.external_powered = p;
        }
        format!("{p}\n")
    }

    /// `w1_DS18B20_get_resolution()`: bits 6..5 of byte 4, plus 9.
    fn get_resolution(&self, id: &str) -> i32 {
        match self.read_scratchpad(id) {
            Ok(info) => i32::from((info.rom[4] & 0x60) >> 5) + 9,
            Err(e) => e,
        }
    }

    /// `resolution_show()`: prints what `get_resolution()` returned, an
    /// error code included.
    fn resolution_show(&self, id: &str) -> String {
        let r = self.get_resolution(id);
        if let Some(sl) = lock(&self.bus).slaves.get_mut(id) {
            sl.resolution = r;
        }
        format!("{r}\n")
    }

    /// `w1_DS18B20_set_resolution()`: 9..=12 only; read the scratchpad,
    /// write TH, TL and byte 4 with bits 6..5 replaced, read back (clones
    /// that ignore it give -EIO).
    fn set_resolution(&self, id: &str, val: i32) -> i32 {
        if !(9..=12).contains(&val) {
            return -EINVAL;
        }
        let info = match self.read_scratchpad(id) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let config = (info.rom[4] & 0x9F) | (((val - 9) as u8) << 5);
        {
            let _bus = self.bus_lock();
            std::thread::sleep(self.wire);
            if let Some(sl) = lock(&self.bus).slaves.get_mut(id) {
                if sl.dev.answer == Answer::Normal {
                    sl.dev.ram[4] = config;
                }
            }
        }
        match self.read_scratchpad(id) {
            Ok(back) if back.rom[4] & 0x9F == info.rom[4] & 0x9F => 0,
            Ok(_) => -EIO,
            Err(e) => e,
        }
    }

    /// `resolution_store()`: `kstrtoint()` (a trailing newline allowed),
    /// then the family's `set_resolution()`; on success the resolution is
    /// kept and the conversion time override reset to the default.
    fn resolution_store(&self, id: &str, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let t = text.strip_suffix('\n').unwrap_or(&text);
        let Ok(val) = t.parse::<i32>() else {
            self.log(format!(
                "{id}: resolution_store: conversion error. err= -22"
            ));
            return;
        };
        let ret = self.set_resolution(id, val);
        if ret != 0 {
            self.log(format!(
                "{id}: resolution_store: error {ret} (returned to the writer by a real kernel)"
            ));
            return;
        }
        if let Some(sl) = lock(&self.bus).slaves.get_mut(id) {
            sl.resolution = val;
            sl.conv_time_override = 0;
        }
    }

    /// `conv_time_show()`.
    fn conv_time_show(&self, id: &str) -> String {
        lock(&self.bus)
            .slaves
            .get(id)
            .map(|sl| format!("{}\n", Self::conversion_time(sl)))
            .unwrap_or_default()
    }

    /// `therm_bulk_read_show()`: -1 if any slave with bulk read is
    /// converting, else 1 if any has a result not read yet, else 0.
    fn therm_bulk_read_show(&self) -> String {
        let bus = lock(&self.bus);
        let mut ret = 0;
        for sl in bus.slaves.values() {
            if family_info(sl.dev.fid).is_some_and(|f| f.0) {
                if sl.convert_triggered == -1 {
                    ret = -1;
                    break;
                }
                if sl.convert_triggered == 1 {
                    ret = 1;
                }
            }
        }
        format!("{ret}\n")
    }

    /// `therm_bulk_read_store()`: acts only when
    /// `size == sizeof(BULK_TRIGGER_CMD)` (8: `"trigger"` and its NUL, so
    /// `"trigger\n"`) and the first 7 bytes say `trigger`; otherwise
    /// -EINVAL, logged, and `size` returned to the writer all the same.
    fn therm_bulk_read_store(&self, bytes: &[u8]) {
        let mut ret = -EINVAL;
        if bytes.len() == b"trigger\0".len() && bytes.starts_with(b"trigger") {
            ret = self.trigger_bulk_read();
        }
        if ret != 0 {
            self.log(format!(
                "w1_bus_master1: therm_bulk_read_store: unable to trigger a bulk read on the bus. err={ret}"
            ));
        }
        self.event(Kind::BulkStore {
            size: bytes.len(),
            triggered: ret == 0,
        });
    }

    /// `trigger_bulk_read()`: the longest conversion time of the slaves
    /// with bulk read (none: -ENODEV), a strong pull-up if any of them is
    /// parasite powered, reset + Skip ROM + Convert T, every such slave
    /// flagged -1, then the sleep (done here when its time is up:
    /// [`Shared::settle`]).
    fn trigger_bulk_read(&self) -> i32 {
        let (t_conv, strong_pullup) = {
            let bus = lock(&self.bus);
            let mut t_conv = 0;
            let mut strong = false;
            for sl in bus.slaves.values() {
                if family_info(sl.dev.fid).is_some_and(|f| f.0) {
                    t_conv = t_conv.max(Self::conversion_time(sl));
                    strong = strong
                        || bus.strong_pullup == 2
                        || (sl.external_powered == 0 && bus.strong_pullup != 0);
                }
            }
            (t_conv, strong)
        };
        if t_conv == 0 {
            return -ENODEV;
        }
        if lock(&self.bus).bus_contended {
            return -EAGAIN;
        }
        let _bus = self.bus_lock();
        std::thread::sleep(self.wire);
        let done = Instant::now() + Duration::from_millis(u64::try_from(t_conv).unwrap_or(750));
        let mut bus = lock(&self.bus);
        for sl in bus.slaves.values_mut() {
            if family_info(sl.dev.fid).is_some_and(|f| f.0) {
                sl.convert_triggered = -1;
            }
        }
        bus.bulk_done_at = Some(done);
        if strong_pullup {
            bus.bus_held_until = Some(done);
        }
        0
    }

    fn show(&self, target: &Target) -> String {
        self.settle();
        let text = match target {
            Target::Slave(id, attr) => match *attr {
                "w1_slave" => self.w1_slave_show(id),
                "temperature" => self.temperature_show(id),
                "ext_power" => self.ext_power_show(id),
                "resolution" => self.resolution_show(id),
                "conv_time" => self.conv_time_show(id),
                _ => String::new(),
            },
            Target::BulkRead => self.therm_bulk_read_show(),
        };
        self.event(Kind::Shown {
            id: target.id(),
            attr: target.attr(),
            text: text.clone(),
        });
        text
    }

    fn store(&self, target: &Target, bytes: &[u8]) {
        self.settle();
        self.event(Kind::Stored {
            id: target.id(),
            attr: target.attr(),
            bytes: bytes.to_vec(),
        });
        match target {
            Target::Slave(id, "resolution") => self.resolution_store(id, bytes),
            Target::BulkRead => self.therm_bulk_read_store(bytes),
            Target::Slave(id, attr) => {
                self.log(format!("{id}: {attr}: write not modelled"));
            }
        }
    }
}

/// What a file serves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Slave(String, &'static str),
    BulkRead,
}

impl Target {
    fn id(&self) -> String {
        match self {
            Target::Slave(id, _) => id.clone(),
            Target::BulkRead => "w1_bus_master1".into(),
        }
    }
    fn attr(&self) -> &'static str {
        match self {
            Target::Slave(_, a) => a,
            Target::BulkRead => "therm_bulk_read",
        }
    }
}

fn mkfifo(paths: &[PathBuf]) {
    if paths.is_empty() {
        return;
    }
    let st = Command::new("mkfifo")
        .arg("-m")
        .arg("0644")
        .args(paths)
        .status()
        .expect("run mkfifo");
    assert!(st.success(), "mkfifo {paths:?}");
}

fn open_nonblock(path: &Path, write: bool) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Wakes whoever is blocked opening `path`: a thread waiting for a reader
/// gets one that closes at once, a writer waiting for a reader too.
fn wake(path: &Path) {
    let _ = open_nonblock(path, false);
    let _ = open_nonblock(path, true);
}

/// An attribute's path and the two FIFO inodes it alternates between.
struct Inodes {
    path: PathBuf,
    inodes: [PathBuf; 2],
    tmp: PathBuf,
    live: usize,
}

impl Inodes {
    fn new(hidden: &Path, n: usize, path: PathBuf) -> Inodes {
        Inodes {
            inodes: [hidden.join(format!("{n}.a")), hidden.join(format!("{n}.b"))],
            tmp: hidden.join(format!("{n}.tmp")),
            path,
            live: 0,
        }
    }

    /// Links the path to the first inode (the FIFOs exist by now).
    fn install(&self) {
        std::fs::hard_link(&self.inodes[0], &self.path).expect("link attribute");
    }

    /// Points the path at the other inode (atomically: `rename()`); an
    /// opener from now on lands there. Returns the inode left.
    fn turn(&mut self) -> Option<usize> {
        let old = self.live;
        let new = 1 - old;
        let _ = std::fs::remove_file(&self.tmp);
        std::fs::hard_link(&self.inodes[new], &self.tmp).ok()?;
        std::fs::rename(&self.tmp, &self.path).ok()?;
        self.live = new;
        Some(old)
    }

    /// Waits until no reader holds `inode` open any more (one served
    /// earlier that has not closed yet): a probe open as a writer finds
    /// one, and closing it at once only hands that reader its EOF.
    fn wait_no_readers(&self, inode: usize, stop: &AtomicBool) {
        let give_up = Instant::now() + Duration::from_secs(2);
        while let Ok(f) = open_nonblock(&self.inodes[inode], true) {
            drop(f);
            if stop.load(Ordering::SeqCst) || Instant::now() > give_up {
                return;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    fn release(&self) {
        for i in &self.inodes {
            wake(i);
        }
    }
}

/// A read-only attribute's server: a thread blocked opening the live
/// inode for writing until a reader opens it; it turns the path to the
/// other inode before serving, so the reader it serves sees its EOF (no
/// writer opens that inode again until the reader is gone).
struct RoFile {
    inodes: [PathBuf; 2],
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RoFile {
    fn start(shared: Arc<Shared>, mut ino: Inodes, target: Target) -> RoFile {
        ino.install();
        let stop = Arc::new(AtomicBool::new(false));
        let inodes = ino.inodes.clone();
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("w1 {}", target.attr()))
            .stack_size(256 * 1024)
            .spawn(move || loop {
                // Blocks until a reader opens the FIFO.
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&ino.inodes[ino.live]);
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut f) = f else {
                    return;
                };
                ino.wait_no_readers(1 - ino.live, &s);
                if ino.turn().is_none() {
                    return;
                }
                drop(lock(&shared.store_gate));
                let text = shared.show(&target);
                // A reader that went away meanwhile: EPIPE, ignored.
                let _ = f.write_all(text.as_bytes());
            })
            .expect("spawn w1 attribute thread");
        RoFile {
            inodes,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Hold readers open until the thread is out of its open().
        let guards: Vec<_> = self
            .inodes
            .iter()
            .map(|i| open_nonblock(i, false))
            .collect();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        drop(guards);
    }
}

/// An attribute that is read and written: every period the path turns to
/// the other inode, and the inode it left is served.
struct RwFile {
    ino: Inodes,
    target: Target,
    period: Duration,
    next: Instant,
}

impl RwFile {
    fn turn(&mut self, shared: &Shared) {
        self.ino
            .wait_no_readers(1 - self.ino.live, &AtomicBool::new(false));
        if let Some(old) = self.ino.turn() {
            Self::serve(&self.ino.inodes[old], &self.target, shared);
        }
    }

    fn serve(inode: &Path, target: &Target, shared: &Shared) {
        // A reader waiting: it gets the show. One per turn: a second open
        // would find the same reader until it has read and closed, and
        // nothing opens this inode again before the path turns back.
        if let Ok(mut f) = open_nonblock(inode, true) {
            let text = shared.show(target);
            let _ = f.write_all(text.as_bytes());
            return;
        }
        // A writer waiting: its bytes, up to its close, go to the store.
        let _gate = lock(&shared.store_gate);
        let Ok(mut f) = open_nonblock(inode, false) else {
            return;
        };
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        let give_up = Instant::now() + Duration::from_secs(2);
        loop {
            match f.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() > give_up {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err(_) => break,
            }
        }
        if !bytes.is_empty() {
            shared.store(target, &bytes);
        }
    }
}

/// The stand-in kernel with one bus master, `w1_bus_master1`.
pub struct W1Kernel {
    dir: tempfile::TempDir,
    shared: Arc<Shared>,
    ro: Mutex<BTreeMap<String, Vec<RoFile>>>,
    rw: Arc<Mutex<Vec<RwFile>>>,
    rw_stop: Arc<AtomicBool>,
    rw_thread: Option<JoinHandle<()>>,
    counter: AtomicUsize,
}

impl W1Kernel {
    /// One bus operation (reset, Match ROM, nine bytes): about 11 ms at
    /// standard speed (datasheet timing).
    pub const WIRE: Duration = Duration::from_millis(11);
    /// How often a written attribute changes inode (`therm_bulk_read`).
    pub const TURN: Duration = Duration::from_millis(1);
    /// The same for each sensor's `resolution`.
    pub const TURN_SLOW: Duration = Duration::from_millis(5);

    pub fn start(version: Version) -> W1Kernel {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["devices", "sys/w1_bus_master1", "fifo"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        std::os::unix::fs::symlink(
            "../sys/w1_bus_master1",
            dir.path().join("devices/w1_bus_master1"),
        )
        .expect("symlink master");
        let shared = Arc::new(Shared {
            store_gate: Mutex::new(()),
            bus: Mutex::new(Bus {
                version,
                slaves: BTreeMap::new(),
                bulk_read_device_counter: 0,
                bulk_done_at: None,
                bus_held_until: None,
                strong_pullup: 1,
                bus_contended: false,
            }),
            bus_mutex: Mutex::new(()),
            events: Mutex::new(Vec::new()),
            cv: Condvar::new(),
            wire: Self::WIRE,
        });
        let rw: Arc<Mutex<Vec<RwFile>>> = Arc::new(Mutex::new(Vec::new()));
        let rw_stop = Arc::new(AtomicBool::new(false));
        let rw_thread = {
            let (rw, stop, shared) = (rw.clone(), rw_stop.clone(), shared.clone());
            std::thread::Builder::new()
                .name("w1 rw".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let mut next = Instant::now() + Self::TURN;
                        {
                            let mut files = lock(&rw);
                            for f in files.iter_mut() {
                                if Instant::now() >= f.next {
                                    f.turn(&shared);
                                    f.next = Instant::now() + f.period;
                                }
                                next = next.min(f.next);
                            }
                        }
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                    }
                })
                .expect("spawn w1 rw thread")
        };
        W1Kernel {
            dir,
            shared,
            ro: Mutex::new(BTreeMap::new()),
            rw,
            rw_stop,
            rw_thread: Some(rw_thread),
            counter: AtomicUsize::new(0),
        }
    }

    /// What thermalert reads as `/sys/bus/w1/devices`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("devices")
    }

    fn master_dir(&self) -> PathBuf {
        self.dir.path().join("sys/w1_bus_master1")
    }

    pub fn bulk_file(&self) -> PathBuf {
        self.master_dir().join("therm_bulk_read")
    }

    fn inodes(&self, path: PathBuf) -> Inodes {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        Inodes::new(&self.dir.path().join("fifo"), n, path)
    }

    fn add_rw(&self, ino: Inodes, target: Target, period: Duration) {
        ino.install();
        lock(&self.rw).push(RwFile {
            ino,
            target,
            period,
            next: Instant::now(),
        });
    }

    fn remove_rw(&self, pred: impl Fn(&Target) -> bool) {
        let mut files = lock(&self.rw);
        let (gone, keep): (Vec<RwFile>, Vec<RwFile>) =
            files.drain(..).partition(|f| pred(&f.target));
        *files = keep;
        drop(files);
        for f in gone {
            let _ = std::fs::remove_file(&f.ino.path);
            f.ino.release();
        }
    }

    /// The w1 core found a slave on the bus: its directory and attributes
    /// appear, then `w1_therm_add_slave()` runs: the bus master gets
    /// `therm_bulk_read` with the first slave whose family has bulk read
    /// (`bulk_read_device_counter`), the power mode and resolution are
    /// read, and `convert_triggered` starts at 0.
    pub fn attach(&self, id: &str, celsius: f64) -> &Self {
        let fid = u8::from_str_radix(id.get(..2).expect("family"), 16).expect("hex family");
        let (bulk, has_resolution) = family_info(fid).expect("a w1_therm family");
        let version = lock(&self.shared.bus).version;
        let dev = Device::new(fid, celsius);
        let sl = Slave {
            rom: [0; 9],
            external_powered: i32::from(!dev.parasite),
            resolution: if has_resolution {
                i32::from((dev.ram[4] & 0x60) >> 5) + 9
            } else {
                0
            },
            convert_triggered: 0,
            conv_time_override: 0,
            features: 0,
            dev,
        };
        let first_bulk = {
            let mut bus = lock(&self.shared.bus);
            bus.slaves.insert(id.to_string(), sl);
            let first = bulk && bus.bulk_read_device_counter == 0;
            if bulk {
                bus.bulk_read_device_counter += 1;
            }
            first
        };
        let dir = self.master_dir().join(id);
        std::fs::create_dir_all(&dir).expect("mkdir slave");
        let ro_attrs: &[&'static str] = match version {
            Version::Legacy => &["w1_slave"],
            Version::Current => &["w1_slave", "temperature", "ext_power", "conv_time"],
        };
        let ro: Vec<Inodes> = ro_attrs.iter().map(|a| self.inodes(dir.join(a))).collect();
        let mut rw: Vec<(Inodes, Target, Duration)> = Vec::new();
        if version == Version::Current {
            if has_resolution {
                rw.push((
                    self.inodes(dir.join("resolution")),
                    Target::Slave(id.into(), "resolution"),
                    Self::TURN_SLOW,
                ));
            }
            if first_bulk {
                rw.push((self.inodes(self.bulk_file()), Target::BulkRead, Self::TURN));
            }
        }
        let fifos: Vec<PathBuf> = ro
            .iter()
            .chain(rw.iter().map(|r| &r.0))
            .flat_map(|i| i.inodes.iter().cloned())
            .collect();
        mkfifo(&fifos);
        let files = ro_attrs
            .iter()
            .zip(ro)
            .map(|(a, ino)| RoFile::start(self.shared.clone(), ino, Target::Slave(id.into(), a)))
            .collect();
        lock(&self.ro).insert(id.to_string(), files);
        for (ino, target, period) in rw {
            self.add_rw(ino, target, period);
        }
        std::os::unix::fs::symlink(format!("../sys/w1_bus_master1/{id}"), self.root().join(id))
            .expect("symlink slave");
        self
    }

    /// The slave left the bus: `w1_therm_remove_slave()` (the master's
    /// `therm_bulk_read` goes with the last slave that has bulk read),
    /// then its directory goes.
    pub fn detach(&self, id: &str) {
        let _ = std::fs::remove_file(self.root().join(id));
        let last_bulk = {
            let mut bus = lock(&self.shared.bus);
            let Some(sl) = bus.slaves.remove(id) else {
                return;
            };
            let bulk = family_info(sl.dev.fid).is_some_and(|f| f.0);
            if bulk {
                bus.bulk_read_device_counter -= 1;
            }
            bulk && bus.bulk_read_device_counter == 0
        };
        if let Some(files) = lock(&self.ro).remove(id) {
            for mut f in files {
                f.stop();
            }
        }
        let owned = id.to_string();
        self.remove_rw(|t| matches!(t, Target::Slave(i, _) if *i == owned));
        if last_bulk {
            self.remove_rw(|t| *t == Target::BulkRead);
        }
        let _ = std::fs::remove_dir_all(self.master_dir().join(id));
    }

    fn with_slave(&self, id: &str, f: impl FnOnce(&mut Slave)) {
        let mut bus = lock(&self.shared.bus);
        f(bus.slaves.get_mut(id).expect("attached slave"));
    }

    /// What the device will measure at its next conversion.
    pub fn set_celsius(&self, id: &str, celsius: f64) {
        self.with_slave(id, |s| s.dev.celsius = celsius);
    }

    pub fn set_answer(&self, id: &str, answer: Answer) {
        self.with_slave(id, |s| s.dev.answer = answer);
    }

    /// Parasite power: the kernel finds out with its next `read_powermode()`
    /// (`ext_power_show()`); here at once, as `w1_therm_add_slave()` would.
    pub fn set_parasite(&self, id: &str, parasite: bool) {
        self.with_slave(id, |s| {
            s.dev.parasite = parasite;
            s.external_powered = i32::from(!parasite);
        });
    }

    /// While `true`, `trigger_bulk_read()` cannot take the bus mutex and
    /// returns -EAGAIN: `therm_bulk_read_store()` logs it and the writer
    /// sees success; `therm_bulk_read` stays as it was.
    pub fn contend_bus(&self, contended: bool) {
        lock(&self.shared.bus).bus_contended = contended;
    }

    /// Sets byte `i` (0..8) of the device's scratchpad registers.
    pub fn set_ram(&self, id: &str, i: usize, value: u8) {
        self.with_slave(id, |s| s.dev.ram[i] = value);
    }

    /// `echo ms > conv_time` (`conv_time_store()`, any value but 1: the
    /// override; 0: back to the default).
    pub fn set_conv_time(&self, id: &str, ms: i32) {
        self.with_slave(id, |s| s.conv_time_override = ms);
    }

    /// [`set_conv_time`](Self::set_conv_time) on every slave.
    pub fn set_conv_time_all(&self, ms: i32) {
        for sl in lock(&self.shared.bus).slaves.values_mut() {
            sl.conv_time_override = ms;
        }
    }

    /// The device's configuration byte (scratchpad byte 4).
    pub fn config_byte(&self, id: &str) -> u8 {
        lock(&self.shared.bus)
            .slaves
            .get(id)
            .expect("slave")
            .dev
            .ram[4]
    }

    pub fn events(&self) -> Vec<Event> {
        lock(&self.shared.events).clone()
    }

    /// Waits until `pred` holds for the events so far (or panics after
    /// `timeout` with them); returns them.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let mut g = lock(&self.shared.events);
        loop {
            if pred(&g) {
                return g.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let tail: Vec<String> = g
                    .iter()
                    .rev()
                    .take(40)
                    .map(|e| format!("{:?}", e.kind))
                    .collect();
                panic!(
                    "stand-in kernel: timed out waiting for {what}; last events:\n{}",
                    tail.join("\n")
                );
            }
            g = self
                .shared
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The kernel log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e.kind {
                Kind::Log(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    /// How many conversions each sensor made on its own (`convert_t()`),
    /// and how many bulk conversions ended.
    pub fn conversions(&self) -> (BTreeMap<String, usize>, usize) {
        let mut per = BTreeMap::new();
        let mut bulk = 0;
        for e in self.events() {
            match e.kind {
                Kind::Convert { id } => *per.entry(id).or_insert(0) += 1,
                Kind::BulkDone => bulk += 1,
                _ => {}
            }
        }
        (per, bulk)
    }
}

impl Drop for W1Kernel {
    fn drop(&mut self) {
        let ids: Vec<String> = lock(&self.ro).keys().cloned().collect();
        for id in ids {
            if let Some(files) = lock(&self.ro).remove(&id) {
                for mut f in files {
                    f.stop();
                }
            }
        }
        self.rw_stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.rw_thread.take() {
            let _ = t.join();
        }
        for f in lock(&self.rw).iter() {
            f.ino.release();
        }
    }
}
