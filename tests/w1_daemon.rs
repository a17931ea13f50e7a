//! The real daemon on the kernel backend, end to end: the stand-in w1_therm
//! kernel (`tests/common/w1_kernel.rs`, written from
//! `drivers/w1/slaves/w1_therm.c`) serves the Pi's `/sys/bus/w1/devices`,
//! alerts are observed on a real Mosquitto by an independent client, and a
//! fake `NOTIFY_SOCKET` receives the watchdog pings and status lines.

mod common;

use common::w1_kernel::{Answer, Event, Kind, Version, W1Kernel};
use common::*;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FREEZER: &str = "28-0316a2791dff";
const COLD_ROOM: &str = "3b-0000001a2b3c";
const CELLAR: &str = "42-00000021b0c4";
const SPARE: &str = "10-000801b5a4c2";

fn alert_seen(obs: &Proc, sensor: &str, level: &str) -> serde_json::Value {
    let l = obs.out.wait(&format!("{level} for {sensor}"), |l| {
        l.contains(&format!("/alerts/{sensor}|")) && l.contains(&format!("\"level\":\"{level}\""))
    });
    json(&parse_seen(&l).expect("observer line").payload)
}

/// A gateway configuration on the kernel backend under `root`.
fn w1_config(broker: &Broker, dir: &Path, root: &Path, extra: &str, sensors: String) -> PathBuf {
    let mut cfg = GwConfig::new(broker, "gw1");
    cfg.sensors_extra = format!("{extra}\n[sensors.w1]\nroot = \"{}\"\n", root.display());
    cfg.sensors = sensors;
    let p = cfg.write(dir);
    let text = std::fs::read_to_string(&p)
        .expect("read")
        .replace("backend = \"sim\"", "backend = \"w1-sysfs\"");
    std::fs::write(&p, text).expect("write");
    p
}

fn w1_sensor(id: &str, name: &str, thresholds: &str) -> String {
    format!("\n[[sensor]]\nid = \"{id}\"\nname = \"{name}\"\n{thresholds}\n")
}

/// Datagrams on a fake `NOTIFY_SOCKET`, as lines.
fn notify_socket(path: &Path) -> Lines {
    let sock = UnixDatagram::bind(path).expect("bind notify socket");
    let lines = Lines::default();
    let l = lines.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = sock.recv(&mut buf) {
            l.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    lines
}

#[test]
fn a_half_connected_sensor_is_a_fault_never_an_alarm() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/alerts/+"]);
    let k = W1Kernel::start(Version::Current);
    k.attach(FREEZER, -18.0).attach(CELLAR, 12.0);
    k.set_conv_time_all(100);
    let mut sensors = w1_sensor(FREEZER, "freezer", "critical_above = -12.0");
    sensors.push_str(&w1_sensor(CELLAR, "cellar", "critical_above = 30.0"));
    let cfg = w1_config(&broker, t.path(), &k.root(), "", sensors);
    let d = daemon(&cfg);
    d.err.wait_contains("connected to the broker");

    // Nine zero bytes, `crc=00 YES`, `t=0`: 0.00 C is above the freezer's
    // critical_above of -12, so reading it as a temperature would be a
    // false CRITICAL. It is a FAULT.
    k.set_answer(FREEZER, Answer::AllZeros);
    let f = alert_seen(&obs, FREEZER, "FAULT");
    assert!(f["celsius"].is_null(), "{f}");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("sensor not ready")),
        "{f}"
    );
    k.set_answer(FREEZER, Answer::Normal);
    alert_seen(&obs, FREEZER, "RESOLVED");

    // A CRC failure (an empty w1_slave since 5.10) is a FAULT too.
    k.set_answer(CELLAR, Answer::BadCrc);
    let f = alert_seen(&obs, CELLAR, "FAULT");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("empty read")),
        "{f}"
    );
    k.set_answer(CELLAR, Answer::Normal);
    alert_seen(&obs, CELLAR, "RESOLVED");
    assert_eq!(
        obs.out.count(|l| l.contains("\"level\":\"CRITICAL\"")),
        0,
        "no false alarm: {:?}",
        obs.out.snapshot()
    );
}

