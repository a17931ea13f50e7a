//! The simulated DS18B20: the datasheet's timing windows, and its state
//! machine over ROM and function commands, driven by the line in
//! [`super`].

use crate::onewire::{
    build_scratchpad, cmd, encode_temperature, Resolution, Rom, POWER_ON_BYTE6, POWER_ON_RAW,
};

/// Minimum reset pulse (tRSTL).
pub const RESET_LOW_US: u64 = 480;
/// Delay from the end of the reset pulse to the presence pulse (tPDHIGH: 15–60).
pub const PRESENCE_WAIT_US: u64 = 30;
/// Length of the presence pulse (tPDLOW: 60–240).
pub const PRESENCE_LOW_US: u64 = 120;
/// When a device samples a write slot, after the falling edge (15–60).
pub const WRITE_SAMPLE_US: u64 = 30;
/// How long a device sending 0 holds the line after the falling edge (tRDV).
pub const READ_HOLD_US: u64 = 15;

/// What the master does with its pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drive {
    /// Input: the pull-up (or a device) sets the level.
    Released,
    /// Output low: the open-drain "0".
    Low,
    /// Output high, push-pull: overpowers a device pulling low (a wiring or
    /// driver bug; the real line's level would be undefined).
    High,
}

/// How a simulated DS18B20 is set up.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub rom: Rom,
    /// The temperature it measures.
    pub celsius: f64,
    /// The resolution in its EEPROM (12 from the factory).
    pub resolution: Resolution,
    pub parasite: bool,
}

