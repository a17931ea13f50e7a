//! The gateway's status: the retained `status` message (online, offline,
//! and the Will) and the systemd status line.

use rumqttc::{LastWill, LastWillProperties, PublishOptions, QoS};

use crate::config::Config;
use crate::core::gateway::Gateway;
use crate::mqtt::payload::{self, Status};
use crate::mqtt::topics::Topics;
use crate::mqtt::CONTENT_TYPE_JSON;
use crate::sys::systemd::StatusInfo;
use crate::sys::timefmt;

/// The status payload: `online`, or `offline` with a reason (`shutdown`,
/// or `connection lost` for the Will, which carries no time).
pub fn payload(cfg: &Config, state: &str, reason: Option<&str>) -> Vec<u8> {
    let ts = (state == "online" || reason == Some("shutdown")).then(timefmt::now_rfc3339);
    payload::encode(&Status {
        state: state.into(),
        reason: reason.map(Into::into),
        gateway: Some(cfg.gateway_id.clone()),
        // Only a status with a time says whether to trust it (not the Will).
        clock_synced: ts.is_none() || crate::sys::clock::synced_now(),
        ts,
        version: Some(env!("CARGO_PKG_VERSION").into()),
        sensors: (state == "online").then_some(cfg.sensor.len()),
        poll_interval_ms: (state == "online").then_some(cfg.sensors.poll_interval_ms),
        expiry_secs: Some(cfg.mqtt.status_expiry_secs),
    })
}

/// How a status is published: QoS 1, retained, JSON with its expiry.
pub fn options(cfg: &Config) -> PublishOptions {
    PublishOptions::new(QoS::AtLeastOnce)
        .retained()
        .properties(payload::json_properties(Some(cfg.mqtt.status_expiry_secs)))
}

/// The Last Will: `offline`, `connection lost`, retained.
pub fn will(cfg: &Config, topics: &Topics) -> LastWill {
    LastWill::new(
        topics.status(),
        payload(cfg, "offline", Some("connection lost")),
        QoS::AtLeastOnce,
        true,
        Some(LastWillProperties {
            message_expiry_interval: Some(cfg.mqtt.status_expiry_secs),
            content_type: Some(CONTENT_TYPE_JSON.into()),
            payload_format_indicator: Some(1),
            delay_interval: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        }),
    )
}

/// What the systemd status line says about the gateway (and the sensor
/// backend's `note`).
pub fn info(g: &Gateway, note: Option<String>) -> StatusInfo {
    StatusInfo::new(g.config(), g.connected(), g.last_alert()).with_note(note)
}
