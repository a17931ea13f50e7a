//! `thermalert-notifier status`: every known gateway (online or offline,
//! since when) and every active alert, from the broker's retained
//! messages; then exits. For scripts and cron: exit 0 when every gateway
//! is online and no alert is active, 1 otherwise, 69 when the broker
//! cannot be reached.
//!
//! It connects with its own client id (`<client_id>-status`) and a clean,
//! non-persistent session, so the notifier's own session is untouched.
//!
//! Knowing when the broker has delivered every retained message: MQTT has
//! no "end of retained messages" marker. After its SUBACK, the command
//! publishes a nonce on `<prefix>-sync/<username>`, a topic it subscribed
//! to in the same SUBSCRIBE; the broker queues the retained messages while
//! handling the SUBSCRIBE, so the nonce arrives after all of them. The
//! project's ACL grants every user `readwrite thermalert-sync/%u` for this
//! (a notifier may otherwise only write acks, which it cannot read back).
//! Without a username, or when the broker refuses the sentinel (an older
//! ACL), it falls back to a quiet period of `QUIET` after the last message,
//! bounded by `--timeout`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rumqttc::{AsyncClient, PubAckReason, PublishOptions, PublishResult, QoS, SubscribeReasonCode};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::mqtt::conn::Link;
use crate::mqtt::oneshot::Connection;
use crate::mqtt::payload::{self, Alert, Status};
use crate::mqtt::topics::{self, Parsed};
use crate::notifier::render;
use crate::notifier::settings::Settings;
use crate::sys::timefmt;

/// Silence that ends the collection when no sentinel can be used.
pub const QUIET: Duration = Duration::from_millis(1500);

/// Exit status when the broker could not be reached (`EX_UNAVAILABLE`).
pub const EXIT_UNREACHABLE: i32 = 69;

/// The sentinel topic of `username`.
pub fn sync_topic(prefix: &str, username: &str) -> String {
    format!("{prefix}-sync/{username}")
}

/// One gateway as the retained status shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayView {
    pub gateway: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it entered this state, when known.
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensors: Option<usize>,
}

/// What `status` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub gateways: Vec<GatewayView>,
    pub alerts: Vec<Alert>,
    /// Whether the end of the retained messages was proven by the sentinel
    /// (false: a quiet period ended the collection).
    pub complete: bool,
}

impl Report {
    /// All is well: some gateway is known, every one is online, and no
    /// alert is active (an empty broker is not "all well").
    pub fn healthy(&self) -> bool {
        !self.gateways.is_empty()
            && self.alerts.is_empty()
            && self.gateways.iter().all(|g| g.state == "online")
    }
}

/// When a status began: its own `ts`, or, for a Will (which carries no
/// time), its message expiry less what remains of it at `now`.
pub fn since(s: &Status, remaining_expiry: Option<u32>, now: SystemTime) -> Option<String> {
    if let Some(ts) = &s.ts {
        return Some(ts.clone());
    }
    let age = s.expiry_secs?.checked_sub(remaining_expiry?)?;
    now.checked_sub(Duration::from_secs(u64::from(age)))
        .map(timefmt::rfc3339)
}

/// Collects statuses and alerts as they arrive.
#[derive(Debug, Default)]
pub struct Collector {
    gateways: BTreeMap<String, GatewayView>,
    alerts: BTreeMap<String, Alert>,
}

impl Collector {
    pub fn on_message(&mut self, prefix: &str, p: &rumqttc::Publish, now: SystemTime) {
        let Ok(topic) = std::str::from_utf8(&p.topic) else {
            return;
        };
        match topics::parse(prefix, topic) {
            Parsed::Status { gateway } => {
                let Ok(s) = payload::decode::<Status>(&p.payload) else {
                    return;
                };
                let remaining = p
                    .properties
                    .as_ref()
                    .and_then(|pr| pr.message_expiry_interval);
                self.gateways.insert(
                    gateway.to_string(),
                    GatewayView {
                        gateway: gateway.to_string(),
                        since: since(&s, remaining, now),
                        state: s.state,
                        reason: s.reason,
                        version: s.version,
                        sensors: s.sensors,
                    },
                );
            }
            Parsed::Alert { gateway, sensor } => {
                let key = format!("{gateway}/{sensor}");
                if p.payload.is_empty() {
                    self.alerts.remove(&key);
                    return;
                }
                if !p.retain {
                    return;
                }
                if let Ok(a) = payload::decode::<Alert>(&p.payload) {
                    self.alerts.insert(key, a);
                }
            }
            Parsed::Reading { .. } | Parsed::Acks { .. } | Parsed::Other => {}
        }
    }

