//! The notifier's decisions, pure: given the messages it receives, the ends
//! of its hooks and the time (`now`, passed in), what to show, whom to
//! notify, what to answer, and which alerts were already seen. No client,
//! no clock, no task: the shell (`run.rs`) carries out the [`Action`]s.

use std::collections::{HashMap, HashSet};
use std::time::{Instant, SystemTime};

use crate::core::alert::{AlertLevel, Level};
use crate::mqtt::payload::{self, Ack, Alert, Status};
use crate::mqtt::topics::{self, Parsed};
use crate::notifier::filter::Filter;
use crate::notifier::render;
use crate::notifier::seen::Seen;
use crate::notifier::watch::{self, Watch, WatchConfig};
use crate::sys::timefmt;

/// Alert ids remembered to show each alert once.
pub const SEEN_CAP: usize = 10_000;

/// Alert ids another member of the share group answered, remembered.
const ANSWERED_ELSEWHERE_CAP: usize = 100_000;

/// Hooks' answers remembered for repeats of their alerts.
const HOOK_RESULTS_CAP: usize = 10_000;

/// The time, passed in: monotonic for the watchers, wall for the lines.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Now {
    /// The system's clocks.
    pub fn system() -> Self {
        Self {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// Where an alert is answered: its ResponseTopic and CorrelationData.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub topic: String,
    pub correlation: Option<bytes::Bytes>,
}

/// A message as the core needs it.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub retain: bool,
    /// None when the message has no ResponseTopic.
    pub reply: Option<Reply>,
}

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// Exit status 0: the answer says `delivered`.
    Delivered,
    /// Anything else: the answer says `failed`, so the gateway escalates.
    Failed(String),
}

impl HookOutcome {
    pub fn status(&self) -> &'static str {
        match self {
            HookOutcome::Delivered => "delivered",
            HookOutcome::Failed(_) => "failed",
        }
    }
}

/// What the shell does for the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A line for standard output (without its newline).
    Print(String),
    /// Notify the desktop (when it is a channel).
    Notify(Alert),
    /// Answer an alert on its ResponseTopic.
    Answer {
        alert_id: String,
        reply: Reply,
        status: &'static str,
    },
    /// Run the --exec hook for `alert`; with a `reply`, its outcome comes
    /// back through [`Core::on_hook_done`] and is the answer.
    Hook { alert: Alert, reply: Option<Reply> },
}

/// What the core is told once.
#[derive(Debug, Clone, Default)]
pub struct CoreConfig {
    pub prefix: String,
    /// This notifier's client id (its own answers are not another's).
    pub client_id: String,
    pub json: bool,
    pub filter: Filter,
    pub share_group: Option<String>,
    /// Whether an --exec hook decides the answers.
    pub exec: bool,
    pub watch: WatchConfig,
}

/// The topic filters to subscribe to on a fresh session.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscriptions {
    /// Alerts (shared in a group) and statuses, at QoS 2.
    pub exactly_once: [String; 2],
    /// Readings at QoS 0, only to notice when they stop.
    pub readings: String,
    /// In a share group, the other members' answers, at QoS 1.
    pub acks: Option<String>,
}

/// The notifier's state and decisions.
pub struct Core {
    cfg: CoreConfig,
    seen: Seen,
    /// In a share group: alerts another member answered `delivered`.
    answered_elsewhere: Seen,
    statuses: HashMap<String, String>,
    watch: Watch,
    /// Alerts whose --exec hook runs (answered when it ends), and the
    /// answers of finished hooks (for repeats).
    hooks_running: HashSet<String>,
    hook_results: HashMap<String, &'static str>,
    /// Ids for the watchers' events.
    new_id: Box<dyn FnMut() -> String + Send>,
}

impl Core {
    /// A core remembering the alerts in `seen`; watcher events get random
    /// ids. The broker connection counts as down from `now`.
    pub fn new(cfg: CoreConfig, seen: Seen, now: Now) -> Self {
        let mut watch = Watch::new(cfg.watch);
        // Not connected yet: the broker grace period runs from the start.
        watch.on_link_down(now.mono);
        Self {
            cfg,
            seen,
            answered_elsewhere: Seen::new(ANSWERED_ELSEWHERE_CAP),
            statuses: HashMap::new(),
            watch,
            hooks_running: HashSet::new(),
            hook_results: HashMap::new(),
            new_id: Box::new(|| uuid::Uuid::new_v4().to_string()),
        }
    }

    /// Watcher events get their ids from `ids`.
    pub fn with_ids(mut self, ids: impl FnMut() -> String + Send + 'static) -> Self {
        self.new_id = Box::new(ids);
        self
    }

    /// How many --exec hooks run for alerts (and will answer them).
    pub fn hooks_running(&self) -> usize {
        self.hooks_running.len()
    }

    /// Records the alert ids shown so far (once their lines are written).
    pub fn flush_seen(&mut self) {
        self.seen.flush();
    }