#[test]
fn every_w1_therm_family_is_found_adopted_and_read() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/alerts/+"]);
    let k = W1Kernel::start(Version::Current);
    k.attach(FREEZER, -18.0)
        .attach(COLD_ROOM, 4.0)
        .attach(CELLAR, 12.0)
        .attach(SPARE, 20.0);
    k.set_conv_time_all(100);
    let mut sensors = w1_sensor(FREEZER, "freezer", "critical_above = -12.0");
    sensors.push_str(&w1_sensor(COLD_ROOM, "cold room", "critical_above = 10.0"));
    sensors.push_str(&w1_sensor(CELLAR, "cellar", "critical_above = 30.0"));
    let cfg = w1_config(
        &broker,
        t.path(),
        &k.root(),
        "monitor_unconfigured = true\n[sensors.defaults]\ncritical_above = 30.0\n",
        sensors,
    );
    let d = daemon(&cfg);
    let l = d
        .err
        .wait_contains(&format!("{SPARE} is on the bus but not in the config"));
    assert!(l.contains("monitoring it"), "{l}");
    d.err.wait_contains("connected to the broker");
    assert_eq!(
        d.err.count(|l| l.contains("is not on the bus")),
        0,
        "every family on the bus is found: {:?}",
        d.err.snapshot()
    );
    // How it converts, in the log: one bulk conversion, and the DS28EA00
    // on its own.
    d.err
        .wait_contains("w1: bulk conversion confirmed by therm_bulk_read: 3 of 4 sensor(s)");
    d.err.wait_contains(&format!(
        "{CELLAR} (DS28EA00): the kernel has no bulk read for this family"
    ));

    // A DS1825 crossing its threshold.
    k.set_celsius(COLD_ROOM, 12.5);
    let a = alert_seen(&obs, COLD_ROOM, "CRITICAL");
    assert_eq!(a["celsius"], 12.5);
    assert_eq!(a["name"], "cold room");
    // The unconfigured DS18S20, with the default thresholds.
    k.set_celsius(SPARE, 31.0);
    alert_seen(&obs, SPARE, "CRITICAL");
    // The DS28EA00.
    k.set_celsius(CELLAR, 30.5);
    alert_seen(&obs, CELLAR, "CRITICAL");

    // A sensor that leaves the bus, then comes back.
    k.detach(COLD_ROOM);
    let f = alert_seen(&obs, COLD_ROOM, "FAULT");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("not found")),
        "{f}"
    );
    k.attach(COLD_ROOM, 4.0);
    k.set_conv_time(COLD_ROOM, 100);
    alert_seen(&obs, COLD_ROOM, "RESOLVED");
    assert_eq!(obs.out.count(|l| l.contains("\"level\":\"CRITICAL\"")), 3);
}

/// The end of each sweep that began with a triggered bulk conversion:
/// (trigger, when the last of `ids` was read after it).
fn bulk_sweeps(events: &[Event], ids: &[String]) -> Vec<(Instant, Instant)> {
    let triggers: Vec<Instant> = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                Kind::BulkStore {
                    triggered: true,
                    ..
                }
            )
        })
        .map(|e| e.at)
        .collect();
    let mut out = Vec::new();
    for (i, &t0) in triggers.iter().enumerate() {
        let until = triggers.get(i + 1).copied();
        let mut seen = std::collections::BTreeSet::new();
        for e in events
            .iter()
            .filter(|e| e.at > t0 && until.is_none_or(|u| e.at < u))
        {
            if let Kind::Shown {
                id,
                attr: "w1_slave",
                ..
            } = &e.kind
            {
                if ids.contains(id) && seen.insert(id.clone()) && seen.len() == ids.len() {
                    out.push((t0, e.at));
                }
            }
        }
    }
    out
}

