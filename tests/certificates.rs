//! Certificate expiry warnings with certificates made by the project's
//! `certs/make-certs.sh --days 10`: the daemon logs them and raises a FAULT
//! alert per certificate; the notifier logs them.

mod common;

use common::*;

#[test]
fn expiring_certificates_are_logged_and_raised_as_faults() {
    let t = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(
        &t.path().join("pki"),
        "short-lived test CA",
        &["localhost"],
        &["--days", "10", "--ca-days", "20", "--client", "gw1"],
    );
    let (cert, key) = (pki.dir.join("gw1.crt"), pki.dir.join("gw1.key"));
    let broker = Broker::start_with(
        &t.path().join("b"),
        BrokerOpts {
            pki: Some(pki),
            ..Default::default()
        },
    );
    let obs = broker.observe(&["thermalert/gw1/alerts/+"]);
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.mqtt_extra = format!(
        "client_cert = \"{}\"\nclient_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let d = daemon(&cfg.write(t.path()));
    d.err.wait_contains("certificate: the CA #1 in");
    d.err
        .wait_contains("certificate: the client certificate #1 in");
    let faults = obs.out.wait_n("two FAULT alerts", 2, WAIT, |l| {
        l.starts_with("MSG|thermalert/gw1/alerts/certificates|") && l.contains("\"FAULT\"")
    });
    let mut messages: Vec<String> = faults
        .iter()
        .map(|l| json(&parse_seen(l).expect("seen").payload)["message"].to_string())
        .collect();
    messages.sort();
    assert!(
        messages[0].contains("the CA #1") && messages[0].contains("expires in 19 day"),
        "{messages:?}"
    );
    assert!(
        messages[1].contains("the client certificate #1")
            && messages[1].contains("expires in 9 day"),
        "{messages:?}"
    );

    let n = notifier(&broker, "n1", &["--no-desktop"]);
    n.err.wait_contains("certificate: the CA #1 in");
    // The notifier shows the daemon's FAULTs like any alert (they were
    // published before it subscribed, so only a later one would reach it;
    // the log line is what this test asks of it).
}

#[test]
fn long_lived_certificates_raise_nothing() {
    let t = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&[
        "thermalert/gw1/alerts/+",
        "thermalert/gw1/status",
        "test/sync/#",
    ]);
    let d = daemon(&GwConfig::new(&broker, "gw1").write(t.path()));
    obs.out.wait("online", |l| l.contains("\"online\""));
    broker.sync(&obs, "certs");
    assert_eq!(obs.out.count(|l| l.contains("/alerts/certificates|")), 0);
    assert_eq!(d.err.count(|l| l.contains("certificate: ")), 0);
}