impl DeviceSpec {
    pub fn new(rom: Rom, celsius: f64) -> Self {
        Self {
            rom,
            celsius,
            resolution: Resolution::Bits12,
            parasite: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum State {
    /// Waiting for a reset.
    Idle,
    /// Receiving the ROM command byte.
    RomCmd {
        byte: u8,
        n: u8,
    },
    /// Search ROM / Alarm Search at `bit`: phase 0 sends the bit, 1 its
    /// complement, 2 receives the master's choice.
    Search {
        bit: u8,
        phase: u8,
    },
    MatchRom {
        got: u64,
        n: u8,
    },
    /// Receiving the function command byte.
    FnCmd {
        byte: u8,
        n: u8,
    },
    /// Sending bytes, LSB first; then function commands if `then_fn`.
    Send {
        data: Vec<u8>,
        bit: usize,
        then_fn: bool,
    },
    /// Receiving Write Scratchpad's TH, TL, config.
    WriteScratch {
        buf: [u8; 3],
        n: u8,
    },
    /// After Convert T: read slots return 0 while converting, then 1.
    Converting,
    /// After Read Power Supply: read slots return 0 if parasite-powered.
    PowerSupply,
}

#[derive(Debug, Clone)]
pub(super) struct Device {
    pub(super) spec: DeviceSpec,
    pub(super) present: bool,
    pub(super) raw: i16,
    pub(super) th: i8,
    pub(super) tl: i8,
    pub(super) resolution: Resolution,
    pub(super) byte6: u8,
    pub(super) eeprom: (i8, i8, Resolution),
    pub(super) state: State,
    pub(super) converting_until: Option<u64>,
    /// Holds the line low over this closed interval (µs).
    pub(super) pull: Option<(u64, u64)>,
    /// Samples a write slot at this time.
    pub(super) sample_at: Option<u64>,
    /// (bit to flip, how many more scratchpad reads to corrupt).
    pub(super) corrupt: Option<(usize, u32)>,
    pub(super) conversions: u64,
}

impl Device {
    pub(super) fn new(spec: DeviceSpec) -> Self {
        let res = spec.resolution;
        let mut d = Device {
            spec,
            present: true,
            raw: 0,
            th: 75,
            tl: 70,
            resolution: res,
            byte6: 0,
            eeprom: (75, 70, res),
            state: State::Idle,
            converting_until: None,
            pull: None,
            sample_at: None,
            corrupt: None,
            conversions: 0,
        };
        d.power_on();
        d
    }

    /// Power-on state (datasheet: +85 C until the first conversion, byte 6
    /// 0x0C; TH, TL and config recalled from EEPROM).
    pub(super) fn power_on(&mut self) {
        self.raw = i16::from_le_bytes(POWER_ON_RAW.to_le_bytes());
        self.byte6 = POWER_ON_BYTE6;
        (self.th, self.tl, self.resolution) = self.eeprom;
        self.state = State::Idle;
        self.converting_until = None;
        self.pull = None;
        self.sample_at = None;
    }

    pub(super) fn finish_conversion(&mut self, now: u64) {
        if let Some(until) = self.converting_until {
            if now >= until {
                self.converting_until = None;
                let raw12 = encode_temperature(self.spec.celsius.clamp(-55.0, 125.0));
                // The lowest bits are undefined below 12 bit: this model
                // leaves the 12-bit value's bits there, so a decoder that
                // forgets to mask them reads too fine a value.
                self.raw = raw12;
                // Genuine parts: byte 6 = COUNT REMAIN = 0x10 - (LSB & 0x0F).
                self.byte6 = 0x10 - (raw12.to_le_bytes()[0] & 0x0F);
                self.conversions += 1;
            }
        }
    }

    pub(super) fn scratchpad(&self) -> [u8; 9] {
        build_scratchpad(self.raw, self.th, self.tl, self.resolution, self.byte6)
    }

    pub(super) fn alarm(&self) -> bool {
        let c = i32::from(self.raw) / 16;
        c >= i32::from(self.th) || c <= i32::from(self.tl)
    }

    /// The bit this device sends in a read slot now, if it is sending.
    pub(super) fn next_send(&mut self, now: u64) -> Option<bool> {
        let rom = self.spec.rom.to_u64();
        match &mut self.state {
            State::Search { bit, phase } if *phase < 2 => {
                let b = (rom >> *bit) & 1 == 1;
                let out = if *phase == 0 { b } else { !b };
                *phase += 1;
                Some(out)
            }
            State::Send { data, bit, then_fn } => {
                let out = data
                    .get(*bit / 8)
                    .is_none_or(|byte| (byte >> (*bit % 8)) & 1 == 1);
                *bit += 1;
                if *bit >= data.len() * 8 && *then_fn {
                    self.state = State::FnCmd { byte: 0, n: 0 };
                }
                Some(out)
            }
            State::Converting => Some(self.converting_until.is_none_or(|u| now >= u)),
            State::PowerSupply => Some(!self.spec.parasite),
            _ => None,
        }
    }

    pub(super) fn receives(&self) -> bool {
        matches!(
            self.state,
            State::RomCmd { .. }
                | State::Search { phase: 2, .. }
                | State::MatchRom { .. }
                | State::FnCmd { .. }
                | State::WriteScratch { .. }
        )
    }

    /// A bit the master wrote, sampled at `at`.
    pub(super) fn receive(&mut self, bit: bool, at: u64) {
        let rom = self.spec.rom.to_u64();
        let state = std::mem::replace(&mut self.state, State::Idle);
        self.state = match state {
            State::RomCmd { mut byte, n } => {
                byte |= u8::from(bit) << n;
                if n < 7 {
                    State::RomCmd { byte, n: n + 1 }
                } else {
                    match byte {
                        cmd::SEARCH_ROM => State::Search { bit: 0, phase: 0 },
                        cmd::ALARM_SEARCH if self.alarm() => State::Search { bit: 0, phase: 0 },
                        cmd::MATCH_ROM => State::MatchRom { got: 0, n: 0 },
                        cmd::SKIP_ROM => State::FnCmd { byte: 0, n: 0 },
                        cmd::READ_ROM => State::Send {
                            data: self.spec.rom.0.to_vec(),
                            bit: 0,
                            then_fn: true,
                        },
                        _ => State::Idle,
                    }
                }
            }
            State::Search { bit: i, .. } => {
                if ((rom >> i) & 1 == 1) != bit {
                    State::Idle
                } else if i == 63 {
                    State::FnCmd { byte: 0, n: 0 }
                } else {
                    State::Search {
                        bit: i + 1,
                        phase: 0,
                    }
                }
            }
            State::MatchRom { mut got, n } => {
                got |= u64::from(bit) << n;
                if n < 63 {
                    State::MatchRom { got, n: n + 1 }
                } else if got == rom {
                    State::FnCmd { byte: 0, n: 0 }
                } else {
                    State::Idle
                }
            }
            State::FnCmd { mut byte, n } => {
                byte |= u8::from(bit) << n;
                if n < 7 {
                    State::FnCmd { byte, n: n + 1 }
                } else {
                    self.function(byte, at)
                }
            }
            State::WriteScratch { mut buf, n } => {
                let i = usize::from(n / 8);
                if let Some(b) = buf.get_mut(i) {
                    *b |= u8::from(bit) << (n % 8);
                }
                if n < 23 {
                    State::WriteScratch { buf, n: n + 1 }
                } else {
                    self.th = i8::from_le_bytes([buf[0]]);
                    self.tl = i8::from_le_bytes([buf[1]]);
                    self.resolution = Resolution::from_config(buf[2]);
                    State::Idle
                }
            }
            other => other,
        };
    }

    pub(super) fn function(&mut self, command: u8, at: u64) -> State {
        match command {
            cmd::CONVERT_T => {
                self.converting_until =
                    Some(at + self.resolution.conversion_time().as_micros() as u64);
                State::Converting
            }
            cmd::READ_SCRATCHPAD => {
                let mut data = self.scratchpad();
                if let Some((bit, left)) = self.corrupt.take() {
                    if let Some(b) = data.get_mut(bit / 8) {
                        *b ^= 1 << (bit % 8);
                    }
                    if left > 1 {
                        self.corrupt = Some((bit, left - 1));
                    }
                }
                State::Send {
                    data: data.to_vec(),
                    bit: 0,
                    then_fn: false,
                }
            }
            cmd::WRITE_SCRATCHPAD => State::WriteScratch { buf: [0; 3], n: 0 },
            cmd::COPY_SCRATCHPAD => {
                self.eeprom = (self.th, self.tl, self.resolution);
                State::Idle
            }
            cmd::RECALL_E2 => {
                (self.th, self.tl, self.resolution) = self.eeprom;
                State::Send {
                    data: Vec::new(),
                    bit: 0,
                    then_fn: false,
                }
            }
            cmd::READ_POWER_SUPPLY => State::PowerSupply,
            _ => State::Idle,
        }
    }
}
