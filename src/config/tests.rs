//! Unit tests of the configuration: parsing, the meaning checks, the
//! preflight checks and the messages that locate problems.

use super::*;

fn dir_with_files() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(d.path().join("certs")).expect("mkdir");
    std::fs::create_dir_all(d.path().join("secrets")).expect("mkdir");
    std::fs::write(d.path().join("certs/ca.crt"), "x").expect("write");
    write_private(&d.path().join("secrets/gw1.pass"), "pw\n");
    d
}

/// Writes a secret with mode 0600, as `mosquitto/add-user.sh` does.
fn write_private(p: &Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, content).expect("write");
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The problems of `src` (in `d`) as `line: key` strings.
fn problems_of(src: &str, d: &Path) -> Vec<String> {
    match Config::parse(src, &d.join("t.toml")) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid { problems, .. }) => problems
            .iter()
            .map(|l| format!("{}: {}", l.line, l.key))
            .collect(),
        Err(e) => panic!("not a meaning problem: {e}"),
    }
}

const EXAMPLE: &str = r#"gateway_id = "gw1"

[mqtt]
host = "localhost"
port = 8883
ca_file = "certs/ca.crt"
username = "gw1"
password_file = "secrets/gw1.pass"   # also: password from $CREDENTIALS_DIRECTORY/mqtt-password when set
keep_alive_secs = 5
alert_expiry_secs = 300

[sensors]
backend = "sim"
poll_interval_ms = 500

[[sensor]]
id = "28-000000000001"
name = "freezer"
warning_above = 30.0
critical_above = 40.0
hysteresis = 0.5
[sensor.sim]
steps = [[0.0, 20.0], [3.0, 35.0], [6.0, 45.0], [12.0, 20.0]]   # [seconds since start, celsius]
"#;

#[test]
fn the_issue_example_parses_and_resolves_paths() {
    let d = dir_with_files();
    let p = d.path().join("thermalertd.toml");
    let c = Config::parse(EXAMPLE, &p).expect("valid");
    assert_eq!(c.gateway_id, "gw1");
    assert_eq!(c.mqtt.ca_file, d.path().join("certs/ca.crt"));
    assert_eq!(c.password().expect("pw").as_deref(), Some("pw"));
    assert_eq!(c.sensor[0].display_name(), "freezer");
    assert_eq!(c.sensor[0].sim.as_ref().map(|s| s.steps.len()), Some(4));
}

#[test]
fn unknown_key_names_the_key_and_line() {
    let d = dir_with_files();
    let p = d.path().join("t.toml");
    let src = EXAMPLE.replace("hysteresis = 0.5", "hysteresis = 0.5\nwarnign_above = 3.0");
    let e = Config::parse(&src, &p).expect_err("typo must be rejected");
    let msg = e.to_string();
    assert!(msg.contains("warnign_above"), "{msg}");
    assert!(msg.contains("t.toml:22:"), "{msg}");
}

#[test]
fn type_errors_name_the_key_path_and_line() {
    let d = dir_with_files();
    let p = d.path().join("thermalertd.toml");
    let src = EXAMPLE.replace("keep_alive_secs = 5", "keep_alive_secs = \"five\"");
    assert_ne!(src, EXAMPLE);
    let line = src
        .lines()
        .position(|l| l.starts_with("keep_alive_secs"))
        .map(|i| i + 1)
        .expect("line");
    let msg = Config::parse(&src, &p).expect_err("a string").to_string();
    assert!(
        msg.starts_with(&format!(
            "{}:{line}:19: key `mqtt.keep_alive_secs`: invalid type: string \"five\"",
            p.display()
        )),
        "{msg}"
    );
    // In an array of tables, with its index.
    let src = EXAMPLE.replace("critical_above = 40.0", "critical_above = \"hot\"");
    let msg = Config::parse(&src, &p).expect_err("a string").to_string();
    assert!(
        msg.contains("key `sensor[0].critical_above`: invalid type"),
        "{msg}"
    );
    // An unknown key is named with its table.
    let src = EXAMPLE.replace("hysteresis = 0.5", "hysteresis = 0.5\nwarnign_above = 3.0");
    let msg = Config::parse(&src, &p).expect_err("a typo").to_string();
    assert!(
        msg.contains("key `sensor[0].warnign_above`: unknown field"),
        "{msg}"
    );
}

#[test]
fn meaning_errors_name_key_and_line() {
    let d = dir_with_files();
    let p = d.path().join("t.toml");
    let src = EXAMPLE.replace("critical_above = 40.0", "critical_above = 25.0");
    let msg = Config::parse(&src, &p).expect_err("invalid").to_string();
    assert!(
        msg.contains("t.toml:20: key `sensor[0].critical_above`"),
        "{msg}"
    );
}

