//! The GPIO backend, with the real one-wire-bus and ds18b20 crates, against
//! the wire-level simulator: simulated DS18B20s on an open-drain line, in
//! virtual time.

use std::convert::Infallible;

use embedded_hal::digital::v2::{InputPin, OutputPin};
use one_wire_bus::{Address, OneWire};
use thermalert::core::alert::ReadFault;
use thermalert::onewire::sim::{DeviceSpec, Drive, SimBus, SimDelay, SimPin};
use thermalert::onewire::{cmd, decode_scratchpad, Resolution, Rom};
use thermalert::sensor::gpio::{ConvertMode, GpioBackend, IoPinOps, OpenDrain};
use thermalert::sensor::Backend;

/// Five serials whose ROMs branch at many bit positions (serial bits 0, 1,
/// 40, 47 and the CRC byte), so the search walks several discrepancies.
const SERIALS: [u64; 5] = [
    0x0000_0000_0001,
    0x0000_0000_0003,
    0x0316_a279_1dff,
    0x0316_a279_1dfe,
    0x8000_0000_0000,
];

fn rom(serial: u64) -> Rom {
    Rom::new(0x28, serial)
}

fn bus_with(temps: &[(u64, f64)]) -> SimBus {
    let bus = SimBus::new();
    for &(s, c) in temps {
        bus.add(DeviceSpec::new(rom(s), c));
    }
    bus
}

fn backend(bus: &SimBus) -> GpioBackend<SimPin, SimDelay> {
    GpioBackend::new(bus.pin(), bus.delay(), 3).expect("backend")
}

fn ids(serials: &[u64]) -> Vec<String> {
    serials.iter().map(|&s| rom(s).id()).collect()
}

#[test]
fn rom_search_finds_every_device() {
    let bus = bus_with(&SERIALS.map(|s| (s, 20.0)));
    let mut b = backend(&bus);
    let mut found = b.search().expect("search");
    found.sort();
    let mut want: Vec<Rom> = SERIALS.iter().map(|&s| rom(s)).collect();
    want.sort();
    assert_eq!(found, want);
    assert!(found.iter().all(|r| r.crc_ok()));
}

#[test]
fn rom_search_on_an_empty_bus_finds_nothing() {
    let bus = SimBus::new();
    let mut b = backend(&bus);
    assert_eq!(b.search(), Ok(vec![]));
    let e = b.scan().expect_err("scan must fail with no sensors");
    assert!(e.to_string().contains("no presence pulse"), "{e}");
}

#[test]
fn readings_match_the_simulated_temperatures_at_12_bit() {
    let temps = [
        (SERIALS[0], -18.0625),
        (SERIALS[1], -55.0),
        (SERIALS[2], 125.0),
        (SERIALS[3], 0.0),
        (SERIALS[4], 25.0625),
    ];
    let bus = bus_with(&temps);
    let mut b = backend(&bus);
    let samples = b.sweep(&ids(&SERIALS));
    for ((_, c), s) in temps.iter().zip(&samples) {
        assert_eq!(s.read, Ok(*c), "{}", s.id);
    }
}

#[test]
fn lower_resolutions_are_set_and_decoded_in_sixteenths() {
    // -10.125 = 0xFF5E: 9 bit -> -10.5, 10 bit -> -10.25, 11 bit -> -10.125.
    // +25.0625 = 0x0191: 9 bit -> 25.0, 10 bit -> 25.0, 11 bit -> 25.0.
    let cases = [
        (Resolution::Bits9, -10.125, -10.5),
        (Resolution::Bits10, -10.125, -10.25),
        (Resolution::Bits11, -10.125, -10.125),
        (Resolution::Bits9, 25.0625, 25.0),
        (Resolution::Bits10, 25.1875, 25.0),
        (Resolution::Bits11, 25.1875, 25.125),
    ];
    for (res, actual, expected) in cases {
        let bus = bus_with(&[(SERIALS[2], actual)]);
        let mut b = backend(&bus);
        let id = rom(SERIALS[2]).id();
        b.want_resolution(&id, res);
        let start = bus.now_us();
        let s = b.sweep(std::slice::from_ref(&id));
        assert_eq!(bus.resolution(rom(SERIALS[2])), Some(res));
        assert_eq!(s[0].read, Ok(expected), "{res:?} {actual}");
        // The sweep waited the conversion time of that resolution, not 750 ms.
        let took = bus.now_us() - start;
        let conv = res.conversion_time().as_micros() as u64;
        assert!(took >= conv && took < conv + 60_000, "{res:?}: {took} µs");
    }
}

#[test]
fn a_corrupted_bit_is_caught_by_crc_and_retried() {
    let bus = bus_with(&[(SERIALS[0], 21.5), (SERIALS[1], 22.5)]);
    let mut b = backend(&bus);
    bus.corrupt_next_read(rom(SERIALS[0]), 3);
    let s = b.sweep(&ids(&SERIALS[..2]));
    assert_eq!(s[0].read, Ok(21.5));
    assert_eq!(s[1].read, Ok(22.5));
}

