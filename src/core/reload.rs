//! A configuration reload (SIGHUP), as a pure step: the running
//! configuration, its alarms and a freshly loaded configuration in; the
//! configuration to run with, the alarms to keep and what changed out.
//!
//! Applied at once: the `[[sensor]]` list (added, removed, renamed,
//! thresholds and hysteresis), `sensors.poll_interval_ms`,
//! `sensors.fault_after` and `sensors.defaults` (sensors adopted from the
//! bus under `monitor_unconfigured` stay, with the new defaults). A sensor that stays keeps its alarm state, so a
//! reload never re-raises or forgets an alert. Everything the MQTT
//! connection or the backend was built from (`gateway_id`, `topic_prefix`,
//! `mqtt.*`, `sensors.backend`, `sensors.w1`, `sensors.gpio`,
//! `sensors.monitor_unconfigured`) is kept as it runs and reported as
//! needing a restart.

use crate::config::Config;
use crate::core::alert::{Level, SensorAlarm};

/// The outcome of a reload.
#[derive(Debug)]
pub struct Applied {
    /// The configuration to run with from now on.
    pub cfg: Config,
    /// One alarm per `cfg.sensor`, in order.
    pub alarms: Vec<SensorAlarm>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Removed sensors that were CRITICAL (their retained alert should be cleared).
    pub removed_critical: Vec<String>,
    /// Sensors whose name, thresholds or script changed.
    pub changed: Vec<String>,
    /// Keys whose new value waits for a restart.
    pub restart_needed: Vec<String>,
    /// Whether the sensor thread needs the new list or interval.
    pub sensors_changed: bool,
}

impl Applied {
    /// One line for the log.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!("added {}", self.added.join(", ")));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", self.removed.join(", ")));
        }
        if !self.changed.is_empty() {
            parts.push(format!("changed {}", self.changed.join(", ")));
        }
        if parts.is_empty() {
            parts.push("no sensor changed".into());
        }
        format!(
            "{}; {} sensor(s), poll every {} ms",
            parts.join("; "),
            self.cfg.sensor.len(),
            self.cfg.sensors.poll_interval_ms
        )
    }
}

/// The keys of `new` that differ from `running` and need a restart.
pub fn restart_needed(running: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    macro_rules! cmp {
        ($a:expr, $b:expr, $prefix:literal, $($field:ident),+) => {
            $( if $a.$field != $b.$field { keys.push(format!("{}{}", $prefix, stringify!($field))); } )+
        };
    }
    cmp!(running, new, "", gateway_id, topic_prefix);
    let (a, b) = (&running.mqtt, &new.mqtt);
    let before = keys.len();
    cmp!(
        a,
        b,
        "mqtt.",
        host,
        port,
        ca_file,
        client_cert,
        client_key,
        tls_server_name,
        username,
        password_file,
        client_id,
        keep_alive_secs,
        alert_expiry_secs,
        status_expiry_secs,
        publish_readings,
        reading_expiry_secs,
        receive_maximum,
        session_expiry_secs,
        connect_timeout_secs,
        reconnect_min_ms,
        reconnect_max_secs
    );
    if keys.len() == before && a != b {
        keys.push("mqtt".into());
    }
    cmp!(
        running.sensors,
        new.sensors,
        "sensors.",
        backend,
        monitor_unconfigured,
        w1,
        gpio
    );
    cmp!(running, new, "", alarm);
    keys
}

