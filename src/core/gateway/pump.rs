//! The gateway's outbox side: handing entries to the client, their
//! outcomes, the disk's syncs, and the housekeeping tick.

use bytes::Bytes;

use super::{Action, Awaiting, Gateway, Kind, Now, Outcome, Publish, MAX_HANDED, REFUSAL_HOLD};
use crate::core::alert::AlertLevel;
use crate::mqtt::payload::{self, Alert};
use crate::outbox::{Entry, Item, SyncNews};

impl Gateway {
    /// After every event: starts the outbox's group commit (one
    /// `fdatasync`, off the runtime, for every alert written since the
    /// last: all of a sweep's alerts) or, when nothing waits for one, hands
    /// out what is ready. The entries a sync covers are handed out when it
    /// reports ([`Gateway::on_synced`]).
    pub fn flush(&mut self, now: Now) -> Vec<Action> {
        match self.outbox.sync_due(now.mono) {
            Some(upto) => self.out.push(Action::Sync { upto }),
            None => self.pump(now),
        }
        self.take()
    }

    /// The record of entry `seq` could not be written ([`Action::Store`]):
    /// it is kept in memory only.
    pub fn on_store_failed(&mut self, seq: u64) {
        self.outbox.store_failed(seq);
    }

    /// The sync asked by [`Action::Sync`] returned (its result was the
    /// shell's to log; a failed one hands the entries out all the same:
    /// delivering an alert comes before storing it).
    pub fn on_synced(&mut self, upto: u64, now: Now) -> Vec<Action> {
        if self.outbox.synced(upto) == SyncNews::Unstalled {
            self.log(
                log::Level::Warn,
                "outbox: the disk answered the hung fdatasync; waiting for it again".into(),
            );
        }
        self.pump(now);
        self.take()
    }

    /// The sync asked by [`Action::SyncNow`] returned.
    pub fn on_synced_now(&mut self, upto: u64, now: Now) -> Vec<Action> {
        self.outbox.synced_now(upto);
        self.pump(now);
        self.take()
    }

    /// SIGTERM: the outbox is synced now (so that what is queued can be
    /// handed out at once) and handed out.
    pub fn begin_shutdown(&mut self, now: Now) -> Vec<Action> {
        match self.outbox.sync_now_due() {
            Some(upto) => self.out.push(Action::SyncNow { upto }),
            None => self.pump(now),
        }
        self.take()
    }

    /// The client would not take entry `seq` (its queue is full): it goes
    /// back in order, to be handed out at the next event.
    pub fn on_client_busy(&mut self, seq: u64) {
        if let Some(e) = self.outbox.take_handed(seq) {
            self.outbox.requeue(e);
        }
    }

    /// Hands queued entries to the client while connected, in order.
    pub(super) fn pump(&mut self, now: Now) {
        if self.hold_until.is_some_and(|t| now.mono < t) {
            return;
        }
        while self.connected && self.outbox.in_flight() < MAX_HANDED {
            let Some(entry) = self.outbox.pop() else {
                return;
            };
            let Some(p) = self.publication(&entry, now) else {
                self.finish(&entry);
                continue;
            };
            self.out.push(Action::Publish(p));
            self.outbox.handed(entry);
        }
    }

    /// What to publish for `entry`; `None` when it expired in the outbox.
    fn publication(&mut self, entry: &Entry, now: Now) -> Option<Publish> {
        let kind = Kind::Entry(entry.seq);
        Some(match &entry.item {
            Item::ClearRetained { sensor } => Publish {
                topic: self.topics.alert(sensor),
                payload: Vec::new(),
                retain: true,
                expiry: None,
                response: None,
                kind,
            },
            Item::RefreshRetained { alert } => {
                // Not escalated: the alert itself was handed and tracked
                // when first published.
                let corr = self.correlation(alert);
                self.awaiting.insert(
                    corr.clone(),
                    Awaiting {
                        id: alert.id.clone(),
                        raised: now.mono,
                        answers: 0,
                    },
                );
                Publish {
                    topic: self.topics.alert(&alert.sensor),
                    payload: payload::encode(alert),
                    retain: true,
                    expiry: Some(self.timings.expiry_secs),
                    response: Some((self.topics.acks(), corr)),
                    kind,
                }
            }
            Item::Alert { alert } => {
                let waited = entry.waited(now.mono);
                let Some(expiry) = self.timings.expiry_left(waited) else {
                    self.log(
                        log::Level::Error,
                        format!(
                            "alert {} ({} {}) expired after {}s before the broker could take it; dropped",
                            alert.id,
                            alert.level,
                            alert.name,
                            waited.as_secs()
                        ),
                    );
                    return None;
                };
                self.escalator.handed(alert);
                let corr = self.correlation(alert);
                self.awaiting
                    .entry(corr.clone())
                    .or_insert_with(|| Awaiting {
                        id: alert.id.clone(),
                        raised: entry.since,
                        answers: 0,
                    });
                Publish {
                    topic: self.topics.alert(&alert.sensor),
                    payload: payload::encode(alert),
                    retain: alert.level == AlertLevel::Critical,
                    expiry: Some(expiry),
                    response: Some((self.topics.acks(), corr)),
                    kind,
                }
            }
        })
    }

