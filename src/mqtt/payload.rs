//! The JSON payloads. One definition for the daemon and the notifier.

use serde::{Deserialize, Serialize};

use crate::core::alert::AlertLevel;

/// An alert, published at QoS 2 on `<prefix>/<gateway>/alerts/<sensor>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique per alert; also the CorrelationData of the publish.
    pub id: String,
    pub gateway: String,
    /// The sensor's id (its ROM id on real hardware).
    pub sensor: String,
    /// The sensor's human name.
    pub name: String,
    pub level: AlertLevel,
    /// The temperature; null for FAULT.
    pub celsius: Option<f64>,
    /// The threshold crossed (or, for RESOLVED, the one left); null if none.
    pub threshold: Option<f64>,
    /// The level the sensor left: NORMAL, WARNING, CRITICAL or FAULT.
    #[serde(default)]
    pub previous: Option<crate::core::alert::Level>,
    /// RFC 3339 UTC time the alert was raised.
    pub ts: String,
    pub message: String,
    /// How many times this alert was re-published for want of an answer.
    #[serde(default)]
    pub escalation: u32,
    /// False when the gateway's clock was not synchronised as the alert was
    /// raised (a Pi has no real-time clock): `ts` may then be wrong.
    /// Serialized only when false; absent means true.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub clock_synced: bool,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
impl Alert {
    /// A unit tests' alert: sensor 28-1 "freezer" on gw1 at 45 C over a
    /// 40 C threshold; change fields with `Alert { .., ..Alert::sample(..) }`.
    pub fn sample(id: &str, level: AlertLevel) -> Alert {
        Alert {
            id: id.into(),
            gateway: "gw1".into(),
            sensor: "28-1".into(),
            name: "freezer".into(),
            level,
            celsius: Some(45.0),
            threshold: Some(40.0),
            previous: None,
            ts: "2026-01-01T00:00:00.000Z".into(),
            message: "m".into(),
            escalation: 0,
            clock_synced: true,
        }
    }
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The notifier's answer, published on the alert's ResponseTopic with its
/// CorrelationData.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub alert_id: String,
    /// `delivered` (shown to a person) or `failed`.
    pub status: String,
    /// Who answered: the notifier's client id.
    pub by: String,
    pub ts: String,
}

/// The gateway's retained status on `<prefix>/<gateway>/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `online` or `offline`.
    pub state: String,
    /// Why offline: `shutdown` (clean stop) or `connection lost` (the Will).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensors: Option<usize>,
    /// The gateway's poll interval: readings are due this often (online only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_ms: Option<u64>,
    /// The message expiry this status was published with; with the
    /// remaining expiry a subscriber receives, it dates a Will.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_secs: Option<u32>,
    /// As [`Alert::clock_synced`], for `ts`: serialized only when false.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub clock_synced: bool,
}

/// A reading, on `<prefix>/<gateway>/sensors/<sensor>/reading`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub celsius: f64,
    pub ts: String,
}

/// Largest payload the notifier and daemon accept; larger ones are logged and skipped.
pub const MAX_PAYLOAD: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("payload of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error("payload is not valid UTF-8")]
    NotUtf8,
    #[error("payload is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Drill alert ids start with this, so the daemon can tell the answers
/// to a drill (`thermalertd drill`) from answers that match nothing.
pub const DRILL_ID_PREFIX: &str = "drill-";

/// Whether an answer id belongs to a drill.
pub fn is_drill_id(id: &[u8]) -> bool {
    id.starts_with(DRILL_ID_PREFIX.as_bytes())
}

/// The v5 properties of a JSON publish: payload format UTF-8, content
/// type `application/json`, and a message expiry of `expiry` seconds when
/// given. One home for the daemon's and the notifier's JSON messages (add
/// ResponseTopic or CorrelationData with `..json_properties(..)`).
pub fn json_properties(expiry: Option<u32>) -> rumqttc::PublishProperties {
    rumqttc::PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: expiry,
        content_type: Some(super::CONTENT_TYPE_JSON.into()),
        ..Default::default()
    }
}

/// Decodes a JSON payload with a size limit and a clear error.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, PayloadError> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(PayloadError::TooLarge(bytes.len()));
    }
    let s = std::str::from_utf8(bytes).map_err(|_| PayloadError::NotUtf8)?;
    Ok(serde_json::from_str(s)?)
}

/// Encodes a payload; our own types always serialize.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_round_trips_with_upper_case_levels() {
        let a = Alert {
            previous: Some(crate::core::alert::Level::Warning),
            ..Alert::sample("x", AlertLevel::Critical)
        };
        let v: serde_json::Value = serde_json::from_slice(&encode(&a)).expect("json");
        assert_eq!(v["level"], "CRITICAL");
        assert_eq!(v["previous"], "WARNING");
        assert_eq!(decode::<Alert>(&encode(&a)).expect("decode"), a);
    }

    #[test]
    fn clock_synced_is_written_only_when_false_and_defaults_to_true() {
        let mut a = Alert {
            celsius: Some(35.0),
            threshold: Some(30.0),
            ts: "1970-01-01T00:00:12.000Z".into(),
            ..Alert::sample("x", AlertLevel::Warning)
        };
        let v: serde_json::Value = serde_json::from_slice(&encode(&a)).expect("json");
        assert!(v.get("clock_synced").is_none(), "{v}");
        a.clock_synced = false;
        let v: serde_json::Value = serde_json::from_slice(&encode(&a)).expect("json");
        assert_eq!(v["clock_synced"], false);
        assert_eq!(decode::<Alert>(&encode(&a)).expect("decode"), a);
        // Payloads from before the field: synchronised.
        let old = br#"{"id":"x","gateway":"g","sensor":"s","name":"n","level":"WARNING","celsius":1.0,"threshold":null,"ts":"t","message":"m"}"#;
        assert!(decode::<Alert>(old).expect("decode").clock_synced);
        let s: Status = decode(br#"{"state":"online"}"#).expect("status");
        assert!(s.clock_synced);
        let s = Status {
            clock_synced: false,
            ..s
        };
        assert!(String::from_utf8_lossy(&encode(&s)).contains(r#""clock_synced":false"#));
    }

    #[test]
    fn bad_payloads_are_errors_not_panics() {
        assert!(matches!(
            decode::<Ack>(b"\xff\xfe"),
            Err(PayloadError::NotUtf8)
        ));
        assert!(matches!(decode::<Ack>(b"{"), Err(PayloadError::Json(_))));
        let big = vec![b' '; MAX_PAYLOAD + 1];
        assert!(matches!(
            decode::<Ack>(&big),
            Err(PayloadError::TooLarge(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode::<Alert>(&bytes);
            let _ = decode::<Ack>(&bytes);
            let _ = decode::<Status>(&bytes);
        }
    }
}
