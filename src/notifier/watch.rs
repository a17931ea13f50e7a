//! Watching the watchers, in the notifier: a pure state machine (time is
//! passed in) that turns what the notifier sees into alarms about the
//! alerting path itself.
//!
//! - A gateway whose status turns `offline` with reason `connection lost`
//!   (its Last Will: the broker stopped hearing from it).
//! - A gateway that stays online but whose readings stop: silent for
//!   `stale_intervals` x its poll interval (announced in its status), or
//!   `stale_after` when it announces none. Armed only once a reading of
//!   that gateway was seen (a gateway may not publish readings).
//! - This notifier's own broker connection down for longer than
//!   `broker_grace`.
//!
//! Each raises one event when it starts and one when it ends; the notifier
//! shows and notifies them like CRITICAL / RESOLVED alerts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::mqtt::payload::Status;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchConfig {
    pub stale_intervals: u32,
    pub stale_after: Duration,
    pub broker_grace: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            stale_intervals: 5,
            stale_after: Duration::from_secs(60),
            broker_grace: Duration::from_secs(60),
        }
    }
}

/// A change in the alerting path's health.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    GatewayLost { gateway: String, reason: String },
    GatewayBack { gateway: String },
    ReadingsStopped { gateway: String, silent: Duration },
    ReadingsBack { gateway: String },
    BrokerLost { down: Duration },
    BrokerBack { down: Duration },
}

impl Event {
    /// Whether the event starts an alarm (CRITICAL) or ends one (RESOLVED).
    pub fn is_alarm(&self) -> bool {
        matches!(
            self,
            Event::GatewayLost { .. } | Event::ReadingsStopped { .. } | Event::BrokerLost { .. }
        )
    }

    /// The gateway concerned, or `None` for the broker connection.
    pub fn gateway(&self) -> Option<&str> {
        match self {
            Event::GatewayLost { gateway, .. }
            | Event::GatewayBack { gateway }
            | Event::ReadingsStopped { gateway, .. }
            | Event::ReadingsBack { gateway } => Some(gateway),
            Event::BrokerLost { .. } | Event::BrokerBack { .. } => None,
        }
    }

    /// What is watched: `status`, `readings` or `broker`.
    pub fn subject(&self) -> &'static str {
        match self {
            Event::GatewayLost { .. } | Event::GatewayBack { .. } => "status",
            Event::ReadingsStopped { .. } | Event::ReadingsBack { .. } => "readings",
            Event::BrokerLost { .. } | Event::BrokerBack { .. } => "broker",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Event::GatewayLost { gateway, reason } => {
                format!("gateway {gateway} is OFFLINE ({reason}): its alerts cannot reach you")
            }
            Event::GatewayBack { gateway } => format!("gateway {gateway} is back online"),
            Event::ReadingsStopped { gateway, silent } => format!(
                "gateway {gateway} is online but sent no reading for {}s: it may be stuck",
                silent.as_secs()
            ),
            Event::ReadingsBack { gateway } => format!("gateway {gateway} sends readings again"),
            Event::BrokerLost { down } => format!(
                "no connection to the broker for {}s: alerts cannot reach this notifier",
                down.as_secs()
            ),
            Event::BrokerBack { down } => {
                format!("connected to the broker again after {}s", down.as_secs())
            }
        }
    }
}

#[derive(Debug, Default)]
struct Gateway {
    online: bool,
    lost: bool,
    poll: Option<Duration>,
    last_reading: Option<Instant>,
    stale: bool,
}

#[derive(Debug, Default)]
pub struct Watch {
    cfg: WatchConfig,
    gateways: BTreeMap<String, Gateway>,
    down_since: Option<Instant>,
    broker_alarm: bool,
}

impl Watch {
    pub fn new(cfg: WatchConfig) -> Self {
        Self {
            cfg,
            ..Default::default()
        }
    }

