//! Fault injection against real processes: the broker killed and restarted
//! while sensors keep crossing thresholds, the daemon SIGKILLed with alerts
//! raised while the broker was away or frozen mid-handshake, the notifier
//! restarted between an alert and its re-send, escalation of unanswered
//! alerts, the broker's ACL and certificate checks, and outboxes a previous
//! run left in a bad way (issue 16: a record at the largest seq, an entry
//! that can never be published, a read-only state directory).
//!
//! Every alert is counted by its id: the ids the daemon logged (`ALERT ...
//! id=...`) against the ids the notifier showed.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

/// Waits until the notifier showed every id; panics if an (id, escalation)
/// was shown twice. Returns how many times each id was shown.
fn assert_each_shown_once(n: &Proc, ids: &[String]) -> HashMap<String, usize> {
    for id in ids {
        n.out.wait(&format!("alert {id} at the notifier"), |l| {
            l.contains(id.as_str())
        });
    }
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for a in notifier_alerts(n) {
        let id = a["id"].as_str().unwrap_or_default().to_string();
        let esc = a["escalation"].as_u64().unwrap_or(0);
        assert!(
            seen.insert((id.clone(), esc)),
            "alert {id} escalation {esc} shown twice:\n{}",
            n.out.snapshot().join("\n")
        );
        *per_id.entry(id).or_default() += 1;
    }
    per_id
}

/// Runs `f`; if it panics, prints the daemon's log first.
fn dump_on_panic<T>(d: &Proc, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("daemon log:\n{}", d.err.snapshot().join("\n"));
            std::panic::resume_unwind(e)
        }
    }
}

fn looping_sensor(period: f64) -> String {
    let q = period / 4.0;
    freezer(
        HOT,
        &format!(
            "[[0.0, 20.0], [{q}, 35.0], [{}, 45.0], [{}, 20.0]]",
            2.0 * q,
            3.0 * q
        ),
    ) + &format!("loop_secs = {period}\n")
}

fn hot_once() -> String {
    freezer(HOT, "[[0.0, 20.0], [0.3, 45.0]]")
}

// Broker restarts -------------------------------------------------------------

