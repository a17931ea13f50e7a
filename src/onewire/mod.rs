//! 1-Wire and DS18B20 facts as pure functions: the Dallas/Maxim CRC-8, ROM
//! codes and the kernel's names for them, resolutions and their conversion
//! times, and scratchpad decoding. No I/O here; [`sim`] is a wire-level
//! simulator of DS18B20s on an open-drain line for tests and benchmarks.
//!
//! Numbers cite the DS18B20 datasheet (Maxim 19-7487, rev. 6).

pub mod sim;

use std::fmt;
use std::time::Duration;

/// The DS18B20's family code, ROM byte 0.
pub const FAMILY_DS18B20: u8 = 0x28;

/// A temperature sensor family the Linux kernel's w1_therm driver binds
/// (`drivers/w1/slaves/w1_therm.c`: the `W1_THERM_*` family codes and the
/// `w1_therm_families[]` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThermFamily {
    /// ROM byte 0; the kernel's device name starts with it (`28-...`).
    pub code: u8,
    pub name: &'static str,
    /// `w1_therm_family_converter.bulk_read`: the family takes part in a
    /// `therm_bulk_read` conversion. DS28EA00 does not: every read of it
    /// converts on its own.
    pub bulk_read: bool,
    /// Has a configuration register with R1 R0 (resolution 9..12 bits):
    /// every family but DS18S20 (`w1_ds18s20_attrs` has no `resolution`).
    pub resolution: bool,
}

/// Every family w1_therm drives, in the kernel's table order.
pub const THERM_FAMILIES: [ThermFamily; 5] = [
    ThermFamily {
        code: 0x10,
        name: "DS18S20",
        bulk_read: true,
        resolution: false,
    },
    ThermFamily {
        code: 0x22,
        name: "DS1822",
        bulk_read: true,
        resolution: true,
    },
    ThermFamily {
        code: FAMILY_DS18B20,
        name: "DS18B20",
        bulk_read: true,
        resolution: true,
    },
    ThermFamily {
        code: 0x42,
        name: "DS28EA00",
        bulk_read: false,
        resolution: true,
    },
    ThermFamily {
        code: 0x3B,
        name: "DS1825/MAX31850",
        bulk_read: true,
        resolution: true,
    },
];

impl ThermFamily {
    pub fn of_code(code: u8) -> Option<Self> {
        THERM_FAMILIES.iter().copied().find(|f| f.code == code)
    }

    /// The family of a kernel device name such as `28-0316a2791dff`.
    pub fn of_id(id: &str) -> Option<Self> {
        Self::of_code(family_code_of_id(id)?)
    }
}

/// The family code of a kernel device name (`ff-` + 12 hex digits), or
/// `None` when the name is not one.
pub fn family_code_of_id(id: &str) -> Option<u8> {
    let (family, serial) = id.split_once('-')?;
    if family.len() != 2 || serial.len() != 12 || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(family, 16).ok()
}

/// Why a scratchpad that passed its CRC still cannot be a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// Nine zero bytes: a half-connected sensor holding the line low. The
    /// CRC of zeros is zero, so the kernel says `crc=00 YES` and `t=0`;
    /// w1thermsensor rejects exactly this line as "not ready"
    /// (`core.py`, `get_raw_sensor_strings`).
    #[error(
        "all nine scratchpad bytes read 0 (a half-connected sensor or data line held low), not 0 C"
    )]
    AllZero,
    /// Byte 4 has bits the family never reads back that way.
    #[error("scratchpad byte 4 is {byte:#04x}, impossible for a {family}")]
    Config { byte: u8, family: &'static str },
    /// DS18S20 byte 7 (COUNT_PER_C) is 0: w1_therm's
    /// `w1_DS18S20_convert_temp()` then returns 0 ("Invalid argument").
    #[error("DS18S20 COUNT_PER_C (byte 7) is 0")]
    CountPerC,
}

