//! The nine MQTT features of the contract, each proven against a real
//! Mosquitto started by the test, observed from outside by `mosquitto_sub`
//! (an independent client) and the broker's own log.

mod common;

use common::*;
use std::time::Duration;

// 1. TLS ---------------------------------------------------------------------

#[test]
fn f1_tls_broker_certificate_from_another_ca_is_refused() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let other = Pki::new(
        &t.path().join("other-ca"),
        "some other CA",
        &["localhost"],
        &[],
    );
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.ca_file = other.ca();
    let mut d = daemon(&cfg.write(t.path()));
    let line = d.err.wait_contains("cannot connect to the broker");
    assert!(line.contains("not signed by the CA in ca_file"), "{line}");
    assert!(
        d.is_running(),
        "the daemon keeps retrying instead of exiting"
    );
    assert_eq!(
        broker.log().count(|l| l.contains("as thermalertd-gw1")),
        0,
        "no MQTT session was opened"
    );
}

#[test]
fn f1_tls_broker_certificate_for_another_host_is_refused() {
    let t = tmp();
    let pki = Pki::new(
        &t.path().join("pki"),
        "thermalert test CA",
        &["otherhost.example"],
        &[],
    );
    let broker = Broker::start_with(
        &t.path().join("b"),
        BrokerOpts {
            pki: Some(pki),
            ..Default::default()
        },
    );
    let cfg = GwConfig::new(&broker, "gw1");
    let d = daemon(&cfg.write(t.path()));
    let line = d.err.wait_contains("cannot connect to the broker");
    assert!(line.contains("not valid for this host name"), "{line}");
    assert_eq!(broker.log().count(|l| l.contains("as thermalertd-gw1")), 0);
}

#[test]
fn f1_tls_plaintext_listener_is_refused() {
    let t = tmp();
    let broker = Broker::start_with(
        &t.path().join("b"),
        BrokerOpts {
            plaintext: true,
            ..Default::default()
        },
    );
    let cfg = GwConfig::new(&broker, "gw1");
    let d = daemon(&cfg.write(t.path()));
    let line = d.err.wait_contains("cannot connect to the broker");
    assert!(line.contains("TLS"), "{line}");
    assert_eq!(
        broker.log().count(|l| l.contains("as thermalertd-gw1")),
        0,
        "no plaintext session"
    );
}

#[test]
fn f1_tls_connects_with_the_right_ca() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/status"]);
    let _d = daemon(&GwConfig::new(&broker, "gw1").write(t.path()));
    obs.out
        .wait("online status", |l| l.contains("\"state\":\"online\""));
    // The broker saw a TLS client (the listener is TLS-only).
    broker.log().wait_contains("as thermalertd-gw1 (p5");
}

