//! The gateway core driven like rumqttc's `v5/state.rs` tests: readings,
//! answers, publish outcomes and ticks in, with a fixed clock; the actions
//! out are asserted on. No broker, no disk, no clock.

use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;

use super::*;
use crate::core::alert::{AlertLevel, ReadFault};
use crate::outbox::SYNC_STALL;

/// Sensor `a` (freezer): warning above 30, critical above 40, hysteresis
/// 1.0; sensor `b`: critical above 40. Alerts expire after 60 s, answers
/// are due within 10 s, two failed reads make a FAULT.
const SENSORS: &str = "[[sensor]]\nid = \"a\"\nname = \"freezer\"\nwarning_above = 30.0\ncritical_above = 40.0\nhysteresis = 1.0\n[[sensor]]\nid = \"b\"\ncritical_above = 40.0\n";

fn config(dir: &std::path::Path, sensors: &str) -> Config {
    std::fs::write(dir.join("ca.crt"), "x").expect("write");
    let src = format!(
        "gateway_id = \"gw1\"\nack_timeout_secs = 10\n[mqtt]\nhost = \"localhost\"\nca_file = \"ca.crt\"\nalert_expiry_secs = 60\n[sensors]\nbackend = \"sim\"\nfault_after = 2\n{sensors}"
    );
    Config::parse(&src, &dir.join("t.toml")).expect("valid")
}

/// A gateway on a fixed clock that only moves when told.
struct Rig {
    g: Gateway,
    t0: Instant,
    /// Time since `t0`.
    at: Duration,
    clock_synced: bool,
    dir: tempfile::TempDir,
}

const WALL0: u64 = 1_800_000_000;

impl Rig {
    /// Memory-only outbox: entries may go out at once.
    fn new() -> Self {
        Self::with(Queue::new(false), false)
    }

    /// An outbox with a disk: entries wait for a sync.
    fn with_disk() -> Self {
        Self::with(Queue::new(true), false)
    }

    fn with(queue: Queue, alarm: bool) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let mut n = 0;
        let ids: IdSource = Box::new(move || {
            n += 1;
            format!("id-{n}")
        });
        Self {
            g: Gateway::new(config(dir.path(), SENSORS), queue, ids, alarm),
            t0: Instant::now(),
            at: Duration::ZERO,
            clock_synced: true,
            dir,
        }
    }

    fn now(&self) -> Now {
        Now {
            mono: self.t0 + self.at,
            wall: UNIX_EPOCH + Duration::from_secs(WALL0) + self.at,
            clock_synced: self.clock_synced,
        }
    }

    fn advance(&mut self, d: Duration) {
        self.at += d;
    }

    fn sweep(&mut self, samples: &[(&str, Result<f64, ReadFault>)]) -> Vec<Action> {
        let samples = samples
            .iter()
            .map(|(id, read)| Sample {
                id: (*id).into(),
                read: read.clone(),
            })
            .collect();
        let now = self.now();
        self.g.on_sweep(samples, now)
    }

    fn up(&mut self) -> Vec<Action> {
        let now = self.now();
        self.g.on_link_up(false, now)
    }

    /// Connected, and the first sweep (its stale-retained clears) done
    /// and delivered.
    fn running() -> Self {
        let mut r = Self::new();
        r.up();
        let clears = r.sweep(&[("a", Ok(20.0)), ("b", Ok(20.0))]);
        r.complete(&clears);
        r
    }

    /// The broker completes every entry published in `actions`.
    fn complete(&mut self, actions: &[Action]) -> Vec<Action> {
        let mut out = Vec::new();
        for seq in entry_seqs(actions) {
            let now = self.now();
            out.extend(self.g.on_published(seq, Outcome::Completed, now));
        }
        out
    }

    fn answer(&mut self, corr: &str, by: &str) -> Vec<Action> {
        let ack = payload::encode(&Ack {
            alert_id: corr.into(),
            status: "delivered".into(),
            by: by.into(),
            ts: "2027-01-15T08:00:00.000Z".into(),
        });
        let topic = self.g.topics().acks();
        let now = self.now();
        self.g.on_message(&topic, Some(corr.as_bytes()), &ack, now)
    }

    fn tick(&mut self) -> Vec<Action> {
        let now = self.now();
        self.g.tick(now)
    }

    fn flush(&mut self) -> Vec<Action> {
        let now = self.now();
        self.g.flush(now)
    }
}

fn alerts(actions: &[Action]) -> Vec<(String, AlertLevel)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::LogAlert(al) => Some((al.sensor.clone(), al.level)),
            _ => None,
        })
        .collect()
}

