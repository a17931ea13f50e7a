//! A fleet on loopback: a "Pi" Mosquitto bridged (with the shipped
//! `mosquitto/bridge.conf.example`) to a "central" Mosquitto, both with the
//! project's configuration; a daemon on the Pi; two notifiers on the
//! central broker in one shared-subscription group; an uplink cut (a TCP
//! relay between the two brokers drops every connection and refuses new
//! ones, then lets them through again) while alerts keep coming. Every
//! alert is shown by exactly one notifier and answered exactly once, and
//! every answer reaches the gateway.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The uplink: a TCP relay from a loopback port to the central broker.
struct Uplink {
    port: u16,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Uplink {
    fn to(target: u16) -> Uplink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (d, c) = (down.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: the link is down
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut list = c.lock().expect("lock");
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (
                        server.try_clone().expect("clone"),
                        client.try_clone().expect("clone"),
                    ),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                list.push(client);
                list.push(server);
            }
        });
        Uplink { port, down, conns }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for s in self.conns.lock().expect("lock").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

/// The shipped bridge example, filled in for the central broker behind `uplink`.
fn bridge_lines(central: &Broker, uplink: &Uplink) -> Vec<String> {
    let src = std::fs::read_to_string(Path::new(ROOT).join("mosquitto/bridge.conf.example"))
        .expect("bridge.conf.example");
    src.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.replace("CENTRAL_HOST:8883", &format!("127.0.0.1:{}", uplink.port))
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

#[test]
fn bridged_alerts_are_shared_and_answered_exactly_once_across_an_uplink_cut() {
    let t = tempfile::tempdir().expect("tempdir");
    let central = Broker::start(&t.path().join("central"));
    let uplink = Uplink::to(central.port);
    let lines = bridge_lines(&central, &uplink);
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
    cfg.sensors = freezer(
        HOT,
        "[[0.0, 20.0], [0.6, 35.0], [1.2, 45.0], [1.8, 20.0]]\nloop_secs = 3.0",
    );
    let d = daemon_env(&cfg.write(t.path()), &[("THERMALERT_LOG", "debug")]);
    let alert_line = |l: &str| l.starts_with("MSG|thermalert/gw1/alerts/") && !l.ends_with('|');
    let resolved = |l: &str| alert_line(l) && l.contains("\"level\":\"RESOLVED\"");
    let ids = |local: &Proc| -> Vec<String> {
        seen(local)
            .into_iter()
            .filter(|s| !s.payload.is_empty())
            .map(|s| s.correlation)
            .collect()
    };
    let answered = |id: &str| {
        d.err
            .wait_contains(&format!("alert {id} answered by central-"));
    };

    // Cut the uplink in a quiet moment: right after a RESOLVED was answered
    // (the next alert is 1.2 s away), so that no QoS 2 exchange is in
    // flight at the cut and no retained CRITICAL is re-sent when the
    // bridge reconnects (see "Fleets" in the README for why both matter
    // with Mosquitto's MQTT v5 bridge).
    let r = local.out.wait_n("a RESOLVED", 1, WAIT, resolved);
    let last = parse_seen(&r[0]).expect("seen").correlation;
    answered(&last);
    for id in ids(&local) {
        answered(&id);
    }
    let before = local.out.count(resolved);
    uplink.cut();
    central
        .log()
        .wait_contains("Client thermalert-bridge-gw1 closed its connection");
    // The Pi keeps raising alerts: a whole WARNING, CRITICAL, RESOLVED
    // cycle is queued while the uplink is down.
    local
        .out
        .wait_n("a cycle during the cut", before + 1, WAIT, resolved);
    let during: Vec<String> = ids(&local);
    uplink.restore();
    // And a cycle after it.
    let after = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        local
            .out
            .wait_n("a cycle after the cut", before + 2, WAIT, resolved)
    }));
    if let Err(e) = after {
        // Seen once under CI load: say what the daemon and the Pi's broker
        // were doing.
        eprintln!(
            "daemon log:\n{}\n\nthe Pi's broker log:\n{}",
            d.err.snapshot().join("\n"),
            pi.log().snapshot().join("\n")
        );
        std::panic::resume_unwind(e);
    }
    let all = ids(&local);
    assert!(all.len() >= 9, "{all:?}");
    assert!(during.len() > 3, "alerts were raised during the cut");
    // Every answer came back through the bridge to the gateway.
    for id in &all {
        answered(id);
    }
    let ids = all;
    // The harness reads the notifiers' pipes on threads of its own: wait
    // until every answered alert's line has been read.
    for id in &ids {
        let needle = format!("\"id\":\"{id}\"");
        wait_either(&n1.out, &n2.out, &needle, |l| l.contains(&needle));
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

fn alert_json(id: &str) -> String {
    format!(
        "{{\"id\":\"{id}\",\"gateway\":\"gw1\",\"sensor\":\"s1\",\"name\":\"freezer\",\"level\":\"CRITICAL\",\"celsius\":45.0,\"threshold\":40.0,\"ts\":\"2026-01-01T00:00:00.000Z\",\"message\":\"m\"}}"
    )
}

#[test]
fn share_group_members_skip_alerts_another_member_answered() {
    let t = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/acks"]);
    let n1 = notifier(
        &broker,
        "member-1",
        &["--share-group", "ops", "--no-desktop"],
    );
    let n2 = notifier(
        &broker,
        "member-2",
        &["--share-group", "ops", "--no-desktop"],
    );
    let publish_alert = |id: &str| broker.publish_alert("gw1", "s1", alert_json(id).as_bytes(), id);
    // Someone else in the group already answered "old" (e.g. before a
    // bridge re-sent it): its copy is not shown again.
    broker.publish(
        "observer",
        "thermalert/gw1/acks",
        b"{\"alert_id\":\"old\",\"status\":\"delivered\",\"by\":\"member-0\",\"ts\":\"t\"}",
        &[],
    );
    obs.out
        .wait("the other member's answer", |l| l.contains("member-0"));
    publish_alert("old");
    publish_alert("new");
    // "new" is shown and answered by exactly one member; "old" was
    // published before it, so by now both members have passed over it.
    obs.out
        .wait("answer to new", |l| l.contains("\"alert_id\":\"new\""));
    // The answer goes out after the line is written, but the harness reads
    // the notifiers' pipes on threads of its own: wait for the line too.
    wait_either(&n1.out, &n2.out, "alert new shown", |l| {
        l.contains("\"id\":\"new\"")
    });
    let shown: Vec<serde_json::Value> = notifier_alerts(&n1)
        .into_iter()
        .chain(notifier_alerts(&n2))
        .collect();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["id"], "new");
    assert_eq!(
        obs.out.count(|l| l.contains("\"alert_id\":\"old\"")),
        1,
        "only member-0 answered old"
    );
    assert_eq!(
        n1.err.count(|l| l.contains("alert old already answered")),
        1
    );
}
