//! The binaries' command lines, run for real: `check-config` on good and
//! bad files (exit 78 naming file, key and line), and the notifier's
//! settings errors.

mod common;

use common::w1_kernel::{Version, W1Kernel};
use common::{DAEMON, NOTIFIER, ROOT};
use std::path::Path;
use std::process::Command;

fn setup() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    common::Pki::new(&d.path().join("certs"), "cli test CA", &["localhost"], &[]);
    std::fs::create_dir_all(d.path().join("secrets")).expect("mkdir");
    common::write_secret(&d.path().join("secrets/gw1.pass"), "pw\n");
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
fn check_config_names_the_key_of_a_value_of_the_wrong_type() {
    let d = setup();
    let src =
        std::fs::read_to_string(Path::new(ROOT).join("examples/thermalertd.toml")).expect("read");
    let line = src
        .lines()
        .position(|l| l.starts_with("keep_alive_secs"))
        .map(|i| i + 1)
        .expect("keep_alive_secs in the example");
    let p = d.path().join("thermalertd.toml");
    let bad: String = src
        .lines()
        .map(|l| {
            if l.starts_with("keep_alive_secs") {
                "keep_alive_secs = \"five\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&p, bad).expect("write");
    let (code, _, err) = check(&p);
    assert_eq!(code, Some(78), "EX_CONFIG");
    assert!(
        err.contains(&format!(
            "thermalertd.toml:{line}:19: key `mqtt.keep_alive_secs`: invalid type: string \"five\", expected u16"
        )),
        "{err}"
    );
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

/// Issue 16: configurations that were accepted and then misbehaved. Each
/// is reported at once, with file, line and key, by `check-config` and by
/// the daemon's start; the password file's mode is not checked when
/// systemd passes the password as a credential.
#[test]
fn check_config_catches_configurations_that_misbehaved_later() {
    let d = setup();
    let src =
        std::fs::read_to_string(Path::new(ROOT).join("examples/thermalertd.toml")).expect("read");
    let p = d.path().join("bad.toml");
    std::fs::write(
        &p,
        src.replace(
            "gateway_id = \"gw1\"",
            "gateway_id = \"gw1\"\ntopic_prefix = \"$SYS\"\nstate_dir = \"state\"",
        )
        .replace("port = 8883", "port = 0")
        .replace(
            "username = \"gw1\"",
            "username = \"gw1\"\nclient_id = \"gw1/#\"",
        )
        .replace("hysteresis = 0.5", "hysteresis = 20.0"),
    )
    .expect("write");
    std::fs::write(d.path().join("state"), "a file, not a folder").expect("write");
    let pass = d.path().join("secrets/gw1.pass");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let file = p.display().to_string();
    let want = |with_password: bool| {
        let mut w = vec![
            (5, "topic_prefix", "'$'"),
            (6, "state_dir", "not a directory"),
            (10, "mqtt.port", "0 is not a port"),
            (13, "mqtt.client_id", "dangerous client id"),
            (14, "mqtt.password_file", "chmod 600"),
            (27, "sensor[0].hysteresis", "larger than the gap"),
        ];
        if !with_password {
            w.retain(|(_, k, _)| *k != "mqtt.password_file");
        }
        w
    };
    let assert_lines = |err: &str, want: &[(usize, &str, &str)]| {
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("invalid configuration"))
            .collect();
        for (line, key, what) in want {
            let at = format!("{file}:{line}: key `{key}`: ");
            assert_eq!(
                lines
                    .iter()
                    .filter(|l| l.contains(&at) && l.contains(what))
                    .count(),
                1,
                "{at} ... {what}\n{err}"
            );
        }
        assert_eq!(lines.len(), want.len(), "{err}");
    };

    let out = Command::new(DAEMON)
        .env_remove("CREDENTIALS_DIRECTORY")
        .arg("--config")
        .arg(&p)
        .arg("check-config")
        .output()
        .expect("run thermalertd");
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    assert_lines(&String::from_utf8_lossy(&out.stderr), &want(true));

    // The daemon's start refuses it the same way (and exits: waited for
    // with a deadline, so a regression fails instead of hanging).
    let child = Command::new(DAEMON)
        .env_remove("CREDENTIALS_DIRECTORY")
        .arg("--config")
        .arg(&p)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start thermalertd");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(std::time::Duration::from_secs(30)) else {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        panic!("thermalertd started on a configuration it should refuse");
    };
    let out = out.expect("wait");
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    assert_lines(&String::from_utf8_lossy(&out.stderr), &want(true));

    // With the password as a systemd credential, the file's mode is moot.
    let creds = d.path().join("creds");
    std::fs::create_dir_all(&creds).expect("mkdir");
    common::write_secret(&creds.join("mqtt-password"), "pw\n");
    let out = Command::new(DAEMON)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .arg("--config")
        .arg(&p)
        .arg("check-config")
        .output()
        .expect("run thermalertd");
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    assert_lines(&String::from_utf8_lossy(&out.stderr), &want(false));
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
fn scan_lists_every_w1_therm_family_with_its_name_value_and_configured_name() {
    let d = setup();
    // The stand-in w1_therm kernel (tests/common/w1_kernel.rs) with one
    // sensor of each family the kernel drives.
    let k = W1Kernel::start(Version::Current);
    let sensors = [
        ("10-000801b5a4c2", 23.5, "DS18S20", "23.500"),
        ("22-000000a1b2c3", -10.25, "DS1822", "-10.250"),
        ("28-0316a2791dff", 21.5, "DS18B20", "21.500"),
        ("28-0416a2791e0a", -18.0625, "DS18B20", "-18.062"),
        ("3b-0000001a2b3c", 36.75, "DS1825/MAX31850", "36.750"),
        ("42-00000021b0c4", 18.5, "DS28EA00", "18.500"),
    ];
    for (id, c, _, _) in sensors {
        k.attach(id, c);
    }
    k.set_conv_time_all(100);
    let src = std::fs::read_to_string(Path::new(ROOT).join("examples/thermalertd-w1.toml"))
        .expect("read");
    let p = d.path().join("w1.toml");
    std::fs::write(
        &p,
        src.replace("/sys/bus/w1/devices", &k.root().display().to_string())
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
    assert!(
        text.lines().next().is_some_and(|h| h.contains("FAMILY")),
        "{text}"
    );
    for (id, _, family, value) in sensors {
        let line = text
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not listed:\n{text}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.get(1), Some(&family), "{line}");
        assert_eq!(cols.get(2), Some(&value), "{line}");
    }
    let freezer = text
        .lines()
        .find(|l| l.starts_with("28-0316a2791dff"))
        .expect("freezer listed");
    assert!(freezer.trim_end().ends_with("yes (freezer)"), "{freezer}");
    let other = text
        .lines()
        .find(|l| l.starts_with("28-0416a2791e0a"))
        .expect("unconfigured listed");
    assert!(other.trim_end().ends_with("no"), "{other}");
    // One bulk conversion for the five with bulk read; DS28EA00 on its own.
    let (per_sensor, bulk) = k.conversions();
    assert_eq!(bulk, 1);
    assert_eq!(per_sensor.keys().collect::<Vec<_>>(), ["42-00000021b0c4"]);
}

#[test]
fn notifier_refuses_a_zero_limit_in_its_file_naming_file_line_and_key() {
    let d = setup();
    let ca = d.path().join("certs/ca.crt");
    let p = d.path().join("notifier.toml");
    let good = format!(
        "ca_file = {:?}\nexec = \"true\"\nno_desktop = true\n",
        ca.display().to_string()
    );
    for key in [
        "port",
        "keep_alive_secs",
        "receive_maximum",
        "exec_timeout",
        "broker_grace_secs",
        "stale_intervals",
        "stale_after_secs",
    ] {
        std::fs::write(&p, format!("{good}{key} = 0\n")).expect("write");
        // timeout(1): a notifier that accepts the 0 would run on.
        let out = Command::new("timeout")
            .args(["10", NOTIFIER])
            .arg("--config")
            .arg(&p)
            .output()
            .expect("run notifier");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{key} = 0: {err}");
        assert!(
            err.contains(&format!("{}:4", p.display()))
                && err.contains(key)
                && err.contains("at least 1"),
            "{key} = 0: {err}"
        );
        assert!(!err.contains("panicked"), "{key} = 0: {err}");
    }
}

#[test]
fn notifier_refuses_a_zero_limit_flag_naming_the_flag() {
    let d = setup();
    let ca = d.path().join("certs/ca.crt");
    for (flag, status) in [
        ("--port", false),
        ("--keep-alive-secs", false),
        ("--receive-maximum", false),
        ("--exec-timeout", false),
        ("--broker-grace-secs", false),
        ("--stale-intervals", false),
        ("--stale-after-secs", false),
        ("--timeout", true),
    ] {
        let mut cmd = Command::new("timeout");
        cmd.args(["10", NOTIFIER])
            .arg("--ca-file")
            .arg(&ca)
            .args(["--no-desktop"]);
        if status {
            cmd.args(["status", flag, "0"]);
        } else {
            cmd.args(["--exec", "true", flag, "0"]);
        }
        let out = cmd.output().expect("run notifier");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{flag} 0: {err}");
        assert!(
            err.contains(&format!("{flag} 0")) && err.contains("at least 1"),
            "{flag} 0: {err}"
        );
        assert!(!err.contains("panicked"), "{flag} 0: {err}");
    }
}
