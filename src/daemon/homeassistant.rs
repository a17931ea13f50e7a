//! Home Assistant MQTT discovery: pure payload building plus a small state
//! machine that decides what to publish, driven by the daemon's link.
//!
//! Per configured sensor the daemon publishes two retained discovery
//! configs (QoS 1) under `<discovery_prefix>`:
//! - `sensor/<gateway>/<sensor>/config`: the temperature, from the reading
//!   topic (`{{ value_json.celsius }}`, °C, device class `temperature`);
//! - `binary_sensor/<gateway>/<sensor>/config`: a `problem` entity that is
//!   on while the sensor's last alert is WARNING, CRITICAL or FAULT.
//!
//! Both use the gateway as their device and its retained status topic for
//! availability, so the Last Will marks them unavailable.
//!
//! Removing a sensor from the config removes its entities: at each new
//! session the daemon subscribes to its own discovery topics, reads back
//! what the broker retains, and clears (empty retained message) every
//! config it no longer wants. The end of the broker's retained burst is
//! found with a sentinel: after subscribing, the daemon publishes a nonce
//! on `<discovery_prefix>/sensor/<gateway>/thermalertd-sync` (a topic that
//! does not end in `/config`, so Home Assistant ignores it); the broker
//! delivers it after the retained messages it queued for the subscription.
//! The broker is the source of truth, so nothing is kept on disk and a
//! wiped state directory cannot leave orphaned entities behind.

use std::collections::BTreeSet;

use rumqttc::{AsyncClient, PublishOptions, PublishProperties, QoS};
use serde_json::json;

use crate::config::Config;
/// `[homeassistant]` in the daemon's configuration (defined with the
/// rest of it, in [`crate::config`]).
pub use crate::config::HomeAssistantConfig;
use crate::mqtt::topics::Topics;
use crate::sys::shutdown::Shutdown;

/// The last path level of the sentinel topic.
pub const SYNC_LEVEL: &str = "thermalertd-sync";

/// The template that turns an alert into the problem entity's state.
pub const PROBLEM_TEMPLATE: &str = "{{ 'ON' if (value_json is defined and value_json.level in ['WARNING', 'CRITICAL', 'FAULT']) else 'OFF' }}";

/// The template that turns an alert into the problem entity's attributes:
/// the alert's fields, or `{}` for the empty retained message that clears
/// the alert topic (at every start, and when a sensor leaves CRITICAL).
/// Home Assistant parses what the template gives as JSON, so it always
/// gets an object and never logs "Erroneous JSON".
pub const ATTRIBUTES_TEMPLATE: &str =
    "{{ value_json | to_json if (value_json is defined and value_json is mapping) else '{}' }}";

/// One retained discovery message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub topic: String,
    /// Empty: remove the entity.
    pub payload: Vec<u8>,
}

/// The discovery topics and payloads of one gateway.
#[derive(Debug, Clone)]
pub struct Discovery {
    prefix: String,
    gateway: String,
    topics: Topics,
    /// Sensor id and display name, in config order.
    sensors: Vec<(String, String)>,
    expire_after_secs: u64,
}

impl Discovery {
    pub fn new(cfg: &Config) -> Self {
        Self {
            prefix: cfg.homeassistant.discovery_prefix.clone(),
            gateway: cfg.gateway_id.clone(),
            topics: Topics::new(&cfg.topic_prefix, &cfg.gateway_id),
            sensors: cfg
                .sensor
                .iter()
                .map(|s| (s.id.clone(), s.display_name().to_string()))
                .collect(),
            // Unavailable once readings stop: after their expiry, or three
            // poll intervals when polling is slower than that.
            expire_after_secs: u64::from(cfg.mqtt.reading_expiry_secs)
                .max((cfg.sensors.poll_interval_ms * 3).div_ceil(1000)),
        }
    }

    /// The filter that covers every discovery topic of this gateway
    /// (both components) is two filters; these are they.
    pub fn filters(&self) -> [String; 2] {
        [
            format!("{}/sensor/{}/#", self.prefix, self.gateway),
            format!("{}/binary_sensor/{}/#", self.prefix, self.gateway),
        ]
    }

    pub fn sync_topic(&self) -> String {
        format!("{}/sensor/{}/{SYNC_LEVEL}", self.prefix, self.gateway)
    }

