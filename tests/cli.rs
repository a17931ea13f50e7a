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