    pub fn report(self, complete: bool) -> Report {
        Report {
            gateways: self.gateways.into_values().collect(),
            alerts: self.alerts.into_values().collect(),
            complete,
        }
    }
}

/// The report as lines for a person.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    if r.gateways.is_empty() {
        out.push_str("no gateway has published a status\n");
    } else {
        out.push_str(&format!(
            "{:<16} {:<8} {:<25} DETAIL\n",
            "GATEWAY", "STATE", "SINCE"
        ));
        for g in &r.gateways {
            let detail = match (&g.reason, &g.version, g.sensors) {
                (Some(reason), _, _) => reason.clone(),
                (None, Some(v), Some(n)) => format!("thermalertd {v}, {n} sensor(s)"),
                (None, Some(v), None) => format!("thermalertd {v}"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "{:<16} {:<8} {:<25} {detail}\n",
                g.gateway,
                g.state,
                g.since.as_deref().unwrap_or("unknown")
            ));
        }
    }
    out.push_str(&format!("active alerts: {}\n", r.alerts.len()));
    for a in &r.alerts {
        out.push_str(&render::alert_line(a, None));
        out.push('\n');
    }
    if !r.complete {
        out.push_str("(the broker gave no end-of-list marker: retained messages still on their way may be missing)\n");
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot reach the broker within {0:?}")]
    Unreachable(Duration),
    #[error("cannot subscribe: {0}")]
    Subscribe(#[source] rumqttc::ClientError),
    #[error("cannot subscribe: no SUBACK")]
    NoSuback,
    #[error("cannot subscribe: {0}")]
    Refused(#[source] rumqttc::SubscribeNoticeError),
}

/// `thermalert-notifier status`; returns the exit code.
pub fn main(settings: Settings, timeout: Duration) -> i32 {
    let Some(rt) = crate::mqtt::oneshot::runtime() else {
        return 1;
    };
    let json = settings.json;
    match rt.block_on(run(settings, timeout)) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                print!("{}", render(&r));
            }
            if r.healthy() {
                0
            } else {
                1
            }
        }
        Err(e) => {
            log::error!("status: {e}");
            match e {
                StatusError::Unreachable(_) => EXIT_UNREACHABLE,
                StatusError::Subscribe(_) | StatusError::NoSuback | StatusError::Refused(_) => 1,
            }
        }
    }
}

pub async fn run(settings: Settings, timeout: Duration) -> Result<Report, StatusError> {
    let mut c = Connection::open(settings.endpoint.clone(), "status", 1024);
    let res = collect(&settings, &c.client, &mut c.links, timeout).await;
    c.close().await;
    res
}