#[test]
fn the_alarm_section_parses_and_is_validated() {
    let d = dir_with_files();
    let p = d.path().join("t.toml");
    let c = Config::parse(&format!("{EXAMPLE}\n[alarm]\ngpio_pin = 17\n"), &p).expect("valid");
    assert_eq!(c.alarm, Some(AlarmConfig { gpio_pin: 17 }));
    assert_eq!(Config::parse(EXAMPLE, &p).expect("valid").alarm, None);
    let msg = Config::parse(&format!("{EXAMPLE}\n[alarm]\ngpio_pin = 40\n"), &p)
        .expect_err("no such pin")
        .to_string();
    assert!(
        msg.contains("key `alarm.gpio_pin`") && msg.contains("0..=27"),
        "{msg}"
    );
    let msg = Config::parse(&format!("{EXAMPLE}\n[alarm]\npin = 17\n"), &p)
        .expect_err("unknown key")
        .to_string();
    assert!(msg.contains("pin"), "{msg}");
}

#[test]
fn missing_ca_file_is_reported_with_its_path() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("t.toml");
    let msg = Config::parse(EXAMPLE, &p).expect_err("no ca").to_string();
    assert!(msg.contains("mqtt.ca_file"), "{msg}");
    assert!(msg.contains("certs/ca.crt"), "{msg}");
}

#[test]
fn duplicate_sensor_ids_are_rejected() {
    let d = dir_with_files();
    let p = d.path().join("t.toml");
    let src = format!("{EXAMPLE}\n[[sensor]]\nid = \"28-000000000001\"\n");
    let msg = Config::parse(&src, &p).expect_err("dup").to_string();
    assert!(msg.contains("listed twice"), "{msg}");
    assert!(msg.contains(":26:"), "{msg}");
}

#[test]
fn hardware_backends_and_their_sections_parse() {
    let d = dir_with_files();
    let p = d.path().join("t.toml");
    let src = EXAMPLE
            .replace("backend = \"sim\"", "backend = \"w1-sysfs\"")
            .replace(
                "poll_interval_ms = 500",
                "poll_interval_ms = 500\nmonitor_unconfigured = true\n[sensors.w1]\nroot = \"/tmp/w1\"\nbulk_read = false\n[sensors.gpio]\npin = 17",
            )
            .replace("hysteresis = 0.5", "hysteresis = 0.5\nresolution = 10");
    let c = Config::parse(&src, &p).expect("valid");
    assert_eq!(c.sensors.backend, Backend::W1Sysfs);
    assert!(c.sensors.monitor_unconfigured);
    assert_eq!(c.sensors.w1.root, PathBuf::from("/tmp/w1"));
    assert!(!c.sensors.w1.bulk_read);
    assert_eq!(c.sensors.gpio.pin, 17);
    assert_eq!(c.sensors.gpio.chip, PathBuf::from("/dev/gpiochip0"));
    assert_eq!(c.sensors.gpio.attempts, 3);
    assert_eq!(c.sensor[0].resolution, Some(10));

    let gpio = EXAMPLE.replace("backend = \"sim\"", "backend = \"gpio\"");
    let c = Config::parse(&gpio, &p).expect("valid");
    assert_eq!(c.sensors.backend, Backend::Gpio);
    assert_eq!(c.sensors.gpio.pin, 4);
    assert_eq!(c.sensors.w1.root, PathBuf::from("/sys/bus/w1/devices"));
    assert!(c.sensors.w1.bulk_read);
    assert!(!c.sensors.monitor_unconfigured);
    assert_eq!(c.sensor[0].resolution, None);
}

#[test]
fn resolution_outside_9_to_12_is_rejected() {
    let d = dir_with_files();
    let p = d.path().join("t.toml");
    for bad in ["8", "13"] {
        let src = EXAMPLE.replace(
            "hysteresis = 0.5",
            &format!("hysteresis = 0.5\nresolution = {bad}"),
        );
        let msg = Config::parse(&src, &p)
            .expect_err("bad resolution")
            .to_string();
        assert!(
            msg.contains("t.toml:22: key `sensor[0].resolution`"),
            "{msg}"
        );
    }
}