/// Checks what the CRC cannot: a scratchpad of all zeros, or one whose
/// configuration byte the family could not have sent. Families:
/// DS18B20 / DS1822 / DS28EA00 read `0 R1 R0 1 1 1 1 1` (datasheets,
/// "Configuration Register"); DS1825 reads bit 4 as 1 (bits 3..0 are its
/// address pins), as does the MAX31850 that shares its family code (bits
/// 7..4 read 1); DS18S20 bytes 4 and 5 are reserved and "return all 1s
/// when read", and its byte 7 is COUNT_PER_C (0x10).
pub fn check_scratchpad(family: u8, sp: &[u8; 9]) -> Result<(), NotReady> {
    if sp.iter().all(|&b| b == 0) {
        return Err(NotReady::AllZero);
    }
    let Some(f) = ThermFamily::of_code(family) else {
        return Ok(());
    };
    let b4 = sp[4];
    let ok = match family {
        0x10 => {
            if sp[7] == 0 {
                return Err(NotReady::CountPerC);
            }
            b4 == 0xFF
        }
        0x3B => b4 & 0x10 != 0,
        _ => b4 & 0x9F == 0x1F,
    };
    if ok {
        Ok(())
    } else {
        Err(NotReady::Config {
            byte: b4,
            family: f.name,
        })
    }
}

/// ROM and function commands (datasheet: "ROM Commands", "Function Commands").
pub mod cmd {
    pub const SEARCH_ROM: u8 = 0xF0;
    pub const READ_ROM: u8 = 0x33;
    pub const MATCH_ROM: u8 = 0x55;
    pub const SKIP_ROM: u8 = 0xCC;
    pub const ALARM_SEARCH: u8 = 0xEC;
    pub const CONVERT_T: u8 = 0x44;
    pub const WRITE_SCRATCHPAD: u8 = 0x4E;
    pub const READ_SCRATCHPAD: u8 = 0xBE;
    pub const COPY_SCRATCHPAD: u8 = 0x48;
    pub const RECALL_E2: u8 = 0xB8;
    pub const READ_POWER_SUPPLY: u8 = 0xB4;
}

/// Dallas/Maxim CRC-8: polynomial x^8 + x^5 + x^4 + 1 (reflected 0x8C),
/// initial value 0 (datasheet: "CRC Generation"). The CRC over data plus
/// its CRC byte is 0. One-wire-bus's, which its ROM search uses too.
pub use one_wire_bus::crc::crc8;

/// A 64-bit ROM code: byte 0 family, bytes 1..=6 serial (LSB first), byte 7 CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rom(pub [u8; 8]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RomIdError {
    #[error("{0:?} is not a 1-Wire id like 28-0316a2791dff (family, '-', 12 hex digits)")]
    Format(String),
}

impl Rom {
    /// The ROM of a device of `family` with the 48-bit `serial`, CRC filled in.
    pub fn new(family: u8, serial: u64) -> Self {
        let s = serial.to_le_bytes();
        let mut b = [family, s[0], s[1], s[2], s[3], s[4], s[5], 0];
        b[7] = crc8(&b[..7]);
        Rom(b)
    }

    /// From the 64-bit little-endian form one-wire-bus uses (`Address.0`).
    pub fn from_u64(v: u64) -> Self {
        Rom(v.to_le_bytes())
    }

    pub fn to_u64(self) -> u64 {
        u64::from_le_bytes(self.0)
    }

    pub fn family(self) -> u8 {
        self.0[0]
    }

    /// Whether byte 7 is the CRC of bytes 0..=6.
    pub fn crc_ok(self) -> bool {
        crc8(&self.0) == 0
    }

    /// Parses the kernel's name, `ff-ssssssssssss`: family, then the serial
    /// most significant byte first. The CRC byte is computed.
    pub fn parse_id(id: &str) -> Result<Self, RomIdError> {
        let bad = || RomIdError::Format(id.to_string());
        let (fam, serial) = id.split_once('-').ok_or_else(bad)?;
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
        if fam.len() != 2 || serial.len() != 12 || !hex(fam) || !hex(serial) {
            return Err(bad());
        }
        let family = u8::from_str_radix(fam, 16).map_err(|_| bad())?;
        let serial = u64::from_str_radix(serial, 16).map_err(|_| bad())?;
        Ok(Rom::new(family, serial))
    }

