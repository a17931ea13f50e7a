//! The real daemon on the kernel backend, end to end: a fake w1 sysfs tree
//! in the kernel's formats stands in for the Pi's `/sys/bus/w1/devices`,
//! and alerts are observed on a real Mosquitto by an independent client.

mod common;

use common::*;
use std::path::Path;

const BYTES: &str = "72 01 4b 46 7f ff 0e 10 57";

/// Writes a sensor's `w1_slave` the way the kernel presents it (atomically,
/// so the daemon never reads half a file).
fn set(root: &Path, id: &str, millis: i32, crc_ok: bool) {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let verdict = if crc_ok { "YES" } else { "NO" };
    let text = format!("{BYTES} : crc=57 {verdict}\n{BYTES} t={millis}\n");
    let tmp = dir.join(".w1_slave.tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join("w1_slave")).expect("rename");
}

fn alert_seen(obs: &Proc, sensor: &str, level: &str) -> serde_json::Value {
    let l = obs.out.wait(&format!("{level} for {sensor}"), |l| {
        l.contains(&format!("/alerts/{sensor}|")) && l.contains(&format!("\"level\":\"{level}\""))
    });
    json(&parse_seen(&l).expect("observer line").payload)
}

#[test]
fn daemon_on_a_w1_tree_alerts_faults_and_adopts_unconfigured_sensors() {
    let t = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/alerts/+"]);
    let root = t.path().join("w1");
    std::fs::create_dir_all(root.join("w1_bus_master1")).expect("mkdir");
    set(&root, "28-0316a2791dff", 20_000, true);
    set(&root, "28-0416a2791e0a", 21_000, true);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.sensors_extra = format!(
        "monitor_unconfigured = true\n[sensors.defaults]\ncritical_above = 30.0\n[sensors.w1]\nroot = \"{}\"\n",
        root.display()
    );
    cfg.sensors =
        "\n[[sensor]]\nid = \"28-0316a2791dff\"\nname = \"freezer\"\ncritical_above = 40.0\n"
            .into();
    let cfg_path = cfg.write(t.path());
    let text = std::fs::read_to_string(&cfg_path)
        .expect("read")
        .replace("backend = \"sim\"", "backend = \"w1-sysfs\"");
    std::fs::write(&cfg_path, text).expect("write");
    let d = daemon(&cfg_path);
    let l = d
        .err
        .wait_contains("28-0416a2791e0a is on the bus but not in the config");
    assert!(l.contains("monitoring it"), "{l}");
    d.err.wait_contains("connected to the broker");

    // A real temperature crossing: CRITICAL with the kernel's millidegrees decoded.
    set(&root, "28-0316a2791dff", 45_125, true);
    let a = alert_seen(&obs, "28-0316a2791dff", "CRITICAL");
    assert_eq!(a["celsius"], 45.125);
    assert_eq!(a["name"], "freezer");
    // The unconfigured sensor, with the default thresholds.
    set(&root, "28-0416a2791e0a", 31_000, true);
    alert_seen(&obs, "28-0416a2791e0a", "CRITICAL");

    // CRC NO is a FAULT, never a temperature alarm.
    set(&root, "28-0416a2791e0a", 20_000, true);
    alert_seen(&obs, "28-0416a2791e0a", "RESOLVED");
    set(&root, "28-0416a2791e0a", 99_000, false);
    let f = alert_seen(&obs, "28-0416a2791e0a", "FAULT");
    assert!(f["celsius"].is_null());
    assert!(
        f["message"].as_str().is_some_and(|m| m.contains("CRC")),
        "{f}"
    );

    // A sensor that vanishes from the bus, then comes back.
    std::fs::remove_dir_all(root.join("28-0316a2791dff")).expect("rm");
    let f = alert_seen(&obs, "28-0316a2791dff", "FAULT");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("not found")),
        "{f}"
    );
    set(&root, "28-0316a2791dff", 20_000, true);
    alert_seen(&obs, "28-0316a2791dff", "RESOLVED");
    let crits = obs.out.count(|l| l.contains("\"level\":\"CRITICAL\""));
    assert_eq!(crits, 2, "no false alarm from the faults");
}

#[test]
fn daemon_without_the_w1_bus_runs_and_raises_faults() {
    let t = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/alerts/+", "thermalert/gw1/status"]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.sensors_extra = format!(
        "[sensors.w1]\nroot = \"{}\"\n",
        t.path().join("no-w1").display()
    );
    cfg.sensors = "\n[[sensor]]\nid = \"28-0316a2791dff\"\ncritical_above = 40.0\n".into();
    let cfg_path = cfg.write(t.path());
    let text = std::fs::read_to_string(&cfg_path)
        .expect("read")
        .replace("backend = \"sim\"", "backend = \"w1-sysfs\"");
    std::fs::write(&cfg_path, text).expect("write");
    let mut d = daemon(&cfg_path);
    let l = d.err.wait_contains("sensor backend unavailable");
    assert!(l.contains("dtoverlay=w1-gpio"), "{l}");
    obs.out.wait("online", |l| l.contains("\"online\""));
    let f = alert_seen(&obs, "28-0316a2791dff", "FAULT");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("w1 bus not found")),
        "{f}"
    );
    assert!(d.is_running());
}