#[test]
fn unknown_keys_in_hardware_sections_are_rejected() {
    let d = dir_with_files();
    let p = d.path().join("t.toml");
    let src = EXAMPLE.replace(
        "poll_interval_ms = 500",
        "poll_interval_ms = 500\n[sensors.w1]\nrooot = \"/x\"",
    );
    let msg = Config::parse(&src, &p).expect_err("typo").to_string();
    assert!(msg.contains("rooot"), "{msg}");
    let src = EXAMPLE.replace(
        "poll_interval_ms = 500",
        "poll_interval_ms = 500\n[sensors.gpio]\nattempts = 0",
    );
    let msg = Config::parse(&src, &p).expect_err("attempts").to_string();
    assert!(msg.contains("sensors.gpio.attempts"), "{msg}");
}

#[test]
fn bad_gateway_id_is_rejected() {
    let d = dir_with_files();
    let p = d.path().join("t.toml");
    let src = EXAMPLE.replace("\"gw1\"\n\n[mqtt]", "\"gw/1\"\n\n[mqtt]");
    let msg = Config::parse(&src, &p).expect_err("slash").to_string();
    assert!(msg.contains("t.toml:1: key `gateway_id`"), "{msg}");
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let d = dir_with_files();
    let p = d.path().join("t.toml");
    let src = EXAMPLE
        .replace("\"gw1\"\n\n[mqtt]", "\"gw/1\"\n\n[mqtt]")
        .replace("keep_alive_secs = 5", "keep_alive_secs = 0")
        .replace("critical_above = 40.0", "critical_above = 25.0")
        .replace("hysteresis = 0.5", "hysteresis = 0.5\nresolution = 13");
    let e = Config::parse(&src, &p).expect_err("four problems");
    let ConfigError::Invalid { problems, .. } = &e else {
        panic!("{e:?}");
    };
    let keys: Vec<&str> = problems.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "gateway_id",
            "mqtt.keep_alive_secs",
            "sensor[0].critical_above",
            "sensor[0].resolution"
        ]
    );
    let msg = e.to_string();
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines.len(), 4, "{msg}");
    assert!(lines[0].contains("t.toml:1: key `gateway_id`: "), "{msg}");
    assert!(
        lines[1].contains("t.toml:9: key `mqtt.keep_alive_secs`: must be at least 1"),
        "{msg}"
    );
    assert!(
        lines[2].contains("t.toml:20: key `sensor[0].critical_above`: "),
        "{msg}"
    );
    assert!(
        lines[3].contains("t.toml:22: key `sensor[0].resolution`: "),
        "{msg}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(&p.display().to_string())),
        "{msg}"
    );
}

#[test]
fn validate_is_pure_and_preflight_finds_the_missing_files() {
    // Nothing on disk: the meaning is fine, the files are not.
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("t.toml");
    let src = EXAMPLE.replace(
        "username = \"gw1\"",
        "username = \"gw1\"\nclient_cert = \"certs/gw1.crt\"\nclient_key = \"certs/gw1.key\"",
    );
    let cfg = Config::from_toml(&src, &p).expect("parses");
    assert_eq!(validate::validate(&cfg), []);
    let missing: Vec<String> = preflight::preflight(&cfg)
        .into_iter()
        .map(|pr| {
            assert!(pr.message.starts_with("cannot read "), "{pr:?}");
            pr.key.to_string()
        })
        .collect();
    if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
        assert_eq!(
            missing,
            [
                "mqtt.ca_file",
                "mqtt.client_cert",
                "mqtt.client_key",
                "mqtt.password_file"
            ]
        );
    }
    // And a meaning problem is not a preflight one.
    let bad = Config::from_toml(
        &EXAMPLE.replace("keep_alive_secs = 5", "keep_alive_secs = 0"),
        &p,
    )
    .expect("parses");
    let keys: Vec<String> = validate::validate(&bad)
        .iter()
        .map(|pr| pr.key.to_string())
        .collect();
    assert_eq!(keys, ["mqtt.keep_alive_secs"]);
    assert!(!preflight::preflight(&bad)
        .iter()
        .any(|pr| pr.key.to_string() == "mqtt.keep_alive_secs"));
}

#[test]
fn a_valid_file_has_no_problem_in_either_step() {
    let d = dir_with_files();
    let p = d.path().join("t.toml");
    let cfg = Config::from_toml(EXAMPLE, &p).expect("parses");
    assert_eq!(validate::validate(&cfg), []);
    assert_eq!(preflight::preflight(&cfg), []);
}

#[test]
fn several_sensors_each_report_their_own_problems() {
    let d = dir_with_files();
    let p = d.path().join("t.toml");
    let src = format!(
        "{EXAMPLE}\n[[sensor]]\nid = \"28-000000000001\"\n[[sensor]]\nid = \"bad id\"\nhysteresis = -1.0\n"
    );
    let cfg = Config::from_toml(&src, &p).expect("parses");
    let keys: Vec<String> = validate::validate(&cfg)
        .iter()
        .map(|pr| pr.key.to_string())
        .collect();
    assert_eq!(
        keys,
        ["sensor[1].id", "sensor[2].id", "sensor[2].hysteresis"]
    );
}