    /// The kernel's name for the device, e.g. `28-0316a2791dff`.
    pub fn id(self) -> String {
        let b = self.0;
        format!(
            "{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0], b[6], b[5], b[4], b[3], b[2], b[1]
        )
    }
}

impl fmt::Display for Rom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

/// A conversion resolution (datasheet: "Configuration Register", Table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resolution {
    Bits9,
    Bits10,
    Bits11,
    Bits12,
}

impl Resolution {
    pub const ALL: [Resolution; 4] = [
        Resolution::Bits9,
        Resolution::Bits10,
        Resolution::Bits11,
        Resolution::Bits12,
    ];

    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            9 => Some(Resolution::Bits9),
            10 => Some(Resolution::Bits10),
            11 => Some(Resolution::Bits11),
            12 => Some(Resolution::Bits12),
            _ => None,
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Resolution::Bits9 => 9,
            Resolution::Bits10 => 10,
            Resolution::Bits11 => 11,
            Resolution::Bits12 => 12,
        }
    }

    /// From the configuration byte: bits 6..5 = R1 R0; the other bits are
    /// fixed and ignored here.
    pub fn from_config(config: u8) -> Self {
        match (config >> 5) & 0b11 {
            0 => Resolution::Bits9,
            1 => Resolution::Bits10,
            2 => Resolution::Bits11,
            _ => Resolution::Bits12,
        }
    }

    /// The configuration byte: R1 R0 in bits 6..5, bits 4..0 read as 1
    /// (0x1F, 0x3F, 0x5F, 0x7F).
    pub fn config_byte(self) -> u8 {
        0x1F | ((self.bits() - 9) << 5)
    }

    /// Maximum conversion time, tCONV in the datasheet's electrical
    /// characteristics: 93.75 / 187.5 / 375 / 750 ms.
    pub fn conversion_time(self) -> Duration {
        Duration::from_micros(match self {
            Resolution::Bits9 => 93_750,
            Resolution::Bits10 => 187_500,
            Resolution::Bits11 => 375_000,
            Resolution::Bits12 => 750_000,
        })
    }

    /// The mask of the defined bits of the temperature register: at 11, 10
    /// and 9 bits the lowest 1, 2 or 3 bits are undefined.
    pub fn temperature_mask(self) -> u16 {
        !((1u16 << (12 - self.bits())) - 1)
    }

    /// The ds18b20 crate's enum, for its Write Scratchpad helper.
    pub fn to_crate(self) -> ds18b20::Resolution {
        match self {
            Resolution::Bits9 => ds18b20::Resolution::Bits9,
            Resolution::Bits10 => ds18b20::Resolution::Bits10,
            Resolution::Bits11 => ds18b20::Resolution::Bits11,
            Resolution::Bits12 => ds18b20::Resolution::Bits12,
        }
    }
}

/// Scratchpad byte 6 after power-on on genuine parts, before the first
/// conversion; with +85.0 C it marks the reset value.
pub const POWER_ON_BYTE6: u8 = 0x0C;

/// The temperature register after power-on: +85.0 C (datasheet: "Operation
/// — Measuring Temperature", Table 1).
pub const POWER_ON_RAW: u16 = 0x0550;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScratchpadError {
    #[error("scratchpad CRC mismatch")]
    Crc,
    /// Every byte read 0xFF: nothing answered the read slots.
    #[error("no device answered (all ones)")]
    NoDevice,
    /// The CRC holds but the bytes cannot be a DS18B20's ([`check_scratchpad`]).
    #[error("sensor not ready: {0}")]
    NotReady(NotReady),
}

/// A DS18B20 scratchpad decoded: the temperature and the configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scratchpad {
    pub celsius: f64,
    /// The raw register, low bits masked for the resolution.
    pub raw: i16,
    pub resolution: Resolution,
    pub th: i8,
    pub tl: i8,
    /// +85.0 C with byte 6 = 0x0C: the power-on value, not a measurement.
    pub power_on_reset: bool,
}