    pub fn sensor_topic(&self, sensor: &str) -> String {
        format!("{}/sensor/{}/{sensor}/config", self.prefix, self.gateway)
    }

    pub fn problem_topic(&self, sensor: &str) -> String {
        format!(
            "{}/binary_sensor/{}/{sensor}/config",
            self.prefix, self.gateway
        )
    }

    /// Whether `topic` is one of this gateway's discovery configs.
    pub fn is_config_topic(&self, topic: &str) -> bool {
        let [s, b] = self.filters();
        let under = |f: &str| {
            f.strip_suffix('#')
                .and_then(|base| topic.strip_prefix(base))
                .is_some_and(|rest| {
                    rest.strip_suffix("/config")
                        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
                })
        };
        under(&s) || under(&b)
    }

    fn device(&self) -> serde_json::Value {
        json!({
            "identifiers": [format!("thermalert_{}", self.gateway)],
            "name": format!("thermalert {}", self.gateway),
            "manufacturer": "thermalert",
            "model": "thermalertd DS18B20 gateway",
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }

    fn availability(&self) -> serde_json::Value {
        json!([{
            "topic": self.topics.status(),
            "value_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        }])
    }

    fn origin() -> serde_json::Value {
        json!({ "name": "thermalertd", "sw_version": env!("CARGO_PKG_VERSION") })
    }

    /// The temperature entity's discovery config.
    pub fn sensor_config(&self, id: &str, name: &str) -> serde_json::Value {
        json!({
            "name": name,
            "unique_id": format!("thermalert_{}_{id}", self.gateway),
            "state_topic": self.topics.reading(id),
            "value_template": "{{ value_json.celsius }}",
            "unit_of_measurement": "°C",
            "device_class": "temperature",
            "state_class": "measurement",
            "expire_after": self.expire_after_secs,
            "availability": self.availability(),
            "device": self.device(),
            "origin": Self::origin(),
        })
    }

    /// The alert-level entity's discovery config: a `problem` binary sensor.
    pub fn problem_config(&self, id: &str, name: &str) -> serde_json::Value {
        json!({
            "name": format!("{name} alert"),
            "unique_id": format!("thermalert_{}_{id}_alert", self.gateway),
            "state_topic": self.topics.alert(id),
            "value_template": PROBLEM_TEMPLATE,
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "problem",
            "json_attributes_topic": self.topics.alert(id),
            "json_attributes_template": ATTRIBUTES_TEMPLATE,
            "availability": self.availability(),
            "device": self.device(),
            "origin": Self::origin(),
        })
    }

    /// Every config this gateway wants, in config order.
    pub fn wanted(&self) -> Vec<Publication> {
        let mut out = Vec::with_capacity(self.sensors.len() * 2);
        for (id, name) in &self.sensors {
            out.push(Publication {
                topic: self.sensor_topic(id),
                payload: serde_json::to_vec(&self.sensor_config(id, name)).unwrap_or_default(),
            });
            out.push(Publication {
                topic: self.problem_topic(id),
                payload: serde_json::to_vec(&self.problem_config(id, name)).unwrap_or_default(),
            });
        }
        out
    }

    /// What to publish once the retained configs `existing` are known:
    /// the wanted configs, and an empty retained message for every
    /// existing config no longer wanted.
    pub fn reconcile(&self, existing: &BTreeSet<String>) -> Vec<Publication> {
        let wanted = self.wanted();
        let keep: BTreeSet<&str> = wanted.iter().map(|p| p.topic.as_str()).collect();
        let mut out: Vec<Publication> = existing
            .iter()
            .filter(|t| !keep.contains(t.as_str()))
            .map(|t| Publication {
                topic: t.clone(),
                payload: Vec::new(),
            })
            .collect();
        out.extend(wanted);
        out
    }
}

/// Where the discovery exchange of the current session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not connected, or not yet started on this session.
    Idle,
    /// Subscribed and sentinel sent; collecting retained configs.
    Collecting {
        nonce: String,
        existing: BTreeSet<String>,
    },
    /// Published for this session.
    Done,
}

/// What the daemon must do for discovery.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Subscribe (QoS 1) to these filters, then publish `nonce` (QoS 1,
    /// not retained) on the sentinel topic.
    SubscribeAndSync {
        filters: Vec<String>,
        sync_topic: String,
        nonce: String,
    },
    /// Unsubscribe from these filters, then publish these retained messages.
    UnsubscribeAndPublish {
        filters: Vec<String>,
        publish: Vec<Publication>,
    },
}

/// The discovery state machine: pure, the daemon executes its actions.
#[derive(Debug, Clone)]
pub struct Discoverer {
    pub discovery: Discovery,
    pub phase: Phase,
}

impl Discoverer {
    pub fn new(discovery: Discovery) -> Self {
        Self {
            discovery,
            phase: Phase::Idle,
        }
    }

    /// A CONNACK. A new session (the broker may have lost its retained
    /// messages, or this is a new process) starts the exchange again; a
    /// resumed one keeps what was done.
    pub fn on_connected(&mut self, session_present: bool, nonce: String) -> Option<Action> {
        if session_present && self.phase == Phase::Done {
            return None;
        }
        let d = &self.discovery;
        self.phase = Phase::Collecting {
            nonce: nonce.clone(),
            existing: BTreeSet::new(),
        };
        Some(Action::SubscribeAndSync {
            filters: d.filters().to_vec(),
            sync_topic: d.sync_topic(),
            nonce,
        })
    }

    /// The connection dropped: an exchange in progress restarts on the
    /// next session.
    pub fn on_down(&mut self) {
        if matches!(self.phase, Phase::Collecting { .. }) {
            self.phase = Phase::Idle;
        }
    }

    /// An incoming message. Returns `None` when it is not discovery's
    /// (the daemon handles it), `Some(None)` when consumed, and
    /// `Some(Some(action))` when the exchange is complete.
    pub fn on_message(
        &mut self,
        topic: &str,
        retain: bool,
        payload: &[u8],
    ) -> Option<Option<Action>> {
        let d = &self.discovery;
        let is_sync = topic == d.sync_topic();
        let is_config = d.is_config_topic(topic);
        if !is_sync && !is_config {
            return None;
        }
        let Phase::Collecting { nonce, existing } = &mut self.phase else {
            // An echo of our own publications, or a late sentinel.
            return Some(None);
        };
        if is_config {
            if retain && !payload.is_empty() {
                existing.insert(topic.to_string());
            }
            return Some(None);
        }
        if payload != nonce.as_bytes() {
            return Some(None);
        }
        let publish = d.reconcile(existing);
        self.phase = Phase::Done;
        Some(Some(Action::UnsubscribeAndPublish {
            filters: d.filters().to_vec(),
            publish,
        }))
    }
}

impl Discoverer {
    /// The daemon's hook for a CONNACK: starts the exchange when due.
    pub async fn connected(
        &mut self,
        client: &AsyncClient,
        session_present: bool,
        tasks: &Shutdown,
    ) {
        if let Some(a) = self.on_connected(session_present, uuid::Uuid::new_v4().to_string()) {
            execute(client, a, tasks).await;
        }
    }

    /// The daemon's hook for an incoming message: true when it was
    /// discovery's.
    pub async fn message(
        &mut self,
        client: &AsyncClient,
        p: &rumqttc::Publish,
        tasks: &Shutdown,
    ) -> bool {
        let topic = String::from_utf8_lossy(&p.topic);
        match self.on_message(&topic, p.retain, &p.payload) {
            None => false,
            Some(None) => true,
            Some(Some(a)) => {
                execute(client, a, tasks).await;
                true
            }
        }
    }
}

/// Carries out an action on the MQTT client; failures are logged (the
/// next session tries again). Its waits run as `tasks`' tasks.
pub async fn execute(client: &AsyncClient, action: Action, tasks: &Shutdown) {
    match action {
        Action::SubscribeAndSync {
            filters,
            sync_topic,
            nonce,
        } => {
            let subs = filters
                .iter()
                .map(|f| rumqttc::SubscribeFilterInput::new(f.clone(), QoS::AtLeastOnce));
            // The client may send a PUBLISH queued after a SUBSCRIBE first:
            // the sentinel goes out only once the SUBACK is in, so that the
            // broker has queued the retained configs before it.
            let notice = match client.subscribe_many_tracked(subs).await {
                Ok(n) => n,
                Err(e) => {
                    log::error!("home assistant discovery: cannot subscribe: {e}");
                    return;
                }
            };
            let client = client.clone();
            tasks.spawn(async move {
                if let Err(e) = notice.wait_async().await {
                    log::error!("home assistant discovery: subscription failed: {e}");
                    return;
                }
                let opts = PublishOptions::new(QoS::AtLeastOnce).properties(PublishProperties {
                    message_expiry_interval: Some(60),
                    ..Default::default()
                });
                if let Err(e) = client.publish(sync_topic, nonce.into_bytes(), opts).await {
                    log::error!("home assistant discovery: cannot publish the sentinel: {e}");
                }
            });
        }
        Action::UnsubscribeAndPublish { filters, publish } => {
            if let Err(e) = client.unsubscribe_many(filters).await {
                log::warn!("home assistant discovery: cannot unsubscribe: {e}");
            }
            let removed = publish.iter().filter(|p| p.payload.is_empty()).count();
            let total = publish.len();
            let mut notices = Vec::with_capacity(total);
            for p in publish {
                if p.payload.is_empty() {
                    log::info!("home assistant discovery: removing {}", p.topic);
                }
                let opts = PublishOptions::new(QoS::AtLeastOnce).retain(true);
                match client
                    .publish_tracked(p.topic.clone(), p.payload, opts)
                    .await
                {
                    Ok(n) => notices.push(n),
                    Err(e) => {
                        log::error!("home assistant discovery: cannot publish {}: {e}", p.topic)
                    }
                }
            }
            // Logged once the broker has taken every one of them (PUBACK).
            tasks.spawn(async move {
                let mut failed = total - notices.len();
                for n in notices {
                    if let Err(e) = n.wait_async().await {
                        log::warn!("home assistant discovery: a config was not confirmed: {e}");
                        failed += 1;
                    }
                }
                if failed == 0 {
                    log::info!(
                        "home assistant discovery: published {} config(s), removed {removed} stale one(s)",
                        total - removed
                    );
                } else {
                    log::warn!(
                        "home assistant discovery: {failed} of {total} config(s) not confirmed; retried at the next session"
                    );
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(extra_sensor: bool) -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "x").expect("write");
        let mut src = format!(
            "gateway_id = \"gw1\"\n[mqtt]\nhost = \"localhost\"\nca_file = \"{}\"\n[homeassistant]\nenabled = true\n[sensors]\nbackend = \"sim\"\n[[sensor]]\nid = \"28-000000000001\"\nname = \"freezer\"\ncritical_above = 40.0\n",
            ca.display()
        );
        if extra_sensor {
            src.push_str("[[sensor]]\nid = \"28-000000000002\"\ncritical_above = 40.0\n");
        }
        Config::parse(&src, Path::new("/x/gw1.toml")).expect("config")
    }

    #[test]
    fn temperature_config_has_home_assistants_fields() {
        let d = Discovery::new(&cfg(false));
        assert_eq!(
            d.sensor_topic("28-000000000001"),
            "homeassistant/sensor/gw1/28-000000000001/config"
        );
        let c = d.sensor_config("28-000000000001", "freezer");
        assert_eq!(c["name"], "freezer");
        assert_eq!(c["unique_id"], "thermalert_gw1_28-000000000001");
        assert_eq!(
            c["state_topic"],
            "thermalert/gw1/sensors/28-000000000001/reading"
        );
        assert_eq!(c["value_template"], "{{ value_json.celsius }}");
        assert_eq!(c["unit_of_measurement"], "°C");
        assert_eq!(c["device_class"], "temperature");
        assert_eq!(c["state_class"], "measurement");
        assert_eq!(c["expire_after"], 60, "the reading expiry");
        let a = &c["availability"][0];
        assert_eq!(a["topic"], "thermalert/gw1/status");
        assert_eq!(a["value_template"], "{{ value_json.state }}");
        assert_eq!(a["payload_available"], "online");
        assert_eq!(a["payload_not_available"], "offline");
        assert_eq!(c["device"]["identifiers"][0], "thermalert_gw1");
        assert_eq!(c["device"]["sw_version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn problem_config_follows_the_alert_topic() {
        let d = Discovery::new(&cfg(false));
        let c = d.problem_config("28-000000000001", "freezer");
        assert_eq!(c["state_topic"], "thermalert/gw1/alerts/28-000000000001");
        assert_eq!(c["device_class"], "problem");
        assert_eq!(c["unique_id"], "thermalert_gw1_28-000000000001_alert");
        assert_eq!(c["value_template"], PROBLEM_TEMPLATE);
        assert_ne!(
            c["unique_id"],
            d.sensor_config("28-000000000001", "freezer")["unique_id"]
        );
    }

    #[test]
    fn exchange_clears_configs_of_removed_sensors_only() {
        let mut m = Discoverer::new(Discovery::new(&cfg(false)));
        let Some(Action::SubscribeAndSync {
            filters,
            sync_topic,
            nonce,
        }) = m.on_connected(false, "n1".into())
        else {
            panic!("expected a subscription");
        };
        assert_eq!(
            filters,
            [
                "homeassistant/sensor/gw1/#",
                "homeassistant/binary_sensor/gw1/#"
            ]
        );
        assert_eq!(sync_topic, "homeassistant/sensor/gw1/thermalertd-sync");
        let old = "homeassistant/sensor/gw1/28-000000000002/config";
        let kept = "homeassistant/sensor/gw1/28-000000000001/config";
        assert_eq!(m.on_message(old, true, b"{}"), Some(None));
        assert_eq!(m.on_message(kept, true, b"{}"), Some(None));
        // A cleared config (empty) is not an entity any more.
        let gone = "homeassistant/binary_sensor/gw1/28-000000000003/config";
        assert_eq!(m.on_message(gone, true, b""), Some(None));
        assert_eq!(m.on_message("thermalert/gw1/acks", false, b"{}"), None);
        // A sentinel from another exchange does not end this one.
        assert_eq!(m.on_message(&sync_topic, false, b"other"), Some(None));
        let Some(Some(Action::UnsubscribeAndPublish { publish, .. })) =
            m.on_message(&sync_topic, false, nonce.as_bytes())
        else {
            panic!("expected publications");
        };
        let cleared: Vec<&str> = publish
            .iter()
            .filter(|p| p.payload.is_empty())
            .map(|p| p.topic.as_str())
            .collect();
        assert_eq!(cleared, [old]);
        let set: Vec<&str> = publish
            .iter()
            .filter(|p| !p.payload.is_empty())
            .map(|p| p.topic.as_str())
            .collect();
        assert_eq!(
            set,
            [
                kept,
                "homeassistant/binary_sensor/gw1/28-000000000001/config"
            ]
        );
        assert_eq!(m.phase, Phase::Done);
        // Echoes of our own publications are consumed and ignored.
        assert_eq!(m.on_message(kept, false, b"{}"), Some(None));
        // A resumed session does not redo it; a new one does.
        assert_eq!(m.on_connected(true, "n2".into()), None);
        assert!(m.on_connected(false, "n3".into()).is_some());
    }

    #[test]
    fn an_interrupted_exchange_restarts_on_the_next_session() {
        let mut m = Discoverer::new(Discovery::new(&cfg(true)));
        assert!(m.on_connected(false, "n1".into()).is_some());
        m.on_down();
        assert_eq!(m.phase, Phase::Idle);
        assert!(m.on_connected(true, "n2".into()).is_some());
        assert_eq!(m.discovery.wanted().len(), 4);
    }

    #[test]
    fn config_topics_are_recognised_exactly() {
        let d = Discovery::new(&cfg(false));
        assert!(d.is_config_topic("homeassistant/sensor/gw1/x/config"));
        assert!(d.is_config_topic("homeassistant/binary_sensor/gw1/x/config"));
        assert!(!d.is_config_topic("homeassistant/sensor/gw1/thermalertd-sync"));
        assert!(!d.is_config_topic("homeassistant/sensor/gw2/x/config"));
        assert!(!d.is_config_topic("homeassistant/sensor/gw1/a/b/config"));
        assert!(!d.is_config_topic("homeassistant/sensor/gw1//config"));
    }

    #[test]
    fn prefix_and_readings_are_checked() {
        let mut h = HomeAssistantConfig {
            enabled: true,
            discovery_prefix: "ha/".into(),
        };
        assert_eq!(h.check(true).map_err(|e| e.0), Err("discovery_prefix"));
        h.discovery_prefix = "ha".into();
        assert!(h.check(true).is_ok());
        assert_eq!(h.check(false).map_err(|e| e.0), Err("enabled"));
        h.enabled = false;
        assert!(h.check(false).is_ok());
    }
}
