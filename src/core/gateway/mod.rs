//! The gateway's decisions, pure: readings, answers, publish outcomes and
//! clock ticks in; [`Action`]s out. No I/O, no clock, no random ids: time
//! comes in as a [`Now`], alert ids from an [`IdSource`], and the daemon's
//! shell (`daemon/run.rs`) carries the actions out (ntpd-rs's
//! `ntp-proto/src/source.rs` and `NtpSourceAction` are the model; in this
//! repo, Home Assistant discovery's `Action` + `execute`).
//!
//! **Where the outbox lives.** The gateway owns the outbox's *queue*
//! ([`crate::outbox::Queue`]: order, sequence numbers, which entries are
//! on disk yet, what was handed to the client), because every decision
//! about it (what to publish next, when an alert expired in the queue,
//! when a refused one may go again) is the gateway's. The *disk log*
//! belongs to the shell, which owns the file: the gateway asks for it with
//! [`Action::Store`], [`Action::Forget`], [`Action::Sync`] and
//! [`Action::SyncNow`], and the shell reports back
//! ([`Gateway::on_store_failed`], [`Gateway::on_synced`],
//! [`Gateway::on_synced_now`]). So the tests below drive a full outbox
//! without a file, and the shell never decides anything about it.
//!
//! One alert's path: [`Gateway::on_sweep`] feeds each sample to its
//! sensor's [`SensorAlarm`]; a change of level becomes an alert, stored
//! ([`Action::Store`]), logged ([`Action::LogAlert`]) and, once a sync
//! covered it, published at QoS 2 ([`Action::Publish`] from
//! [`Gateway::flush`]); the broker's PUBCOMP ([`Gateway::on_published`])
//! forgets it and starts its escalation timer; a notifier's answer
//! ([`Gateway::on_message`]) ends the escalation and the local alarm.

mod action;
mod pump;
#[cfg(test)]
mod tests;
mod timings;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use action::{Action, IdSource, Kind, Now, Outcome, Publish};
pub use timings::Timings;

use crate::config::Config;
use crate::core::alarm::Unacknowledged;
use crate::core::alert::{self, Level, SensorAlarm};
use crate::core::escalation::Escalator;
use crate::mqtt::payload::{self, Ack, Alert, Reading};
use crate::mqtt::topics::Topics;
use crate::outbox::{Item, Queue};
use crate::sensor::Sample;
use crate::sys::timefmt;

/// Most entries handed to the MQTT client at once; the rest wait in the
/// outbox, so a long outage cannot block the sensor loop.
pub const MAX_HANDED: usize = 64;

/// After the broker refused an entry, nothing is handed out for this long.
pub const REFUSAL_HOLD: Duration = Duration::from_secs(5);

/// A published alert waiting for answers.
struct Awaiting {
    id: String,
    raised: Instant,
    answers: u32,
}

/// The gateway's state.
pub struct Gateway {
    cfg: Config,
    topics: Topics,
    timings: Timings,
    alarms: Vec<SensorAlarm>,
    /// Alerts not yet confirmed by PUBCOMP (the disk log is the shell's).
    outbox: Queue,
    escalator: Escalator,
    /// Correlation data -> alert, until the alert expires.
    awaiting: HashMap<Bytes, Awaiting>,
    connected: bool,
    /// The last alert raised, for the systemd status line.
    last_alert: Option<Alert>,
    /// Whether the first sweep has been judged (then stale retained
    /// CRITICALs from an earlier run are cleared).
    swept_once: bool,
    /// Sensors now CRITICAL: their retained alert and when it was last
    /// published, to refresh it before its message expiry removes it.
    critical: HashMap<String, (Alert, Instant)>,
    /// After a refusal, nothing is handed to the client before this.
    hold_until: Option<Instant>,
    /// Whether the wall clock was synchronised at the last sweep.
    clock_synced: Option<bool>,
    /// The unacknowledged CRITICALs, when a local alarm is configured.
    alarm: Option<Unacknowledged>,
    ids: IdSource,
    out: Vec<Action>,
}