/// The temperature in a raw register read at `resolution`: a signed 16-bit
/// value in 1/16 C at every resolution, the undefined low bits masked.
pub fn decode_temperature(lsb: u8, msb: u8, resolution: Resolution) -> (i16, f64) {
    let masked = u16::from_le_bytes([lsb, msb]) & resolution.temperature_mask();
    let raw = i16::from_le_bytes(masked.to_le_bytes());
    (raw, f64::from(raw) / 16.0)
}

/// Checks the CRC of a 9-byte scratchpad and decodes it.
pub fn decode_scratchpad(bytes: &[u8; 9]) -> Result<Scratchpad, ScratchpadError> {
    if bytes.iter().all(|&b| b == 0xFF) {
        return Err(ScratchpadError::NoDevice);
    }
    if crc8(bytes) != 0 {
        return Err(ScratchpadError::Crc);
    }
    check_scratchpad(FAMILY_DS18B20, bytes).map_err(ScratchpadError::NotReady)?;
    let resolution = Resolution::from_config(bytes[4]);
    let (raw, celsius) = decode_temperature(bytes[0], bytes[1], resolution);
    Ok(Scratchpad {
        celsius,
        raw,
        resolution,
        th: i8::from_le_bytes([bytes[2]]),
        tl: i8::from_le_bytes([bytes[3]]),
        power_on_reset: u16::from_le_bytes([bytes[0], bytes[1]]) == POWER_ON_RAW
            && bytes[6] == POWER_ON_BYTE6,
    })
}

/// The raw register for `celsius` at 12 bit (rounded to 1/16 C, clamped to
/// the i16 range): the inverse of [`decode_temperature`], for simulators.
pub fn encode_temperature(celsius: f64) -> i16 {
    let v = (celsius * 16.0).round();
    if v.is_nan() {
        0
    } else {
        // Saturating float-to-int conversion.
        v as i16
    }
}

