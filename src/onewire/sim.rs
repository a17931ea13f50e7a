//! A wire-level 1-Wire simulator: an open-drain line with a pull-up,
//! simulated DS18B20s on it, and a master pin and delay that implement the
//! embedded-hal 0.2 traits the real GPIO code is written against.
//!
//! Time is virtual: only the master's delays move it. The master's level
//! changes are timestamped, and each device decides what it saw from the
//! timestamps, with the datasheet's windows (DS18B20 datasheet, "1-Wire
//! Signaling"): a reset is a low of at least 480 µs; a device answers it
//! 30 µs after the release with a 120 µs presence pulse (15–60, 60–240);
//! it samples a written bit 30 µs after the falling edge (15–60); a 0 it
//! sends holds the line low up to 15 µs after the falling edge (tRDV) and
//! not longer, so a master that samples late reads 1. Everything is
//! deterministic.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use embedded_hal::blocking::delay::{DelayMs, DelayUs};
use embedded_hal::digital::v2::{InputPin, OutputPin};

mod device;

use super::{Resolution, Rom};
use device::{Device, State};
pub use device::{
    DeviceSpec, Drive, PRESENCE_LOW_US, PRESENCE_WAIT_US, READ_HOLD_US, RESET_LOW_US,
    WRITE_SAMPLE_US,
};

/// Counters of what crossed the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub resets: u64,
    /// Falling edges that were not resets: read and write slots.
    pub slots: u64,
}

#[derive(Debug)]
struct Line {
    now: u64,
    drive: Drive,
    fall_at: u64,
    release_at: Option<u64>,
    devices: Vec<Device>,
    stats: Stats,
    /// (delay calls to let pass, extra µs): the master is preempted.
    preempt: Option<(u64, u64)>,
}

impl Line {
    /// Whether any device holds the line low at `t`.
    fn device_low(&self, t: u64) -> bool {
        self.devices
            .iter()
            .any(|d| d.present && d.pull.is_some_and(|(a, b)| a <= t && t <= b))
    }

    fn master_low_at(&self, t: u64) -> bool {
        match self.drive {
            Drive::Low => t >= self.fall_at,
            _ => t >= self.fall_at && self.release_at.is_none_or(|r| t < r),
        }
    }

    fn level_at(&self, t: u64) -> bool {
        match self.drive {
            Drive::High if self.release_at.is_some_and(|r| r <= t) => true,
            _ => !(self.master_low_at(t) || self.device_low(t)),
        }
    }

    /// Lets each device take the write-slot samples due by `now`.
    fn settle(&mut self, now: u64) {
        let due: Vec<(usize, u64)> = self
            .devices
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.sample_at.filter(|&t| t <= now).map(|t| (i, t)))
            .collect();
        for (i, t) in due {
            let bit = self.level_at(t);
            if let Some(d) = self.devices.get_mut(i) {
                d.sample_at = None;
                d.receive(bit, t);
            }
        }
        for d in &mut self.devices {
            d.finish_conversion(now);
        }
    }

    fn set_drive(&mut self, drive: Drive) {
        let now = self.now;
        if drive == self.drive {
            return;
        }
        let was_low = self.drive == Drive::Low;
        self.settle(now);
        if drive == Drive::Low {
            // A falling edge: a new slot (or the start of a reset).
            // A write sample still pending sees this low.
            for d in &mut self.devices {
                if let Some(t) = d.sample_at.take() {
                    d.receive(false, t);
                }
            }
            self.fall_at = now;
            self.release_at = None;
            self.drive = Drive::Low;
            for d in &mut self.devices {
                if !d.present {
                    continue;
                }
                d.pull = None;
                if d.spec.parasite && d.converting_until.is_some_and(|u| now < u) {
                    // No strong pull-up: pulling the line low takes the
                    // parasite supply away mid-conversion.
                    d.power_on();
                    continue;
                }
                if let Some(bit) = d.next_send(now) {
                    if !bit {
                        d.pull = Some((now, now + READ_HOLD_US));
                    }
                } else if d.receives() {
                    d.sample_at = Some(now + WRITE_SAMPLE_US);
                }
            }
        } else {
            self.drive = drive;
            if was_low {
                self.release_at = Some(now);
                if now - self.fall_at >= RESET_LOW_US {
                    self.stats.resets += 1;
                    for d in &mut self.devices {
                        if !d.present {
                            continue;
                        }
                        d.finish_conversion(now);
                        d.sample_at = None;
                        d.state = State::RomCmd { byte: 0, n: 0 };
                        let start = now + PRESENCE_WAIT_US;
                        d.pull = Some((start, start + PRESENCE_LOW_US));
                    }
                } else {
                    self.stats.slots += 1;
                }
            }
        }
    }

    fn level(&mut self) -> bool {
        let now = self.now;
        self.settle(now);
        self.level_at(now)
    }

    fn advance(&mut self, us: u64) {
        let mut us = us;
        if let Some((left, extra)) = self.preempt {
            if left == 0 {
                us += extra;
                self.preempt = None;
            } else {
                self.preempt = Some((left - 1, extra));
            }
        }
        self.now += us;
    }
}