#[test]
fn a_hysteresis_wider_than_the_warning_critical_gap_is_rejected() {
    let d = dir_with_files();
    // The issue's case: CRITICAL held at 25 C, then WARNING "above 30" at 15.
    let src = EXAMPLE.replace("hysteresis = 0.5", "hysteresis = 20.0");
    assert_eq!(problems_of(&src, d.path()), ["21: sensor[0].hysteresis"]);
    let msg = Config::parse(&src, &d.path().join("t.toml"))
        .expect_err("wide")
        .to_string();
    assert!(
        msg.contains("larger than the gap (10)") && msg.contains("at most 10"),
        "{msg}"
    );
    // Equal to the gap is fine; the cold side is checked too.
    let src = EXAMPLE.replace("hysteresis = 0.5", "hysteresis = 10.0");
    assert_eq!(problems_of(&src, d.path()), Vec::<String>::new());
    let src = EXAMPLE.replace(
        "warning_above = 30.0\ncritical_above = 40.0\nhysteresis = 0.5",
        "warning_below = -20.0\ncritical_below = -25.0\nhysteresis = 6.0",
    );
    assert_eq!(problems_of(&src, d.path()), ["21: sensor[0].hysteresis"]);
    // And for the defaults of unconfigured sensors.
    let src = EXAMPLE.replace(
        "poll_interval_ms = 500",
        "poll_interval_ms = 500\nmonitor_unconfigured = true\n[sensors.defaults]\nwarning_above = 30.0\ncritical_above = 31.0\nhysteresis = 2.0",
    );
    assert_eq!(
        problems_of(&src, d.path()),
        ["19: sensors.defaults.hysteresis"]
    );
}

#[test]
fn client_ids_mosquitto_refuses_are_rejected() {
    let d = dir_with_files();
    for bad in ["gw/1", "gw#", "gw+1", "", "gw\\u0000"] {
        let src = EXAMPLE.replace(
            "username = \"gw1\"",
            &format!("username = \"gw1\"\nclient_id = \"{bad}\""),
        );
        assert_eq!(
            problems_of(&src, d.path()),
            ["8: mqtt.client_id"],
            "{bad:?}"
        );
    }
    let src = EXAMPLE.replace(
        "username = \"gw1\"",
        "username = \"gw1\"\nclient_id = \"thermalertd-gw1.kitchen_2\"",
    );
    assert_eq!(problems_of(&src, d.path()), Vec::<String>::new());
}

#[test]
fn topic_prefixes_that_are_wildcards_or_broker_topics_are_rejected() {
    let d = dir_with_files();
    for bad in ["$SYS", "#", "$share/x", "a/+/b", "a//b", "/a", "a/", ""] {
        let src = EXAMPLE.replace(
            "gateway_id = \"gw1\"",
            &format!("gateway_id = \"gw1\"\ntopic_prefix = \"{bad}\""),
        );
        assert_eq!(problems_of(&src, d.path()), ["2: topic_prefix"], "{bad:?}");
    }
    let src = EXAMPLE.replace(
        "gateway_id = \"gw1\"",
        "gateway_id = \"gw1\"\ntopic_prefix = \"site-a/thermalert\"",
    );
    assert_eq!(problems_of(&src, d.path()), Vec::<String>::new());
    assert!(!validate::is_topic_prefix("$SYS"));
}

#[test]
fn a_poll_interval_longer_than_an_hour_is_rejected() {
    let d = dir_with_files();
    for (v, want) in [
        ("3600000", vec![]),
        ("3600001", vec!["14: sensors.poll_interval_ms"]),
        ("9223372036854775807", vec!["14: sensors.poll_interval_ms"]),
    ] {
        let src = EXAMPLE.replace("poll_interval_ms = 500", &format!("poll_interval_ms = {v}"));
        assert_eq!(problems_of(&src, d.path()), want, "{v}");
    }
}

#[test]
fn port_zero_is_rejected() {
    let d = dir_with_files();
    let src = EXAMPLE.replace("port = 8883", "port = 0");
    assert_eq!(problems_of(&src, d.path()), ["5: mqtt.port"]);
}