#[test]
fn f1_tls_client_certificates_when_the_broker_requires_them() {
    let t = tmp();
    let pki = Pki::new(
        &t.path().join("pki"),
        "thermalert test CA",
        &["localhost"],
        &["--client", "gw1", "--client", "observer"],
    );
    let (cert, key) = (pki.dir.join("gw1.crt"), pki.dir.join("gw1.key"));
    let broker = Broker::start_with(
        &t.path().join("b"),
        BrokerOpts {
            pki: Some(pki),
            extra: &["require_certificate true"],
            ..Default::default()
        },
    );
    let obs = broker.observe(&["thermalert/+/status"]);
    // Without a client certificate: refused at the TLS handshake.
    let plain = daemon(&GwConfig::new(&broker, "gw2").write(&t.path().join("plain")));
    plain.err.wait_contains("cannot connect to the broker");
    // With one: connected.
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.mqtt_extra = format!(
        "client_cert = \"{}\"\nclient_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let _d = daemon(&cfg.write(t.path()));
    obs.out.wait("gw1 online", |l| {
        l.contains("thermalert/gw1/status") && l.contains("\"online\"")
    });
    assert_eq!(obs.out.count(|l| l.contains("thermalert/gw2/status")), 0);
}

// 2. Username/password ---------------------------------------------------------

fn retry_delays(lines: &[String]) -> Vec<f64> {
    lines
        .iter()
        .filter_map(|l| {
            let i = l.find("retrying in ")?;
            l[i + 12..].trim_end_matches('s').parse().ok()
        })
        .collect()
}

#[test]
fn f2_wrong_password_is_refused_and_retried_with_backoff() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let mut cfg = GwConfig::new(&broker, "gw1");
    let wrong = t.path().join("wrong.pass");
    common::write_secret(&wrong, "not-the-password\n");
    cfg.password_file = Some(wrong);
    let mut d = daemon_env(&cfg.write(t.path()), &[("THERMALERT_LOG", "debug")]);
    let lines = d
        .err
        .wait_n("retries", 4, WAIT, |l| l.contains("retrying in "));
    assert!(
        lines[0].contains("refused the username or password"),
        "{}",
        lines[0]
    );
    // One error line for the state change; further retries only at debug.
    assert_eq!(
        d.err
            .count(|l| l.contains("ERROR") && l.contains("cannot connect")),
        1
    );
    let delays = retry_delays(&lines);
    assert_eq!(delays.len(), 4);
    for w in delays.windows(2) {
        assert!(w[1] > w[0], "backoff grows: {delays:?}");
    }
    assert!(
        d.is_running(),
        "a refused login must not make the daemon exit"
    );
}

#[test]
fn f2_password_from_the_systemd_credential_wins_over_the_file() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/status"]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    let wrong = t.path().join("wrong.pass");
    std::fs::write(&wrong, "not-the-password\n").expect("write");
    cfg.password_file = Some(wrong);
    let creds = t.path().join("creds");
    std::fs::create_dir_all(&creds).expect("mkdir");
    std::fs::copy(broker.pass_file("gw1"), creds.join("mqtt-password")).expect("copy");
    let creds = creds.display().to_string();
    let _d = daemon_env(
        &cfg.write(t.path()),
        &[("CREDENTIALS_DIRECTORY", creds.as_str())],
    );
    obs.out.wait("online", |l| l.contains("\"online\""));
}

#[test]
fn f2_missing_credentials_are_refused() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.username = None;
    cfg.password_file = None;
    let mut d = daemon(&cfg.write(t.path()));
    let line = d.err.wait_contains("cannot connect to the broker");
    assert!(line.contains("refused"), "{line}");
    assert!(d.is_running());
}

// 3. QoS 2 ----------------------------------------------------------------------

