//! Home Assistant MQTT discovery against a real Mosquitto: the retained
//! configs are read back by an independent subscriber and checked against
//! Home Assistant's documented schema, and their templates against the
//! payloads the daemon really publishes on the topics they name; then every
//! config, and every template on every message the daemon published on its
//! topic, goes through Home Assistant's own code (its MQTT discovery schemas
//! and template rendering, the `homeassistant` package from PyPI in a
//! virtual environment `scripts/ha-schema-env.sh` makes:
//! `tests/ha/check_discovery.py`).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const S1: &str = "28-000000000001";
const S2: &str = "28-000000000002";

fn config(broker: &Broker, dir: &std::path::Path, two: bool) -> std::path::PathBuf {
    let mut cfg = GwConfig::new(broker, "gw1");
    cfg.sensors_extra = "\n[homeassistant]\nenabled = true\n".into();
    if two {
        cfg.sensors.push_str(&sensor(
            S2,
            "server room",
            "warning_above = 30.0",
            "[[0.0, 21.0]]",
        ));
    }
    cfg.write(dir)
}

/// The retained messages under `homeassistant/#`, read by a fresh subscriber.
fn retained(broker: &Broker, tag: &str) -> Vec<Seen> {
    let obs = broker.observe(&["homeassistant/#", "test/sync/#"]);
    broker.sync(&obs, tag);
    seen(&obs)
        .into_iter()
        .filter(|s| s.topic.starts_with("homeassistant/"))
        .collect()
}

fn find<'a>(all: &'a [Seen], topic: &str) -> &'a Seen {
    all.iter()
        .find(|s| s.topic == topic)
        .unwrap_or_else(|| panic!("no retained {topic} in {all:?}"))
}

#[test]
fn discovery_configs_match_home_assistants_schema_and_removed_sensors_vanish() {
    let t = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&t.path().join("b"));
    let live = broker.observe(&[
        "thermalert/gw1/status",
        &format!("thermalert/gw1/sensors/{S1}/reading"),
    ]);
    let mut d = daemon(&config(&broker, &t.path().join("c1"), true));
    d.err
        .wait_contains("home assistant discovery: published 4 config(s), removed 0");
    let all = retained(&broker, "first");
    assert_eq!(all.len(), 4, "{all:?}");
    for s in &all {
        assert!(s.retain, "discovery configs are retained: {s:?}");
        assert_eq!(s.qos, 1);
    }

    let temp = json(&find(&all, &format!("homeassistant/sensor/gw1/{S1}/config")).payload);
    assert_eq!(temp["name"], "freezer");
    assert_eq!(temp["unique_id"], format!("thermalert_gw1_{S1}"));
    assert_eq!(temp["device_class"], "temperature");
    assert_eq!(temp["state_class"], "measurement");
    assert_eq!(temp["unit_of_measurement"], "°C");
    assert_eq!(temp["value_template"], "{{ value_json.celsius }}");
    assert_eq!(
        temp["state_topic"],
        format!("thermalert/gw1/sensors/{S1}/reading")
    );
    let dev = &temp["device"];
    assert_eq!(dev["identifiers"][0], "thermalert_gw1");
    for k in ["name", "manufacturer", "model", "sw_version"] {
        assert!(dev[k].is_string(), "device.{k}: {dev}");
    }
    let avail = &temp["availability"][0];
    assert_eq!(avail["topic"], "thermalert/gw1/status");
    assert_eq!(avail["value_template"], "{{ value_json.state }}");
    assert_eq!(avail["payload_available"], "online");
    assert_eq!(avail["payload_not_available"], "offline");

    // The templates name fields the daemon really publishes there.
    let reading = live.out.wait("a reading", |l| l.contains("/reading|"));
    let reading = json(&parse_seen(&reading).expect("seen").payload);
    assert!(reading["celsius"].is_f64(), "{reading}");
    let status = live.out.wait("status", |l| l.contains("/status|"));
    assert_eq!(
        json(&parse_seen(&status).expect("seen").payload)["state"],
        "online"
    );

    let problem = json(
        &find(
            &all,
            &format!("homeassistant/binary_sensor/gw1/{S2}/config"),
        )
        .payload,
    );
    assert_eq!(problem["device_class"], "problem");
    assert_eq!(problem["name"], "server room alert");
    assert_eq!(
        problem["state_topic"],
        format!("thermalert/gw1/alerts/{S2}")
    );
    assert_eq!(problem["payload_on"], "ON");
    assert_eq!(problem["payload_off"], "OFF");
    assert_eq!(problem["device"], temp["device"], "one device per gateway");
    let ids: std::collections::HashSet<String> = all
        .iter()
        .map(|s| json(&s.payload)["unique_id"].to_string())
        .collect();
    assert_eq!(ids.len(), 4, "unique ids are unique");

    // Take the second sensor out of the config: its entities go.
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    let d2 = daemon(&config(&broker, &t.path().join("c2"), false));
    d2.err
        .wait_contains("home assistant discovery: published 2 config(s), removed 2");
    let all = retained(&broker, "second");
    let mut topics: Vec<&str> = all.iter().map(|s| s.topic.as_str()).collect();
    topics.sort_unstable();
    assert_eq!(
        topics,
        [
            format!("homeassistant/binary_sensor/gw1/{S1}/config"),
            format!("homeassistant/sensor/gw1/{S1}/config"),
        ]
    );
}