fn logged(actions: &[Action]) -> Vec<Alert> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::LogAlert(al) => Some(al.clone()),
            _ => None,
        })
        .collect()
}

fn publishes(actions: &[Action]) -> Vec<&Publish> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn entry_seqs(actions: &[Action]) -> Vec<u64> {
    publishes(actions)
        .iter()
        .filter_map(|p| match p.kind {
            Kind::Entry(seq) => Some(seq),
            Kind::Reading => None,
        })
        .collect()
}

/// The alerts published, decoded: (sensor, level, escalation).
fn published_alerts(actions: &[Action]) -> Vec<(String, AlertLevel, u32)> {
    publishes(actions)
        .iter()
        .filter(|p| p.kind != Kind::Reading && !p.payload.is_empty())
        .map(|p| {
            let a: Alert = payload::decode(&p.payload).expect("an alert");
            (a.sensor, a.level, a.escalation)
        })
        .collect()
}

fn lines(actions: &[Action], level: log::Level) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log { level: l, line } if *l == level => Some(line.clone()),
            _ => None,
        })
        .collect()
}

fn any_line(actions: &[Action], level: log::Level, needle: &str) -> bool {
    lines(actions, level).iter().any(|l| l.contains(needle))
}

// ---- levels, hysteresis, faults ------------------------------------------

#[test]
fn the_first_sweep_clears_the_retained_alerts_of_sensors_not_critical() {
    let mut r = Rig::new();
    r.up();
    let out = r.sweep(&[("a", Ok(20.0)), ("b", Ok(45.0))]);
    assert_eq!(alerts(&out), vec![("b".into(), AlertLevel::Critical)]);
    let clears: Vec<&str> = publishes(&out)
        .iter()
        .filter(|p| p.payload.is_empty())
        .map(|p| p.topic.as_str())
        .collect();
    assert_eq!(
        clears,
        vec!["thermalert/gw1/alerts/a"],
        "b is critical: kept"
    );
    let clear = publishes(&out)
        .into_iter()
        .find(|p| p.payload.is_empty())
        .expect("a clear");
    assert!(clear.retain && clear.expiry.is_none() && clear.response.is_none());
    // Only once.
    let again = r.sweep(&[("a", Ok(20.0)), ("b", Ok(45.0))]);
    assert!(publishes(&again).iter().all(|p| !p.payload.is_empty()));
}

#[test]
fn each_level_change_raises_one_alert_and_no_poll_repeats_it() {
    let mut r = Rig::running();
    let mut seen = Vec::new();
    for c in [35.0, 36.0, 45.0, 46.0, 35.0, 20.0, 20.0] {
        seen.extend(alerts(&r.sweep(&[("a", Ok(c))])));
    }
    let levels: Vec<AlertLevel> = seen.into_iter().map(|(_, l)| l).collect();
    assert_eq!(
        levels,
        vec![
            AlertLevel::Warning,
            AlertLevel::Critical,
            AlertLevel::Warning,
            AlertLevel::Resolved
        ]
    );
}

#[test]
fn an_alert_carries_the_sensor_the_reading_the_time_and_an_id_from_the_source() {
    let mut r = Rig::running();
    r.advance(Duration::from_millis(1500));
    let out = r.sweep(&[("a", Ok(35.5))]);
    let a = logged(&out).pop().expect("an alert");
    assert_eq!(a.id, "id-1");
    assert_eq!((a.sensor.as_str(), a.name.as_str()), ("a", "freezer"));
    assert_eq!((a.celsius, a.threshold), (Some(35.5), Some(30.0)));
    assert_eq!(a.previous, Some(Level::Normal));
    assert_eq!(a.ts, timefmt::rfc3339(r.now().wall));
    assert!(a.clock_synced && a.escalation == 0);
    assert_eq!(a.gateway, "gw1");
}

#[test]
fn hysteresis_holds_a_level_until_the_temperature_is_back_by_the_margin() {
    let mut r = Rig::running();
    assert_eq!(alerts(&r.sweep(&[("a", Ok(31.0))])).len(), 1);
    assert!(alerts(&r.sweep(&[("a", Ok(29.5))])).is_empty(), "held");
    assert!(alerts(&r.sweep(&[("a", Ok(29.1))])).is_empty(), "held");
    assert_eq!(
        alerts(&r.sweep(&[("a", Ok(28.9))])),
        vec![("a".into(), AlertLevel::Resolved)]
    );
}