#[test]
fn f3_alerts_are_qos2_and_reach_the_notifier_exactly_once() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/alerts/+", "test/sync/#"]);
    let n = notifier(&broker, "n-qos2", &[]);
    broker.log().wait_contains("thermalert/+/alerts/+ (QoS 2)");
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.sensors = (1..=3)
        .map(|i| {
            sensor(
                &format!("28-00000000000{i}"),
                &format!("s{i}"),
                HOT,
                "[[0.0, 20.0], [0.5, 35.0], [1.0, 45.0], [1.5, 20.0]]",
            )
        })
        .collect();
    let d = daemon(&cfg.write(t.path()));
    // 3 sensors x (WARNING, CRITICAL, RESOLVED), each answered.
    d.err
        .wait_n("answers", 9, WAIT, |l| l.contains("answered by n-qos2"));
    // Its pipe is read on a thread of its own: wait for the lines too.
    n.out.wait_n("9 alerts shown", 9, WAIT, |l| {
        l.contains("\"type\":\"alert\"")
    });
    let alerts = notifier_alerts(&n);
    assert_eq!(alerts.len(), 9, "{alerts:?}");
    let mut ids: Vec<&str> = alerts.iter().filter_map(|a| a["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 9, "each alert shown exactly once");
    broker.sync(&obs, "qos2");
    let on_wire: Vec<Seen> = seen(&obs)
        .into_iter()
        .filter(|s| !s.payload.is_empty() && s.topic.contains("/alerts/"))
        .collect();
    assert_eq!(on_wire.len(), 9);
    assert!(
        on_wire.iter().all(|s| s.qos == 2),
        "alerts are QoS 2: {on_wire:?}"
    );
    assert!(
        broker
            .log()
            .count(|l| l.contains("Received PUBLISH from thermalertd-gw1")
                && l.contains("q2")
                && l.contains("/alerts/"))
            >= 9
    );
}

// 4. Retained -------------------------------------------------------------------

#[test]
fn f4_late_subscriber_sees_status_and_only_current_criticals() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let live = broker.observe(&["thermalert/gw1/#"]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.sensors = sensor(
        "28-00000000000a",
        "recovers",
        HOT,
        "[[0.0, 45.0], [1.5, 20.0]]",
    ) + &sensor("28-00000000000b", "stays", HOT, "[[0.0, 45.0]]");
    let _d = daemon(&cfg.write(t.path()));
    live.out.wait("A resolved", |l| {
        l.contains("alerts/28-00000000000a|") && l.contains("RESOLVED")
    });
    live.out.wait("B critical", |l| {
        l.contains("alerts/28-00000000000b|") && l.contains("CRITICAL")
    });
    // A subscriber that connects later gets exactly what is retained.
    let late = broker.observe(&["thermalert/gw1/#", "test/sync/#"]);
    broker.sync(&late, "retained");
    let got: Vec<Seen> = seen(&late).into_iter().filter(|s| s.retain).collect();
    assert!(
        got.iter()
            .any(|s| s.topic == "thermalert/gw1/status" && s.payload.contains("\"online\"")),
        "{got:?}"
    );
    let crit: Vec<&Seen> = got
        .iter()
        .filter(|s| s.topic.contains("/alerts/"))
        .collect();
    assert_eq!(crit.len(), 1, "only the sensor still critical: {crit:?}");
    assert_eq!(crit[0].topic, "thermalert/gw1/alerts/28-00000000000b");
    assert_eq!(json(&crit[0].payload)["level"], "CRITICAL");
}

#[test]
fn f4_retained_critical_outlives_its_message_expiry() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.mqtt_extra = "alert_expiry_secs = 2\n".into();
    cfg.sensors = sensor("28-00000000000b", "stays", HOT, "[[0.0, 45.0]]");
    let d = daemon_env(&cfg.write(t.path()), &[("THERMALERT_LOG", "debug")]);
    // Three refreshes at half the expiry: well past the first publish's expiry.
    d.err.wait_n("refreshes", 3, WAIT, |l| {
        l.contains("refreshing the retained CRITICAL")
    });
    let late = broker.observe(&["thermalert/gw1/alerts/+", "test/sync/#"]);
    broker.sync(&late, "late");
    let got: Vec<Seen> = seen(&late)
        .into_iter()
        .filter(|s| s.retain && s.topic.contains("/alerts/"))
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(json(&got[0].payload)["level"], "CRITICAL");
    assert!(
        got[0].expiry.is_some_and(|e| e <= 2),
        "still carries an expiry: {:?}",
        got[0]
    );
    assert_eq!(
        d.err.count(|l| l.contains("ALERT CRITICAL")),
        1,
        "one alert, refreshed, not re-raised"
    );
}