async fn collect(
    settings: &Settings,
    client: &AsyncClient,
    rx: &mut mpsc::Receiver<Link>,
    timeout: Duration,
) -> Result<Report, StatusError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let prefix = &settings.prefix;
    let mut c = Collector::default();
    // Connected.
    loop {
        let l = tokio::select! {
            l = rx.recv() => l,
            () = tokio::time::sleep_until(deadline) => None,
        };
        match l {
            Some(Link::Connected { .. }) => break,
            Some(_) => continue,
            None => return Err(StatusError::Unreachable(timeout)),
        }
    }
    let sync = settings
        .endpoint
        .username
        .as_deref()
        .map(|u| sync_topic(prefix, u));
    let mut filters = vec![topics::all_statuses(prefix), topics::all_alerts(prefix)];
    filters.extend(sync.clone());
    let subs = filters
        .iter()
        .map(|f| rumqttc::SubscribeFilterInput::new(f.clone(), QoS::AtLeastOnce));
    let notice = client
        .subscribe_many_tracked(subs)
        .await
        .map_err(StatusError::Subscribe)?;
    // Messages may arrive while we wait for the SUBACK: keep them.
    let suback = {
        let mut wait = std::pin::pin!(notice.wait_async());
        loop {
            tokio::select! {
                r = &mut wait => break r,
                Some(l) = rx.recv() => if let Link::Message(p) = l {
                    c.on_message(prefix, &p, SystemTime::now());
                },
                () = tokio::time::sleep_until(deadline) => {
                    return Err(StatusError::NoSuback)
                }
            }
        }
    };
    let suback = suback.map_err(StatusError::Refused)?;
    let sync_granted = suback
        .return_codes
        .get(2)
        .is_some_and(|rc| matches!(rc, SubscribeReasonCode::Success(_)));
    let nonce = uuid::Uuid::new_v4().to_string();
    let sentinel = match (&sync, sync_granted) {
        (Some(t), true) => {
            // Mosquitto grants the subscription even where the ACL denies
            // reading it; the PUBACK of the sentinel tells whether it may
            // be published (and so read back, with the shipped ACL).
            let opts = PublishOptions::new(QoS::AtLeastOnce);
            match client
                .publish_tracked(t.clone(), nonce.clone().into_bytes(), opts)
                .await
            {
                Ok(n) => match tokio::time::timeout_at(deadline, n.wait_async()).await {
                    Ok(Ok(PublishResult::Qos1(ack)))
                        if matches!(
                            ack.reason,
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                        ) =>
                    {
                        Some(t.clone())
                    }
                    other => {
                        log::info!("status: the broker refused the sentinel ({other:?}); waiting for {QUIET:?} of quiet");
                        None
                    }
                },
                Err(e) => {
                    log::warn!("status: cannot publish the sentinel: {e}");
                    None
                }
            }
        }
        _ => {
            log::info!(
                "status: no sentinel topic (needs a username and `pattern readwrite thermalert-sync/%u` in the ACL); waiting for {QUIET:?} of quiet"
            );
            None
        }
    };
    let mut quiet_until = tokio::time::Instant::now() + QUIET;
    loop {
        let l = tokio::select! {
            l = rx.recv() => l,
            () = tokio::time::sleep_until(deadline) => return Ok(c.report(false)),
            () = tokio::time::sleep_until(quiet_until), if sentinel.is_none() => {
                return Ok(c.report(false))
            }
        };
        let Some(l) = l else {
            return Ok(c.report(false));
        };
        let Link::Message(p) = l else { continue };
        if sentinel.as_deref().is_some_and(|t| p.topic == t.as_bytes()) {
            if p.payload == nonce.as_bytes() {
                return Ok(c.report(true));
            }
            continue;
        }
        c.on_message(prefix, &p, SystemTime::now());
        quiet_until = tokio::time::Instant::now() + QUIET;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(ts: Option<&str>, expiry: Option<u32>) -> Status {
        Status {
            state: "offline".into(),
            reason: Some("connection lost".into()),
            gateway: None,
            ts: ts.map(Into::into),
            version: None,
            sensors: None,
            poll_interval_ms: None,
            expiry_secs: expiry,
            clock_synced: true,
        }
    }

    #[test]
    fn a_will_is_dated_by_its_remaining_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            since(&status(None, Some(600)), Some(500), now).as_deref(),
            Some(timefmt::rfc3339(now - Duration::from_secs(100)).as_str())
        );
        assert_eq!(
            since(&status(Some("t0"), Some(600)), Some(1), now).as_deref(),
            Some("t0")
        );
        assert_eq!(since(&status(None, None), Some(500), now), None);
        // A remaining expiry longer than the original one is nonsense, not a panic.
        assert_eq!(since(&status(None, Some(10)), Some(500), now), None);
    }

    #[test]
    fn health_needs_every_gateway_online_and_no_alert() {
        let mut r = Report::default();
        assert!(!r.healthy(), "no gateway known is not healthy");
        r.gateways.push(GatewayView {
            gateway: "gw1".into(),
            state: "offline".into(),
            reason: Some("connection lost".into()),
            since: None,
            version: None,
            sensors: None,
        });
        assert!(!r.healthy());
        assert!(render(&r).contains("gw1              offline  unknown"));
    }
}