#[test]
fn failed_reads_become_a_fault_after_fault_after_and_its_recovery_is_resolved() {
    let mut r = Rig::running();
    let first = r.sweep(&[("a", Err(ReadFault::Crc))]);
    assert!(alerts(&first).is_empty(), "one failure is retried");
    assert!(any_line(
        &first,
        log::Level::Debug,
        "freezer (a): read failed: CRC"
    ));
    let second = r.sweep(&[("a", Err(ReadFault::Crc))]);
    assert_eq!(alerts(&second), vec![("a".into(), AlertLevel::Fault)]);
    assert!(alerts(&r.sweep(&[("a", Err(ReadFault::Missing))])).is_empty());
    // Back, and hot: the fault is resolved, then the level judged afresh.
    let back = r.sweep(&[("a", Ok(45.0))]);
    assert_eq!(
        alerts(&back),
        vec![
            ("a".into(), AlertLevel::Resolved),
            ("a".into(), AlertLevel::Critical)
        ]
    );
}

#[test]
fn samples_of_sensors_no_longer_configured_are_ignored() {
    let mut r = Rig::running();
    let out = r.sweep(&[("gone", Ok(99.0)), ("b", Ok(45.0))]);
    assert_eq!(alerts(&out), vec![("b".into(), AlertLevel::Critical)]);
}

// ---- what is published, and how -------------------------------------------

#[test]
fn a_critical_is_published_retained_at_qos2_with_its_answer_topic() {
    let mut r = Rig::running();
    let out = r.sweep(&[("b", Ok(45.0))]);
    let p = publishes(&out)
        .into_iter()
        .find(|p| matches!(p.kind, Kind::Entry(_)))
        .expect("published");
    assert_eq!(p.topic, "thermalert/gw1/alerts/b");
    assert!(p.retain);
    assert_eq!(p.expiry, Some(60));
    assert_eq!(
        p.response,
        Some(("thermalert/gw1/acks".into(), Bytes::from_static(b"id-1")))
    );
    // A WARNING is not retained.
    let w = r.sweep(&[("a", Ok(35.0))]);
    let p = publishes(&w)
        .into_iter()
        .find(|p| matches!(p.kind, Kind::Entry(_)))
        .expect("published");
    assert!(!p.retain);
}

#[test]
fn leaving_critical_clears_the_retained_alert_before_the_new_level() {
    let mut r = Rig::running();
    r.sweep(&[("a", Ok(45.0))]);
    let out = r.sweep(&[("a", Ok(35.0))]);
    let ps: Vec<&Publish> = publishes(&out)
        .into_iter()
        .filter(|p| p.kind != Kind::Reading)
        .collect();
    assert_eq!(ps.len(), 2, "{ps:?}");
    assert!(ps[0].payload.is_empty() && ps[0].retain, "the clear first");
    assert_eq!(ps[0].topic, "thermalert/gw1/alerts/a");
    assert_eq!(
        published_alerts(&out),
        vec![("a".into(), AlertLevel::Warning, 0)]
    );
}

#[test]
fn readings_are_published_only_when_connected() {
    let mut r = Rig::new();
    let offline = r.sweep(&[("a", Ok(20.0))]);
    assert!(publishes(&offline).is_empty());
    r.up();
    let online = r.sweep(&[("a", Ok(20.25)), ("b", Err(ReadFault::Crc))]);
    let readings: Vec<&Publish> = publishes(&online)
        .into_iter()
        .filter(|p| p.kind == Kind::Reading)
        .collect();
    assert_eq!(readings.len(), 1, "not for a failed read");
    assert_eq!(readings[0].topic, "thermalert/gw1/sensors/a/reading");
    assert_eq!(readings[0].expiry, Some(60));
    let body: Reading = payload::decode(&readings[0].payload).expect("reading");
    assert_eq!(body.celsius, 20.25);
}

#[test]
fn alerts_raised_offline_go_out_in_order_when_the_link_comes_up() {
    let mut r = Rig::new();
    let out = r.sweep(&[("a", Ok(35.0))]);
    assert!(publishes(&out).is_empty());
    r.sweep(&[("a", Ok(45.0))]);
    let up = r.up();
    assert_eq!(
        up.first(),
        Some(&Action::Subscribe {
            topic: "thermalert/gw1/acks".into()
        })
    );
    assert!(up.contains(&Action::PublishOnline));
    assert!(up.contains(&Action::HomeAssistant {
        session_present: false
    }));
    assert_eq!(
        published_alerts(&up),
        vec![
            ("a".into(), AlertLevel::Warning, 0),
            ("a".into(), AlertLevel::Critical, 0)
        ]
    );
    // A resumed session keeps its subscription.
    r.g.on_link_down();
    let now = r.now();
    let again = r.g.on_link_up(true, now);
    assert!(!again.iter().any(|a| matches!(a, Action::Subscribe { .. })));
}

