//! Home Assistant MQTT discovery against a real Mosquitto: the retained
//! configs are read back by an independent subscriber and checked against
//! Home Assistant's documented schema, and their templates against the
//! payloads the daemon really publishes on the topics they name.

mod common;

use common::*;
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