#[test]
fn twenty_sensors_at_12_bits_in_one_conversion_and_per_sensor_within_the_watchdog_budget() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    // 20 sensors of the four families with bulk read, 12 bits, the
    // kernel's own 750 ms: real time.
    let k = W1Kernel::start(Version::Current);
    let families = ["28", "22", "3b", "10"];
    let ids: Vec<String> = (0..20)
        .map(|i| format!("{}-0000000001{i:02x}", families[i % 4]))
        .collect();
    let mut sensors = String::new();
    for (i, id) in ids.iter().enumerate() {
        k.attach(id, 2.0 + i as f64);
        sensors.push_str(&w1_sensor(id, &format!("s{i}"), "critical_above = 100.0"));
    }
    let cfg = w1_config(&broker, t.path(), &k.root(), "", sensors);
    let sock = t.path().join("notify.sock");
    let notify = notify_socket(&sock);
    let sock_env = sock.display().to_string();
    let d = daemon_env(
        &cfg,
        &[("NOTIFY_SOCKET", &sock_env), ("WATCHDOG_USEC", "1000000")],
    );
    notify.wait("READY=1", |m| m.lines().any(|l| l == "READY=1"));

    // Bulk: a sweep takes one conversion plus the reads, not twenty
    // conversions, and the log says so.
    let events = k.wait_for("three whole bulk sweeps", Duration::from_secs(60), |e| {
        bulk_sweeps(e, &ids).len() >= 3
    });
    d.err.wait_contains(
        "w1: bulk conversion confirmed by therm_bulk_read: 20 of 20 sensor(s) in one conversion (750 ms)",
    );
    let sweeps = bulk_sweeps(&events, &ids);
    for (t0, t1) in &sweeps[1..] {
        let took = *t1 - *t0;
        println!("bulk sweep of 20 sensors: {took:?}");
        assert!(
            took < Duration::from_millis(1125),
            "a bulk sweep of 20 sensors took {took:?}: about one conversion (750 ms) expected"
        );
    }
    assert!(
        k.conversions().0.is_empty(),
        "no sensor converted on its own"
    );

    // The kernel stops acting on the trigger: per sensor, said in the log
    // and the status, and within the watchdog budget (20 x 750 ms a sweep).
    k.contend_bus(true);
    let mark = Instant::now();
    let l = d.err.wait_contains("w1: converting per sensor");
    assert!(
        l.contains("the kernel did not start a bulk conversion") && l.contains("per sweep"),
        "{l}"
    );
    let per_sweep = |e: &[Event]| -> Vec<Instant> {
        e.iter()
            .filter(|e| e.at > mark && matches!(e.kind, Kind::Convert { .. }))
            .map(|e| e.at)
            .collect()
    };
    let events = k.wait_for("two per-sensor sweeps", Duration::from_secs(90), |e| {
        per_sweep(e).len() >= 40
    });
    let converts = per_sweep(&events);
    let second = converts[39] - converts[20];
    println!(
        "per-sensor sweeps of 20 sensors: {:?} (the one that found out), {second:?}",
        converts[19] - converts[0]
    );
    assert!(
        second >= Duration::from_millis(19 * 750),
        "per sensor: 20 conversions took {second:?}"
    );
    notify.wait("the status note", |m| {
        m.lines().any(|l| {
            l.starts_with("STATUS=")
                && l.contains("w1: converting per sensor (the kernel did not start")
        })
    });
    let pings_since = notify
        .snapshot()
        .iter()
        .skip_while(|m| !m.contains("w1: converting per sensor"))
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count();
    assert!(
        pings_since >= 10,
        "the watchdog kept being pinged: {pings_since}"
    );
    assert_eq!(
        notify.count(|m| m.contains("STALLED")),
        0,
        "{:?}",
        notify.snapshot()
    );
    assert_eq!(
        d.err.count(|l| l.contains("has made no progress")),
        0,
        "{:?}",
        d.err.snapshot()
    );
}

#[test]
fn daemon_without_the_w1_bus_runs_and_raises_faults() {
    let t = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/alerts/+", "thermalert/gw1/status"]);
    let cfg = w1_config(
        &broker,
        t.path(),
        &t.path().join("no-w1"),
        "",
        "\n[[sensor]]\nid = \"28-0316a2791dff\"\ncritical_above = 40.0\n".into(),
    );
    let mut d = daemon(&cfg);
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