#[test]
fn a_failed_publish_goes_out_again_and_a_refused_one_after_a_hold() {
    let mut r = Rig::running();
    let out = r.sweep(&[("a", Ok(35.0))]);
    let seq = entry_seqs(&out)[0];
    let now = r.now();
    let again =
        r.g.on_published(seq, Outcome::Failed("connection lost".into()), now);
    assert_eq!(entry_seqs(&again), vec![seq]);
    let now = r.now();
    let refused =
        r.g.on_published(seq, Outcome::Refused("QuotaExceeded".into()), now);
    assert!(any_line(
        &refused,
        log::Level::Error,
        "refused it (QuotaExceeded)"
    ));
    assert!(entry_seqs(&refused).is_empty(), "held");
    r.advance(REFUSAL_HOLD - Duration::from_millis(1));
    assert!(entry_seqs(&r.flush()).is_empty(), "still held");
    r.advance(Duration::from_millis(1));
    assert_eq!(entry_seqs(&r.flush()), vec![seq]);
}

#[test]
fn an_entry_refused_for_good_is_dropped_forgotten_and_does_not_block_the_ones_behind_it() {
    // Issue 16: an entry the client refuses every time (invalid topic)
    // went back to the head of the queue forever.
    let mut r = Rig::with_disk();
    r.up();
    r.sweep(&[("a", Ok(45.0)), ("b", Ok(20.0))]);
    assert_eq!(r.flush(), vec![Action::Sync { upto: 1 }]);
    let now = r.now();
    let synced = r.g.on_synced(1, now);
    assert_eq!(entry_seqs(&synced), vec![0, 1]);
    // The shell's client refuses entry 0 for good; entry 1 finds the
    // client's queue full behind it.
    let now = r.now();
    let dropped = r.g.on_published(
        0,
        Outcome::Rejected("the client: invalid topic".into()),
        now,
    );
    assert!(any_line(
        &dropped,
        log::Level::Error,
        "alert id-1 (CRITICAL freezer, escalation 0): refused for good (the client: invalid topic); dropped"
    ));
    assert!(dropped.contains(&Action::Forget {
        seq: 0,
        what: "alert id-1 (CRITICAL freezer, escalation 0)".into()
    }));
    r.g.on_client_busy(1);
    // Not held, not tried again: the one behind it goes out at once.
    let f = r.flush();
    assert_eq!(entry_seqs(&f), vec![1], "{f:?}");
    r.advance(REFUSAL_HOLD * 2);
    assert!(entry_seqs(&r.tick()).is_empty(), "never published again");
    assert_eq!(r.g.pending(), 1, "only entry 1 is left, in flight");
}

// ---- the outbox -------------------------------------------------------------

#[test]
fn alerts_are_stored_and_published_only_once_a_sync_covered_them() {
    let mut r = Rig::with_disk();
    r.up();
    let out = r.sweep(&[("a", Ok(45.0)), ("b", Ok(20.0))]);
    let stored: Vec<u64> = out
        .iter()
        .filter_map(|a| match a {
            Action::Store { seq, at_ms, .. } => {
                assert_eq!(*at_ms, WALL0 * 1000);
                Some(*seq)
            }
            _ => None,
        })
        .collect();
    assert_eq!(stored, vec![0, 1], "the alert, then b's stale clear");
    assert!(entry_seqs(&out).is_empty(), "not before it is on disk");
    assert_eq!(r.flush(), vec![Action::Sync { upto: 1 }]);
    assert!(r.flush().is_empty(), "one sync at a time");
    let now = r.now();
    let synced = r.g.on_synced(1, now);
    assert_eq!(entry_seqs(&synced), vec![0, 1]);
    // PUBCOMP forgets the record.
    let done = r.complete(&synced);
    assert!(done.contains(&Action::Forget {
        seq: 0,
        what: "alert id-1 (CRITICAL freezer, escalation 0)".into()
    }));
}

