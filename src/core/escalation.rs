//! Escalation: an alert nobody answered within `ack_timeout_secs` of
//! reaching the broker is published again (same id, `escalation` counter
//! incremented), then again after twice the time, and so on (at most eight
//! times the timeout apart), until a notifier answers, at most
//! [`MAX_ESCALATIONS`] times. A newer alert for the same sensor does not
//! stop it: each alert must reach a person. RESOLVED alerts too: an answer is the only
//! proof that an alert reached a person, and a broker that crashed after
//! PUBCOMP but before delivering (it saves its state only now and then)
//! would otherwise lose it silently.
//!
//! A pure core: the daemon tells it what happened and when, and asks which
//! alerts are due.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::mqtt::payload::Alert;

/// An alert is re-published at most this many times.
pub const MAX_ESCALATIONS: u32 = 10;
/// Longest gap between escalations, as a multiple of the timeout.
const MAX_FACTOR: u32 = 8;
/// Answered ids remembered, so a late re-publish is not tracked again.
const ANSWERED_CAP: usize = 4096;

struct Tracked {
    alert: Alert,
    /// When the next escalation is due; `None` until the broker has it.
    due: Option<Instant>,
}

pub struct Escalator {
    timeout: Option<Duration>,
    tracked: HashMap<String, Tracked>,
    answered: HashSet<String>,
    answered_order: VecDeque<String>,
}

impl Escalator {
    /// `timeout` `None` or zero: never escalate.
    pub fn new(timeout: Option<Duration>) -> Self {
        Self {
            timeout: timeout.filter(|t| !t.is_zero()),
            tracked: HashMap::new(),
            answered: HashSet::new(),
            answered_order: VecDeque::new(),
        }
    }

    fn interval(&self, escalation: u32) -> Option<Duration> {
        let t = self.timeout?;
        Some(t * 2u32.saturating_pow(escalation).min(MAX_FACTOR))
    }

    /// The alert is being handed to the broker (first publish, or a
    /// re-publish after a reconnect). Tracks it if it may need escalating.
    pub fn handed(&mut self, alert: &Alert) {
        if self.timeout.is_none() || self.answered.contains(&alert.id) {
            return;
        }
        let t = self.tracked.entry(alert.id.clone()).or_insert(Tracked {
            alert: alert.clone(),
            due: None,
        });
        if alert.escalation > t.alert.escalation {
            t.alert.escalation = alert.escalation;
        }
    }

    /// The broker completed the QoS 2 handshake for `alert` at `now`: the
    /// answer timer starts.
    pub fn delivered(&mut self, alert: &Alert, now: Instant) {
        let Some(interval) = self.interval(alert.escalation) else {
            return;
        };
        if let Some(t) = self.tracked.get_mut(&alert.id) {
            if alert.escalation >= t.alert.escalation {
                t.due = Some(now + interval);
            }
        }
    }

    /// Alert `id` can never be published (refused for good) and was
    /// dropped: nothing to escalate.
    pub fn dropped(&mut self, id: &str) {
        self.tracked.remove(id);
    }

    /// A notifier answered alert `id`.
    pub fn answered(&mut self, id: &str) {
        self.tracked.remove(id);
        if self.answered.insert(id.to_string()) {
            self.answered_order.push_back(id.to_string());
            while self.answered_order.len() > ANSWERED_CAP {
                if let Some(old) = self.answered_order.pop_front() {
                    self.answered.remove(&old);
                }
            }
        }
    }