    /// A gateway's status message.
    pub fn on_status(&mut self, gateway: &str, s: &Status, now: Instant) -> Vec<Event> {
        let g = self.gateways.entry(gateway.to_string()).or_default();
        let mut out = Vec::new();
        if s.state == "online" {
            g.online = true;
            g.poll = s.poll_interval_ms.map(Duration::from_millis);
            // Readings are due from now on.
            if g.last_reading.is_some() {
                g.last_reading = Some(now);
            }
            if g.lost {
                g.lost = false;
                out.push(Event::GatewayBack {
                    gateway: gateway.into(),
                });
            }
            return out;
        }
        g.online = false;
        // An offline gateway sends no readings: the offline alarm (or the
        // clean stop) takes over from a readings alarm, and "back online"
        // ends both.
        g.stale = false;
        let reason = s.reason.clone().unwrap_or_default();
        if reason == "shutdown" {
            // A clean stop is shown as a status, not as an alarm.
            if g.lost {
                g.lost = false;
                out.push(Event::GatewayBack {
                    gateway: gateway.into(),
                });
            }
        } else if !g.lost {
            g.lost = true;
            out.push(Event::GatewayLost {
                gateway: gateway.into(),
                reason: if reason.is_empty() {
                    "offline".into()
                } else {
                    reason
                },
            });
        }
        out
    }

    /// Whether readings of `gateway` were seen (its silence would count).
    pub fn armed(&self, gateway: &str) -> bool {
        self.gateways
            .get(gateway)
            .is_some_and(|g| g.last_reading.is_some())
    }

    /// A reading of one of the gateway's sensors.
    pub fn on_reading(&mut self, gateway: &str, now: Instant) -> Vec<Event> {
        let g = self.gateways.entry(gateway.to_string()).or_default();
        g.last_reading = Some(now);
        if g.stale {
            g.stale = false;
            return vec![Event::ReadingsBack {
                gateway: gateway.into(),
            }];
        }
        Vec::new()
    }

    pub fn on_link_down(&mut self, now: Instant) {
        self.down_since.get_or_insert(now);
    }

    pub fn on_link_up(&mut self, now: Instant) -> Vec<Event> {
        // Nothing could arrive while down: give every gateway a fresh start.
        for g in self.gateways.values_mut() {
            if g.last_reading.is_some() {
                g.last_reading = Some(now);
            }
        }
        let Some(since) = self.down_since.take() else {
            return Vec::new();
        };
        if std::mem::take(&mut self.broker_alarm) {
            return vec![Event::BrokerBack {
                down: now.saturating_duration_since(since),
            }];
        }
        Vec::new()
    }

    fn stale_after(&self, g: &Gateway) -> Duration {
        g.poll
            .map_or(self.cfg.stale_after, |p| p * self.cfg.stale_intervals)
    }