#[test]
fn an_entry_the_disk_would_not_take_goes_out_from_memory() {
    let mut r = Rig::with_disk();
    r.up();
    let out = r.sweep(&[("a", Ok(20.0)), ("b", Ok(20.0))]);
    assert_eq!(
        out.iter()
            .filter(|a| matches!(a, Action::Store { .. }))
            .count(),
        2
    );
    r.g.on_store_failed(0);
    r.g.on_store_failed(1);
    let f = r.flush();
    assert!(
        !f.iter().any(|a| matches!(a, Action::Sync { .. })),
        "nothing to sync"
    );
    assert_eq!(entry_seqs(&f), vec![0, 1]);
    // Memory-only entries leave no record to forget.
    assert!(!r
        .complete(&f)
        .iter()
        .any(|a| matches!(a, Action::Forget { .. })));
}

#[test]
fn a_hung_sync_does_not_hold_alerts_back() {
    let mut r = Rig::with_disk();
    r.up();
    // The alert and b's stale clear.
    r.sweep(&[("a", Ok(45.0))]);
    assert_eq!(r.flush(), vec![Action::Sync { upto: 1 }]);
    r.advance(SYNC_STALL - Duration::from_millis(1));
    assert!(entry_seqs(&r.tick()).is_empty());
    r.advance(Duration::from_millis(1));
    let t = r.tick();
    assert!(any_line(
        &t,
        log::Level::Error,
        "fdatasync has not returned for 3 s"
    ));
    assert_eq!(entry_seqs(&t), vec![0, 1]);
    let now = r.now();
    let late = r.g.on_synced(1, now);
    assert!(any_line(
        &late,
        log::Level::Warn,
        "answered the hung fdatasync"
    ));
}

#[test]
fn the_outbox_hands_at_most_64_entries_to_the_client_at_once() {
    let mut r = Rig::running();
    let many: Vec<Alert> = (0..70)
        .map(|i| Alert::sample(&format!("c{i}"), AlertLevel::Fault))
        .collect();
    let now = r.now();
    let out = r.g.raise(many, now);
    assert_eq!(logged(&out).len(), 70, "every alert is logged");
    let first = entry_seqs(&out);
    assert_eq!(first.len(), MAX_HANDED);
    assert_eq!(r.g.pending(), 70);
    let now = r.now();
    let next = r.g.on_published(first[0], Outcome::Completed, now);
    assert_eq!(entry_seqs(&next).len(), 1, "one out, one in");
}

#[test]
fn entries_the_busy_client_refused_go_back_in_order() {
    let mut r = Rig::running();
    let many: Vec<Alert> = (0..3)
        .map(|i| Alert::sample(&format!("c{i}"), AlertLevel::Fault))
        .collect();
    let now = r.now();
    let out = r.g.raise(many, now);
    let seqs = entry_seqs(&out);
    assert_eq!(seqs.len(), 3);
    // The client took the first only.
    r.g.on_client_busy(seqs[1]);
    r.g.on_client_busy(seqs[2]);
    assert_eq!(entry_seqs(&r.flush()), vec![seqs[1], seqs[2]]);
}

#[test]
fn an_alert_that_waited_past_its_expiry_is_dropped_not_published() {
    let mut r = Rig::new();
    r.sweep(&[("a", Ok(35.0))]);
    r.advance(Duration::from_secs(20));
    r.sweep(&[("a", Ok(45.0))]);
    r.advance(Duration::from_secs(41));
    let up = r.up();
    assert!(any_line(
        &up,
        log::Level::Error,
        "alert id-1 (WARNING freezer) expired after 61s before the broker could take it; dropped"
    ));
    let ps: Vec<&Publish> = publishes(&up)
        .into_iter()
        .filter(|p| !p.payload.is_empty())
        .collect();
    assert_eq!(ps.len(), 1, "only the younger one");
    assert_eq!(ps[0].expiry, Some(60 - 41), "what is left of its expiry");
}