#[test]
fn a_corruption_on_every_attempt_is_a_crc_fault() {
    let bus = bus_with(&[(SERIALS[0], 21.5), (SERIALS[1], 22.5)]);
    let mut b = backend(&bus);
    bus.corrupt_reads(rom(SERIALS[0]), 17, 3);
    let s = b.sweep(&ids(&SERIALS[..2]));
    assert_eq!(s[0].read, Err(ReadFault::Crc));
    assert_eq!(s[1].read, Ok(22.5));
    // Three attempts used up the three corruptions: the next sweep is clean.
    let s = b.sweep(&ids(&SERIALS[..2]));
    assert_eq!(s[0].read, Ok(21.5));
}

#[test]
fn a_preempted_master_sampling_late_is_retried() {
    let bus = bus_with(&[(SERIALS[0], -18.0625)]);
    let mut b = backend(&bus);
    let id = ids(&SERIALS[..1]);
    assert_eq!(b.sweep(&id)[0].read, Ok(-18.0625));
    // Stretch a delay deep inside the next scratchpad read: the master
    // samples a 0 bit after the device let go and reads a 1 instead.
    // Count the delays of one sweep to land inside the scratchpad read.
    let before = bus.stats();
    bus.preempt(215, 40);
    assert_eq!(b.sweep(&id)[0].read, Ok(-18.0625));
    let after = bus.stats();
    // One reset for the conversion, one per read attempt: the retry shows
    // as a third reset.
    assert_eq!(after.resets - before.resets, 3, "{before:?} -> {after:?}");
}

#[test]
fn a_device_that_drops_out_is_missing() {
    let bus = bus_with(&[(SERIALS[0], 21.5), (SERIALS[1], 22.5)]);
    let mut b = backend(&bus);
    let id = ids(&SERIALS[..2]);
    bus.set_present(rom(SERIALS[1]), false);
    let s = b.sweep(&id);
    assert_eq!(s[0].read, Ok(21.5));
    assert_eq!(s[1].read, Err(ReadFault::Missing));
    // Alone on the bus: no presence pulse at all.
    bus.set_present(rom(SERIALS[0]), false);
    let s = b.sweep(&id);
    assert_eq!(s[0].read, Err(ReadFault::Missing));
    assert_eq!(s[1].read, Err(ReadFault::Missing));
    // Back: it reads again (after a conversion, not the power-on 85).
    bus.set_present(rom(SERIALS[1]), true);
    let s = b.sweep(&id);
    assert_eq!(s[1].read, Ok(22.5));
}

#[test]
fn power_on_value_is_85_with_byte_6_0x0c_until_the_first_conversion() {
    let bus = bus_with(&[(SERIALS[0], 21.5)]);
    let mut b = backend(&bus);
    let r = rom(SERIALS[0]);
    let sp = b.read_scratchpad(r).expect("read");
    assert_eq!(&sp[..2], &[0x50, 0x05]);
    assert_eq!(sp[6], 0x0C);
    let d = decode_scratchpad(&sp).expect("crc");
    assert_eq!(d.celsius, 85.0);
    assert!(d.power_on_reset);
    assert_eq!(b.read_celsius(r), Ok(85.0));
    // After a conversion: the real value, byte 6 no longer the reset mark.
    assert_eq!(b.sweep(&[r.id()])[0].read, Ok(21.5));
    let sp = b.read_scratchpad(r).expect("read");
    assert!(!decode_scratchpad(&sp).expect("crc").power_on_reset);
    // A power cycle brings the reset value back.
    bus.power_cycle(r);
    assert_eq!(b.read_celsius(r), Ok(85.0));
}

#[test]
fn scan_reports_ids_temperatures_resolution_and_power() {
    let bus = SimBus::new();
    bus.add(DeviceSpec::new(rom(SERIALS[2]), 4.5));
    bus.add(DeviceSpec {
        parasite: true,
        resolution: Resolution::Bits10,
        ..DeviceSpec::new(rom(SERIALS[4]), -7.25)
    });
    // Not a DS18B20 (a DS2401 serial number, family 0x01): ignored.
    bus.add(DeviceSpec::new(Rom::new(0x01, 0x42), 0.0));
    let mut b = backend(&bus);
    let mut found = b.scan().expect("scan");
    found.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].id, "28-0316a2791dff");
    assert_eq!(found[0].celsius, Ok(4.5));
    assert_eq!(found[0].resolution_bits, Some(12));
    assert_eq!(found[0].parasite, Some(false));
    assert_eq!(found[1].id, "28-800000000000");
    assert_eq!(found[1].celsius, Ok(-7.25));
    assert_eq!(found[1].resolution_bits, Some(10));
    assert_eq!(found[1].parasite, Some(true));
}