#[test]
fn f4_a_restarted_daemon_clears_a_stale_retained_critical() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let live = broker.observe(&["thermalert/gw1/alerts/+"]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.sensors = sensor("28-00000000000a", "freezer", HOT, "[[0.0, 45.0]]");
    let mut d = daemon_env(&cfg.write(t.path()), &[("THERMALERT_LOG", "debug")]);
    live.out.wait("critical", |l| l.contains("CRITICAL"));
    d.err.wait_contains("delivered to the broker (PUBCOMP)");
    d.signal("KILL");
    d.wait_exit(WAIT);
    // It recovered while the daemon was down: no new alert, but the
    // retained CRITICAL must not outlive the truth.
    cfg.sensors = sensor("28-00000000000a", "freezer", HOT, "[[0.0, 20.0]]");
    let _d = daemon(&cfg.write(t.path()));
    live.out.wait("retained cleared", |l| {
        l.starts_with("MSG|thermalert/gw1/alerts/28-00000000000a|") && l.ends_with('|')
    });
    let late = broker.observe(&["thermalert/gw1/alerts/+", "test/sync/#"]);
    broker.sync(&late, "late");
    assert_eq!(
        seen(&late)
            .iter()
            .filter(|s| s.topic.contains("/alerts/"))
            .count(),
        0
    );
}

// 5. Last Will ------------------------------------------------------------------

#[test]
fn f5_sigkill_makes_the_broker_publish_the_will() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/status"]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.mqtt_extra = "status_expiry_secs = 600\n".into();
    let d = daemon(&cfg.write(t.path()));
    obs.out.wait("online", |l| l.contains("\"online\""));
    d.signal("KILL");
    let l = obs.out.wait("will", |l| l.contains("\"offline\""));
    let s = parse_seen(&l).expect("observer line");
    assert_eq!(json(&s.payload)["reason"], "connection lost");
    assert!(
        s.expiry.is_some_and(|e| e <= 600 && e > 0),
        "the Will carries an expiry: {s:?}"
    );
    // ...and it is retained for later subscribers.
    let late = broker.observe(&["thermalert/gw1/status"]);
    let l = late
        .out
        .wait("retained offline", |l| l.contains("\"offline\""));
    assert!(parse_seen(&l).is_some_and(|s| s.retain));
}

#[test]
fn f5_clean_stop_publishes_offline_itself_and_no_will() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/status", "test/sync/#"]);
    let mut d = daemon(&GwConfig::new(&broker, "gw1").write(t.path()));
    obs.out.wait("online", |l| l.contains("\"online\""));
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT), Some(0));
    let l = obs.out.wait("offline", |l| l.contains("\"offline\""));
    assert_eq!(
        json(&parse_seen(&l).expect("line").payload)["reason"],
        "shutdown"
    );
    broker
        .log()
        .wait_contains("Client thermalertd-gw1 disconnected.");
    broker.sync(&obs, "after-stop");
    assert_eq!(
        obs.out.count(|l| l.contains("connection lost")),
        0,
        "no Will after a clean stop"
    );
}

// 6. Message expiry -------------------------------------------------------------

#[test]
fn f6_alert_expires_for_a_notifier_away_too_long() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    // The notifier makes its persistent session, then goes away.
    let mut n = notifier(&broker, "n-expiry", &[]);
    n.signal("TERM");
    n.wait_exit(WAIT);
    let obs = broker.observe(&["thermalert/gw1/alerts/+"]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.mqtt_extra = "alert_expiry_secs = 2\n".into();
    // A WARNING: not retained, so nothing but the session queue could
    // deliver it (a CRITICAL is retained and kept fresh on purpose).
    cfg.sensors = sensor("28-000000000001", "freezer", HOT, "[[0.0, 35.0]]");
    let _d = daemon(&cfg.write(t.path()));
    let l = obs.out.wait("warning", |l| l.contains("WARNING"));
    let s = parse_seen(&l).expect("line");
    assert!(
        s.expiry.is_some_and(|e| e <= 2),
        "alert carries its expiry: {s:?}"
    );
    // Stay away longer than the expiry.
    std::thread::sleep(Duration::from_millis(3000));
    let n = notifier(&broker, "n-expiry", &[]);
    n.err.wait_contains("session resumed");
    // A sentinel alert published after the expired one: once it is shown,
    // everything queued before it has been delivered.
    broker.publish(
        "observer",
        "thermalert/gw9/alerts/sentinel",
        br#"{"id":"sentinel","gateway":"gw9","sensor":"sentinel","name":"sentinel","level":"WARNING","celsius":31.0,"threshold":30.0,"ts":"2026-01-01T00:00:00Z","message":"sentinel"}"#,
        &[],
    );
    n.out.wait_contains("\"id\":\"sentinel\"");
    let shown = notifier_alerts(&n);
    assert!(
        shown
            .iter()
            .all(|a| a["gateway"] != "gw1" || a["retained"] == true),
        "the expired alert was delivered live: {shown:?}"
    );
}

