//! The kernel backend against the stand-in w1_therm kernel
//! (`tests/common/w1_kernel.rs`, written from `drivers/w1/slaves/w1_therm.c`):
//! the bulk trigger's exact bytes and its confirmation, one conversion per
//! bus against one per sensor (in real, measured time), readings that
//! cannot be readings, every w1_therm family, CRC failures before and from
//! 5.10, resolutions, and sensors that come and go.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::w1_kernel::{Answer, Kind, Version, W1Kernel};
use thermalert::core::alert::ReadFault;
use thermalert::onewire::NotReady;
use thermalert::sensor::w1_sysfs::{Conversion, PerSensorReason, W1SysfsBackend, RETRIES};
use thermalert::sensor::Backend;

const A: &str = "28-0316a2791dff";
const B: &str = "28-000000000002";
/// Long enough for a test's deadline to pass on a loaded machine.
const WAIT: Duration = Duration::from_secs(20);

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn running_as_root() -> bool {
    let d = tempfile::tempdir().expect("tempdir");
    fs::metadata(d.path()).map(|m| m.uid() == 0).unwrap_or(true)
}

fn bulk_stores(k: &W1Kernel) -> Vec<(usize, bool)> {
    k.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            Kind::BulkStore { size, triggered } => Some((size, triggered)),
            _ => None,
        })
        .collect()
}

fn w1_slave_reads(k: &W1Kernel, id: &str) -> usize {
    k.events()
        .iter()
        .filter(|e| matches!(&e.kind, Kind::Shown { id: i, attr: "w1_slave", .. } if i == id))
        .count()
}

#[test]
fn the_kernel_ignores_a_seven_byte_trigger_and_the_backend_sends_eight() {
    let k = W1Kernel::start(Version::Current);
    k.attach(A, 20.0).attach(B, 21.0);
    // What thermalert used to write: 7 bytes. therm_bulk_read_store()
    // logs it, reports success, and starts nothing.
    fs::write(k.bulk_file(), "trigger").expect("a 7-byte write succeeds");
    k.wait_for("the 7-byte store", WAIT, |e| {
        e.iter().any(|e| matches!(e.kind, Kind::BulkStore { .. }))
    });
    assert_eq!(bulk_stores(&k), [(7, false)]);
    assert!(
        k.log()
            .iter()
            .any(|l| l.contains("unable to trigger a bulk read on the bus. err=-22")),
        "{:?}",
        k.log()
    );
    assert_eq!(fs::read_to_string(k.bulk_file()).expect("read"), "0\n");

    let mut b = W1SysfsBackend::new(k.root(), true);
    let s = b.sweep(&ids(&[A, B]));
    assert_eq!(s[0].read, Ok(20.0));
    assert_eq!(s[1].read, Ok(21.0));
    assert_eq!(bulk_stores(&k)[1..], [(8, true)], "exactly `trigger\\n`");
    let (per_sensor, bulk) = k.conversions();
    assert_eq!(bulk, 1, "one bulk conversion");
    assert!(
        per_sensor.is_empty(),
        "no sensor converted on its own: {per_sensor:?}"
    );
    assert_eq!(b.conversion(), Some(&Conversion::Bulk));
    assert_eq!(b.status_note(), None);
}

#[test]
fn one_conversion_per_bus_not_per_sensor_in_measured_time() {
    // 8 sensors, the kernel waiting 150 ms per conversion (conv_time).
    let k = W1Kernel::start(Version::Current);
    let all: Vec<String> = (1..=8).map(|i| format!("28-00000000010{i}")).collect();
    for (i, id) in all.iter().enumerate() {
        k.attach(id, 10.0 + i as f64);
    }
    k.set_conv_time_all(150);
    let conv = Duration::from_millis(150);

    let mut bulk = W1SysfsBackend::new(k.root(), true);
    bulk.sweep(&all); // the first sweep learns the mode
    let t = Instant::now();
    let s = bulk.sweep(&all);
    let bulk_took = t.elapsed();
    for (i, x) in s.iter().enumerate() {
        assert_eq!(x.read, Ok(10.0 + i as f64), "{}", x.id);
    }
    assert_eq!(bulk.conversion(), Some(&Conversion::Bulk));

    let mut per = W1SysfsBackend::new(k.root(), false);
    let t = Instant::now();
    per.sweep(&all);
    let per_took = t.elapsed();

    assert!(
        bulk_took < conv * 2,
        "a bulk sweep of 8 sensors took {bulk_took:?}, about one conversion ({conv:?}) expected"
    );
    assert!(
        per_took >= conv * 8,
        "per sensor: {per_took:?} for 8 conversions of {conv:?}"
    );
    // The timing the backend sizes its deadline and budget from.
    let tb = bulk.timing().expect("timing");
    let tp = per.timing().expect("timing");
    assert!(tb.expected >= conv && tb.expected < conv * 4, "{tb:?}");
    assert!(tp.expected >= conv * 8, "{tp:?}");
    assert!(
        bulk_took < tb.budget && per_took < tp.budget,
        "{tb:?} {tp:?}"
    );
    assert!(bulk.sweep_budget(8) < per.sweep_budget(8));
}

