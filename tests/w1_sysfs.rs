//! The kernel backend against fake sysfs trees written in the kernel's
//! exact formats (w1_therm: `w1_slave`, `temperature`, `resolution`,
//! `ext_power`, the master's `therm_bulk_read`).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use thermalert::core::alert::ReadFault;
use thermalert::onewire::{build_scratchpad, encode_temperature, Resolution};
use thermalert::sensor::w1_sysfs::W1SysfsBackend;
use thermalert::sensor::Backend;

const A: &str = "28-0316a2791dff";
const B: &str = "28-000000000002";

/// Millidegrees as w1_therm computes them: raw * 1000 / 16 in C integer
/// arithmetic (truncating towards zero).
fn kernel_millis(celsius: f64) -> i64 {
    i64::from(encode_temperature(celsius)) * 1000 / 16
}

/// `w1_slave` as w1_therm prints it for `celsius` (12 bit).
fn w1_slave(celsius: f64, crc_ok: bool) -> String {
    let sp = build_scratchpad(
        encode_temperature(celsius),
        75,
        70,
        Resolution::Bits12,
        0x0e,
    );
    let hex: Vec<String> = sp.iter().map(|b| format!("{b:02x}")).collect();
    let hex = hex.join(" ");
    let millis = kernel_millis(celsius);
    format!(
        "{hex} : crc={:02x} {}\n{hex} t={millis}\n",
        sp[8],
        if crc_ok { "YES" } else { "NO" }
    )
}

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        Tree {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("devices")
    }
    fn sensor(&self, id: &str, celsius: f64) -> &Self {
        let d = self.root().join(id);
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join("w1_slave"), w1_slave(celsius, true)).expect("write");
        fs::write(
            d.join("temperature"),
            format!("{}\n", kernel_millis(celsius)),
        )
        .expect("write");
        fs::write(d.join("resolution"), "12\n").expect("write");
        fs::write(d.join("ext_power"), "1\n").expect("write");
        self
    }
    fn write(&self, id: &str, file: &str, text: &str) {
        fs::write(self.root().join(id).join(file), text).expect("write");
    }
    fn read(&self, id: &str, file: &str) -> String {
        fs::read_to_string(self.root().join(id).join(file)).expect("read")
    }
    /// A bus master offering the bulk read, in state `state`.
    fn master(&self, state: &str) -> PathBuf {
        let d = self.root().join("w1_bus_master1");
        fs::create_dir_all(&d).expect("mkdir");
        let f = d.join("therm_bulk_read");
        fs::write(&f, state).expect("write");
        f
    }
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn running_as_root() -> bool {
    let d = tempfile::tempdir().expect("tempdir");
    fs::metadata(d.path()).map(|m| m.uid() == 0).unwrap_or(true)
}

#[test]
fn w1_slave_readings_including_negative_ones() {
    let t = Tree::new();
    t.sensor(A, 23.125).sensor(B, -18.0625);
    let mut b = W1SysfsBackend::new(t.root(), true);
    let s = b.sweep(&ids(&[A, B]));
    assert_eq!(s[0].read, Ok(23.125));
    // w1_therm prints -18062 for -18.0625 (integer millidegrees).
    assert_eq!(s[1].read, Ok(-18.062));
    assert_eq!(s[1].id, B);
}

#[test]
fn the_kernel_documentation_example_reads() {
    let t = Tree::new();
    t.sensor(A, 0.0);
    t.write(
        A,
        "w1_slave",
        "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
    );
    let mut b = W1SysfsBackend::new(t.root(), false);
    assert_eq!(b.sweep(&ids(&[A]))[0].read, Ok(23.125));
}

#[test]
fn crc_no_is_a_crc_fault() {
    let t = Tree::new();
    t.sensor(A, 21.0).sensor(B, 22.0);
    t.write(A, "w1_slave", &w1_slave(21.0, false));
    let mut b = W1SysfsBackend::new(t.root(), true);
    let s = b.sweep(&ids(&[A, B]));
    assert_eq!(s[0].read, Err(ReadFault::Crc));
    assert_eq!(s[1].read, Ok(22.0));
}

