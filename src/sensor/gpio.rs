//! The `gpio` backend: bit-banged 1-Wire on a GPIO pin, in user space.
//!
//! Built on one-wire-bus (reset, ROM search, bit and byte slots) and
//! ds18b20 (command codes, Write Scratchpad), both written against the
//! embedded-hal 0.2 pin and delay traits, so the same code runs against
//! [`crate::onewire::sim`] in tests. Two upstream bugs are stepped around
//! here, each at the narrowest point:
//!
//! - rppal 0.22's embedded-hal 0.2 `InputPin::is_low()` returns `is_high()`
//!   for input and I/O pins, and its output pins drive high push-pull,
//!   which fights a sensor pulling low. [`OpenDrain`] drives low by making
//!   the pin an output at low level, releases by making it an input, and
//!   reads the level with rppal's own (correct) `read()`.
//! - ds18b20 0.1.1 decodes the temperature as unsigned and divides by the
//!   wrong power of two below 12 bit. This backend reads the scratchpad
//!   bytes and decodes them with [`crate::onewire::decode_scratchpad`].
//!
//! A sweep converts every sensor at once (Skip ROM + Convert T), waits the
//! datasheet's conversion time for the highest resolution in use, then
//! reads each sensor by Match ROM + Read Scratchpad and checks the CRC.
//! The pin is bit-banged from a thread that Linux can preempt mid-slot: a
//! bad CRC or a missing presence pulse is retried a bounded number of
//! times before it counts.

use std::collections::HashMap;
use std::fmt::Debug;
use std::time::Duration;

use embedded_hal::blocking::delay::{DelayMs, DelayUs};
use embedded_hal::digital::v2::{InputPin, OutputPin};
use one_wire_bus::{Address, OneWire, OneWireError};

/// Opening the pin on real hardware (rppal, GPIO character device).
pub mod drivers;
mod pin;

pub use pin::{IoPinOps, OpenDrain};

use super::error::BusFault;
use super::{Backend, BackendError, Found, ReadFault, Sample};
use crate::config::SensorConfig;
use crate::onewire::{cmd, decode_scratchpad, Resolution, Rom, ScratchpadError, FAMILY_DS18B20};

/// Why one read of one sensor failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// No presence pulse, or nothing answered the read slots.
    Absent,
    Crc,
    /// The CRC holds but the bytes cannot be a reading (all zeros).
    NotReady(crate::onewire::NotReady),
    Bus(BusFault),
}

fn bus_error<E: Debug>(e: OneWireError<E>) -> Attempt {
    match e {
        OneWireError::BusNotHigh => Attempt::Bus(BusFault::LineLow),
        OneWireError::PinError(e) => Attempt::Bus(BusFault::Pin(format!("{e:?}"))),
        OneWireError::CrcMismatch => Attempt::Crc,
        OneWireError::UnexpectedResponse | OneWireError::FamilyCodeMismatch => Attempt::Crc,
        OneWireError::Timeout => Attempt::Bus(BusFault::Timeout),
    }
}

/// The fault a failed attempt counts as; a bus fault names `pin` when known.
fn fault(a: Attempt, pin: Option<u8>) -> ReadFault {
    match a {
        Attempt::Absent => ReadFault::Missing,
        Attempt::Crc => ReadFault::Crc,
        Attempt::NotReady(n) => ReadFault::NotReady(n),
        Attempt::Bus(fault) => ReadFault::Bus { pin, fault },
    }
}

/// How the conversion is started in a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvertMode {
    /// Skip ROM + Convert T: every sensor at once, one conversion time.
    Simultaneous,
    /// Match ROM + Convert T per sensor, each followed by its conversion
    /// time (what a naive driver does; for comparison).
    PerSensor,
}

/// The DS18B20 on a bit-banged 1-Wire bus.
pub struct GpioBackend<P, D> {
    bus: OneWire<P>,
    delay: D,
    /// Attempts per sensor and sweep (at least 1).
    attempts: u32,
    /// Resolutions the config asks for, by sensor id.
    wanted: HashMap<String, Resolution>,
    /// Resolution each sensor reported last, by id.
    seen: HashMap<String, Resolution>,
    mode: ConvertMode,
    /// The GPIO number, named in bus faults (unknown for a bare pin).
    pin: Option<u8>,
}