#[test]
fn a_state_dir_that_is_a_file_is_rejected() {
    let d = dir_with_files();
    std::fs::write(d.path().join("state"), "").expect("write");
    let src = EXAMPLE.replace(
        "gateway_id = \"gw1\"",
        "gateway_id = \"gw1\"\nstate_dir = \"state\"",
    );
    assert_eq!(problems_of(&src, d.path()), ["2: state_dir"]);
    let src = EXAMPLE.replace(
        "gateway_id = \"gw1\"",
        "gateway_id = \"gw1\"\nstate_dir = \"state/sub\"",
    );
    assert_eq!(problems_of(&src, d.path()), ["2: state_dir"]);
    // A directory, or one not made yet, is fine.
    let src = EXAMPLE.replace(
        "gateway_id = \"gw1\"",
        "gateway_id = \"gw1\"\nstate_dir = \"certs\"",
    );
    assert_eq!(problems_of(&src, d.path()), Vec::<String>::new());
    let src = EXAMPLE.replace(
        "gateway_id = \"gw1\"",
        "gateway_id = \"gw1\"\nstate_dir = \"new\"",
    );
    assert_eq!(problems_of(&src, d.path()), Vec::<String>::new());
}

#[test]
fn a_password_file_others_can_read_is_rejected_with_the_fix() {
    use std::os::unix::fs::MetadataExt;
    if std::env::var_os("CREDENTIALS_DIRECTORY").is_some() {
        return; // the credential is used, the file is not checked
    }
    let d = dir_with_files();
    let pass = d.path().join("secrets/gw1.pass");
    for mode in [0o644, 0o604, 0o620] {
        chmod(&pass, mode);
        assert_eq!(
            problems_of(EXAMPLE, d.path()),
            ["8: mqtt.password_file"],
            "{mode:o}"
        );
    }
    chmod(&pass, 0o644);
    let msg = Config::parse(EXAMPLE, &d.path().join("t.toml"))
        .expect_err("world-readable")
        .to_string();
    assert!(
        msg.contains("mode 0644") && msg.contains(&format!("chmod 600 {}", pass.display())),
        "{msg}"
    );
    for mode in [0o600, 0o400] {
        chmod(&pass, mode);
        assert_eq!(problems_of(EXAMPLE, d.path()), Vec::<String>::new());
    }
    // Group-readable only when root owns it (root:<service group> 0640).
    chmod(&pass, 0o640);
    let owned_by_root = std::fs::metadata(&pass).expect("stat").uid() == 0;
    assert_eq!(problems_of(EXAMPLE, d.path()).is_empty(), owned_by_root);
}

#[test]
fn every_new_check_is_reported_at_once_with_its_line() {
    let d = dir_with_files();
    std::fs::write(d.path().join("state"), "").expect("write");
    chmod(&d.path().join("secrets/gw1.pass"), 0o644);
    let src = EXAMPLE
        .replace(
            "gateway_id = \"gw1\"",
            "gateway_id = \"gw1\"\ntopic_prefix = \"$SYS\"\nstate_dir = \"state\"",
        )
        .replace("port = 8883", "port = 0")
        .replace(
            "username = \"gw1\"",
            "username = \"gw1\"\nclient_id = \"gw/#\"",
        )
        .replace("hysteresis = 0.5", "hysteresis = 15.0");
    let mut want = vec![
        "2: topic_prefix",
        "3: state_dir",
        "7: mqtt.port",
        "10: mqtt.client_id",
        "11: mqtt.password_file",
        "24: sensor[0].hysteresis",
    ];
    if std::env::var_os("CREDENTIALS_DIRECTORY").is_some() {
        want.retain(|w| !w.contains("password_file"));
    }
    assert_eq!(problems_of(&src, d.path()), want);
}

proptest::proptest! {
    /// Any text, and any mangling of a valid file, is a value or an
    /// error naming a line: never a panic.
    #[test]
    fn parse_never_panics(src in "\\PC{0,400}") {
        let _ = Config::parse(&src, Path::new("/nonexistent/t.toml"));
    }

    #[test]
    fn mangled_example_never_panics(at in 0usize..700, cut in 0usize..40, insert in "\\PC{0,12}") {
        let mut src = EXAMPLE.to_string();
        let at = at.min(src.len());
        let at = (0..=at).rev().find(|i| src.is_char_boundary(*i)).unwrap_or(0);
        let end = (at + cut).min(src.len());
        let end = (end..=src.len()).find(|i| src.is_char_boundary(*i)).unwrap_or(src.len());
        src.replace_range(at..end, &insert);
        if let Err(e) = Config::parse(&src, Path::new("/nonexistent/t.toml")) {
            let msg = e.to_string();
            proptest::prop_assert!(msg.starts_with("/nonexistent/t.toml"), "{}", msg);
        }
    }
}