    /// The subscription filter for alerts: shared when in a group.
    pub fn alerts_filter(&self) -> String {
        let all = topics::all_alerts(&self.cfg.prefix);
        match &self.cfg.share_group {
            Some(g) => format!("$share/{g}/{all}"),
            None => all,
        }
    }

    /// What to subscribe to on a fresh session.
    pub fn subscriptions(&self) -> Subscriptions {
        let prefix = &self.cfg.prefix;
        Subscriptions {
            exactly_once: [self.alerts_filter(), topics::all_statuses(prefix)],
            readings: topics::all_readings(prefix),
            acks: self
                .cfg
                .share_group
                .as_ref()
                .map(|_| topics::all_acks(prefix)),
        }
    }

    /// Whether a resumed session needs its shared subscription renewed.
    pub fn in_share_group(&self) -> bool {
        self.cfg.share_group.is_some()
    }

    pub fn on_link_up(&mut self, now: Now) -> Vec<Action> {
        let events = self.watch.on_link_up(now.mono);
        self.on_watch(events, now)
    }

    pub fn on_link_down(&mut self, now: Now) {
        self.watch.on_link_down(now.mono);
    }

    /// The watchers' clock.
    pub fn tick(&mut self, now: Now) -> Vec<Action> {
        let events = self.watch.tick(now.mono);
        self.on_watch(events, now)
    }

    pub fn on_message(&mut self, m: Message<'_>, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        let topic = m.topic;
        match topics::parse(&self.cfg.prefix, topic) {
            Parsed::Alert { gateway, sensor } => {
                if m.payload.is_empty() {
                    // A retained CRITICAL being cleared.
                    log::debug!("{topic}: retained alert cleared");
                    return out;
                }
                match payload::decode::<Alert>(m.payload) {
                    Ok(a) => {
                        let (a, reply) = self.trust_topic(topic, gateway, sensor, a, m.reply);
                        self.on_alert(topic, m.retain, reply, a, &mut out);
                    }
                    Err(e) => log::warn!("skipping a malformed alert on {topic}: {e}"),
                }
            }
            Parsed::Status { gateway } => {
                if m.payload.is_empty() {
                    return out;
                }
                match payload::decode::<Status>(m.payload) {
                    Ok(s) => {
                        let events = self.watch.on_status(gateway, &s, now.mono);
                        self.on_status(gateway, s, m.retain, now, &mut out);
                        out.extend(self.on_watch(events, now));
                    }
                    Err(e) => log::warn!("skipping a malformed status on {topic}: {e}"),
                }
            }
            Parsed::Reading { gateway, .. } => {
                if !self.watch.armed(gateway) {
                    log::info!("watching the readings of gateway {gateway}");
                }
                let events = self.watch.on_reading(gateway, now.mono);
                out.extend(self.on_watch(events, now));
            }
            Parsed::Acks { .. } => {
                // Another member of the share group answered: a copy of
                // that alert reaching us later (a bridge re-sending its
                // retained messages, a retained refresh) is not shown again.
                if let Ok(ack) = payload::decode::<Ack>(m.payload) {
                    if ack.status == "delivered" && ack.by != self.cfg.client_id {
                        self.answered_elsewhere.first(&ack.alert_id);
                    }
                }
            }
            Parsed::Other => log::debug!("ignoring {topic}"),
        }
        out
    }

    /// The broker's ACL lets only gateway `gw` publish on
    /// `<prefix>/gw/alerts/<sensor>`, and it reads its answers only on
    /// `<prefix>/gw/acks`: the topic, not the payload, says where an alert
    /// comes from. A payload naming another gateway or sensor is shown under
    /// the topic's (warned), and a ResponseTopic other than the gateway's own
    /// acks topic is not answered (warned), so a forged alert cannot make
    /// this notifier answer on another gateway's topic.
    fn trust_topic(
        &self,
        topic: &str,
        gateway: &str,
        sensor: &str,
        mut a: Alert,
        reply: Option<Reply>,
    ) -> (Alert, Option<Reply>) {
        if a.gateway != gateway || a.sensor != sensor {
            log::warn!(
                "alert {} on {topic} claims gateway {:?} sensor {:?}; shown as the topic's gateway {gateway} sensor {sensor}",
                a.id,
                a.gateway,
                a.sensor
            );
            a.gateway = gateway.to_string();
            a.sensor = sensor.to_string();
        }
        let own = topics::Topics::new(&self.cfg.prefix, gateway).acks();
        let reply = match reply {
            Some(r) if r.topic != own => {
                log::warn!(
                    "alert {} on {topic} asks for its answer on {:?}, not on its gateway's {own}; not answered",
                    a.id,
                    r.topic
                );
                None
            }
            r => r,
        };
        (a, reply)
    }