/// A scratchpad as a DS18B20 would send it, CRC included.
pub fn build_scratchpad(raw: i16, th: i8, tl: i8, resolution: Resolution, byte6: u8) -> [u8; 9] {
    let t = raw.to_le_bytes();
    let mut b = [
        t[0],
        t[1],
        th.to_le_bytes()[0],
        tl.to_le_bytes()[0],
        resolution.config_byte(),
        0xFF,
        byte6,
        0x10,
        0,
    ];
    b[8] = crc8(&b[..8]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc_matches_the_datasheet_and_kernel_examples() {
        // The kernel's w1_slave example line: 72 01 4b 46 7f ff 0e 10 57.
        let sp = [0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x57];
        assert_eq!(crc8(&sp[..8]), 0x57);
        assert_eq!(crc8(&sp), 0);
        // Maxim AN27 example ROM: 02 1C B8 01 00 00 00 A2.
        assert_eq!(crc8(&[0x02, 0x1C, 0xB8, 0x01, 0, 0, 0]), 0xA2);
        assert_eq!(crc8(&[]), 0);
    }

    #[test]
    fn rom_ids_follow_the_kernel_naming() {
        let rom = Rom::parse_id("28-0316a2791dff").expect("valid");
        assert_eq!(rom.0[..7], [0x28, 0xff, 0x1d, 0x79, 0xa2, 0x16, 0x03]);
        assert!(rom.crc_ok());
        assert_eq!(rom.id(), "28-0316a2791dff");
        assert_eq!(Rom::from_u64(rom.to_u64()), rom);
        for bad in [
            "",
            "28",
            "28-0316a2791df",
            "28-0316a2791dfff",
            "2g-0316a2791dff",
            "28-0316a2791dfg",
            "28_0316a2791dff",
            "28-+316a2791dff",
            "28-0316a2791d\u{e9}",
        ] {
            assert!(Rom::parse_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolutions_have_the_datasheet_config_bytes_and_times() {
        let cfg: Vec<u8> = Resolution::ALL.iter().map(|r| r.config_byte()).collect();
        assert_eq!(cfg, [0x1F, 0x3F, 0x5F, 0x7F]);
        let ms: Vec<f64> = Resolution::ALL
            .iter()
            .map(|r| r.conversion_time().as_secs_f64() * 1000.0)
            .collect();
        assert_eq!(ms, [93.75, 187.5, 375.0, 750.0]);
        for r in Resolution::ALL {
            assert_eq!(Resolution::from_config(r.config_byte()), r);
            assert_eq!(Resolution::from_bits(r.bits()), Some(r));
        }
        assert_eq!(Resolution::from_bits(8), None);
    }

    #[test]
    fn the_datasheet_temperature_table_decodes() {
        let table: [(u16, f64); 9] = [
            (0x07D0, 125.0),
            (0x0550, 85.0),
            (0x0191, 25.0625),
            (0x00A2, 10.125),
            (0x0008, 0.5),
            (0x0000, 0.0),
            (0xFFF8, -0.5),
            (0xFF5E, -10.125),
            (0xFE6F, -25.0625),
        ];
        for (raw, c) in table {
            let [l, m] = raw.to_le_bytes();
            assert_eq!(
                decode_temperature(l, m, Resolution::Bits12).1,
                c,
                "{raw:#06x}"
            );
            assert_eq!(u16::from_le_bytes(encode_temperature(c).to_le_bytes()), raw);
        }
        assert_eq!(decode_temperature(0x90, 0xFC, Resolution::Bits12).1, -55.0);
    }

    #[test]
    fn lower_resolutions_mask_the_undefined_bits_and_keep_the_scale() {
        // -10.125 = 0xFF5E; at 9 bit the lowest 3 bits are undefined: 0xFF58 = -10.5.
        assert_eq!(decode_temperature(0x5E, 0xFF, Resolution::Bits9).1, -10.5);
        assert_eq!(decode_temperature(0x5E, 0xFF, Resolution::Bits10).1, -10.25);
        assert_eq!(
            decode_temperature(0x5E, 0xFF, Resolution::Bits11).1,
            -10.125
        );
        // +25.0625 = 0x0191 with garbage in the undefined bits.
        assert_eq!(decode_temperature(0x97, 0x01, Resolution::Bits9).1, 25.0);
        assert_eq!(decode_temperature(0x93, 0x01, Resolution::Bits10).1, 25.0);
        assert_eq!(decode_temperature(0x93, 0x01, Resolution::Bits11).1, 25.125);
    }

    #[test]
    fn scratchpads_decode_and_flag_crc_power_on_and_silence() {
        let sp = [0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x57];
        let d = decode_scratchpad(&sp).expect("valid");
        assert_eq!(d.celsius, 23.125);
        assert_eq!(d.resolution, Resolution::Bits12);
        assert_eq!((d.th, d.tl), (75, 70));
        assert!(!d.power_on_reset);
        let mut bad = sp;
        bad[0] ^= 0x01;
        assert_eq!(decode_scratchpad(&bad), Err(ScratchpadError::Crc));
        assert_eq!(
            decode_scratchpad(&[0xFF; 9]),
            Err(ScratchpadError::NoDevice)
        );
        let por = build_scratchpad(0x0550, 75, 70, Resolution::Bits12, POWER_ON_BYTE6);
        let d = decode_scratchpad(&por).expect("valid");
        assert_eq!(d.celsius, 85.0);
        assert!(d.power_on_reset);
        let real85 = build_scratchpad(0x0550, 75, 70, Resolution::Bits12, 0x0B);
        assert!(!decode_scratchpad(&real85).expect("valid").power_on_reset);
        // Nine zeros pass the CRC (it is 0) but are no reading.
        assert_eq!(
            decode_scratchpad(&[0; 9]),
            Err(ScratchpadError::NotReady(NotReady::AllZero))
        );
    }

    #[test]
    fn the_kernels_families_are_known_by_name_and_bulk_support() {
        let names: Vec<_> = ["10-", "22-", "28-", "3b-", "42-"]
            .iter()
            .map(|p| ThermFamily::of_id(&format!("{p}0316a2791dff")).map(|f| f.name))
            .collect();
        assert_eq!(
            names,
            [
                Some("DS18S20"),
                Some("DS1822"),
                Some("DS18B20"),
                Some("DS1825/MAX31850"),
                Some("DS28EA00")
            ]
        );
        assert_eq!(
            ThermFamily::of_id("3B-0316a2791dff").map(|f| f.code),
            Some(0x3B)
        );
        // Only DS28EA00 lacks the kernel's bulk read.
        let solo: Vec<_> = THERM_FAMILIES.iter().filter(|f| !f.bulk_read).collect();
        assert_eq!(solo.len(), 1);
        assert_eq!(solo[0].code, 0x42);
        for bad in [
            "01-0316a2791dff",
            "28-0316a2791df",
            "28_0316a2791dff",
            "w1_bus_master1",
            "",
            "28-0316a2791dfg",
        ] {
            assert_eq!(ThermFamily::of_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn scratchpads_that_cannot_be_readings_are_not_ready() {
        let good = [0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x57];
        for fam in [0x28, 0x22, 0x42, 0x3B] {
            assert_eq!(check_scratchpad(fam, &good), Ok(()), "{fam:#x}");
            assert_eq!(check_scratchpad(fam, &[0; 9]), Err(NotReady::AllZero));
        }
        for r in Resolution::ALL {
            let sp = build_scratchpad(0, 75, 70, r, 0x10);
            assert_eq!(check_scratchpad(0x28, &sp), Ok(()), "{r:?}");
        }
        // A configuration byte with a fixed bit cleared.
        let mut odd = good;
        odd[4] = 0x7E;
        assert!(matches!(
            check_scratchpad(0x28, &odd),
            Err(NotReady::Config {
                byte: 0x7E,
                family: "DS18B20"
            })
        ));
        // DS1825: address pins in bits 3..0, bit 4 reads 1; MAX31850: 0xF?.
        let mut ds1825 = good;
        ds1825[4] = 0x73;
        assert_eq!(check_scratchpad(0x3B, &ds1825), Ok(()));
        ds1825[4] = 0xF5;
        assert_eq!(check_scratchpad(0x3B, &ds1825), Ok(()));
        ds1825[4] = 0x63;
        assert!(check_scratchpad(0x3B, &ds1825).is_err());
        // DS18S20: bytes 4 and 5 read 0xFF, byte 7 is COUNT_PER_C.
        let s20 = [0x2e, 0x00, 0x4b, 0x46, 0xff, 0xff, 0x0c, 0x10, 0x00];
        assert_eq!(check_scratchpad(0x10, &s20), Ok(()));
        let mut s20b = s20;
        s20b[4] = 0x7f;
        assert!(check_scratchpad(0x10, &s20b).is_err());
        s20b = s20;
        s20b[7] = 0;
        assert_eq!(check_scratchpad(0x10, &s20b), Err(NotReady::CountPerC));
        // Unknown families: only the all-zero check.
        assert_eq!(check_scratchpad(0x01, &odd), Ok(()));
        assert_eq!(check_scratchpad(0x01, &[0; 9]), Err(NotReady::AllZero));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::array::uniform9(any::<u8>())) {
            let _ = decode_scratchpad(&bytes);
        }

        #[test]
        fn any_single_bit_flip_is_caught_by_the_crc(raw in -880i16..=2000, bit in 0usize..72) {
            let mut sp = build_scratchpad(raw, 75, 70, Resolution::Bits12, 0x0B);
            sp[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(decode_scratchpad(&sp), Err(ScratchpadError::Crc));
        }

        #[test]
        fn encode_then_decode_is_identity_at_12_bit(raw in any::<i16>()) {
            let [l, m] = raw.to_le_bytes();
            let (r, c) = decode_temperature(l, m, Resolution::Bits12);
            prop_assert_eq!(r, raw);
            prop_assert_eq!(encode_temperature(c), raw);
        }

        #[test]
        fn parsing_ids_never_panics(s in "\\PC{0,20}") {
            let _ = Rom::parse_id(&s);
        }
    }
}