#[test]
fn discovery_is_off_unless_enabled() {
    let t = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["homeassistant/#", "thermalert/gw1/status", "test/sync/#"]);
    let _d = daemon(&GwConfig::new(&broker, "gw1").write(t.path()));
    obs.out.wait("online", |l| l.contains("\"online\""));
    broker.sync(&obs, "off");
    assert_eq!(obs.out.count(|l| l.contains("MSG|homeassistant/")), 0);
}

#[test]
fn a_reload_follows_the_new_sensors() {
    let t = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&t.path().join("b"));
    let dir = t.path().join("c");
    let d = daemon(&config(&broker, &dir, true));
    d.err
        .wait_contains("home assistant discovery: published 4 config(s), removed 0");
    // Same file, now without the second sensor.
    config(&broker, &dir, false);
    d.signal("HUP");
    d.err
        .wait_contains("home assistant discovery: published 2 config(s), removed 2");
    let all = retained(&broker, "reloaded");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all.iter().all(|s| s.topic.contains(S1)), "{all:?}");
}

/// The python of the environment with Home Assistant's own code, made once
/// (scripts/ha-schema-env.sh; the first run downloads from PyPI).
fn ha_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("bash")
            .arg(Path::new(ROOT).join("scripts/ha-schema-env.sh"))
            .output()
            .expect("run scripts/ha-schema-env.sh");
        assert!(
            out.status.success(),
            "scripts/ha-schema-env.sh could not make Home Assistant's environment:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// Runs tests/ha/check_discovery.py on `configs` (topic, payload) and the
/// `messages` published on each topic; its verdict and what it printed.
fn ha_check(
    dir: &Path,
    configs: &[(String, String)],
    messages: &BTreeMap<String, Vec<String>>,
) -> (bool, String) {
    let input = serde_json::json!({
        "configs": configs
            .iter()
            .map(|(t, p)| serde_json::json!({"topic": t, "payload": p}))
            .collect::<Vec<_>>(),
        "messages": messages,
    });
    let f = dir.join("ha-check.json");
    std::fs::write(&f, input.to_string()).expect("write");
    let out = Command::new(ha_python())
        .arg(Path::new(ROOT).join("tests/ha/check_discovery.py"))
        .arg(&f)
        .output()
        .expect("run check_discovery.py");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn home_assistants_own_code_accepts_every_config_and_what_its_templates_get() {
    let t = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&t.path().join("b"));
    // Live before the daemon starts: the empty retained messages it clears
    // the alert topics with at start are seen too.
    let live = broker.observe(&["thermalert/gw1/#", "test/sync/#"]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.sensors_extra = "\n[homeassistant]\nenabled = true\n".into();
    // The second sensor goes CRITICAL and back: a retained CRITICAL, then
    // the empty retained message that clears it.
    cfg.sensors.push_str(&sensor(
        S2,
        "server room",
        "critical_above = 30.0",
        "[[0.0, 21.0], [1.0, 35.0], [3.0, 21.0]]",
    ));
    let d = daemon(&cfg.write(&t.path().join("c")));
    d.err
        .wait_contains("home assistant discovery: published 4 config(s), removed 0");
    let alerts = format!("thermalert/gw1/alerts/{S2}");
    live.out.wait("RESOLVED", |l| {
        l.starts_with(&format!("MSG|{alerts}|")) && l.contains("\"RESOLVED\"")
    });
    // An empty payload: the line ends with its separator.
    live.out.wait("the CRITICAL cleared", |l| {
        l.starts_with(&format!("MSG|{alerts}|")) && l.ends_with('|')
    });
    broker.sync(&live, "ha");
    let configs: Vec<(String, String)> = retained(&broker, "ha")
        .into_iter()
        .map(|s| (s.topic, s.payload))
        .collect();
    assert_eq!(configs.len(), 4, "{configs:?}");
    let mut messages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in seen(&live) {
        messages.entry(s.topic).or_default().push(s.payload);
    }
    let on_alerts = &messages[&alerts];
    assert!(on_alerts.iter().any(|p| p.is_empty()), "{on_alerts:?}");
    assert!(
        on_alerts.iter().any(|p| p.contains("\"CRITICAL\"")),
        "{on_alerts:?}"
    );
    let (ok, out) = ha_check(t.path(), &configs, &messages);
    assert!(ok, "Home Assistant's own code found problems:\n{out}");
    assert!(out.contains("checked 4 config(s)"), "{out}");
}

#[test]
fn the_check_finds_what_home_assistant_would_reject_or_log() {
    let t = tempfile::tempdir().expect("tempdir");
    let device = r#"{"identifiers":["thermalert_gw1"],"name":"thermalert gw1"}"#;
    let configs = vec![
        // The alert entity as it was: attributes from the alert topic with
        // no template, which carries empty clears.
        (
            "homeassistant/binary_sensor/gw1/28-000000000001/config".to_string(),
            format!(
                r#"{{"name":"freezer alert","unique_id":"u1","state_topic":"thermalert/gw1/alerts/28-000000000001","device_class":"problem","json_attributes_topic":"thermalert/gw1/alerts/28-000000000001","device":{device}}}"#
            ),
        ),
        // A misspelt device class, and a key Home Assistant does not know.
        (
            "homeassistant/sensor/gw1/28-000000000001/config".to_string(),
            format!(
                r#"{{"name":"freezer","unique_id":"u2","state_topic":"thermalert/gw1/sensors/28-000000000001/reading","device_class":"temprature","device":{device}}}"#
            ),
        ),
        (
            "homeassistant/sensor/gw1/28-000000000002/config".to_string(),
            format!(
                r#"{{"name":"cellar","unique_id":"u3","state_topic":"thermalert/gw1/sensors/28-000000000002/reading","expire_afer":60,"device":{device}}}"#
            ),
        ),
    ];
    let mut messages = BTreeMap::new();
    messages.insert(
        "thermalert/gw1/alerts/28-000000000001".to_string(),
        vec![String::new(), r#"{"level":"CRITICAL"}"#.to_string()],
    );
    let (ok, out) = ha_check(t.path(), &configs, &messages);
    assert!(!ok, "{out}");
    assert!(out.contains("Erroneous JSON"), "{out}");
    assert!(
        out.contains("DISCOVERY_SCHEMA") && out.contains("device_class"),
        "{out}"
    );
    assert!(
        out.contains("dropped") && out.contains("expire_afer"),
        "{out}"
    );
    assert!(out.contains("3 problem(s)"), "{out}");
}
