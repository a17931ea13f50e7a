//! `thermalertd drill`: a fire drill. Publishes a TEST alert through the
//! running broker exactly as the daemon publishes a real one (QoS 2,
//! message expiry, ResponseTopic = the gateway's acks topic,
//! CorrelationData = the alert id), with the daemon's configuration and
//! credentials but its own client id (`<client_id>-drill`), so the
//! daemon's session is left alone. It subscribes to the acks topic before
//! publishing, prints every notifier that answers with its round-trip
//! time, and fails when nobody answered in time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{AsyncClient, PublishOptions, PublishProperties, QoS};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::core::alert::AlertLevel;
use crate::mqtt::conn::{Endpoint, Link};
use crate::mqtt::oneshot::Connection;
use crate::mqtt::payload::{self, Ack, Alert};
use crate::mqtt::topics::Topics;
use crate::sys::timefmt;

/// The sensor level of the drill's alert topic: `<prefix>/<gw>/alerts/drill`.
pub const DRILL_SENSOR: &str = "drill";

pub use crate::mqtt::payload::{is_drill_id, DRILL_ID_PREFIX as ID_PREFIX};

/// Exit status when the broker could not be reached (`EX_UNAVAILABLE`).
pub const EXIT_UNREACHABLE: i32 = 69;

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("cannot reach the broker within {0:?}")]
    Unreachable(Duration),
    #[error("cannot subscribe to {topic}: {message}")]
    Subscribe { topic: String, message: String },
    #[error("cannot publish the TEST alert: {0}")]
    Publish(String),
    #[error("nobody answered the TEST alert within {0:?}")]
    Unanswered(Duration),
}

impl DrillError {
    pub fn exit_code(&self) -> i32 {
        match self {
            DrillError::Unreachable(_) => EXIT_UNREACHABLE,
            _ => 1,
        }
    }
}

/// One notifier's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub by: String,
    pub status: String,
    pub rtt: Duration,
}

/// The TEST alert of a drill (pure).
pub fn test_alert(cfg: &Config, id: String, ts: String) -> Alert {
    Alert {
        id,
        gateway: cfg.gateway_id.clone(),
        sensor: DRILL_SENSOR.into(),
        name: "fire drill".into(),
        level: AlertLevel::Test,
        celsius: None,
        threshold: None,
        previous: None,
        ts,
        message: format!(
            "TEST alert (fire drill) from gateway {}: no action needed, this checks that alerts reach you",
            cfg.gateway_id
        ),
        escalation: 0,
        clock_synced: crate::sys::clock::synced_now(),
    }
}

/// `thermalertd drill`: returns the exit code (0 answered, 1 unanswered
/// or refused, 69 broker unreachable, 78 bad configuration).
pub fn main(cfg: &Config, path: &std::path::Path, timeout: Duration, expect: Option<usize>) -> i32 {
    let endpoint = match crate::mqtt::conn::endpoint(cfg) {
        Ok(e) => e,
        Err(e) => {
            log::error!("invalid configuration: {}: {e:#}", path.display());
            return crate::EXIT_CONFIG;
        }
    };
    let Some(rt) = crate::mqtt::oneshot::runtime() else {
        return 1;
    };
    match rt.block_on(run(cfg, endpoint, timeout, expect)) {
        Ok(_) => 0,
        Err(e) => {
            println!("drill: FAILED: {e}");
            log::error!("drill failed: {e}");
            e.exit_code()
        }
    }
}

/// Runs the drill; prints each answer as it arrives. Returns the answers
/// (at least one) or why the drill failed. Stops early once `expect`
/// notifiers answered.
pub async fn run(
    cfg: &Config,
    endpoint: Endpoint,
    timeout: Duration,
    expect: Option<usize>,
) -> Result<Vec<Answer>, DrillError> {
    let connect_within = endpoint.connect_timeout + Duration::from_secs(2);
    let mut c = Connection::open(endpoint, "drill", 64);
    let result = exercise(
        cfg,
        &c.client,
        &mut c.links,
        connect_within,
        timeout,
        expect,
    )
    .await;
    c.close().await;
    result
}