#[test]
fn broker_killed_and_restarted_10_times_every_alert_arrives_exactly_once() {
    let started = Instant::now();
    let t = tmp();
    // The broker saves its sessions on every change, so that a SIGKILL does
    // not cost the notifier its subscription (see README, "Nothing lost").
    let mut broker = Broker::start_with(
        &t.path().join("b"),
        BrokerOpts {
            extra: &["autosave_on_changes true", "autosave_interval 1"],
            ..Default::default()
        },
    );
    let n = notifier(&broker, "n-restarts", &[]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    // What the broker took but lost in a SIGKILL before delivering is
    // re-published by escalation: the end-to-end guarantee.
    cfg.top_extra = "ack_timeout_secs = 3\n".into();
    cfg.sensors = looping_sensor(1.6);
    let d = daemon_env(&cfg.write(t.path()), &[("THERMALERT_LOG", "debug")]);
    for i in 1..=10 {
        d.err.wait_n("connected", i, WAIT, |l| {
            l.contains("connected to the broker")
        });
        let k = d.err.count(is_alert_line);
        d.err
            .wait_n("an alert while connected", k + 1, WAIT, is_alert_line);
        broker.kill();
        d.err.wait_n("connection lost", i, WAIT, |l| {
            l.contains("connection to the broker lost")
        });
        let k = d.err.count(is_alert_line);
        d.err.wait_n(
            "an alert while the broker is down",
            k + 1,
            WAIT,
            is_alert_line,
        );
        broker.restart();
    }
    d.err.wait_n("connected", 11, WAIT, |l| {
        l.contains("connected to the broker")
    });
    let raised = raised_ids(&d);
    let per_id = dump_on_panic(&d, || assert_each_shown_once(&n, &raised));
    let all: HashSet<String> = raised_ids(&d).into_iter().collect();
    for id in per_id.keys() {
        assert!(
            all.contains(id),
            "the notifier showed an alert never raised: {id}"
        );
    }
    // One journal line per change of state, not one per retry.
    let state_lines = d.err.count(|l| {
        l.contains("connection to the broker lost") || l.contains("cannot connect to the broker")
    });
    assert_eq!(
        d.err.count(|l| l.contains("connection to the broker lost")),
        10
    );
    assert!(
        state_lines <= 20,
        "{state_lines} connection lines for 10 outages"
    );
    // Retries happened, but only at debug level.
    assert!(
        d.err
            .count(|l| l.contains("DEBUG") && l.contains("still cannot connect"))
            > 0
    );
    assert_eq!(
        d.err
            .count(|l| !l.contains("DEBUG") && l.contains("still cannot connect")),
        0
    );
    let escalations = d.err.count(|l| l.contains("ESCALATION"));
    eprintln!(
        "broker restarts survived: 10; alerts raised: {}; shown: {} distinct ids; escalations: {escalations}; duplicates: 0; took {:.1}s",
        raised.len(),
        per_id.len(),
        started.elapsed().as_secs_f64()
    );
}

// Daemon crashes --------------------------------------------------------------

#[test]
fn alerts_raised_while_the_broker_is_away_survive_a_sigkill_with_reduced_expiry() {
    let t = tmp();
    let mut broker = Broker::start(&t.path().join("b"));
    broker.kill();
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.mqtt_extra = "alert_expiry_secs = 120\n".into();
    cfg.sensors = hot_once();
    let conf = cfg.write(t.path());
    let d = daemon(&conf);
    d.err.wait_contains("cannot connect to the broker");
    d.err.wait("the alert", is_alert_line);
    let first = raised_ids(&d);
    assert_eq!(first.len(), 1);
    drop(d); // SIGKILL
             // The time under test: the alert waits 2 s in the outbox.
    std::thread::sleep(Duration::from_millis(2200));
    broker.restart();
    let obs = broker.observe(&["thermalert/gw1/alerts/+", "test/sync/#"]);
    let n = notifier(&broker, "n-outbox", &[]);
    let d2 = daemon(&conf);
    d2.err.wait_contains("from a previous run to deliver");
    d2.err
        .wait_contains(&format!("alert {} answered by n-outbox", first[0]));
    let mut ids = first.clone();
    d2.err.wait("the second run's alert", is_alert_line);
    ids.extend(raised_ids(&d2));
    let per_id = assert_each_shown_once(&n, &ids);
    assert_eq!(per_id.len(), 2, "{per_id:?}");
    broker.sync(&obs, "expiry");
    let s = seen(&obs)
        .into_iter()
        .find(|s| s.correlation == first[0])
        .expect("the re-sent alert on the wire");
    assert!(
        s.expiry.is_some_and(|e| e <= 118),
        "expiry reduced by the time waited: {s:?}"
    );
}

#[test]
fn an_alert_whose_expiry_passed_in_the_outbox_is_dropped_and_logged() {
    let t = tmp();
    let mut broker = Broker::start(&t.path().join("b"));
    broker.kill();
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.mqtt_extra = "alert_expiry_secs = 1\n".into();
    cfg.sensors = hot_once();
    let conf = cfg.write(t.path());
    let d = daemon(&conf);
    d.err.wait("the alert", is_alert_line);
    let id = raised_ids(&d).remove(0);
    drop(d);
    // The time under test: longer than the alert's expiry.
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart();
    let obs = broker.observe(&["thermalert/gw1/alerts/+", "test/sync/#"]);
    // The second run's sensor stays normal: only the old alert could show up.
    cfg.sensors = freezer(HOT, "[[0.0, 20.0]]");
    let conf = cfg.write(t.path());
    let d2 = daemon(&conf);
    let line = d2
        .err
        .wait_contains("before the broker could take it; dropped");
    assert!(line.contains(&id), "{line}");
    d2.err.wait_contains("connected to the broker");
    broker.sync(&obs, "dropped");
    assert!(
        seen(&obs).iter().all(|s| s.correlation != id),
        "a stale alert was sent"
    );
    // Dropped means gone from the outbox too.
    drop(d2);
    let d3 = daemon(&conf);
    d3.err.wait_contains("connected to the broker");
    assert_eq!(d3.err.count(|l| l.contains("from a previous run")), 0);
}

#[test]
fn alerts_in_flight_when_the_daemon_is_sigkilled_arrive_once_after_restart() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let n = notifier(&broker, "n-inflight", &[]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.sensors = freezer(HOT, "[[0.0, 20.0], [0.8, 45.0]]");
    let conf = cfg.write(t.path());
    let d = daemon(&conf);
    d.err.wait_contains("connected to the broker");
    // Freeze the broker: the PUBLISH goes out, no PUBREC comes back.
    broker.proc.as_ref().expect("broker").signal("STOP");
    d.err.wait("the alert", is_alert_line);
    let mut ids = raised_ids(&d);
    drop(d); // SIGKILL, the handshake unfinished
    broker.proc.as_ref().expect("broker").signal("CONT");
    let d2 = daemon(&conf);
    d2.err.wait_contains("from a previous run to deliver");
    d2.err
        .wait_contains(&format!("alert {} answered by n-inflight", ids[0]));
    d2.err.wait("the second run's alert", is_alert_line);
    ids.extend(raised_ids(&d2));
    let per_id = assert_each_shown_once(&n, &ids);
    assert_eq!(per_id.len(), 2, "{per_id:?}");
    assert!(per_id.values().all(|c| *c == 1), "{per_id:?}");
}

#[test]
fn a_resent_alert_is_not_shown_again_by_a_restarted_notifier_but_answered() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let n = notifier(&broker, "n-dedup", &[]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.sensors = hot_once();
    let conf = cfg.write(t.path());
    let d = daemon(&conf);
    d.err.wait("the alert", is_alert_line);
    let id = raised_ids(&d).remove(0);
    d.err
        .wait_contains(&format!("alert {id} answered by n-dedup"));
    n.out.wait_contains(&id);
    drop(d);
    let shown = notifier_alerts(&n);
    assert_eq!(shown.len(), 1);
    drop(n); // the notifier crashes too
             // The daemon died between the broker releasing the alert and PUBCOMP
             // (the window the proxy tests cut into): its outbox still holds it.
    let mut alert = shown[0].clone();
    if let Some(o) = alert.as_object_mut() {
        o.remove("type");
        o.remove("retained");
    }
    let alert: thermalert::mqtt::payload::Alert =
        serde_json::from_value(alert).expect("the notifier printed an alert");
    let at_ms = thermalert::outbox::unix_ms(SystemTime::now());
    let rec = thermalert::outbox::encode(&thermalert::outbox::Record::Add {
        seq: 0,
        at_ms,
        item: thermalert::outbox::Item::Alert { alert },
    })
    .expect("encode");
    let state = t.path().join("state-gw1");
    std::fs::write(state.join(thermalert::outbox::FILE_NAME), rec).expect("write outbox");
    // Second run: the sensor stays normal, only the re-sent alert flows.
    cfg.sensors = freezer(HOT, "[[0.0, 20.0]]");
    let conf = cfg.write(t.path());
    let n2 = notifier(&broker, "n-dedup", &[]);
    let d2 = daemon(&conf);
    d2.err.wait_contains("from a previous run to deliver");
    d2.err
        .wait_contains(&format!("alert {id} answered by n-dedup"));
    assert_eq!(
        notifier_alerts(&n2).len(),
        0,
        "shown again after the notifier's restart: {:?}",
        n2.out.snapshot()
    );
}

/// A WARNING alert of gateway gw1, as a previous run left it in the outbox.
fn stored_alert(id: &str, sensor: &str) -> thermalert::mqtt::payload::Alert {
    thermalert::mqtt::payload::Alert {
        id: id.into(),
        gateway: "gw1".into(),
        sensor: sensor.into(),
        name: "freezer".into(),
        level: thermalert::core::alert::AlertLevel::Warning,
        celsius: Some(35.0),
        threshold: Some(30.0),
        previous: None,
        ts: "2026-01-01T00:00:00.000Z".into(),
        message: "WARNING at 35.00 C".into(),
        escalation: 0,
        clock_synced: true,
    }
}

/// Writes gw1's outbox log in `state` with `alerts` pending, by seq.
fn write_outbox(state: &std::path::Path, alerts: Vec<(u64, thermalert::mqtt::payload::Alert)>) {
    use thermalert::outbox::{encode, Item, Record, FILE_NAME};
    let at_ms = thermalert::outbox::unix_ms(SystemTime::now());
    let mut log = Vec::new();
    for (seq, alert) in alerts {
        let rec = Record::Add {
            seq,
            at_ms,
            item: Item::Alert { alert },
        };
        log.extend(encode(&rec).expect("encode"));
    }
    std::fs::create_dir_all(state).expect("state dir");
    std::fs::write(state.join(FILE_NAME), log).expect("write outbox");
}

/// Issue 16: a record with a valid CRC and seq u64::MAX made every start
/// panic (`seq + 1`), a restart loop while the alert waited.
#[test]
fn an_outbox_record_at_the_largest_seq_is_delivered_and_new_alerts_follow() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let n = notifier(&broker, "n-maxseq", &[]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.sensors = hot_once();
    let conf = cfg.write(t.path());
    write_outbox(
        &t.path().join("state-gw1"),
        vec![(u64::MAX, stored_alert("maxseq-1", "28-1"))],
    );
    let d = daemon(&conf);
    dump_on_panic(&d, || {
        d.err.wait_contains("alert maxseq-1 answered by n-maxseq");
        d.err.wait("the new alert", is_alert_line);
        let id = raised_ids(&d).remove(0);
        d.err
            .wait_contains(&format!("alert {id} answered by n-maxseq"));
    });
    n.out.wait_contains("maxseq-1");
}

/// Issue 16: with the state directory read-only at start, the daemon read
/// its queued alerts, failed to rewrite the log, and dropped all of them.
/// The directory is a tmpfs remounted read-only (root ignores permission
/// bits); skipped where mounting is not allowed.
#[test]
fn queued_alerts_in_a_read_only_state_dir_are_all_delivered() {
    let t = tmp();
    let state = t.path().join("state-gw1");
    std::fs::create_dir_all(&state).expect("state dir");
    let mount = |args: &[&str]| {
        std::process::Command::new("mount")
            .args(args)
            .arg(&state)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !mount(&["-t", "tmpfs", "-o", "size=1m", "tmpfs"]) {
        eprintln!("cannot mount a tmpfs here: test skipped");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.clone());
    let ids: Vec<String> = (0..6).map(|i| format!("ro-{i}")).collect();
    write_outbox(
        &state,
        (0u64..)
            .zip(&ids)
            .map(|(seq, id)| (seq, stored_alert(id, "28-1")))
            .collect(),
    );
    assert!(mount(&["-o", "remount,ro"]), "remount read-only");
    let broker = Broker::start(&t.path().join("b"));
    let n = notifier(&broker, "n-ro", &[]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.sensors = freezer(HOT, "[[0.0, 20.0]]");
    let conf = cfg.write(t.path());
    let d = daemon(&conf);
    dump_on_panic(&d, || {
        for id in &ids {
            d.err.wait_contains(&format!("alert {id} answered by n-ro"));
        }
        d.err.wait("the error line", |l| {
            l.contains("ERROR") && l.contains("cannot rewrite") && l.contains("6 pending")
        });
    });
    for id in &ids {
        n.out.wait_contains(id);
    }
    drop(d);
    assert!(!state.join("outbox.log.tmp").exists());
}

/// Issue 16: an entry the client refuses every time (its topic is invalid)
/// went back to the head of the outbox forever, and nothing behind it was
/// ever sent.
#[test]
fn an_entry_that_can_never_be_published_is_dropped_and_the_ones_behind_it_go_out() {
    use thermalert::outbox::FILE_NAME;
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let n = notifier(&broker, "n-poison", &[]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.sensors = freezer(HOT, "[[0.0, 20.0]]");
    let conf = cfg.write(t.path());
    let state = t.path().join("state-gw1");
    write_outbox(
        &state,
        vec![
            (0, stored_alert("poison-1", "bad/+")),
            (1, stored_alert("good-1", "28-1")),
        ],
    );
    let d = daemon(&conf);
    dump_on_panic(&d, || {
        d.err.wait_contains("alert good-1 answered by n-poison");
        d.err.wait("the poison entry dropped", |l| {
            l.contains("ERROR") && l.contains("poison-1") && l.contains("dropped")
        });
    });
    n.out.wait_contains("good-1");
    drop(d);
    // Forgotten in the outbox too: not tried again at the next start.
    let left = std::fs::read(state.join(FILE_NAME)).expect("read outbox");
    let pending = thermalert::outbox::replay(thermalert::outbox::decode_all(&left).records);
    assert!(pending.is_empty(), "{pending:?}");
}

// Escalation --------------------------------------------------------------------

#[test]
fn an_unanswered_alert_is_escalated_and_shown_again_with_its_counter() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/alerts/+"]);
    // The notifier has a session but is away: nobody answers.
    let mut n = notifier(&broker, "n-esc", &[]);
    n.signal("TERM");
    n.wait_exit(WAIT);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.top_extra = "ack_timeout_secs = 1\n".into();
    cfg.sensors = hot_once();
    let d = daemon(&cfg.write(t.path()));
    d.err.wait("the alert", is_alert_line);
    let id = raised_ids(&d).remove(0);
    let line = d.err.wait_contains("ESCALATION 1 of alert");
    assert!(line.contains(&id) && line.contains("ERROR"), "{line}");
    obs.out.wait("the escalated copy on the wire", |l| {
        l.contains(&id) && l.contains("\"escalation\":1")
    });
    // Back: the notifier shows the alert and its escalation, and answers.
    let n = notifier(&broker, "n-esc", &[]);
    n.out.wait("escalation 1 shown", |l| {
        l.contains(&id) && l.contains("\"escalation\":1")
    });
    d.err
        .wait_contains(&format!("alert {id} answered by n-esc"));
    let shown: Vec<u64> = notifier_alerts(&n)
        .iter()
        .filter(|a| a["id"] == id.as_str())
        .filter_map(|a| a["escalation"].as_u64())
        .collect();
    let mut sorted = shown.clone();
    sorted.dedup();
    assert_eq!(
        shown, sorted,
        "each escalation shown once, in order: {shown:?}"
    );
}

// Security ----------------------------------------------------------------------

#[test]
fn a_gateway_cannot_publish_another_gateways_topics_or_read_its_acks() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw2/#", "test/sync/#"]);
    // gw1 publishes on gw2's alert topic: the broker drops it.
    broker.publish("gw1", "thermalert/gw2/alerts/x", b"{\"forged\":1}", &[]);
    broker.publish("gw2", "thermalert/gw2/alerts/x", b"{\"genuine\":1}", &[]);
    broker.sync(&obs, "acl-write");
    let got: Vec<String> = seen(&obs).into_iter().map(|s| s.payload).collect();
    assert!(got.iter().any(|p| p.contains("genuine")), "{got:?}");
    assert!(!got.iter().any(|p| p.contains("forged")), "{got:?}");
    // gw1 subscribes to gw2's acks and its own; only its own arrive.
    let spy = broker.observe_as("gw1", &["thermalert/gw2/acks", "thermalert/gw1/acks"]);
    broker.publish("notifier", "thermalert/gw2/acks", b"{\"for\":\"gw2\"}", &[]);
    broker.publish("notifier", "thermalert/gw1/acks", b"{\"for\":\"gw1\"}", &[]);
    spy.out
        .wait("gw1's own ack", |l| l.contains("\"for\":\"gw1\""));
    assert_eq!(spy.out.count(|l| l.contains("\"for\":\"gw2\"")), 0);
}

#[test]
fn an_expired_broker_certificate_is_refused() {
    let t = tmp();
    let pki = Pki::new(
        &t.path().join("pki"),
        "thermalert test CA",
        &["localhost", "127.0.0.1"],
        &["--expired"],
    );
    let broker = Broker::start_with(
        &t.path().join("b"),
        BrokerOpts {
            pki: Some(pki),
            ..Default::default()
        },
    );
    let mut d = daemon(&GwConfig::new(&broker, "gw1").write(t.path()));
    let line = d.err.wait_contains("cannot connect to the broker");
    assert!(line.contains("expired or not yet valid"), "{line}");
    assert!(d.is_running());
    assert_eq!(broker.log().count(|l| l.contains("as thermalertd-gw1")), 0);
}