/// The simulated bus: a handle to the line and its devices. Clones share it.
#[derive(Debug, Clone)]
pub struct SimBus {
    line: Arc<Mutex<Line>>,
}

impl Default for SimBus {
    fn default() -> Self {
        Self::new()
    }
}

impl SimBus {
    pub fn new() -> Self {
        SimBus {
            line: Arc::new(Mutex::new(Line {
                now: 0,
                drive: Drive::Released,
                fall_at: 0,
                release_at: Some(0),
                devices: Vec::new(),
                stats: Stats::default(),
                preempt: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Line> {
        // A panic while holding the lock only happens in a failing test;
        // the line's state is still usable.
        self.line.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a powered-on device (it reads 85 C until its first conversion).
    pub fn add(&self, spec: DeviceSpec) -> &Self {
        self.lock().devices.push(Device::new(spec));
        self
    }

    fn with_device<T>(&self, rom: Rom, f: impl FnOnce(&mut Device) -> T) -> Option<T> {
        self.lock()
            .devices
            .iter_mut()
            .find(|d| d.spec.rom == rom)
            .map(f)
    }

    /// Sets the temperature a device measures from its next conversion on.
    pub fn set_celsius(&self, rom: Rom, celsius: f64) {
        self.with_device(rom, |d| d.spec.celsius = celsius);
    }

    /// Flips `bit` (0..72) of the next scratchpad the device sends.
    pub fn corrupt_next_read(&self, rom: Rom, bit: usize) {
        self.corrupt_reads(rom, bit, 1);
    }

    /// Flips `bit` (0..72) of the next `count` scratchpads the device sends.
    pub fn corrupt_reads(&self, rom: Rom, bit: usize, count: u32) {
        self.with_device(rom, |d| d.corrupt = (count > 0).then_some((bit, count)));
    }

    /// Disconnects (`false`) or reconnects a device. Reconnecting powers it on.
    pub fn set_present(&self, rom: Rom, present: bool) {
        self.with_device(rom, |d| {
            if present && !d.present {
                d.power_on();
            }
            d.present = present;
        });
    }

    /// Power-cycles a device: it reads 85 C again until it converts.
    pub fn power_cycle(&self, rom: Rom) {
        self.with_device(rom, |d| d.power_on());
    }

    /// The resolution in a device's scratchpad now.
    pub fn resolution(&self, rom: Rom) -> Option<Resolution> {
        self.with_device(rom, |d| d.resolution)
    }

    /// How many conversions a device has completed.
    pub fn conversions(&self, rom: Rom) -> Option<u64> {
        self.with_device(rom, |d| d.conversions)
    }

    /// Virtual time since the bus was created, in µs.
    pub fn now_us(&self) -> u64 {
        self.lock().now
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats
    }

    /// The master is preempted: after `after_delays` more delay calls, the
    /// next one lasts `extra_us` longer.
    pub fn preempt(&self, after_delays: u64, extra_us: u64) {
        self.lock().preempt = Some((after_delays, extra_us));
    }

    /// Sets what the master does with the line (for custom pins).
    pub fn drive(&self, drive: Drive) {
        self.lock().set_drive(drive);
    }

    /// The line's level now: `true` is high.
    pub fn level(&self) -> bool {
        self.lock().level()
    }

    /// Moves virtual time on.
    pub fn advance_us(&self, us: u64) {
        self.lock().advance(us);
    }

    /// The master's open-drain pin on this line.
    pub fn pin(&self) -> SimPin {
        SimPin { bus: self.clone() }
    }

    /// A delay that moves this line's virtual time.
    pub fn delay(&self) -> SimDelay {
        SimDelay { bus: self.clone() }
    }
}

/// The master's pin, open-drain: `set_low` drives the line low, `set_high`
/// releases it to the pull-up; `is_high` reads the line.
#[derive(Debug, Clone)]
pub struct SimPin {
    bus: SimBus,
}

impl OutputPin for SimPin {
    type Error = Infallible;
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.bus.drive(Drive::Low);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        self.bus.drive(Drive::Released);
        Ok(())
    }
}

impl InputPin for SimPin {
    type Error = Infallible;
    fn is_high(&self) -> Result<bool, Infallible> {
        Ok(self.bus.level())
    }
    fn is_low(&self) -> Result<bool, Infallible> {
        Ok(!self.bus.level())
    }
}

/// A delay in virtual time.
#[derive(Debug, Clone)]
pub struct SimDelay {
    bus: SimBus,
}

impl DelayUs<u16> for SimDelay {
    fn delay_us(&mut self, us: u16) {
        self.bus.advance_us(u64::from(us));
    }
}

impl DelayUs<u32> for SimDelay {
    fn delay_us(&mut self, us: u32) {
        self.bus.advance_us(u64::from(us));
    }
}

impl DelayMs<u16> for SimDelay {
    fn delay_ms(&mut self, ms: u16) {
        self.bus.advance_us(u64::from(ms) * 1000);
    }
}

impl DelayMs<u32> for SimDelay {
    fn delay_ms(&mut self, ms: u32) {
        self.bus.advance_us(u64::from(ms) * 1000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onewire::cmd;
    use one_wire_bus::OneWire;

    fn bus_with(roms: &[u64]) -> SimBus {
        let bus = SimBus::new();
        for &s in roms {
            bus.add(DeviceSpec::new(Rom::new(0x28, s), 21.5));
        }
        bus
    }

    #[test]
    fn reset_sees_presence_only_with_a_device() {
        let empty = SimBus::new();
        let mut ow = OneWire::new(empty.pin()).expect("pin");
        assert!(!ow.reset(&mut empty.delay()).expect("reset"));
        let bus = bus_with(&[1]);
        let mut ow = OneWire::new(bus.pin()).expect("pin");
        assert!(ow.reset(&mut bus.delay()).expect("reset"));
        assert_eq!(bus.stats().resets, 1);
        // 480 low + 70 + 410, and the idle check before it.
        assert!(bus.now_us() >= 960, "{}", bus.now_us());
    }

    #[test]
    fn read_rom_returns_the_rom_lsb_first() {
        let bus = bus_with(&[0x0316a2791dff]);
        let mut d = bus.delay();
        let mut ow = OneWire::new(bus.pin()).expect("pin");
        assert!(ow.reset(&mut d).expect("reset"));
        ow.write_byte(cmd::READ_ROM, &mut d).expect("write");
        let mut rom = [0u8; 8];
        ow.read_bytes(&mut rom, &mut d).expect("read");
        assert_eq!(Rom(rom).id(), "28-0316a2791dff");
        assert!(Rom(rom).crc_ok());
    }

    #[test]
    fn a_late_sample_misses_a_zero() {
        // The device holds a 0 for 15 µs only: sampling at 15 sees it,
        // at 16 does not.
        let bus = bus_with(&[1]);
        let mut d = bus.delay();
        let mut ow = OneWire::new(bus.pin()).expect("pin");
        assert!(ow.reset(&mut d).expect("reset"));
        ow.write_byte(cmd::READ_ROM, &mut d).expect("write");
        // ROM byte 0 is 0x28: its bit 0 is 0.
        bus.drive(Drive::Low);
        bus.advance_us(6);
        bus.drive(Drive::Released);
        bus.advance_us(10);
        assert!(bus.level(), "released at 16 µs");
        bus.advance_us(60);
        // Bit 1 is 0 too; sample at 15.
        bus.drive(Drive::Low);
        bus.advance_us(6);
        bus.drive(Drive::Released);
        bus.advance_us(9);
        assert!(!bus.level(), "held at 15 µs");
    }
}