async fn exercise(
    cfg: &Config,
    client: &AsyncClient,
    rx: &mut mpsc::Receiver<Link>,
    connect_within: Duration,
    timeout: Duration,
    expect: Option<usize>,
) -> Result<Vec<Answer>, DrillError> {
    let topics = Topics::new(&cfg.topic_prefix, &cfg.gateway_id);
    let acks = topics.acks();
    // 1. Connected.
    let connected = tokio::time::timeout(connect_within, async {
        while let Some(l) = rx.recv().await {
            if matches!(l, Link::Connected { .. }) {
                return true;
            }
        }
        false
    })
    .await;
    if connected != Ok(true) {
        return Err(DrillError::Unreachable(connect_within));
    }
    // 2. Subscribed to the acks before anything can answer.
    let sub_err = |message: String| DrillError::Subscribe {
        topic: acks.clone(),
        message,
    };
    let notice = client
        .subscribe_tracked(acks.clone(), QoS::AtLeastOnce)
        .await
        .map_err(|e| sub_err(e.to_string()))?;
    match tokio::time::timeout(connect_within, notice.wait_async()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(sub_err(e.to_string())),
        Err(_) => return Err(sub_err("no SUBACK".into())),
    }
    // 3. The TEST alert, as the daemon publishes alerts.
    let id = format!("{ID_PREFIX}{}", uuid::Uuid::new_v4());
    let alert = test_alert(cfg, id.clone(), timefmt::now_rfc3339());
    let corr = Bytes::from(id.clone().into_bytes());
    let props = PublishProperties {
        response_topic: Some(acks.clone()),
        correlation_data: Some(corr.clone()),
        // A notifier that comes back after the drill never sees it.
        ..payload::json_properties(Some(
            u32::try_from(timeout.as_secs().max(1)).unwrap_or(u32::MAX),
        ))
    };
    let topic = topics.alert(DRILL_SENSOR);
    let sent = Instant::now();
    let notice = client
        .publish_tracked(
            topic.clone(),
            payload::encode(&alert),
            PublishOptions::new(QoS::ExactlyOnce).properties(props),
        )
        .await
        .map_err(|e| DrillError::Publish(e.to_string()))?;
    println!("drill: TEST alert {id} published on {topic}; waiting up to {timeout:?} for answers");
    tokio::spawn(async move {
        if let Err(e) = notice.wait_async().await {
            log::error!("drill: the broker did not take the TEST alert: {e}");
        }
    });
    // 4. Answers until the deadline (or `expect` of them).
    let deadline = tokio::time::Instant::now() + timeout;
    let mut answers: Vec<Answer> = Vec::new();
    let mut who = BTreeSet::new();
    loop {
        let link = tokio::select! {
            l = rx.recv() => l,
            () = tokio::time::sleep_until(deadline) => break,
        };
        let Some(link) = link else { break };
        let Link::Message(p) = link else { continue };
        if p.topic != acks.as_bytes() {
            continue;
        }
        let matches = p
            .properties
            .as_ref()
            .and_then(|pr| pr.correlation_data.as_ref())
            .is_some_and(|c| *c == corr);
        if !matches {
            continue;
        }
        let rtt = sent.elapsed();
        let (by, status) = match payload::decode::<Ack>(&p.payload) {
            Ok(a) => (a.by, a.status),
            Err(e) => ("(unreadable answer)".to_string(), e.to_string()),
        };
        if !who.insert(by.clone()) {
            continue;
        }
        println!(
            "drill: answered by {by} ({status}) after {:.1} ms",
            rtt.as_secs_f64() * 1000.0
        );
        answers.push(Answer { by, status, rtt });
        if expect.is_some_and(|n| answers.len() >= n) {
            break;
        }
    }
    if answers.is_empty() {
        return Err(DrillError::Unanswered(timeout));
    }
    println!("drill: OK, {} notifier(s) answered", answers.len());
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drill_alert_is_a_test_alert_on_its_own_topic_level() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "x").expect("write");
        let src = format!(
            "gateway_id = \"gw7\"\n[mqtt]\nhost = \"h\"\nca_file = \"{}\"\n[sensors]\nbackend = \"sim\"\n[[sensor]]\nid = \"28-1\"\n",
            ca.display()
        );
        let cfg = Config::parse(&src, std::path::Path::new("/x/c.toml")).expect("config");
        let a = test_alert(&cfg, "drill-1".into(), "t".into());
        let v: serde_json::Value = serde_json::from_slice(&payload::encode(&a)).expect("json");
        assert_eq!(v["level"], "TEST");
        assert_eq!(v["gateway"], "gw7");
        assert_eq!(v["sensor"], DRILL_SENSOR);
        assert!(v["celsius"].is_null());
        assert!(is_drill_id(b"drill-1"));
        assert!(!is_drill_id(b"0b6f4f5e"));
    }
}
