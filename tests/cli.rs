//! The binaries' command lines, run for real: `check-config` on good and
//! bad files (exit 78 naming file, key and line), and the notifier's
//! settings errors.

mod common;

use common::{DAEMON, NOTIFIER, ROOT};
use std::path::Path;
use std::process::Command;

fn setup() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    common::Pki::new(&d.path().join("certs"), "cli test CA", &["localhost"], &[]);
    std::fs::create_dir_all(d.path().join("secrets")).expect("mkdir");
    std::fs::write(d.path().join("secrets/gw1.pass"), "pw\n").expect("write");
    d
}

fn check(config: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(DAEMON)
        .arg("--config")
        .arg(config)
        .arg("check-config")
        .output()
        .expect("run thermalertd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_every_shipped_example() {
    let d = setup();
    for name in [
        "thermalertd.toml",
        "thermalertd-w1.toml",
        "thermalertd-gpio.toml",
    ] {
        let p = d.path().join(name);
        std::fs::copy(Path::new(ROOT).join("examples").join(name), &p).expect("copy");
        let (code, out, err) = check(&p);
        assert_eq!(code, Some(0), "{name}: {err}");
        assert!(out.contains("OK"), "{out}");
    }
}

#[test]
fn check_config_rejects_a_typo_with_file_key_and_line() {
    let d = setup();
    let src =
        std::fs::read_to_string(Path::new(ROOT).join("examples/thermalertd.toml")).expect("read");
    let p = d.path().join("bad.toml");
    std::fs::write(
        &p,
        src.replace("critical_above = 40.0", "critcal_above = 40.0"),
    )
    .expect("write");
    let (code, _, err) = check(&p);
    assert_eq!(code, Some(78), "EX_CONFIG");
    assert!(err.contains("bad.toml:23:"), "{err}");
    assert!(err.contains("critcal_above"), "{err}");
}

#[test]
fn check_config_rejects_bad_meaning_and_missing_files() {
    let d = setup();
    let src =
        std::fs::read_to_string(Path::new(ROOT).join("examples/thermalertd.toml")).expect("read");
    let p = d.path().join("bad.toml");
    std::fs::write(&p, src.replace("hysteresis = 0.5", "hysteresis = -1.0")).expect("write");
    let (code, _, err) = check(&p);
    assert_eq!(code, Some(78));
    assert!(err.contains("key `sensor[0].hysteresis`"), "{err}");
    std::fs::remove_file(d.path().join("secrets/gw1.pass")).expect("rm");
    std::fs::write(&p, &src).expect("write");
    let (code, _, err) = check(&p);
    assert_eq!(code, Some(78));
    assert!(
        err.contains("mqtt.password_file") && err.contains("gw1.pass"),
        "{err}"
    );
    let (code, _, err) = check(&d.path().join("nope.toml"));
    assert_eq!(code, Some(78));
    assert!(err.contains("nope.toml: cannot read"), "{err}");
}

#[test]
fn check_config_reports_every_problem_on_its_own_line() {
    let d = setup();
    let src =
        std::fs::read_to_string(Path::new(ROOT).join("examples/thermalertd.toml")).expect("read");
    let p = d.path().join("bad.toml");
    std::fs::write(
        &p,
        src.replace("keep_alive_secs = 5", "keep_alive_secs = 0")
            .replace("poll_interval_ms = 500", "poll_interval_ms = 10")
            .replace("hysteresis = 0.5", "hysteresis = -1.0"),
    )
    .expect("write");
    std::fs::remove_file(d.path().join("secrets/gw1.pass")).expect("rm");
    let (code, _, err) = check(&p);
    assert_eq!(code, Some(78), "EX_CONFIG");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("invalid configuration"))
        .collect();
    let file = p.display().to_string();
    for (line, key) in [
        (11, "mqtt.password_file"),
        (12, "mqtt.keep_alive_secs"),
        (17, "sensors.poll_interval_ms"),
        (24, "sensor[0].hysteresis"),
    ] {
        let want = format!("{file}:{line}: key `{key}`: ");
        assert_eq!(
            lines.iter().filter(|l| l.contains(&want)).count(),
            1,
            "{want}\n{err}"
        );
    }
    assert_eq!(lines.len(), 4, "{err}");
}