impl<P, D, E> GpioBackend<P, D>
where
    P: InputPin<Error = E> + OutputPin<Error = E>,
    D: DelayUs<u16> + DelayMs<u16>,
    E: Debug,
{
    /// A backend on `pin` (open-drain) with `delay` (microsecond-accurate).
    pub fn new(pin: P, delay: D, attempts: u32) -> Result<Self, BackendError> {
        let bus = OneWire::new(pin).map_err(|e| BackendError::Pin {
            detail: format!("{e:?}"),
        })?;
        Ok(Self {
            bus,
            delay,
            attempts: attempts.max(1),
            wanted: HashMap::new(),
            seen: HashMap::new(),
            mode: ConvertMode::Simultaneous,
            pin: None,
        })
    }

    /// Names the GPIO number in bus faults.
    pub fn set_pin_number(&mut self, pin: u8) {
        self.pin = Some(pin);
    }

    /// Asks for `resolution` on the sensor `id` (set before each sweep until
    /// the sensor reports it).
    pub fn want_resolution(&mut self, id: &str, resolution: Resolution) {
        self.wanted.insert(id.to_string(), resolution);
    }

    pub fn set_convert_mode(&mut self, mode: ConvertMode) {
        self.mode = mode;
    }

    pub fn into_pin(self) -> P {
        self.bus.into_inner()
    }

    /// Every device ROM on the bus (any family), by ROM search, retried.
    pub fn search(&mut self) -> Result<Vec<Rom>, ReadFault> {
        let mut last = Attempt::Absent;
        for _ in 0..self.attempts {
            let mut roms = Vec::new();
            let mut failed = None;
            for r in self.bus.devices(false, &mut self.delay) {
                match r {
                    Ok(Address(a)) => roms.push(Rom::from_u64(a)),
                    Err(e) => {
                        failed = Some(bus_error(e));
                        break;
                    }
                }
            }
            match failed {
                None => return Ok(roms),
                Some(a) => last = a,
            }
        }
        Err(fault(last, self.pin))
    }

    /// Reset; `Absent` without a presence pulse.
    fn reset(&mut self) -> Result<(), Attempt> {
        match self.bus.reset(&mut self.delay) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Attempt::Absent),
            Err(e) => Err(bus_error(e)),
        }
    }

    /// Reset + Match ROM (or Skip ROM) + a function command.
    fn select(&mut self, rom: Option<Rom>, command: u8) -> Result<(), Attempt> {
        self.reset()?;
        let d = &mut self.delay;
        match rom {
            Some(r) => self.bus.match_address(&Address(r.to_u64()), d),
            None => self.bus.skip_address(d),
        }
        .and_then(|()| self.bus.write_byte(command, d))
        .map_err(bus_error)
    }

    /// One attempt at the scratchpad of `rom`, raw bytes.
    fn read_scratchpad_once(&mut self, rom: Rom) -> Result<[u8; 9], Attempt> {
        self.select(Some(rom), cmd::READ_SCRATCHPAD)?;
        let mut sp = [0u8; 9];
        self.bus
            .read_bytes(&mut sp, &mut self.delay)
            .map_err(bus_error)?;
        Ok(sp)
    }

    /// Reads and CRC-checks the scratchpad of `rom`, retrying. Returns the
    /// 9 bytes, so a caller can decode them or look at byte 6.
    pub fn read_scratchpad(&mut self, rom: Rom) -> Result<[u8; 9], ReadFault> {
        let mut last = Attempt::Absent;
        for _ in 0..self.attempts {
            let a = match self.read_scratchpad_once(rom) {
                Ok(sp) => match decode_scratchpad(&sp) {
                    Ok(_) => return Ok(sp),
                    Err(ScratchpadError::Crc) => Attempt::Crc,
                    Err(ScratchpadError::NoDevice) => Attempt::Absent,
                    Err(ScratchpadError::NotReady(n)) => Attempt::NotReady(n),
                },
                Err(a) => a,
            };
            log::debug!("{rom}: read failed ({a:?}), retrying");
            last = a;
        }
        Err(fault(last, self.pin))
    }

    /// Reads one sensor's temperature (scratchpad decoded here, not by
    /// the ds18b20 crate).
    pub fn read_celsius(&mut self, rom: Rom) -> Result<f64, ReadFault> {
        let sp = self.read_scratchpad(rom)?;
        let d = decode_scratchpad(&sp).map_err(|_| ReadFault::Crc)?;
        self.seen.insert(rom.id(), d.resolution);
        Ok(d.celsius)
    }

    /// Skip ROM + Convert T, retried while no presence pulse comes.
    fn convert_all(&mut self) -> Result<(), Attempt> {
        let mut last = Attempt::Absent;
        for _ in 0..self.attempts {
            match self.select(None, cmd::CONVERT_T) {
                Ok(()) => return Ok(()),
                Err(a) => last = a,
            }
        }
        Err(last)
    }

    /// Match ROM + Convert T for one sensor.
    fn convert_one(&mut self, rom: Rom) -> Result<(), Attempt> {
        let mut last = Attempt::Absent;
        for _ in 0..self.attempts {
            match self.select(Some(rom), cmd::CONVERT_T) {
                Ok(()) => return Ok(()),
                Err(a) => last = a,
            }
        }
        Err(last)
    }

    /// Waits the datasheet's maximum conversion time (tCONV) at `res`,
    /// without touching the line (a parasite-powered sensor draws its
    /// power from it).
    fn wait_conversion(&mut self, res: Resolution) {
        let us = res.conversion_time().as_micros();
        let ms = u16::try_from(us.div_ceil(1000)).unwrap_or(u16::MAX);
        self.delay.delay_ms(ms);
    }

    /// The resolution a sensor converts at: what it reported last, else
    /// what the config asks for, else the factory's 12 bit.
    fn resolution_of(&self, id: &str) -> Resolution {
        self.seen
            .get(id)
            .or_else(|| self.wanted.get(id))
            .copied()
            .unwrap_or(Resolution::Bits12)
    }

    /// Writes the wanted resolution to each sensor that reports another,
    /// keeping its TH and TL (Write Scratchpad through the ds18b20 crate,
    /// which sends TH, TL, config in the datasheet's order).
    fn apply_resolutions(&mut self, ids: &[(String, Option<Rom>)]) {
        for (id, rom) in ids {
            let (Some(rom), Some(&want)) = (rom, self.wanted.get(id)) else {
                continue;
            };
            if self.seen.get(id) == Some(&want) {
                continue;
            }
            let Ok(sp) = self.read_scratchpad(*rom) else {
                continue;
            };
            let Ok(d) = decode_scratchpad(&sp) else {
                continue;
            };
            if d.resolution == want {
                self.seen.insert(id.clone(), want);
                continue;
            }
            let Ok(dev) = ds18b20::Ds18b20::new::<E>(Address(rom.to_u64())) else {
                continue;
            };
            match dev.set_config(d.tl, d.th, want.to_crate(), &mut self.bus, &mut self.delay) {
                Ok(()) => {
                    log::info!("{id}: resolution set to {} bits", want.bits());
                    self.seen.insert(id.clone(), want);
                }
                Err(e) => log::warn!("{id}: cannot set the resolution: {e:?}"),
            }
        }
    }

    /// Read Power Supply: `Some(true)` when the sensor is parasite-powered
    /// (it pulls the read slot low).
    pub fn parasite(&mut self, rom: Rom) -> Option<bool> {
        for _ in 0..self.attempts {
            if self.select(Some(rom), cmd::READ_POWER_SUPPLY).is_ok() {
                return self.bus.read_bit(&mut self.delay).ok().map(|high| !high);
            }
        }
        None
    }

    fn sweep_roms(&mut self, ids: &[String]) -> Vec<Sample> {
        let parsed: Vec<(String, Option<Rom>)> = ids
            .iter()
            .map(|id| (id.clone(), Rom::parse_id(id).ok()))
            .collect();
        self.apply_resolutions(&parsed);
        let slowest = parsed
            .iter()
            .filter(|(_, r)| r.is_some())
            .map(|(id, _)| self.resolution_of(id))
            .max()
            .unwrap_or(Resolution::Bits12);
        let started = match self.mode {
            ConvertMode::Simultaneous => {
                let r = self.convert_all();
                if r.is_ok() {
                    self.wait_conversion(slowest);
                }
                r
            }
            ConvertMode::PerSensor => Ok(()),
        };
        parsed
            .into_iter()
            .map(|(id, rom)| {
                let read = match (rom, &started) {
                    (None, _) => Err(ReadFault::BadId {
                        id: id.clone(),
                        expected: "a 1-Wire id like 28-0316a2791dff",
                    }),
                    (Some(_), Err(a)) => Err(fault(a.clone(), self.pin)),
                    (Some(rom), Ok(())) => {
                        if self.mode == ConvertMode::PerSensor {
                            match self.convert_one(rom) {
                                Ok(()) => {
                                    let res = self.resolution_of(&id);
                                    self.wait_conversion(res);
                                    self.read_celsius(rom)
                                }
                                Err(a) => Err(fault(a, self.pin)),
                            }
                        } else {
                            self.read_celsius(rom)
                        }
                    }
                };
                Sample { id, read }
            })
            .collect()
    }
}