#[test]
fn f6_alert_reaches_a_notifier_back_in_time() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let mut n = notifier(&broker, "n-back", &[]);
    n.signal("TERM");
    n.wait_exit(WAIT);
    let obs = broker.observe(&["thermalert/gw1/alerts/+"]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.mqtt_extra = "alert_expiry_secs = 120\n".into();
    cfg.sensors = sensor("28-000000000001", "freezer", HOT, "[[0.0, 35.0]]");
    let d = daemon(&cfg.write(t.path()));
    obs.out.wait("warning", |l| l.contains("WARNING"));
    let n = notifier(&broker, "n-back", &[]);
    n.err.wait_contains("session resumed");
    let l = n.out.wait("queued alert", |l| l.contains("\"WARNING\""));
    assert_eq!(
        json(&l)["retained"],
        false,
        "delivered from the session queue, not as retained"
    );
    d.err.wait_contains("answered by n-back");
}

// 7. Request/response -----------------------------------------------------------

#[test]
fn f7_notifier_answers_on_the_response_topic_with_the_correlation_data() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/alerts/+", "thermalert/gw1/acks"]);
    let _n = notifier(&broker, "n-rr", &[]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.sensors = sensor("28-000000000001", "freezer", HOT, "[[0.0, 45.0]]");
    let d = daemon(&cfg.write(t.path()));
    let alert = parse_seen(&obs.out.wait("alert", |l| l.contains("CRITICAL"))).expect("alert");
    assert_eq!(alert.response_topic, "thermalert/gw1/acks");
    assert_eq!(alert.content_type, "application/json");
    let id = json(&alert.payload)["id"].as_str().expect("id").to_string();
    assert_eq!(alert.correlation, id, "CorrelationData is the alert id");
    let ack = parse_seen(
        &obs.out
            .wait("ack", |l| l.starts_with("MSG|thermalert/gw1/acks|")),
    )
    .expect("ack");
    assert_eq!(ack.correlation, id);
    let body = json(&ack.payload);
    assert_eq!(body["alert_id"], id.as_str());
    assert_eq!(body["status"], "delivered");
    assert_eq!(body["by"], "n-rr");
    let line = d.err.wait_contains(&format!("alert {id} answered by n-rr"));
    assert!(line.contains(" ms"), "round-trip time logged: {line}");

    // Answers that match nothing are ignored, malformed ones skipped.
    broker.publish(
        "observer",
        "thermalert/gw1/acks",
        br#"{"alert_id":"nope","status":"delivered","by":"x","ts":"t"}"#,
        &["-D", "publish", "correlation-data", "no-such-alert"],
    );
    d.err.wait_contains("matches no alert");
    broker.publish(
        "observer",
        "thermalert/gw1/acks",
        b"\xff\xfe not json",
        &["-D", "publish", "correlation-data", "x"],
    );
    d.err.wait_contains("malformed answer");
}

