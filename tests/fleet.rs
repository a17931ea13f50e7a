//! A fleet on loopback: a "Pi" Mosquitto bridged (with the shipped
//! `mosquitto/bridge.conf.example`) to a "central" Mosquitto, both with the
//! project's configuration; a daemon on the Pi; two notifiers on the
//! central broker in one shared-subscription group; an uplink cut (the
//! central broker stopped and started again) while alerts keep coming.
//! Every alert is shown by exactly one notifier and answered exactly once,
//! and every answer reaches the gateway.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// The shipped bridge example, filled in for the central broker.
fn bridge_lines(central: &Broker) -> Vec<String> {
    let src = std::fs::read_to_string(Path::new(ROOT).join("mosquitto/bridge.conf.example"))
        .expect("bridge.conf.example");
    src.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.replace("CENTRAL_HOST:8883", &format!("127.0.0.1:{}", central.port))
                .replace(
                    "/etc/mosquitto/certs/central-ca.crt",
                    &central.pki.ca().display().to_string(),
                )
                .replace("CHANGE_ME", "gw1-secret")
                .replace("GATEWAY", "gw1")
                // Reconnect quickly in a test.
                .replace("restart_timeout 2 30", "restart_timeout 1 2")
        })
        .collect()
}

/// Stops the broker cleanly (it saves its sessions) and starts it again.
fn cut_uplink(central: &mut Broker) {
    let p = central.proc.as_mut().expect("running");
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
    central.proc = None;
}

#[test]
fn bridged_alerts_are_shared_and_answered_exactly_once_across_an_uplink_cut() {
    let t = tempfile::tempdir().expect("tempdir");
    let mut central = Broker::start(&t.path().join("central"));
    let lines = bridge_lines(&central);
    let extra: Vec<&str> = lines.iter().map(String::as_str).collect();
    let pi = Broker::start_with(
        &t.path().join("pi"),
        BrokerOpts {
            extra: &extra,
            ..Default::default()
        },
    );
    central.log().wait_contains("as thermalert-bridge-gw1 (p5");
    let local = pi.observe(&["thermalert/gw1/alerts/+"]);
    let n1 = notifier(
        &central,
        "central-1",
        &["--share-group", "ops", "--no-desktop"],
    );
    let n2 = notifier(
        &central,
        "central-2",
        &["--share-group", "ops", "--no-desktop"],
    );

    // A sensor that keeps changing level: WARNING, CRITICAL, RESOLVED every 3 s.
    let mut cfg = GwConfig::new(&pi, "gw1");
    cfg.sensors = sensor(
        "28-000000000001",
        "freezer",
        "warning_above = 30.0\ncritical_above = 40.0\n",
        "[[0.0, 20.0], [0.6, 35.0], [1.2, 45.0], [1.8, 20.0]]\nloop_secs = 3.0",
    );
    let d = daemon_env(&cfg.write(t.path()), &[("THERMALERT_LOG", "debug")]);
    let alert_line = |l: &str| l.starts_with("MSG|thermalert/gw1/alerts/") && !l.ends_with('|');
    local
        .out
        .wait_n("alerts before the cut", 4, WAIT, alert_line);
    d.err.wait_n("answers before the cut", 2, WAIT, |l| {
        l.contains(" answered by central-")
    });

    // The uplink goes down; the Pi keeps raising alerts meanwhile.
    cut_uplink(&mut central);
    let before = local.out.count(alert_line);
    local
        .out
        .wait_n("alerts during the cut", before + 3, WAIT, alert_line);
    central.restart();
    let after = local.out.count(alert_line) + 3;
    local
        .out
        .wait_n("alerts after the cut", after, WAIT, alert_line);

    // Every alert the Pi published so far (ids), answered on the central side.
    let ids: BTreeSet<String> = seen(&local)
        .into_iter()
        .filter(|s| !s.payload.is_empty())
        .map(|s| s.correlation)
        .take(after)
        .collect();
    assert!(ids.len() >= 10, "{ids:?}");
    for id in &ids {
        // The answer came back through the bridge to the gateway.
        d.err
            .wait_contains(&format!("alert {id} answered by central-"));
    }
    // Who showed (and so answered) each alert: exactly one of the two.
    let shown = |n: &Proc| -> Vec<String> {
        notifier_alerts(n)
            .iter()
            .filter_map(|a| a["id"].as_str().map(String::from))
            .collect()
    };
    let (s1, s2) = (shown(&n1), shown(&n2));
    let mut by_id: BTreeMap<&str, usize> = BTreeMap::new();
    for id in s1.iter().chain(&s2) {
        *by_id.entry(id.as_str()).or_default() += 1;
    }
    for id in &ids {
        assert_eq!(
            by_id.get(id.as_str()),
            Some(&1),
            "alert {id} shown once: {s1:?} {s2:?}"
        );
    }
    assert!(
        !s1.is_empty() && !s2.is_empty(),
        "both notifiers share the work: {s1:?} {s2:?}"
    );
    assert_eq!(
        d.err.count(|l| l.contains("answered again")),
        0,
        "no alert answered twice: {:?}",
        d.err.snapshot()
    );
}