    /// An alert's CorrelationData: its id.
    fn correlation(&self, alert: &Alert) -> Bytes {
        Bytes::from(alert.id.clone().into_bytes())
    }

    /// The entry is finished (PUBCOMP, or expired): forgotten, on disk too.
    fn finish(&mut self, e: &Entry) {
        if e.persisted {
            self.out.push(Action::Forget {
                seq: e.seq,
                what: e.item.describe(),
            });
        }
    }

    /// What became of the tracked publish of entry `seq`.
    pub fn on_published(&mut self, seq: u64, outcome: Outcome, now: Now) -> Vec<Action> {
        let Some(entry) = self.outbox.take_handed(seq) else {
            return self.take();
        };
        let what = entry.item.describe();
        match outcome {
            Outcome::Completed => {
                self.log(
                    log::Level::Debug,
                    format!("{what}: delivered to the broker (PUBCOMP)"),
                );
                if let Item::Alert { alert } = &entry.item {
                    self.escalator.delivered(alert, now.mono);
                }
                self.finish(&entry);
            }
            Outcome::Refused(reason) => {
                self.log(
                    log::Level::Error,
                    format!("{what}: the broker refused it ({reason}); will retry"),
                );
                // A refusal (quota, ACL) may clear: keep the entry, in
                // order, and hold the outbox a while instead of hammering
                // the broker.
                self.outbox.requeue(entry);
                self.hold_until = Some(now.mono + REFUSAL_HOLD);
            }
            Outcome::Other(other) => {
                self.log(log::Level::Debug, format!("{what}: {other}"));
                self.finish(&entry);
            }
            Outcome::Rejected(reason) => {
                // Put back, it would block every entry behind it forever.
                self.log(
                    log::Level::Error,
                    format!(
                        "{what}: refused for good ({reason}); dropped so that the entries behind it go out"
                    ),
                );
                if let Item::Alert { alert } = &entry.item {
                    self.escalator.dropped(&alert.id);
                }
                self.finish(&entry);
            }
            Outcome::Failed(e) => {
                self.log(
                    log::Level::Warn,
                    format!("{what}: {e}; publishing it again"),
                );
                self.outbox.requeue(entry);
            }
        }
        self.pump(now);
        self.take()
    }

    /// The housekeeping tick (every [`super::Timings::tick`]): a hung
    /// sync, retained CRITICALs to refresh, alerts nobody answered, and
    /// escalations due.
    pub fn tick(&mut self, now: Now) -> Vec<Action> {
        // A hung fdatasync must not hold alerts back (they are pumped below).
        if let Some(hung) = self.outbox.check_stall(now.mono) {
            self.log(
                log::Level::Error,
                format!(
                    "outbox: fdatasync has not returned for {} s (a failing disk?); publishing alerts without waiting for it",
                    hung.as_secs()
                ),
            );
        }
        // A retained CRITICAL must outlive its message expiry while the
        // sensor stays critical: publish it again at half its lifetime.
        let refresh = self.timings.refresh;
        let mut due: Vec<Alert> = self
            .critical
            .values_mut()
            .filter(|(_, at)| now.mono.saturating_duration_since(*at) >= refresh)
            .map(|(a, at)| {
                *at = now.mono;
                a.clone()
            })
            .collect();
        due.sort_by(|a, b| a.sensor.cmp(&b.sensor));
        for alert in due {
            self.log(
                log::Level::Debug,
                format!(
                    "refreshing the retained CRITICAL {} ({})",
                    alert.id, alert.name
                ),
            );
            self.push(Item::RefreshRetained { alert }, now);
        }
        let keep = self.timings.keep;
        let mut unanswered = Vec::new();
        self.awaiting.retain(|_, w| {
            let alive = now.mono.saturating_duration_since(w.raised) < keep;
            if !alive && w.answers == 0 {
                unanswered.push(w.id.clone());
            }
            alive
        });
        unanswered.sort();
        for id in unanswered {
            self.log(
                log::Level::Warn,
                format!("alert {id} was never answered by a notifier"),
            );
        }
        for alert in self.escalator.due(now.mono) {
            self.log(
                log::Level::Error,
                format!(
                    "ESCALATION {} of alert {} ({} {}): no notifier answered; publishing it again",
                    alert.escalation, alert.id, alert.level, alert.name
                ),
            );
            self.push(Item::Alert { alert }, now);
        }
        if self.connected {
            self.pump(now);
        }
        self.take()
    }
}