#[test]
fn power_on_85000_is_reported_as_read() {
    // The backend reports what it read; the alert engine decides whether
    // 85.000 without a plausible history is a fault.
    let t = Tree::new();
    t.sensor(A, 85.0);
    let mut b = W1SysfsBackend::new(t.root(), true);
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
fn a_device_directory_vanishing_mid_run_is_missing() {
    let t = Tree::new();
    t.sensor(A, 20.0).sensor(B, 21.0);
    let mut b = W1SysfsBackend::new(t.root(), true);
    assert_eq!(b.sweep(&ids(&[A, B]))[0].read, Ok(20.0));
    fs::remove_dir_all(t.root().join(A)).expect("rm");
    let s = b.sweep(&ids(&[A, B]));
    assert_eq!(s[0].read, Err(ReadFault::Missing));
    assert_eq!(s[1].read, Ok(21.0));
    // Back again.
    t.sensor(A, 19.5);
    assert_eq!(b.sweep(&ids(&[A, B]))[0].read, Ok(19.5));
}

#[test]
fn empty_and_garbage_reads_are_io_faults_naming_the_path() {
    let t = Tree::new();
    t.sensor(A, 20.0).sensor(B, 20.0);
    t.write(A, "w1_slave", "");
    t.write(B, "w1_slave", "garbage\n");
    let mut b = W1SysfsBackend::new(t.root(), false);
    let s = b.sweep(&ids(&[A, B]));
    for s in &s {
        match &s.read {
            Err(e @ ReadFault::Io { path, .. }) => {
                assert!(path.ends_with(format!("{}/w1_slave", s.id)), "{e}");
                let m = e.to_string();
                assert!(m.contains(&format!("{}/w1_slave", s.id)), "{m}");
            }
            other => panic!("{}: {other:?}", s.id),
        }
    }
}

#[test]
fn unreadable_file_is_an_io_fault_naming_the_path() {
    let t = Tree::new();
    t.sensor(A, 20.0);
    // A directory where the file should be: unreadable even for root.
    let f = t.root().join(A).join("w1_slave");
    fs::remove_file(&f).expect("rm");
    fs::create_dir(&f).expect("mkdir");
    let mut b = W1SysfsBackend::new(t.root(), false);
    match &b.sweep(&ids(&[A]))[0].read {
        Err(e @ ReadFault::Io { path, .. }) => {
            assert_eq!(path, &f);
            let m = e.to_string();
            assert!(m.contains(&f.display().to_string()), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn permission_denied_is_an_io_fault_naming_the_path() {
    use std::os::unix::fs::PermissionsExt;
    if running_as_root() {
        println!("note: running as root, chmod 000 does not block reads; skipped (see unreadable_file_is_an_io_fault_naming_the_path)");
        return;
    }
    let t = Tree::new();
    t.sensor(A, 20.0);
    let f = t.root().join(A).join("w1_slave");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o000)).expect("chmod");
    let mut b = W1SysfsBackend::new(t.root(), false);
    match &b.sweep(&ids(&[A]))[0].read {
        Err(e @ ReadFault::Io { source, .. }) => {
            let m = e.to_string();
            assert!(m.contains(&f.display().to_string()), "{m}");
            assert!(m.to_lowercase().contains("permission denied"), "{m}");
            assert_eq!(source.io_kind(), Some(std::io::ErrorKind::PermissionDenied));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_bulk_read_each_w1_slave_is_read() {
    let t = Tree::new();
    t.sensor(A, 20.0);
    // `temperature` says something else: the sweep must not use it.
    t.write(A, "temperature", "99000\n");
    let mut b = W1SysfsBackend::new(t.root(), true);
    assert_eq!(b.sweep(&ids(&[A]))[0].read, Ok(20.0));
}

#[test]
fn bulk_read_disabled_in_config_is_not_triggered() {
    let t = Tree::new();
    t.sensor(A, 20.0);
    let f = t.master("0\n");
    let mut b = W1SysfsBackend::new(t.root(), false);
    assert_eq!(b.sweep(&ids(&[A]))[0].read, Ok(20.0));
    assert_eq!(fs::read_to_string(f).expect("read"), "0\n");
}

#[test]
fn bulk_read_is_triggered_then_temperature_is_read() {
    let t = Tree::new();
    t.sensor(A, 20.0).sensor(B, -5.5);
    // `w1_slave` says something else: with a bulk read the sweep reads
    // `temperature`.
    t.write(A, "w1_slave", &w1_slave(99.0, true));
    let f = t.master("0\n");
    let mut b = W1SysfsBackend::new(t.root(), true);
    // Nobody plays the kernel here: the file keeps our "trigger", which is
    // no state, so the sweep waits its bound and reads anyway.
    b.set_bulk_timeout(Duration::from_millis(50));
    let s = b.sweep(&ids(&[A, B]));
    assert_eq!(fs::read_to_string(&f).expect("read"), "trigger");
    assert_eq!(s[0].read, Ok(20.0));
    assert_eq!(s[1].read, Ok(-5.5));
}

/// Plays w1_therm: waits for `trigger`, reports `-1` while "converting",
/// writes new temperatures, then reports `1`.
fn fake_kernel(f: PathBuf, root: PathBuf, values: Vec<(&'static str, &'static str)>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(&f)
        .map(|s| s != "trigger")
        .unwrap_or(true)
    {
        assert!(std::time::Instant::now() < deadline, "never triggered");
        std::thread::sleep(Duration::from_millis(2));
    }
    fs::write(&f, "-1\n").expect("write");
    for (id, _) in &values {
        fs::write(root.join(id).join("temperature"), "").expect("write");
    }
    std::thread::sleep(Duration::from_millis(60));
    for (id, v) in &values {
        fs::write(root.join(id).join("temperature"), v).expect("write");
    }
    fs::write(&f, "1\n").expect("write");
}

#[test]
fn bulk_read_waits_for_the_conversion_to_finish() {
    let t = Tree::new();
    t.sensor(A, 20.0).sensor(B, 21.0);
    let f = t.master("0\n");
    let kernel = {
        let (f, root) = (f.clone(), t.root());
        std::thread::spawn(move || {
            fake_kernel(f, root, vec![(A, "-18062\n"), (B, "125000\n")]);
        })
    };
    let mut b = W1SysfsBackend::new(t.root(), true);
    b.set_bulk_timeout(Duration::from_secs(5));
    let started = std::time::Instant::now();
    let s = b.sweep(&ids(&[A, B]));
    kernel.join().expect("fake kernel");
    // The new values, not the stale ones nor the empty reads of "-1".
    assert_eq!(s[0].read, Ok(-18.062));
    assert_eq!(s[1].read, Ok(125.0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "returned at the bound, not at 1"
    );
}

#[test]
fn resolution_is_written_before_reading() {
    let t = Tree::new();
    t.sensor(A, 20.0).sensor(B, 20.0);
    let mut b = W1SysfsBackend::new(t.root(), true);
    b.want_resolution(A, 10);
    b.sweep(&ids(&[A, B]));
    assert_eq!(t.read(A, "resolution"), "10\n");
    assert_eq!(t.read(B, "resolution"), "12\n");
}

#[test]
fn scan_lists_sensors_with_resolution_and_power() {
    let t = Tree::new();
    t.sensor(B, 3.5).sensor(A, -1.25);
    t.write(B, "ext_power", "0\n");
    t.write(B, "resolution", "9\n");
    t.master("0\n");
    // Not a DS18B20: ignored.
    fs::create_dir_all(t.root().join("01-000000000042")).expect("mkdir");
    let mut b = W1SysfsBackend::new(t.root(), false);
    let f = b.scan().expect("scan");
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!((f[0].id.as_str(), f[1].id.as_str()), (B, A)); // sorted
    assert_eq!(f[0].celsius, Ok(3.5));
    assert_eq!(f[0].resolution_bits, Some(9));
    assert_eq!(f[0].parasite, Some(true));
    assert_eq!(f[1].celsius, Ok(-1.25));
    assert_eq!(f[1].resolution_bits, Some(12));
    assert_eq!(f[1].parasite, Some(false));
}

#[test]
fn scan_without_the_bus_says_how_to_enable_it() {
    let t = Tree::new();
    let mut b = W1SysfsBackend::new(t.root(), true);
    let e = b.scan().expect_err("no root").to_string();
    assert!(e.contains("w1 bus not found at"), "{e}");
    assert!(e.contains(&t.root().display().to_string()), "{e}");
    assert!(e.contains("dtoverlay=w1-gpio"), "{e}");
}

#[test]
fn scan_of_an_unreadable_root_says_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    if running_as_root() {
        println!("note: running as root, chmod 000 does not block reads; skipped");
        return;
    }
    let t = Tree::new();
    t.sensor(A, 1.0);
    fs::set_permissions(t.root(), fs::Permissions::from_mode(0o000)).expect("chmod");
    let mut b = W1SysfsBackend::new(t.root(), true);
    let e = b.scan().expect_err("unreadable").to_string();
    fs::set_permissions(t.root(), fs::Permissions::from_mode(0o755)).expect("chmod back");
    assert!(e.contains("permission denied"), "{e}");
}

#[test]
fn a_root_that_is_a_file_is_reported() {
    let t = Tree::new();
    fs::write(t.root(), "not a dir").expect("write");
    let mut b = W1SysfsBackend::new(t.root(), true);
    let e = b.scan().expect_err("a file").to_string();
    assert!(e.contains(&t.root().display().to_string()), "{e}");
}

#[test]
fn ids_that_are_not_one_path_component_are_rejected() {
    let t = Tree::new();
    t.sensor(A, 1.0);
    let mut b = W1SysfsBackend::new(t.root(), false);
    for bad in ["../devices/28-0316a2791dff", "..", ""] {
        let s = b.sweep(&[bad.to_string()]);
        assert!(
            matches!(s[0].read, Err(ReadFault::BadId { .. })),
            "{bad}: {:?}",
            s[0].read
        );
    }
}