#[test]
fn simultaneous_conversion_costs_one_conversion_time() {
    let n = SERIALS.len() as u64;
    let bus = bus_with(&SERIALS.map(|s| (s, 20.0)));
    let mut b = backend(&bus);
    let id = ids(&SERIALS);
    b.sweep(&id); // the first sweep also reads each config
    let t0 = bus.now_us();
    b.sweep(&id);
    let simultaneous = bus.now_us() - t0;

    b.set_convert_mode(ConvertMode::PerSensor);
    let t0 = bus.now_us();
    let s = b.sweep(&id);
    let per_sensor = bus.now_us() - t0;
    assert!(s.iter().all(|s| s.read == Ok(20.0)), "{s:?}");

    println!(
        "sweep of {n} sensors at 12 bit: simultaneous {:.1} ms, per sensor {:.1} ms",
        simultaneous as f64 / 1000.0,
        per_sensor as f64 / 1000.0
    );
    // 750 ms + about 12 ms per Match ROM read.
    assert!(
        simultaneous >= 750_000 && simultaneous < 750_000 + n * 15_000,
        "{simultaneous}"
    );
    assert!(per_sensor >= n * 750_000, "{per_sensor}");
}

#[test]
fn a_parasite_sensor_keeps_its_value_when_the_line_is_left_alone() {
    let bus = SimBus::new();
    bus.add(DeviceSpec {
        parasite: true,
        ..DeviceSpec::new(rom(SERIALS[0]), 30.5)
    });
    let mut b = backend(&bus);
    assert_eq!(b.sweep(&ids(&SERIALS[..1]))[0].read, Ok(30.5));
    assert_eq!(bus.conversions(rom(SERIALS[0])), Some(1));
}

/// Regression (i): ds18b20 0.1.1 reads the register as unsigned and divides
/// by 2^(res-8)... at lower resolutions; this backend decodes it itself.
#[test]
fn upstream_ds18b20_decode_is_wrong_where_ours_is_right() {
    for (res, actual, ours) in [
        (Resolution::Bits12, -18.0625, -18.0625),
        (Resolution::Bits12, -55.0, -55.0),
        (Resolution::Bits9, 25.0625, 25.0),
        (Resolution::Bits10, 21.5, 21.5),
    ] {
        let bus = SimBus::new();
        bus.add(DeviceSpec {
            resolution: res,
            ..DeviceSpec::new(rom(SERIALS[0]), actual)
        });
        let mut b = backend(&bus);
        let id = rom(SERIALS[0]).id();
        assert_eq!(b.sweep(std::slice::from_ref(&id))[0].read, Ok(ours));

        let mut delay = bus.delay();
        let mut ow = OneWire::new(bus.pin()).expect("pin");
        let dev =
            ds18b20::Ds18b20::new::<Infallible>(Address(rom(SERIALS[0]).to_u64())).expect("family");
        let theirs = dev
            .read_data(&mut ow, &mut delay)
            .expect("read")
            .temperature;
        assert_ne!(
            f64::from(theirs),
            ours,
            "{res:?} {actual}: upstream got it right?"
        );
    }
}

/// A stand-in for rppal 0.22.1's `IoPin` on the simulated line: its own
/// methods are right (`read()`, `set_mode`), its embedded-hal 0.2 impls
/// are rppal's: `InputPin::is_low` returns `is_high()`
/// (src/gpio/hal_unproven.rs), and `OutputPin::set_high` in output mode
/// drives the line high push-pull.
struct RppalLikeIoPin {
    bus: SimBus,
    output: bool,
    latch_high: bool,
}

impl RppalLikeIoPin {
    fn output(bus: &SimBus) -> Self {
        let p = RppalLikeIoPin {
            bus: bus.clone(),
            output: true,
            latch_high: true,
        };
        p.apply();
        p
    }
    fn apply(&self) {
        self.bus.drive(match (self.output, self.latch_high) {
            (false, _) => Drive::Released,
            (true, false) => Drive::Low,
            (true, true) => Drive::High,
        });
    }
}

impl OutputPin for RppalLikeIoPin {
    type Error = Infallible;
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.latch_high = false;
        self.apply();
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        self.latch_high = true;
        self.apply();
        Ok(())
    }
}

impl InputPin for RppalLikeIoPin {
    type Error = Infallible;
    fn is_high(&self) -> Result<bool, Infallible> {
        Ok(self.bus.level())
    }
    /// rppal 0.22.1: `Ok((*self).is_high())`.
    fn is_low(&self) -> Result<bool, Infallible> {
        Ok(self.bus.level())
    }
}