#[test]
fn f7_repeated_alert_is_shown_once_and_answered_each_time() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/acks"]);
    let n = notifier(&broker, "n-dup", &[]);
    let alert = br#"{"id":"dup-1","gateway":"gw1","sensor":"28-1","name":"x","level":"CRITICAL","celsius":45.0,"threshold":40.0,"ts":"2026-01-01T00:00:00Z","message":"m"}"#;
    for _ in 0..2 {
        broker.publish_alert("gw1", "28-1", alert, "dup-1");
    }
    obs.out.wait_n("two answers", 2, WAIT, |l| {
        l.starts_with("MSG|thermalert/gw1/acks|")
    });
    n.out.wait_contains("\"id\":\"dup-1\"");
    assert_eq!(notifier_alerts(&n).len(), 1, "shown once");
    // Bad payloads are logged and skipped, the notifier keeps going.
    broker.publish("observer", "thermalert/gw1/alerts/28-1", b"\xff\xfe", &[]);
    n.err.wait_contains("skipping a malformed alert");
    broker.publish(
        "observer",
        "thermalert/gw1/alerts/28-1",
        &vec![b'x'; 70_000],
        &[],
    );
    n.err.wait_contains("exceeds the limit");
}

// 8. Flow control ---------------------------------------------------------------

#[test]
fn f8_burst_of_50_alerts_honours_broker_receive_maximum_1() {
    let t = tmp();
    let broker = Broker::start_with(
        &t.path().join("b"),
        BrokerOpts {
            extra: &["max_inflight_messages 1"],
            ..Default::default()
        },
    );
    let n = notifier(&broker, "n-flow", &[]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.mqtt_extra = "publish_readings = false\n".into();
    cfg.sensors = (0..50)
        .map(|i| {
            sensor(
                &format!("28-0000000000{i:02}"),
                &format!("s{i}"),
                HOT,
                "[[0.0, 20.0], [0.3, 45.0]]",
            )
        })
        .collect();
    let d = daemon(&cfg.write(t.path()));
    let l = d.err.wait_contains("connected to the broker");
    assert!(l.contains("broker receive maximum 1"), "{l}");
    n.out
        .wait_n("50 criticals", 50, WAIT, |l| l.contains("\"CRITICAL\""));
    d.err
        .wait_n("50 answers", 50, WAIT, |l| l.contains("answered by n-flow"));
    let shown = notifier_alerts(&n);
    assert_eq!(shown.len(), 50);
    let log = broker.log().snapshot();
    assert!(
        !log.iter()
            .any(|l| l.contains("thermalertd-gw1")
                && (l.contains("disconnect") || l.contains("quota"))),
        "the broker never cut the daemon off"
    );
    assert_eq!(
        d.err.count(|l| l.contains("refused it")),
        0,
        "none rejected for quota"
    );
}

// 9. Keep-alive -----------------------------------------------------------------

#[test]
fn f9_pings_keep_an_idle_connection_up() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/status", "test/sync/#"]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.keep_alive_secs = 1;
    cfg.mqtt_extra = "publish_readings = false\n".into();
    let d = daemon(&cfg.write(t.path()));
    obs.out.wait("online", |l| l.contains("\"online\""));
    // Several keep-alive periods with nothing to say: PINGREQs flow.
    broker.log().wait_n("pings", 4, WAIT, |l| {
        l.contains("Received PINGREQ from thermalertd-gw1")
    });
    broker.sync(&obs, "idle");
    assert_eq!(obs.out.count(|l| l.contains("\"offline\"")), 0);
    assert_eq!(
        d.err.count(|l| l.contains("connected to the broker")),
        1,
        "never reconnected"
    );
}

#[test]
fn f9_a_frozen_daemon_is_declared_offline_by_keep_alive() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/status"]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.keep_alive_secs = 1;
    let d = daemon(&cfg.write(t.path()));
    obs.out.wait("online", |l| l.contains("\"online\""));
    d.signal("STOP");
    // 1.5 x keep-alive, plus Mosquitto's own check interval.
    let l = obs
        .out
        .wait_n("will after keep-alive", 1, Duration::from_secs(30), |l| {
            l.contains("\"offline\"")
        })
        .remove(0);
    assert_eq!(
        json(&parse_seen(&l).expect("line").payload)["reason"],
        "connection lost"
    );
    broker.log().wait_contains("exceeded timeout");
    // Thawed, it comes back online by itself.
    d.signal("CONT");
    obs.out
        .wait_n("online again", 2, WAIT, |l| l.contains("\"online\""));
}