#[test]
fn a_trigger_the_kernel_does_not_act_on_means_per_sensor_said_once_and_sized_for() {
    let k = W1Kernel::start(Version::Current);
    k.attach(A, 20.0).attach(B, -5.5);
    k.set_conv_time_all(100);
    let mut b = W1SysfsBackend::new(k.root(), true);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let seen = seen.clone();
        b.set_deadline_hook(std::sync::Arc::new(move |d| {
            seen.lock().expect("lock").push(d);
        }));
    }
    b.sweep(&ids(&[A, B]));
    assert_eq!(b.conversion(), Some(&Conversion::Bulk));
    let bulk_budget = b.sweep_budget(2);

    // trigger_bulk_read() cannot take the bus: -EAGAIN, logged, success
    // to the writer, therm_bulk_read still 0.
    k.contend_bus(true);
    let s = b.sweep(&ids(&[A, B]));
    assert_eq!(s[0].read, Ok(20.0));
    assert_eq!(s[1].read, Ok(-5.5));
    match b.conversion() {
        Some(Conversion::PerSensor(PerSensorReason::NotStarted(why))) => {
            assert!(why.contains("read 0 after the trigger"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let note = b.status_note().expect("a status note");
    assert!(
        note.contains("converting per sensor") && note.contains("did not start a bulk conversion"),
        "{note}"
    );
    assert!(
        b.sweep_budget(2) > bulk_budget,
        "the budget follows the mode"
    );
    assert!(
        k.log().iter().any(|l| l.contains("err=-11")),
        "{:?}",
        k.log()
    );
    let (per_sensor, _) = k.conversions();
    assert_eq!(per_sensor.values().sum::<usize>(), 2, "{per_sensor:?}");
    // Mid-sweep, once the mode was known, the sweep re-promised its end:
    // longer than a bulk sweep needs.
    let promised = seen.lock().expect("lock").clone();
    assert_eq!(promised.len(), 2, "{promised:?}");
    assert!(promised[1] > promised[0], "{promised:?}");

    // The kernel acts on triggers again: back to bulk.
    k.contend_bus(false);
    b.sweep(&ids(&[A, B]));
    assert_eq!(b.conversion(), Some(&Conversion::Bulk));
    assert_eq!(b.status_note(), None);
}

#[test]
fn without_therm_bulk_read_or_with_it_disabled_each_sensor_converts() {
    // A kernel before the bulk read: only w1_slave.
    let k = W1Kernel::start(Version::Legacy);
    k.attach(A, 23.125).attach(B, -18.0625);
    assert!(!k.bulk_file().exists());
    let mut b = W1SysfsBackend::new(k.root(), true);
    let s = b.sweep(&ids(&[A, B]));
    assert_eq!(s[0].read, Ok(23.125));
    // w1_therm prints -18062 for -18.0625 (integer millidegrees).
    assert_eq!(s[1].read, Ok(-18.062));
    assert!(matches!(
        b.conversion(),
        Some(Conversion::PerSensor(PerSensorReason::NoBulkRead(_)))
    ));
    assert_eq!(k.conversions().0.len(), 2);

    // bulk_read = false: never triggered.
    let k = W1Kernel::start(Version::Current);
    k.attach(A, 20.0);
    let mut b = W1SysfsBackend::new(k.root(), false);
    assert_eq!(b.sweep(&ids(&[A]))[0].read, Ok(20.0));
    assert!(bulk_stores(&k).is_empty());
    assert_eq!(
        b.conversion(),
        Some(&Conversion::PerSensor(PerSensorReason::Disabled))
    );
    assert!(b
        .status_note()
        .is_some_and(|n| n.contains("sensors.w1.bulk_read = false")));
}

#[test]
fn a_therm_bulk_read_the_daemon_may_not_write_is_per_sensor_with_a_hint() {
    use std::os::unix::fs::PermissionsExt;
    if running_as_root() {
        println!("note: running as root, file modes do not block writes; skipped");
        return;
    }
    let k = W1Kernel::start(Version::Current);
    k.attach(A, 20.0);
    fs::set_permissions(k.bulk_file(), fs::Permissions::from_mode(0o444)).expect("chmod");
    let mut b = W1SysfsBackend::new(k.root(), true);
    assert_eq!(b.sweep(&ids(&[A]))[0].read, Ok(20.0));
    match b.conversion() {
        Some(Conversion::PerSensor(PerSensorReason::WriteFailed(e))) => {
            assert!(e.contains("60-thermalert-w1.rules"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_bulk_result_is_read_through_w1_slave_without_converting_again() {
    let k = W1Kernel::start(Version::Current);
    k.attach(A, 23.125);
    let mut b = W1SysfsBackend::new(k.root(), true);
    assert_eq!(b.sweep(&ids(&[A]))[0].read, Ok(23.125));
    // w1_slave_show() read the RAM of the bulk conversion: the kernel
    // documentation's example line, and no conversion of its own.
    let shown: Vec<String> = k
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            Kind::Shown {
                attr: "w1_slave",
                text,
                ..
            } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(
        shown,
        ["72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"]
    );
    assert!(k.conversions().0.is_empty());
}

#[test]
fn an_all_zero_scratchpad_is_a_fault_not_zero_degrees_on_both_paths() {
    for bulk in [true, false] {
        let k = W1Kernel::start(Version::Current);
        k.attach(A, -18.0).attach(B, -17.5);
        k.set_answer(A, Answer::AllZeros);
        let mut b = W1SysfsBackend::new(k.root(), bulk);
        let s = b.sweep(&ids(&[A, B]));
        assert_eq!(
            s[0].read,
            Err(ReadFault::NotReady(NotReady::AllZero)),
            "bulk_read = {bulk}"
        );
        assert_eq!(s[1].read, Ok(-17.5));
        // What the kernel said: 0 C with a good CRC.
        let said = k
            .events()
            .into_iter()
            .find_map(|e| match e.kind {
                Kind::Shown {
                    id,
                    attr: "w1_slave",
                    text,
                } if id == A => Some(text),
                _ => None,
            })
            .expect("w1_slave read");
        assert!(
            said.starts_with("00 00 00 00 00 00 00 00 00 : crc=00 YES\n")
                && said.ends_with("t=0\n"),
            "{said}"
        );
        // After the usual retries.
        assert_eq!(w1_slave_reads(&k, A), 1 + RETRIES as usize);
        let f = ReadFault::NotReady(NotReady::AllZero).to_string();
        assert!(f.contains("sensor not ready"), "{f}");
    }
}

#[test]
fn an_impossible_configuration_byte_is_a_fault() {
    let k = W1Kernel::start(Version::Current);
    k.attach(A, 4.0);
    // Bits 4..0 of a DS18B20's byte 4 always read 1.
    k.set_ram(A, 4, 0x60);
    let mut b = W1SysfsBackend::new(k.root(), true);
    assert!(matches!(
        b.sweep(&ids(&[A]))[0].read,
        Err(ReadFault::NotReady(NotReady::Config { byte: 0x60, .. }))
    ));
}

#[test]
fn crc_failures_are_empty_reads_from_5_10_and_no_before() {
    let k = W1Kernel::start(Version::Current);
    k.attach(A, 21.0).attach(B, 22.0);
    k.set_answer(A, Answer::BadCrc);
    let mut b = W1SysfsBackend::new(k.root(), true);
    let s = b.sweep(&ids(&[A, B]));
    match &s[0].read {
        Err(e @ ReadFault::Io { path, .. }) => {
            let m = e.to_string();
            assert!(path.ends_with(format!("{A}/w1_slave")), "{m}");
            assert!(m.contains("empty read"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s[1].read, Ok(22.0));

    let k = W1Kernel::start(Version::Legacy);
    k.attach(A, 21.0).attach(B, 22.0);
    k.set_answer(A, Answer::BadCrc);
    let mut b = W1SysfsBackend::new(k.root(), true);
    let s = b.sweep(&ids(&[A, B]));
    assert_eq!(s[0].read, Err(ReadFault::Crc));
    assert_eq!(s[1].read, Ok(22.0));
}

#[test]
fn a_sensor_that_does_not_answer_is_an_io_fault_and_one_that_leaves_is_missing() {
    let k = W1Kernel::start(Version::Current);
    k.attach(A, 20.0).attach(B, 21.0);
    let mut b = W1SysfsBackend::new(k.root(), true);
    assert_eq!(b.sweep(&ids(&[A, B]))[0].read, Ok(20.0));
    k.set_answer(A, Answer::Absent);
    assert!(matches!(
        b.sweep(&ids(&[A, B]))[0].read,
        Err(ReadFault::Io { .. })
    ));
    // The w1 core's search drops it from the bus.
    k.detach(A);
    let s = b.sweep(&ids(&[A, B]));
    assert_eq!(s[0].read, Err(ReadFault::Missing));
    assert_eq!(s[1].read, Ok(21.0));
    k.attach(A, 19.5);
    assert_eq!(b.sweep(&ids(&[A, B]))[0].read, Ok(19.5));
}

#[test]
fn every_w1_therm_family_is_discovered_scanned_and_read() {
    let k = W1Kernel::start(Version::Current);
    let s20 = "10-000801b5a4c2";
    let s22 = "22-000000a1b2c3";
    let s3b = "3b-0000001a2b3c";
    let s42 = "42-00000021b0c4";
    k.attach(s20, 23.5)
        .attach(s22, -10.25)
        .attach(A, 4.0625)
        .attach(s3b, 36.75)
        .attach(s42, 18.5);
    // Not a thermometer (a DS2401 serial number): not listed.
    fs::create_dir_all(k.root().join("01-000000000042")).expect("mkdir");
    let mut b = W1SysfsBackend::new(k.root(), true);
    let found = b.discover().expect("discover");
    assert_eq!(found, ids(&[s20, s22, A, s3b, s42]));
    let scan = b.scan().expect("scan");
    type Row<'a> = (&'a str, Option<&'a str>, Result<f64, ReadFault>, Option<u8>);
    let got: Vec<Row> = scan
        .iter()
        .map(|f| {
            (
                f.id.as_str(),
                f.family,
                f.celsius.clone(),
                f.resolution_bits,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (s20, Some("DS18S20"), Ok(23.5), None),
            (s22, Some("DS1822"), Ok(-10.25), Some(12)),
            (A, Some("DS18B20"), Ok(4.062), Some(12)),
            (s3b, Some("DS1825/MAX31850"), Ok(36.75), Some(12)),
            (s42, Some("DS28EA00"), Ok(18.5), Some(12)),
        ]
    );
    // One bulk conversion for four of them; DS28EA00 has no bulk read in
    // the kernel and converted on its own.
    let (per_sensor, bulk) = k.conversions();
    assert_eq!(bulk, 1);
    assert_eq!(per_sensor.keys().collect::<Vec<_>>(), [s42]);
    assert_eq!(b.conversion(), Some(&Conversion::Bulk));
    assert!(b
        .status_note()
        .is_some_and(|n| n.contains("1 sensor(s) without bulk read")));
}

#[test]
fn a_bus_of_ds28ea00_alone_has_no_bulk_read_at_all() {
    let k = W1Kernel::start(Version::Current);
    k.attach("42-00000021b0c4", 18.5);
    // w1_therm_add_slave() creates therm_bulk_read with the first slave
    // that supports it: none here.
    assert!(!k.bulk_file().exists());
    let mut b = W1SysfsBackend::new(k.root(), true);
    assert_eq!(b.sweep(&ids(&["42-00000021b0c4"]))[0].read, Ok(18.5));
    assert_eq!(
        b.conversion(),
        Some(&Conversion::PerSensor(PerSensorReason::NoBulkFamily))
    );
}

#[test]
fn resolution_is_written_before_reading_and_the_kernel_resets_conv_time() {
    let k = W1Kernel::start(Version::Current);
    let s20 = "10-000801b5a4c2";
    k.attach(A, 20.0).attach(B, 20.0).attach(s20, 20.0);
    k.set_conv_time(A, 500);
    let mut b = W1SysfsBackend::new(k.root(), true);
    b.want_resolution(A, 10);
    b.want_resolution(s20, 10); // a DS18S20 has none: ignored
    let s = b.sweep(&ids(&[A, B, s20]));
    assert!(s.iter().all(|s| s.read == Ok(20.0)), "{s:?}");
    assert_eq!(k.config_byte(A), 0x3F, "R1 R0 = 01");
    assert_eq!(k.config_byte(B), 0x7F);
    assert_eq!(
        fs::read_to_string(k.root().join(A).join("resolution")).expect("read"),
        "10\n"
    );
    // resolution_store() dropped the 500 ms override: 190 ms at 10 bits.
    assert_eq!(
        fs::read_to_string(k.root().join(A).join("conv_time")).expect("read"),
        "190\n"
    );
    assert!(!k.root().join(s20).join("resolution").exists());
}

#[test]
fn unconfigured_sensors_are_read_so_the_next_trigger_can_be_confirmed() {
    let k = W1Kernel::start(Version::Current);
    k.attach(A, 20.0).attach(B, 21.0);
    let mut b = W1SysfsBackend::new(k.root(), true);
    b.sweep(&ids(&[A]));
    // B's bulk result was read too: nothing pending, therm_bulk_read 0.
    assert_eq!(fs::read_to_string(k.bulk_file()).expect("read"), "0\n");
    b.sweep(&ids(&[A]));
    assert_eq!(b.conversion(), Some(&Conversion::Bulk));
    assert_eq!(k.conversions(), (Default::default(), 2));
}

#[test]
fn the_bulk_wait_covers_the_slowest_sensor_on_the_bus_configured_or_not() {
    // trigger_bulk_read() sleeps for the slowest sensor with bulk read on
    // the bus; here an unconfigured one.
    let k = W1Kernel::start(Version::Current);
    k.attach(A, 20.0).attach(B, 21.0);
    k.set_conv_time(A, 100);
    k.set_conv_time(B, 700);
    let mut b = W1SysfsBackend::new(k.root(), true);
    assert_eq!(b.sweep(&ids(&[A]))[0].read, Ok(20.0));
    let t = b.timing().expect("timing");
    assert!(t.expected >= Duration::from_millis(700), "{t:?}");
}

#[test]
fn power_on_85000_is_reported_as_read() {
    // The backend reports what it read; the alert engine decides whether
    // 85.000 without a plausible history is a fault.
    let k = W1Kernel::start(Version::Current);
    k.attach(A, 85.0);
    let mut b = W1SysfsBackend::new(k.root(), true);
    assert_eq!(b.sweep(&ids(&[A]))[0].read, Ok(85.0));
    let mut engine = thermalert::core::alert::SensorAlarm::new(
        thermalert::core::alert::Thresholds {
            warning_above: Some(30.0),
            critical_above: Some(40.0),
            hysteresis: 0.5,
            ..Default::default()
        },
        1,
    );
    let d = engine.observe(b.sweep(&ids(&[A]))[0].read.clone());
    assert!(
        !d.is_empty()
            && d.iter()
                .all(|d| d.level == thermalert::core::alert::AlertLevel::Fault),
        "{d:?}"
    );
}

#[test]
fn unreadable_file_is_an_io_fault_naming_the_path() {
    let k = W1Kernel::start(Version::Current);
    k.attach(A, 20.0);
    // A directory where the file should be: unreadable even for root.
    let f = k.root().join(A).join("w1_slave");
    fs::remove_file(&f).expect("rm");
    fs::create_dir(&f).expect("mkdir");
    let mut b = W1SysfsBackend::new(k.root(), false);
    match &b.sweep(&ids(&[A]))[0].read {
        Err(e @ ReadFault::Io { path, .. }) => assert_eq!(path, &f, "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ids_that_are_not_one_path_component_are_rejected() {
    let k = W1Kernel::start(Version::Current);
    k.attach(A, 1.0);
    let mut b = W1SysfsBackend::new(k.root(), false);
    for bad in ["../devices/28-0316a2791dff", "..", ""] {
        let s = b.sweep(&[bad.to_string()]);
        assert!(
            matches!(s[0].read, Err(ReadFault::BadId { .. })),
            "{bad}: {:?}",
            s[0].read
        );
    }
}

// No kernel at all: the bus is not there.

#[test]
fn scan_without_the_bus_says_how_to_enable_it() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("devices");
    let mut b = W1SysfsBackend::new(&root, true);
    let e = b.scan().expect_err("no root").to_string();
    assert!(e.contains("w1 bus not found at"), "{e}");
    assert!(e.contains(&root.display().to_string()), "{e}");
    assert!(e.contains("dtoverlay=w1-gpio"), "{e}");
}

#[test]
fn scan_of_an_unreadable_root_says_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    if running_as_root() {
        println!("note: running as root, chmod 000 does not block reads; skipped");
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("devices");
    fs::create_dir_all(&root).expect("mkdir");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o000)).expect("chmod");
    let mut b = W1SysfsBackend::new(&root, true);
    let e = b.scan().expect_err("unreadable").to_string();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod back");
    assert!(e.contains("permission denied"), "{e}");
}

#[test]
fn a_root_that_is_a_file_is_reported() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("devices");
    fs::write(&root, "not a dir").expect("write");
    let mut b = W1SysfsBackend::new(&root, true);
    let e = b.scan().expect_err("a file").to_string();
    assert!(e.contains(&root.display().to_string()), "{e}");
}