/// Applies `new` over the running configuration and its alarms.
pub fn apply(running: &Config, mut alarms: Vec<SensorAlarm>, new: Config) -> Applied {
    let restart_needed = restart_needed(running, &new);
    let mut cfg = running.clone();
    cfg.sensor = new.sensor;
    // Sensors adopted from the bus (`monitor_unconfigured`) are not in the
    // file: they stay, under the new default thresholds.
    if running.sensors.monitor_unconfigured {
        for s in &running.sensor {
            let adopted = *s == running.sensors.defaults.sensor(&s.id);
            if adopted && !cfg.sensor.iter().any(|n| n.id == s.id) {
                cfg.sensor.push(new.sensors.defaults.sensor(&s.id));
            }
        }
    }
    cfg.sensors.defaults = new.sensors.defaults;
    cfg.sensors.poll_interval_ms = new.sensors.poll_interval_ms;
    cfg.sensors.fault_after = new.sensors.fault_after;
    let fault_after = cfg.sensors.fault_after;

    let mut old: Vec<Option<SensorAlarm>> = alarms.drain(..).map(Some).collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    let mut kept = Vec::with_capacity(cfg.sensor.len());
    for sc in &cfg.sensor {
        let prev = running.sensor.iter().position(|o| o.id == sc.id);
        match prev.and_then(|i| old.get_mut(i).and_then(Option::take)) {
            Some(mut alarm) => {
                if let Some(p) = prev.and_then(|i| running.sensor.get(i)) {
                    if p != sc {
                        changed.push(sc.id.clone());
                    }
                }
                alarm.set_thresholds(sc.thresholds(), fault_after);
                kept.push(alarm);
            }
            None => {
                added.push(sc.id.clone());
                kept.push(SensorAlarm::new(sc.thresholds(), fault_after));
            }
        }
    }
    let mut removed = Vec::new();
    let mut removed_critical = Vec::new();
    for (sc, alarm) in running.sensor.iter().zip(old) {
        if let Some(a) = alarm {
            if a.level() == Level::Critical {
                removed_critical.push(sc.id.clone());
            }
            removed.push(sc.id.clone());
        }
    }
    let sensors_changed = !added.is_empty()
        || !removed.is_empty()
        || !changed.is_empty()
        || running
            .sensor
            .iter()
            .map(|s| &s.id)
            .ne(cfg.sensor.iter().map(|s| &s.id))
        || running.sensors.poll_interval_ms != cfg.sensors.poll_interval_ms;
    Applied {
        cfg,
        alarms: kept,
        added,
        removed,
        removed_critical,
        changed,
        restart_needed,
        sensors_changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(dir: &Path, extra_mqtt: &str, sensors: &str) -> Config {
        std::fs::write(dir.join("ca.crt"), "x").expect("write");
        let src = format!(
            "gateway_id = \"gw1\"\n[mqtt]\nhost = \"localhost\"\nca_file = \"ca.crt\"\n{extra_mqtt}\n[sensors]\nbackend = \"sim\"\n{sensors}"
        );
        Config::parse(&src, &dir.join("t.toml")).expect("valid")
    }

    const TWO: &str = "[[sensor]]\nid = \"a\"\ncritical_above = 40.0\n[[sensor]]\nid = \"b\"\ncritical_above = 40.0\n";

    fn alarms(c: &Config) -> Vec<SensorAlarm> {
        c.sensor
            .iter()
            .map(|s| SensorAlarm::new(s.thresholds(), c.sensors.fault_after))
            .collect()
    }

    #[test]
    fn a_kept_sensor_keeps_its_state_under_new_thresholds() {
        let d = tempfile::tempdir().expect("tmp");
        let old = cfg(d.path(), "", TWO);
        let mut al = alarms(&old);
        // "a" goes CRITICAL at 45 under the old threshold of 40.
        let _ = al[0].observe(Ok(45.0));
        assert_eq!(al[0].level(), Level::Critical);
        let new = cfg(
            d.path(),
            "",
            "[[sensor]]\nid = \"a\"\nname = \"freezer\"\ncritical_above = 50.0\n[[sensor]]\nid = \"b\"\ncritical_above = 40.0\n",
        );
        let mut a = apply(&old, al, new);
        assert_eq!(a.changed, ["a"]);
        assert!(a.added.is_empty() && a.removed.is_empty());
        assert!(a.restart_needed.is_empty());
        assert!(a.sensors_changed);
        assert_eq!(a.alarms[0].level(), Level::Critical, "state kept");
        // Under the new threshold of 50, 45 is no longer critical.
        let dec = a.alarms[0].observe(Ok(45.0));
        assert_eq!(a.alarms[0].level(), Level::Normal, "{dec:?}");
        assert_eq!(a.cfg.sensor[0].display_name(), "freezer");
    }

    #[test]
    fn added_and_removed_sensors() {
        let d = tempfile::tempdir().expect("tmp");
        let old = cfg(d.path(), "", TWO);
        let mut al = alarms(&old);
        let _ = al[1].observe(Ok(45.0));
        let new = cfg(
            d.path(),
            "",
            "[[sensor]]\nid = \"c\"\n[[sensor]]\nid = \"a\"\ncritical_above = 40.0\n",
        );
        let a = apply(&old, al, new);
        assert_eq!(a.added, ["c"]);
        assert_eq!(a.removed, ["b"]);
        assert_eq!(a.removed_critical, ["b"]);
        assert!(a.changed.is_empty());
        assert_eq!(a.alarms.len(), 2);
        assert_eq!(a.alarms[0].level(), Level::Normal);
        assert!(a.sensors_changed);
        assert!(
            a.summary().contains("added c; removed b"),
            "{}",
            a.summary()
        );
    }

    #[test]
    fn connection_settings_wait_for_a_restart() {
        let d = tempfile::tempdir().expect("tmp");
        let old = cfg(d.path(), "", TWO);
        let new = cfg(
            d.path(),
            "port = 9999\nkeep_alive_secs = 7",
            &format!("poll_interval_ms = 250\n{TWO}"),
        );
        let a = apply(&old, alarms(&old), new);
        assert_eq!(a.restart_needed, ["mqtt.port", "mqtt.keep_alive_secs"]);
        assert_eq!(a.cfg.mqtt.port, 8883, "the running port stays");
        assert_eq!(a.cfg.sensors.poll_interval_ms, 250, "applied");
        assert!(a.sensors_changed);
    }

    #[test]
    fn an_identical_file_changes_nothing() {
        let d = tempfile::tempdir().expect("tmp");
        let old = cfg(d.path(), "", TWO);
        let a = apply(&old, alarms(&old), old.clone());
        assert!(!a.sensors_changed);
        assert!(a.restart_needed.is_empty());
        assert_eq!(
            a.summary(),
            "no sensor changed; 2 sensor(s), poll every 1000 ms"
        );
    }
}