impl Gateway {
    /// A gateway for `cfg`, with the outbox `queue` (possibly holding
    /// alerts a previous run left), alert ids from `ids`, and a local
    /// alarm to drive when `alarm`.
    pub fn new(cfg: Config, queue: Queue, ids: IdSource, alarm: bool) -> Self {
        Self {
            alarms: cfg
                .sensor
                .iter()
                .map(|s| SensorAlarm::new(s.thresholds(), cfg.sensors.fault_after))
                .collect(),
            topics: Topics::new(&cfg.topic_prefix, &cfg.gateway_id),
            timings: Timings::from_alert_expiry(cfg.mqtt.alert_expiry_secs),
            outbox: queue,
            escalator: Escalator::new(Some(Duration::from_secs(u64::from(cfg.ack_timeout_secs)))),
            awaiting: HashMap::new(),
            connected: false,
            last_alert: None,
            swept_once: false,
            critical: HashMap::new(),
            hold_until: None,
            clock_synced: None,
            alarm: alarm.then(Unacknowledged::default),
            ids,
            out: Vec::new(),
            cfg,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    pub fn connected(&self) -> bool {
        self.connected
    }

    pub fn last_alert(&self) -> Option<&Alert> {
        self.last_alert.as_ref()
    }

    /// Entries not yet confirmed by the broker (queued or in flight).
    pub fn pending(&self) -> usize {
        self.outbox.queued() + self.outbox.in_flight()
    }

    fn log(&mut self, level: log::Level, line: String) {
        self.out.push(Action::Log { level, line });
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// Adds an item to the outbox (and asks for its record).
    fn push(&mut self, item: Item, now: Now) {
        let record = self.outbox.has_disk().then(|| item.clone());
        let seq = self.outbox.push(item, now.mono);
        if let Some(item) = record {
            self.out.push(Action::Store {
                seq,
                at_ms: crate::outbox::unix_ms(now.wall),
                item,
            });
        }
    }

    fn set_alarm(&mut self) {
        if let Some(a) = &self.alarm {
            let on = a.alarm_on();
            self.out.push(Action::SetAlarm(on));
        }
    }

    /// One sweep's samples, read at `now`.
    pub fn on_sweep(&mut self, samples: Vec<Sample>, now: Now) -> Vec<Action> {
        let ts = timefmt::rfc3339(now.wall);
        let clock_synced = now.clock_synced;
        if self.clock_synced != Some(clock_synced) {
            if !clock_synced {
                self.log(log::Level::Warn, "the clock is not synchronised: alerts and status say \"clock_synced\": false until it is".into());
            } else if self.clock_synced.is_some() {
                self.log(log::Level::Info, "the clock is synchronised now".into());
            }
            self.clock_synced = Some(clock_synced);
        }
        for sample in samples {
            // By id: a sweep begun before a reload may list other sensors.
            let Some(i) = self.cfg.sensor.iter().position(|s| s.id == sample.id) else {
                continue;
            };
            let Some(sc) = self.cfg.sensor.get(i) else {
                continue;
            };
            let (id, name) = (sc.id.clone(), sc.display_name().to_string());
            if let (Ok(c), true, true) =
                (&sample.read, self.cfg.mqtt.publish_readings, self.connected)
            {
                self.out.push(Action::Publish(Publish {
                    topic: self.topics.reading(&id),
                    payload: payload::encode(&Reading {
                        celsius: *c,
                        ts: ts.clone(),
                    }),
                    retain: false,
                    expiry: Some(self.cfg.mqtt.reading_expiry_secs),
                    response: None,
                    kind: Kind::Reading,
                }));
            }
            if let Err(e) = &sample.read {
                self.log(
                    log::Level::Debug,
                    format!("{name} ({id}): read failed: {e}"),
                );
            }
            let decisions = match self.alarms.get_mut(i) {
                Some(a) => a.observe(sample.read),
                None => continue,
            };
            for dec in decisions {
                let alert = Alert {
                    id: (self.ids)(),
                    gateway: self.cfg.gateway_id.clone(),
                    sensor: id.clone(),
                    name: name.clone(),
                    level: dec.level,
                    celsius: dec.celsius,
                    threshold: dec.threshold,
                    previous: Some(dec.previous),
                    ts: ts.clone(),
                    message: alert::message(&name, &dec),
                    escalation: 0,
                    clock_synced,
                };
                self.last_alert = Some(alert.clone());
                if dec.previous == Level::Critical && dec.state != Level::Critical {
                    self.critical.remove(&id);
                    self.push(Item::ClearRetained { sensor: id.clone() }, now);
                }
                if dec.state == Level::Critical {
                    self.critical.insert(id.clone(), (alert.clone(), now.mono));
                }
                // Logged once written to the outbox (and fsynced with the
                // rest of the sweep's alerts before it is published).
                self.push(
                    Item::Alert {
                        alert: alert.clone(),
                    },
                    now,
                );
                if let Some(a) = &mut self.alarm {
                    a.raised(&alert);
                }
                self.out.push(Action::LogAlert(alert));
                self.set_alarm();
            }
        }
        if !self.swept_once {
            // A previous run may have left a retained CRITICAL for a sensor
            // that is no longer critical (it recovered while the daemon was
            // down): this process is the truth for its sensors, so clear
            // every retained alert it does not stand behind.
            self.swept_once = true;
            let stale: Vec<String> = self
                .cfg
                .sensor
                .iter()
                .filter(|s| !self.critical.contains_key(&s.id))
                .map(|s| s.id.clone())
                .collect();
            for sensor in stale {
                self.push(Item::ClearRetained { sensor }, now);
            }
        }
        self.pump(now);
        self.take()
    }

    /// Alerts raised outside the sensors (an expiring certificate).
    pub fn raise(&mut self, alerts: Vec<Alert>, now: Now) -> Vec<Action> {
        for alert in alerts {
            self.push(
                Item::Alert {
                    alert: alert.clone(),
                },
                now,
            );
            self.out.push(Action::LogAlert(alert));
        }
        self.pump(now);
        self.take()
    }

    /// The broker accepted the connection.
    pub fn on_link_up(&mut self, session_present: bool, now: Now) -> Vec<Action> {
        self.connected = true;
        if !session_present {
            self.out.push(Action::Subscribe {
                topic: self.topics.acks(),
            });
        }
        self.out.push(Action::PublishOnline);
        self.out.push(Action::HomeAssistant { session_present });
        self.pump(now);
        self.take()
    }

    /// The connection dropped.
    pub fn on_link_down(&mut self) -> Vec<Action> {
        self.connected = false;
        self.take()
    }

    /// A message on a topic the gateway subscribed to (answers).
    pub fn on_message(
        &mut self,
        topic: &str,
        correlation: Option<&[u8]>,
        body: &[u8],
        now: Now,
    ) -> Vec<Action> {
        self.answer(topic, correlation, body, now);
        self.take()
    }

    fn answer(&mut self, topic: &str, correlation: Option<&[u8]>, body: &[u8], now: Now) {
        if topic != self.topics.acks() {
            self.log(log::Level::Debug, format!("ignoring message on {topic}"));
            return;
        }
        let ack: Option<Ack> = match payload::decode::<Ack>(body) {
            Ok(a) => Some(a),
            Err(e) => {
                self.log(
                    log::Level::Warn,
                    format!("skipping a malformed answer on {topic}: {e}"),
                );
                None
            }
        };
        let Some(corr) = correlation else {
            self.log(
                log::Level::Warn,
                format!("ignoring an answer on {topic} without CorrelationData"),
            );
            return;
        };
        let corr_text = String::from_utf8_lossy(corr).into_owned();
        // Any answer ends the escalation (issue 13 may make `failed` not).
        self.escalator.answered(&corr_text);
        if let Some(a) = &mut self.alarm {
            a.answered(&corr_text);
        }
        self.set_alarm();
        let Some(w) = self.awaiting.get_mut(corr) else {
            if crate::mqtt::payload::is_drill_id(corr) {
                self.log(
                    log::Level::Info,
                    "a notifier answered a fire drill (thermalertd drill)".into(),
                );
                return;
            }
            self.log(
                log::Level::Warn,
                format!("ignoring an answer that matches no alert (correlation {corr_text:?})"),
            );
            return;
        };
        w.answers += 1;
        let rtt_ms = now.mono.saturating_duration_since(w.raised).as_secs_f64() * 1000.0;
        let (id, answers) = (w.id.clone(), w.answers);
        if answers > 1 {
            self.log(
                log::Level::Debug,
                format!("alert {id} answered again ({answers} answers) after {rtt_ms:.1} ms"),
            );
            return;
        }
        match ack {
            Some(a) => {
                if a.alert_id != id {
                    self.log(
                        log::Level::Warn,
                        format!(
                            "answer's alert_id {} differs from its CorrelationData {id}",
                            a.alert_id
                        ),
                    );
                }
                self.log(
                    log::Level::Info,
                    format!(
                        "alert {id} answered by {} ({}) after {rtt_ms:.1} ms",
                        a.by, a.status
                    ),
                );
            }
            None => self.log(
                log::Level::Info,
                format!("alert {id} answered (unreadable payload) after {rtt_ms:.1} ms"),
            ),
        }
    }

    /// SIGHUP with a freshly loaded configuration `new` (from `source`):
    /// applies what can change without a reconnect ([`crate::core::reload`]).
    pub fn reload(&mut self, new: Config, source: &Path, now: Now) -> Vec<Action> {
        let a = crate::core::reload::apply(&self.cfg, std::mem::take(&mut self.alarms), new);
        for key in &a.restart_needed {
            self.log(
                log::Level::Warn,
                format!("reload: {key} changed; it needs a restart to take effect"),
            );
        }
        for sensor in &a.removed_critical {
            self.critical.remove(sensor);
            self.push(
                Item::ClearRetained {
                    sensor: sensor.clone(),
                },
                now,
            );
        }
        self.log(
            log::Level::Info,
            format!(
                "reload: configuration reloaded from {}: {}",
                source.display(),
                a.summary()
            ),
        );
        if a.sensors_changed {
            self.out
                .push(Action::ReconfigureSensors(Box::new(a.cfg.clone())));
        }
        self.cfg = a.cfg;
        self.alarms = a.alarms;
        self.pump(now);
        self.take()
    }
}