impl IoPinOps for RppalLikeIoPin {
    type Error = Infallible;
    fn set_output(&mut self) -> Result<(), Infallible> {
        self.output = true;
        self.apply();
        Ok(())
    }
    fn set_input(&mut self) -> Result<(), Infallible> {
        self.output = false;
        self.apply();
        Ok(())
    }
    fn set_latch_low(&mut self) -> Result<(), Infallible> {
        self.latch_high = false;
        self.apply();
        Ok(())
    }
    fn read_high(&self) -> Result<bool, Infallible> {
        Ok(self.bus.level())
    }
}

fn read_rom<P: InputPin<Error = Infallible> + OutputPin<Error = Infallible>>(
    ow: &mut OneWire<P>,
    delay: &mut SimDelay,
) -> [u8; 8] {
    let mut r = [0u8; 8];
    ow.write_byte(cmd::READ_ROM, delay).expect("write");
    ow.read_bytes(&mut r, delay).expect("read");
    r
}

/// Regression (ii): rppal's pin used directly breaks the bus.
#[test]
fn rppal_semantics_used_directly_break_the_bus() {
    // Push-pull high plus the inverted is_low: a presence pulse on an empty bus.
    let empty = SimBus::new();
    let mut ow = OneWire::new(RppalLikeIoPin::output(&empty)).expect("pin");
    assert_eq!(
        ow.reset(&mut empty.delay()).ok(),
        Some(true),
        "phantom presence"
    );

    // With a device: its 0 bits are overpowered by the push-pull high.
    let bus = bus_with(&[(SERIALS[2], 20.0)]);
    let mut d = bus.delay();
    let mut ow = OneWire::new(RppalLikeIoPin::output(&bus)).expect("pin");
    let _ = ow.reset(&mut d);
    assert_eq!(read_rom(&mut ow, &mut d), [0xFF; 8]);

    // And the inverted is_low itself: during a presence pulse the line is
    // low, yet is_low() says false.
    let bus = bus_with(&[(SERIALS[2], 20.0)]);
    let mut pin = RppalLikeIoPin::output(&bus);
    IoPinOps::set_latch_low(&mut pin).expect("low");
    bus.advance_us(480);
    IoPinOps::set_input(&mut pin).expect("release");
    bus.advance_us(70);
    assert!(!IoPinOps::read_high(&pin).expect("read"), "line is low");
    assert_eq!(InputPin::is_low(&pin).ok(), Some(false), "rppal's is_low");
    let wrapped = OpenDrain::new(pin).expect("wrap");
    // OpenDrain::new releases the line; the device still holds it low.
    assert_eq!(
        InputPin::is_low(&wrapped).ok(),
        Some(true),
        "wrapper's is_low"
    );
}

#[test]
fn the_open_drain_wrapper_makes_rppal_semantics_work() {
    let empty = SimBus::new();
    let pin = OpenDrain::new(RppalLikeIoPin::output(&empty)).expect("pin");
    let mut ow = OneWire::new(pin).expect("ow");
    assert_eq!(
        ow.reset(&mut empty.delay()).ok(),
        Some(false),
        "no phantom presence"
    );

    let bus = bus_with(&[(SERIALS[2], -18.0625), (SERIALS[4], 99.5)]);
    let mut d = bus.delay();
    let pin = OpenDrain::new(RppalLikeIoPin::output(&bus)).expect("pin");
    let mut ow = OneWire::new(pin).expect("ow");
    assert_eq!(ow.reset(&mut d).ok(), Some(true));
    ow.reset(&mut d).expect("reset");
    ow.skip_address(&mut d).expect("skip");
    // Read ROM needs a single device; Skip ROM + Read Power Supply is a
    // bit every device answers: both external, so 1.
    ow.write_byte(cmd::READ_POWER_SUPPLY, &mut d).expect("cmd");
    assert_eq!(ow.read_bit(&mut d).ok(), Some(true));

    // The full backend over the wrapper.
    let pin = ow.into_inner();
    let mut b = GpioBackend::new(pin, bus.delay(), 3).expect("backend");
    let s = b.sweep(&ids(&[SERIALS[2], SERIALS[4]]));
    assert_eq!(s[0].read, Ok(-18.0625));
    assert_eq!(s[1].read, Ok(99.5));
    let mut found = b.search().expect("search");
    found.sort();
    let mut want = vec![rom(SERIALS[2]), rom(SERIALS[4])];
    want.sort();
    assert_eq!(found, want);
}

#[test]
fn sweep_of_an_invalid_id_is_an_io_fault_not_a_panic() {
    let bus = bus_with(&[(SERIALS[0], 1.0)]);
    let mut b = backend(&bus);
    let s = b.sweep(&["not-an-id".to_string()]);
    assert!(
        matches!(&s[0].read, Err(e @ ReadFault::BadId { id, .. }) if id == "not-an-id" && e.to_string().contains("not-an-id"))
    );
}