    /// The alerts to publish again now, each with its counter incremented.
    pub fn due(&mut self, now: Instant) -> Vec<Alert> {
        let mut out: Vec<Alert> = Vec::new();
        self.tracked.retain(|_, t| {
            let give_up = t.alert.escalation >= MAX_ESCALATIONS && t.due.is_some_and(|d| d <= now);
            if give_up {
                log::error!(
                    "alert {} ({} {}) still unanswered after {MAX_ESCALATIONS} escalations; giving up",
                    t.alert.id,
                    t.alert.level,
                    t.alert.name
                );
            }
            !give_up
        });
        for t in self.tracked.values_mut() {
            if t.due.is_some_and(|d| d <= now) {
                t.alert.escalation = t.alert.escalation.saturating_add(1);
                // Not due again until this copy reached the broker.
                t.due = None;
                out.push(t.alert.clone());
            }
        }
        out.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.id.cmp(&b.id)));
        out
    }

    /// How many alerts are waiting for an answer.
    pub fn waiting(&self) -> usize {
        self.tracked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::alert::AlertLevel;

    fn alert(id: &str, sensor: &str, level: AlertLevel) -> Alert {
        Alert {
            sensor: sensor.into(),
            name: sensor.into(),
            message: "hot".into(),
            ..Alert::sample(id, level)
        }
    }

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn unanswered_alerts_escalate_with_backoff() {
        let t0 = Instant::now();
        let mut e = Escalator::new(Some(T));
        let a = alert("a", "s1", AlertLevel::Critical);
        e.handed(&a);
        assert!(
            e.due(t0 + T * 100).is_empty(),
            "not before the broker has it"
        );
        e.delivered(&a, t0);
        assert!(e.due(t0 + T - Duration::from_millis(1)).is_empty());
        let d = e.due(t0 + T);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].id.as_str(), d[0].escalation), ("a", 1));
        assert!(e.due(t0 + T * 100).is_empty(), "one copy at a time");
        // The copy reaches the broker: next one after twice the timeout.
        let t1 = t0 + T;
        e.delivered(&d[0], t1);
        assert!(e.due(t1 + T * 2 - Duration::from_millis(1)).is_empty());
        assert_eq!(e.due(t1 + T * 2)[0].escalation, 2);
    }

    #[test]
    fn backoff_is_capped() {
        let mut e = Escalator::new(Some(T));
        assert_eq!(e.interval(10), Some(T * MAX_FACTOR));
        e.timeout = None;
        assert_eq!(e.interval(0), None);
    }

    #[test]
    fn an_answer_stops_escalation_even_if_it_came_before_pubcomp() {
        let t0 = Instant::now();
        let mut e = Escalator::new(Some(T));
        let a = alert("a", "s1", AlertLevel::Warning);
        e.handed(&a);
        e.answered("a");
        e.delivered(&a, t0);
        e.handed(&a); // re-published after a reconnect
        e.delivered(&a, t0);
        assert!(e.due(t0 + T * 10).is_empty());
        assert_eq!(e.waiting(), 0);
    }

    #[test]
    fn every_unanswered_alert_escalates_resolved_too() {
        let t0 = Instant::now();
        let mut e = Escalator::new(Some(T));
        let a = alert("a", "s1", AlertLevel::Critical);
        let b = alert("b", "s2", AlertLevel::Fault);
        let r = alert("r", "s1", AlertLevel::Resolved);
        for x in [&a, &b] {
            e.handed(x);
            e.delivered(x, t0);
        }
        e.handed(&r);
        e.delivered(&r, t0);
        let due: Vec<String> = e.due(t0 + T).into_iter().map(|x| x.id).collect();
        assert_eq!(due, vec!["a".to_string(), "b".to_string(), "r".to_string()]);
    }

    #[test]
    fn it_gives_up_after_the_maximum() {
        let mut now = Instant::now();
        let mut e = Escalator::new(Some(T));
        let a = alert("a", "s1", AlertLevel::Critical);
        e.handed(&a);
        e.delivered(&a, now);
        for i in 1..=MAX_ESCALATIONS {
            now += T * MAX_FACTOR;
            let d = e.due(now);
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].escalation, i);
            e.delivered(&d[0], now);
        }
        assert!(e.due(now + T * MAX_FACTOR).is_empty());
        assert_eq!(e.waiting(), 0);
    }

    #[test]
    fn zero_timeout_means_off() {
        let t0 = Instant::now();
        let mut e = Escalator::new(Some(Duration::ZERO));
        let a = alert("a", "s1", AlertLevel::Critical);
        e.handed(&a);
        e.delivered(&a, t0);
        assert!(e.due(t0 + T * 100).is_empty());
    }
}