impl<P, D, E> Backend for GpioBackend<P, D>
where
    P: InputPin<Error = E> + OutputPin<Error = E> + Send,
    D: DelayUs<u16> + DelayMs<u16> + Send,
    E: Debug,
{
    fn sweep(&mut self, ids: &[String]) -> Vec<Sample> {
        self.sweep_roms(ids)
    }

    fn reconfigure(&mut self, sensors: &[SensorConfig]) {
        configure(self, sensors);
    }

    fn discover(&mut self) -> Result<Vec<String>, BackendError> {
        let roms = self.search().map_err(BackendError::RomSearch)?;
        Ok(roms
            .into_iter()
            .filter(|r| r.family() == FAMILY_DS18B20)
            .map(|r| r.to_string())
            .collect())
    }

    fn scan(&mut self) -> Result<Vec<Found>, BackendError> {
        let roms = self.search().map_err(|e| match e {
            ReadFault::Missing => BackendError::NoPresence,
            other => BackendError::RomSearch(other),
        })?;
        if roms.is_empty() {
            return Err(BackendError::NoPresence);
        }
        let mut sensors = Vec::new();
        for rom in roms {
            if rom.family() == FAMILY_DS18B20 {
                sensors.push(rom);
            } else {
                log::info!(
                    "ignoring 1-Wire device {rom} (family {:#04x} is not a DS18B20)",
                    rom.family()
                );
            }
        }
        let parasite: Vec<Option<bool>> = sensors.iter().map(|&r| self.parasite(r)).collect();
        let ids: Vec<String> = sensors.iter().map(|r| r.id()).collect();
        let samples = self.sweep_roms(&ids);
        Ok(samples
            .into_iter()
            .zip(parasite)
            .map(|(s, parasite)| Found {
                family: Some("DS18B20"),
                resolution_bits: self.seen.get(&s.id).map(|r| r.bits()),
                id: s.id,
                celsius: s.read,
                parasite,
            })
            .collect())
    }

    fn sweep_budget(&self, sensors: usize) -> Duration {
        // One conversion, then per sensor and attempt one Match ROM read
        // (about 12 ms on the wire), plus scheduling slack.
        let per_read = Duration::from_millis(15) * self.attempts;
        Resolution::Bits12.conversion_time()
            + per_read * u32::try_from(sensors).unwrap_or(u32::MAX)
            + Duration::from_millis(250)
    }
}

/// Applies the per-sensor resolutions of `sensors`.
pub fn configure<P, D, E>(b: &mut GpioBackend<P, D>, sensors: &[SensorConfig])
where
    P: InputPin<Error = E> + OutputPin<Error = E>,
    D: DelayUs<u16> + DelayMs<u16>,
    E: Debug,
{
    for s in sensors {
        if let Some(r) = s.resolution.and_then(Resolution::from_bits) {
            b.want_resolution(&s.id, r);
        }
    }
}