    fn on_alert(
        &mut self,
        topic: &str,
        retained: bool,
        reply: Option<Reply>,
        a: Alert,
        out: &mut Vec<Action>,
    ) {
        if !self.cfg.filter.accepts(&a) {
            log::debug!(
                "alert {} not for this notifier (--filter): not shown, not answered",
                a.id
            );
            return;
        }
        let first = self.seen.is_new(&a.id, a.escalation);
        if first && !self.answered_elsewhere.is_new(&a.id, a.escalation) {
            log::info!(
                "alert {} already answered by another notifier of the share group; not shown",
                a.id
            );
            return;
        }
        if first {
            out.push(Action::Print(self.line(&a, retained, false)));
            self.seen.record(&a.id, a.escalation);
            out.push(Action::Notify(a.clone()));
        } else {
            log::debug!(
                "alert {} (escalation {}) seen before; answering again",
                a.id,
                a.escalation
            );
        }
        let Some(reply) = reply else {
            log::warn!(
                "alert {} on {topic} has no ResponseTopic; cannot answer",
                a.id
            );
            return;
        };
        let status = if self.cfg.exec {
            if self.hooks_running.contains(&a.id) {
                // Its hook answers when it ends.
                return;
            }
            // A new alert, or an escalation of one, runs the hook (again).
            match self.hook_results.get(&a.id).filter(|_| !first) {
                Some(status) => *status,
                None => {
                    // Off the MQTT loop; answered from on_hook_done.
                    self.hooks_running.insert(a.id.clone());
                    out.push(Action::Hook {
                        alert: a,
                        reply: Some(reply),
                    });
                    return;
                }
            }
        } else {
            "delivered"
        };
        out.push(Action::Answer {
            alert_id: a.id,
            reply,
            status,
        });
    }

    /// A hook run for an alert ended: its outcome is the answer.
    pub fn on_hook_done(
        &mut self,
        alert_id: String,
        reply: Reply,
        outcome: &HookOutcome,
    ) -> Vec<Action> {
        self.hooks_running.remove(&alert_id);
        match outcome {
            HookOutcome::Delivered => log::info!("hook for alert {alert_id} succeeded"),
            HookOutcome::Failed(why) => log::warn!("hook for alert {alert_id} failed: {why}"),
        }
        if self.hook_results.len() >= HOOK_RESULTS_CAP {
            self.hook_results.clear();
        }
        self.hook_results.insert(alert_id.clone(), outcome.status());
        vec![Action::Answer {
            alert_id,
            reply,
            status: outcome.status(),
        }]
    }

    /// Shows and notifies the watchers' events; they are not answered
    /// (nobody asked), but --exec hooks run for them.
    fn on_watch(&mut self, events: Vec<watch::Event>, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        for e in events {
            let a = watch_alert(&e, (self.new_id)(), now.wall);
            if !self.cfg.filter.accepts(&a) {
                continue;
            }
            if e.is_alarm() {
                log::error!("watch: {}", a.message);
            } else {
                log::info!("watch: {}", a.message);
            }
            out.push(Action::Print(self.line(&a, false, true)));
            out.push(Action::Notify(a.clone()));
            if self.cfg.exec {
                out.push(Action::Hook {
                    alert: a,
                    reply: None,
                });
            }
        }
        out
    }

    fn line(&self, a: &Alert, retained: bool, watch: bool) -> String {
        let seen = render::Seen { retained, watch };
        if self.cfg.json {
            render::alert_json(a, seen)
        } else {
            render::alert_line(a, Some(seen))
        }
    }

    fn on_status(
        &mut self,
        gateway: &str,
        s: Status,
        retained: bool,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let key = format!("{}:{}", s.state, s.reason.as_deref().unwrap_or(""));
        if self.statuses.get(gateway) == Some(&key) {
            return;
        }
        self.statuses.insert(gateway.to_string(), key);
        out.push(Action::Print(if self.cfg.json {
            render::status_json(gateway, &s, retained)
        } else {
            render::status_line(gateway, &s, || timefmt::rfc3339(now.wall))
        }));
    }
}

/// An alert standing for a watcher's event, shown and notified like a
/// CRITICAL (or RESOLVED when it ends). Its id starts with `watch-`.
pub fn watch_alert(e: &watch::Event, id: String, now: SystemTime) -> Alert {
    let alarm = e.is_alarm();
    let gateway = e.gateway().unwrap_or("-").to_string();
    Alert {
        id: format!("watch-{id}"),
        name: match e.gateway() {
            Some(g) => format!("gateway {g} {}", e.subject()),
            None => "broker connection".into(),
        },
        gateway,
        sensor: e.subject().into(),
        level: if alarm {
            AlertLevel::Critical
        } else {
            AlertLevel::Resolved
        },
        celsius: None,
        threshold: None,
        previous: Some(if alarm {
            Level::Normal
        } else {
            Level::Critical
        }),
        ts: timefmt::rfc3339(now),
        message: e.message(),
        escalation: 0,
        clock_synced: true,
    }
}

/// `f` without its `$share/<group>/` prefix: the plain filter, for a
/// broker without shared subscriptions.
pub fn without_share(f: &str) -> String {
    f.strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(f, |(_, topic)| topic)
        .to_string()
}

#[cfg(test)]
mod tests;