#[test]
fn at_start_alerts_left_in_the_outbox_go_first_with_what_is_left_of_their_expiry() {
    let now_ms = (WALL0 + 100) * 1000;
    let old = |id: &str, secs_ago: u64, synced: bool| {
        let mut alert = Alert::sample(id, AlertLevel::Critical);
        alert.clock_synced = synced;
        (now_ms - secs_ago * 1000, Item::Alert { alert })
    };
    let pending = vec![
        (3, old("fresh", 10, true).0, old("fresh", 10, true).1),
        (4, old("stale", 90, true).0, old("stale", 90, true).1),
        // Stamped before NTP: its age by the wall clock means nothing.
        (
            5,
            old("unsynced", 50_000, false).0,
            old("unsynced", 50_000, false).1,
        ),
    ];
    let mut r = Rig::with(Queue::new(true), false);
    r.at = Duration::from_secs(100);
    let now = r.now();
    r.g = Gateway::new(
        config(r.dir.path(), SENSORS),
        Queue::loaded(pending, now.mono, now_ms),
        Box::new(|| "new".into()),
        false,
    );
    let up = r.up();
    assert!(any_line(&up, log::Level::Error, "alert stale (CRITICAL"));
    assert!(up
        .iter()
        .any(|a| matches!(a, Action::Forget { seq: 4, .. })));
    let ps = publishes(&up);
    let seqs = entry_seqs(&up);
    assert_eq!(
        seqs,
        vec![3, 5],
        "in their old order, the stale one dropped"
    );
    assert_eq!(ps[0].expiry, Some(50));
    assert_eq!(ps[1].expiry, Some(60), "counted as fresh");
    // New alerts come after them, numbered on.
    let out = r.sweep(&[("a", Ok(20.0)), ("b", Ok(20.0))]);
    let stores: Vec<u64> = out
        .iter()
        .filter_map(|a| match a {
            Action::Store { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(stores, vec![6, 7]);
}

#[test]
fn an_entry_loaded_at_the_largest_seq_is_published_and_new_alerts_follow() {
    // Issue 16: a record with seq u64::MAX crashed every start.
    let now_ms = WALL0 * 1000;
    let item = Item::Alert {
        alert: Alert::sample("max", AlertLevel::Critical),
    };
    let mut r = Rig::with(Queue::new(true), false);
    let now = r.now();
    r.g = Gateway::new(
        config(r.dir.path(), SENSORS),
        Queue::loaded(vec![(u64::MAX, now_ms, item)], now.mono, now_ms),
        Box::new(|| "new".into()),
        false,
    );
    let up = r.up();
    let old = entry_seqs(&up);
    assert_eq!(old.len(), 1, "{up:?}");
    assert!(publishes(&up)[0].payload.windows(3).any(|w| w == b"max"));
    let out = r.sweep(&[("a", Ok(45.0)), ("b", Ok(20.0))]);
    let stores: Vec<u64> = out
        .iter()
        .filter_map(|a| match a {
            Action::Store { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert!(!stores.is_empty(), "{out:?}");
    assert!(
        stores.iter().all(|s| !old.contains(s)),
        "{stores:?} {old:?}"
    );
    let upto = *stores.iter().max().expect("a store");
    let now = r.now();
    let published = entry_seqs(&r.g.on_synced(upto, now));
    assert_eq!(published, stores, "the new alerts go out");
}

#[test]
fn at_shutdown_the_outbox_is_synced_on_the_spot_and_handed_out() {
    let mut r = Rig::with_disk();
    r.up();
    r.sweep(&[("a", Ok(45.0))]);
    let now = r.now();
    let s = r.g.begin_shutdown(now);
    assert_eq!(s, vec![Action::SyncNow { upto: 1 }]);
    let now = r.now();
    let out = r.g.on_synced_now(1, now);
    assert_eq!(entry_seqs(&out), vec![0, 1]);
    assert_eq!(r.g.pending(), 2);
    // Nothing left to sync: straight to handing out.
    let now = r.now();
    assert!(r.g.begin_shutdown(now).is_empty());
}

// ---- answers -----------------------------------------------------------------

#[test]
fn an_answer_is_matched_to_its_alert_by_correlation_data() {
    let mut r = Rig::running();
    r.sweep(&[("a", Ok(45.0))]);
    r.advance(Duration::from_millis(250));
    let out = r.answer("id-1", "desk-1");
    assert!(
        any_line(
            &out,
            log::Level::Info,
            "alert id-1 answered by desk-1 (delivered) after 250.0 ms"
        ),
        "{out:?}"
    );
    let again = r.answer("id-1", "desk-2");
    assert!(any_line(
        &again,
        log::Level::Debug,
        "answered again (2 answers)"
    ));
    assert!(lines(&again, log::Level::Info).is_empty());
}

#[test]
fn answers_that_match_nothing_are_told_apart_from_drill_answers() {
    let mut r = Rig::running();
    let stray = r.answer("nope", "desk-1");
    assert!(any_line(
        &stray,
        log::Level::Warn,
        "matches no alert (correlation \"nope\")"
    ));
    let drill = r.answer("drill-123", "desk-1");
    assert!(any_line(&drill, log::Level::Info, "answered a fire drill"));
    let topic = r.g.topics().acks();
    let now = r.now();
    let bare = r.g.on_message(&topic, None, b"{}", now);
    assert!(any_line(&bare, log::Level::Warn, "without CorrelationData"));
    let now = r.now();
    let other = r.g.on_message("elsewhere", Some(b"id-1"), b"{}", now);
    assert!(any_line(
        &other,
        log::Level::Debug,
        "ignoring message on elsewhere"
    ));
}

#[test]
fn an_answer_with_an_unreadable_payload_still_counts() {
    let mut r = Rig::running();
    r.sweep(&[("a", Ok(45.0))]);
    let topic = r.g.topics().acks();
    let now = r.now();
    let out = r.g.on_message(&topic, Some(b"id-1"), b"not json", now);
    assert!(any_line(
        &out,
        log::Level::Warn,
        "skipping a malformed answer"
    ));
    assert!(any_line(
        &out,
        log::Level::Info,
        "alert id-1 answered (unreadable payload)"
    ));
}

#[test]
fn the_local_alarm_is_on_while_a_critical_is_unanswered() {
    let mut r = Rig::with(Queue::new(false), true);
    r.up();
    let warn = r.sweep(&[("a", Ok(35.0))]);
    assert!(warn.contains(&Action::SetAlarm(false)));
    let crit = r.sweep(&[("a", Ok(45.0))]);
    assert!(crit.contains(&Action::SetAlarm(true)));
    let out = r.answer("id-2", "desk-1");
    assert!(out.contains(&Action::SetAlarm(false)));
    // Without an alarm configured, nothing drives it.
    let mut plain = Rig::running();
    let out = plain.sweep(&[("a", Ok(45.0))]);
    assert!(!out.iter().any(|a| matches!(a, Action::SetAlarm(_))));
}

// ---- escalation, refresh, expiry ---------------------------------------------

#[test]
fn an_unanswered_alert_escalates_after_the_ack_timeout_from_its_pubcomp() {
    let mut r = Rig::running();
    let out = r.sweep(&[("a", Ok(35.0))]);
    r.advance(Duration::from_secs(100));
    assert!(entry_seqs(&r.tick()).is_empty(), "not before PUBCOMP");
    r.complete(&out);
    r.advance(Duration::from_secs(10) - Duration::from_millis(1));
    assert!(entry_seqs(&r.tick()).is_empty());
    r.advance(Duration::from_millis(1));
    let esc = r.tick();
    assert!(any_line(
        &esc,
        log::Level::Error,
        "ESCALATION 1 of alert id-1"
    ));
    assert_eq!(
        published_alerts(&esc),
        vec![("a".into(), AlertLevel::Warning, 1)]
    );
    // The next one doubles the wait; an answer ends it.
    r.complete(&esc);
    r.advance(Duration::from_secs(20) - Duration::from_millis(1));
    assert!(published_alerts(&r.tick()).is_empty());
    r.answer("id-1", "desk-1");
    r.advance(Duration::from_secs(60));
    assert!(published_alerts(&r.tick()).is_empty(), "answered: no more");
}

#[test]
fn the_retained_critical_is_refreshed_at_half_its_expiry_while_critical() {
    let mut r = Rig::running();
    r.sweep(&[("b", Ok(45.0))]);
    r.answer("id-1", "desk-1");
    r.advance(Duration::from_secs(29));
    assert!(publishes(&r.tick()).is_empty());
    r.advance(Duration::from_secs(1));
    let t = r.tick();
    let ps = publishes(&t);
    assert_eq!(ps.len(), 1);
    assert!(ps[0].retain && ps[0].expiry == Some(60));
    let a: Alert = payload::decode(&ps[0].payload).expect("alert");
    assert_eq!((a.id.as_str(), a.escalation), ("id-1", 0), "the same alert");
    // Recovered: no more refreshes.
    r.sweep(&[("b", Ok(20.0))]);
    r.advance(Duration::from_secs(30));
    assert!(publishes(&r.tick()).is_empty());
}

#[test]
fn an_alert_nobody_answered_is_reported_when_forgotten() {
    let mut r = Rig::running();
    r.sweep(&[("a", Ok(35.0))]);
    r.advance(Duration::from_secs(120) - Duration::from_millis(1));
    assert!(!any_line(&r.tick(), log::Level::Warn, "never answered"));
    r.advance(Duration::from_millis(1));
    let t = r.tick();
    assert!(any_line(
        &t,
        log::Level::Warn,
        "alert id-1 was never answered by a notifier"
    ));
    // Forgotten: a late answer matches nothing.
    let late = r.answer("id-1", "desk-1");
    assert!(any_line(&late, log::Level::Warn, "matches no alert"));
}

// ---- clock, reload, certificates ---------------------------------------------

#[test]
fn an_unsynchronised_clock_is_said_once_and_marked_on_alerts() {
    let mut r = Rig::new();
    r.clock_synced = false;
    let out = r.sweep(&[("a", Ok(35.0))]);
    assert!(any_line(
        &out,
        log::Level::Warn,
        "the clock is not synchronised"
    ));
    assert!(!logged(&out)[0].clock_synced);
    assert!(lines(&r.sweep(&[("a", Ok(35.0))]), log::Level::Warn).is_empty());
    r.clock_synced = true;
    let now_ok = r.sweep(&[("a", Ok(45.0))]);
    assert!(any_line(
        &now_ok,
        log::Level::Info,
        "the clock is synchronised now"
    ));
    assert!(logged(&now_ok)[0].clock_synced);
}

#[test]
fn a_reload_applies_new_thresholds_and_keeps_each_sensors_state() {
    let mut r = Rig::running();
    assert_eq!(alerts(&r.sweep(&[("a", Ok(45.0))])).len(), 1);
    let new = config(
        r.dir.path(),
        "[[sensor]]\nid = \"a\"\nname = \"freezer\"\nwarning_above = 30.0\ncritical_above = 50.0\nhysteresis = 1.0\n[[sensor]]\nid = \"b\"\ncritical_above = 40.0\n",
    );
    let now = r.now();
    let out = r.g.reload(new, std::path::Path::new("/etc/t.toml"), now);
    assert!(alerts(&out).is_empty(), "a reload raises nothing by itself");
    assert!(any_line(
        &out,
        log::Level::Info,
        "reload: configuration reloaded from /etc/t.toml: changed a"
    ));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::ReconfigureSensors(_))));
    // 45 is below the new critical: back to WARNING.
    let after = r.sweep(&[("a", Ok(45.0))]);
    assert_eq!(alerts(&after), vec![("a".into(), AlertLevel::Warning)]);
    assert_eq!(r.g.config().sensor[0].critical_above, Some(50.0));
}

#[test]
fn a_reload_that_removes_a_critical_sensor_clears_its_retained_alert() {
    let mut r = Rig::running();
    r.sweep(&[("b", Ok(45.0))]);
    let new = config(
        r.dir.path(),
        "[[sensor]]\nid = \"a\"\nname = \"freezer\"\nwarning_above = 30.0\ncritical_above = 40.0\nhysteresis = 1.0\n",
    );
    let now = r.now();
    let out = r.g.reload(new, std::path::Path::new("t.toml"), now);
    let clears: Vec<&str> = publishes(&out)
        .iter()
        .filter(|p| p.payload.is_empty())
        .map(|p| p.topic.as_str())
        .collect();
    assert_eq!(clears, vec!["thermalert/gw1/alerts/b"]);
    // And it is no longer refreshed.
    r.advance(Duration::from_secs(30));
    assert!(publishes(&r.tick()).is_empty());
}

#[test]
fn alerts_raised_from_outside_are_stored_logged_and_published() {
    let mut r = Rig::running();
    let cert = Alert::sample("cert-1", AlertLevel::Fault);
    let now = r.now();
    let out = r.g.raise(vec![cert.clone()], now);
    assert_eq!(logged(&out), vec![cert]);
    assert_eq!(entry_seqs(&out).len(), 1);
    assert_eq!(
        r.g.last_alert(),
        None,
        "the status line shows sensor alerts"
    );
}

#[test]
fn the_status_line_follows_the_link_and_the_last_alert() {
    let mut r = Rig::running();
    assert!(r.g.connected());
    r.sweep(&[("a", Ok(35.0))]);
    assert_eq!(r.g.last_alert().map(|a| a.level), Some(AlertLevel::Warning));
    r.g.on_link_down();
    assert!(!r.g.connected());
    let out = r.sweep(&[("a", Ok(45.0))]);
    assert!(publishes(&out).is_empty(), "nothing goes out while down");
}

#[test]
fn the_timings_come_from_the_alert_expiry() {
    let r = Rig::new();
    let t = r.g.timings();
    assert_eq!(t, Timings::from_alert_expiry(60));
    assert_eq!(
        (t.tick, t.refresh, t.keep),
        (
            Duration::from_secs(1),
            Duration::from_secs(30),
            Duration::from_secs(120)
        )
    );
}