    /// Time passes.
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some(since) = self.down_since {
            let down = now.saturating_duration_since(since);
            if down >= self.cfg.broker_grace && !self.broker_alarm {
                self.broker_alarm = true;
                out.push(Event::BrokerLost { down });
            }
            // While we are disconnected, silence proves nothing about gateways.
            return out;
        }
        let limits: Vec<(String, Duration)> = self
            .gateways
            .iter()
            .map(|(k, g)| (k.clone(), self.stale_after(g)))
            .collect();
        for (name, limit) in limits {
            let Some(g) = self.gateways.get_mut(&name) else {
                continue;
            };
            let Some(last) = g.last_reading else { continue };
            let silent = now.saturating_duration_since(last);
            if g.online && !g.stale && silent >= limit {
                g.stale = true;
                out.push(Event::ReadingsStopped {
                    gateway: name,
                    silent,
                });
            }
        }
        out
    }

    /// How often `tick` should run to notice things in time.
    pub fn tick_every(&self) -> Duration {
        let shortest = self
            .gateways
            .values()
            .map(|g| self.stale_after(g))
            .chain([self.cfg.stale_after, self.cfg.broker_grace])
            .min()
            .unwrap_or(self.cfg.stale_after);
        (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, reason: Option<&str>, poll_ms: Option<u64>) -> Status {
        Status {
            state: state.into(),
            reason: reason.map(Into::into),
            gateway: None,
            ts: None,
            version: None,
            sensors: None,
            poll_interval_ms: poll_ms,
            expiry_secs: None,
            clock_synced: true,
        }
    }

    fn cfg() -> WatchConfig {
        WatchConfig {
            stale_intervals: 5,
            stale_after: Duration::from_secs(60),
            broker_grace: Duration::from_secs(30),
        }
    }

    #[test]
    fn will_raises_and_online_ends_the_alarm_once() {
        let t0 = Instant::now();
        let mut w = Watch::new(cfg());
        assert!(w
            .on_status("gw1", &status("online", None, None), t0)
            .is_empty());
        let e = w.on_status("gw1", &status("offline", Some("connection lost"), None), t0);
        assert_eq!(
            e,
            [Event::GatewayLost {
                gateway: "gw1".into(),
                reason: "connection lost".into()
            }]
        );
        assert!(e[0].is_alarm());
        // The same retained Will again: no second alarm.
        assert!(w
            .on_status("gw1", &status("offline", Some("connection lost"), None), t0)
            .is_empty());
        assert_eq!(
            w.on_status("gw1", &status("online", None, None), t0),
            [Event::GatewayBack {
                gateway: "gw1".into()
            }]
        );
        // A clean shutdown is no alarm.
        assert!(w
            .on_status("gw1", &status("offline", Some("shutdown"), None), t0)
            .is_empty());
    }

    #[test]
    fn a_will_takes_over_from_a_readings_alarm() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Watch::new(cfg());
        w.on_status("gw1", &status("online", None, Some(1000)), t0);
        w.on_reading("gw1", t0);
        assert_eq!(w.tick(t0 + s(5)).len(), 1);
        let e = w.on_status(
            "gw1",
            &status("offline", Some("connection lost"), None),
            t0 + s(6),
        );
        assert!(matches!(e.as_slice(), [Event::GatewayLost { .. }]), "{e:?}");
        // Back online: one RESOLVED, and the readings are watched afresh.
        let e = w.on_status("gw1", &status("online", None, Some(1000)), t0 + s(10));
        assert!(matches!(e.as_slice(), [Event::GatewayBack { .. }]), "{e:?}");
        assert!(w.tick(t0 + s(14)).is_empty());
        assert_eq!(w.tick(t0 + s(15)).len(), 1);
    }

    #[test]
    fn silent_online_gateway_is_stale_after_its_poll_intervals() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Watch::new(cfg());
        w.on_status("gw1", &status("online", None, Some(1000)), t0);
        // Not armed before a first reading.
        assert!(w.tick(t0 + s(100)).is_empty());
        w.on_reading("gw1", t0 + s(100));
        assert!(w.tick(t0 + s(104)).is_empty());
        let e = w.tick(t0 + s(105));
        assert_eq!(
            e,
            [Event::ReadingsStopped {
                gateway: "gw1".into(),
                silent: s(5)
            }]
        );
        assert!(w.tick(t0 + s(200)).is_empty(), "raised once");
        assert_eq!(
            w.on_reading("gw1", t0 + s(201)),
            [Event::ReadingsBack {
                gateway: "gw1".into()
            }]
        );
        assert_eq!(w.tick_every(), Duration::from_millis(1250));
    }

    #[test]
    fn without_a_poll_interval_the_fallback_applies() {
        let t0 = Instant::now();
        let mut w = Watch::new(cfg());
        w.on_status("gw1", &status("online", None, None), t0);
        w.on_reading("gw1", t0);
        assert!(w.tick(t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(w.tick(t0 + Duration::from_secs(60)).len(), 1);
    }

    #[test]
    fn broker_loss_beyond_the_grace_period_and_back() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Watch::new(cfg());
        w.on_status("gw1", &status("online", None, Some(1000)), t0);
        w.on_reading("gw1", t0);
        w.on_link_down(t0);
        assert!(w.tick(t0 + s(29)).is_empty(), "no stale alarm while down");
        assert_eq!(w.tick(t0 + s(30)), [Event::BrokerLost { down: s(30) }]);
        assert!(w.tick(t0 + s(31)).is_empty());
        assert_eq!(
            w.on_link_up(t0 + s(40)),
            [Event::BrokerBack { down: s(40) }]
        );
        // Readings get a fresh start after a reconnect.
        assert!(w.tick(t0 + s(44)).is_empty());
        // A short outage raises nothing.
        w.on_link_down(t0 + s(50));
        assert!(w.on_link_up(t0 + s(55)).is_empty());
    }
}
