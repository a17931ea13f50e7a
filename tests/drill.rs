//! `thermalertd drill` against a real broker, a running daemon and a real
//! notifier: the TEST alert travels like a real one and is answered.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn drill(config: &std::path::Path, args: &[&str]) -> Proc {
    let mut cmd = Command::new(DAEMON);
    cmd.arg("--config").arg(config).arg("drill").args(args);
    Proc::spawn("thermalertd drill", cmd)
}

#[test]
fn drill_is_answered_by_the_notifier_and_leaves_the_daemon_connected() {
    let t = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/alerts/#"]);
    let cfg = GwConfig::new(&broker, "gw1").write(t.path());
    let d = daemon(&cfg);
    d.err.wait_contains("connected to the broker");
    let n = notifier(&broker, "notifier-a", &[]);
    let mut dr = drill(&cfg, &["--timeout", "20", "--expect", "1"]);
    assert_eq!(dr.wait_exit(Duration::from_secs(30)), Some(0));
    let answered = dr
        .out
        .wait_contains("drill: answered by notifier-a (delivered) after ");
    assert!(answered.ends_with(" ms"), "{answered}");
    dr.out.wait_contains("drill: OK, 1 notifier(s) answered");

    // It travelled exactly as a real alert: QoS 2, expiry, ResponseTopic,
    // CorrelationData = id, JSON, not retained.
    let l = obs.out.wait("the TEST alert", |l| l.contains("\"TEST\""));
    let s = parse_seen(&l).expect("seen");
    assert_eq!(s.topic, "thermalert/gw1/alerts/drill");
    assert_eq!((s.qos, s.retain), (2, false));
    assert!(s.expiry.is_some_and(|e| e > 0 && e <= 20), "{s:?}");
    assert_eq!(s.response_topic, "thermalert/gw1/acks");
    let alert = json(&s.payload);
    assert_eq!(s.correlation, alert["id"].as_str().unwrap_or_default());
    assert_eq!(s.content_type, "application/json");

    // The notifier showed it as a TEST (its pipe is read on a thread of
    // its own: wait for the line).
    n.out.wait_contains("\"level\":\"TEST\"");
    let shown = notifier_alerts(&n);
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["level"], "TEST");
    // Its own client id: the daemon's session was not taken over.
    broker.log().wait_contains("as thermalertd-gw1-drill");
    d.err.wait_contains("answered a fire drill");
    assert_eq!(
        d.err.count(|l| l.contains("connection to the broker lost")),
        0,
        "{:?}",
        d.err.snapshot()
    );
}

#[test]
fn drill_without_a_notifier_fails() {
    let t = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&t.path().join("b"));
    let cfg = GwConfig::new(&broker, "gw1").write(t.path());
    let mut dr = drill(&cfg, &["--timeout", "1"]);
    assert_eq!(dr.wait_exit(Duration::from_secs(20)), Some(1));
    dr.out
        .wait_contains("drill: FAILED: nobody answered the TEST alert within 1s");
    // It did publish (so the failure means "nobody answered").
    dr.out.wait_contains("drill: TEST alert drill-");
}

#[test]
fn drill_without_a_broker_says_so() {
    let t = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(&t.path().join("b"));
    let mut gw = GwConfig::new(&broker, "gw1");
    gw.mqtt_extra = "connect_timeout_secs = 1\n".into();
    let cfg = gw.write(t.path());
    broker.kill();
    let mut dr = drill(&cfg, &["--timeout", "1"]);
    assert_eq!(dr.wait_exit(Duration::from_secs(20)), Some(69));
    dr.out
        .wait_contains("drill: FAILED: cannot reach the broker");
}