#[test]
fn check_config_rejects_a_file_that_is_not_a_certificate() {
    let d = setup();
    std::fs::write(d.path().join("certs/ca.crt"), "not a certificate\n").expect("write");
    std::fs::copy(
        Path::new(ROOT).join("examples/thermalertd.toml"),
        d.path().join("t.toml"),
    )
    .expect("copy");
    let (code, _, err) = check(&d.path().join("t.toml"));
    assert_eq!(code, Some(78));
    assert!(
        err.contains("ca.crt") && err.contains("no PEM certificate"),
        "{err}"
    );
}

#[test]
fn notifier_without_a_ca_file_says_what_is_missing() {
    let out = Command::new(NOTIFIER).output().expect("run notifier");
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca-file"));
}

#[test]
fn notifier_names_the_file_and_line_of_a_bad_channel_option() {
    let d = setup();
    let ca = d.path().join("certs/ca.crt");
    let p = d.path().join("notifier.toml");
    let good = format!(
        "ca_file = {:?}\nexec = \"true\"\nexec_timeout = 5\nno_desktop = true\n",
        ca.display().to_string()
    );
    for (extra, line, what) in [
        ("filter = [\"level>=HOT\"]\n", 5, "filter"),
        ("share_group = \"a/b\"\n", 5, "share_group"),
        ("stale_intervals = -1\n", 5, "stale_intervals"),
        ("exec_timeot = 3\n", 5, "exec_timeot"),
    ] {
        std::fs::write(&p, format!("{good}{extra}")).expect("write");
        let out = Command::new(NOTIFIER)
            .arg("--config")
            .arg(&p)
            .output()
            .expect("run notifier");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{extra}: {err}");
        assert!(
            err.contains(&format!("{}:{line}", p.display())) && err.contains(what),
            "{extra}: {err}"
        );
    }
}

fn scan(config: &Path) -> (Option<i32>, String) {
    let out = Command::new(DAEMON)
        .arg("--config")
        .arg(config)
        .arg("scan")
        .output()
        .expect("run thermalertd scan");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn scan_explains_a_missing_w1_bus_and_a_missing_gpio_chip() {
    let d = setup();
    let src = std::fs::read_to_string(Path::new(ROOT).join("examples/thermalertd-w1.toml"))
        .expect("read");
    let p = d.path().join("w1.toml");
    std::fs::write(
        &p,
        src.replace(
            "/sys/bus/w1/devices",
            &d.path().join("nope").display().to_string(),
        ),
    )
    .expect("write");
    let (code, err) = scan(&p);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("w1 bus not found") && err.contains("dtoverlay=w1-gpio"),
        "{err}"
    );

    let src = std::fs::read_to_string(Path::new(ROOT).join("examples/thermalertd-gpio.toml"))
        .expect("read");
    let p = d.path().join("gpio.toml");
    let chip = d.path().join("gpiochip9");
    std::fs::write(
        &p,
        src.replace(
            "pin = 4",
            &format!("pin = 4\ndriver = \"cdev\"\nchip = \"{}\"", chip.display()),
        ),
    )
    .expect("write");
    let (code, err) = scan(&p);
    assert_ne!(code, Some(0));
    assert!(err.contains("gpiochip9"), "names the device: {err}");
}

#[test]
fn scan_lists_sensors_with_their_configured_names() {
    let d = setup();
    let root = d.path().join("w1");
    for (id, t) in [("28-0316a2791dff", 21_500), ("28-0416a2791e0a", -18_062)] {
        std::fs::create_dir_all(root.join(id)).expect("mkdir");
        std::fs::write(
            root.join(id).join("w1_slave"),
            format!("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t={t}\n"),
        )
        .expect("write");
    }
    let src = std::fs::read_to_string(Path::new(ROOT).join("examples/thermalertd-w1.toml"))
        .expect("read");
    let p = d.path().join("w1.toml");
    std::fs::write(
        &p,
        src.replace("/sys/bus/w1/devices", &root.display().to_string())
            .replace("bulk_read = true", "bulk_read = false")
            .replace("28-0416a2791e0a", "28-0516a2791e0b"),
    )
    .expect("write");
    let out = Command::new(DAEMON)
        .arg("--config")
        .arg(&p)
        .arg("scan")
        .output()
        .expect("scan");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let freezer = text
        .lines()
        .find(|l| l.starts_with("28-0316a2791dff"))
        .expect("freezer listed");
    assert!(
        freezer.contains("21.500") && freezer.contains("yes (freezer)"),
        "{freezer}"
    );
    let other = text
        .lines()
        .find(|l| l.starts_with("28-0416a2791e0a"))
        .expect("unconfigured listed");
    assert!(
        other.contains("-18.062") && other.trim_end().ends_with("no"),
        "{other}"
    );
}
