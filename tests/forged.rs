//! Forged alerts (issue 16): through a real Mosquitto with the project's ACL
//! (users added by mosquitto/add-user.sh), an operator's account cannot
//! publish an alert, and the notifier believes the topic, not the payload:
//! an alert is shown under the gateway of its topic and answered only on
//! that gateway's own acks topic.

mod common;

use common::*;

fn alert_json(id: &str, gateway: &str, sensor: &str) -> String {
    format!(
        "{{\"id\":\"{id}\",\"gateway\":\"{gateway}\",\"sensor\":\"{sensor}\",\"name\":\"freezer\",\"level\":\"CRITICAL\",\"celsius\":45.0,\"threshold\":40.0,\"ts\":\"2026-01-01T00:00:00.000Z\",\"message\":\"m\"}}"
    )
}

/// Publishes `payload` as `user` on `topic` with a ResponseTopic and the
/// CorrelationData `id`, as a gateway publishes an alert.
fn publish_alert_as(
    broker: &Broker,
    user: &str,
    topic: &str,
    payload: &str,
    reply: &str,
    id: &str,
) {
    broker.publish(
        user,
        topic,
        payload.as_bytes(),
        &[
            "-D",
            "publish",
            "response-topic",
            reply,
            "-D",
            "publish",
            "correlation-data",
            id,
        ],
    );
}

#[test]
fn an_operator_account_cannot_publish_an_alert() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/#", "test/sync/#"]);
    // The notifier's account publishes an alert under its own name (which
    // the old "pattern write thermalert/%u/alerts/#" allowed) and under a
    // gateway's; a gateway publishes its own.
    for topic in ["thermalert/notifier/alerts/s1", "thermalert/gw1/alerts/s1"] {
        publish_alert_as(
            &broker,
            "notifier",
            topic,
            &alert_json("forged-1", "gw1", "s1"),
            "thermalert/gw1/acks",
            "forged-1",
        );
    }
    publish_alert_as(
        &broker,
        "gw1",
        "thermalert/gw1/alerts/s1",
        &alert_json("genuine-1", "gw1", "s1"),
        "thermalert/gw1/acks",
        "genuine-1",
    );
    broker
        .log()
        .wait("the broker refusing the operator's alert", |l| {
            l.contains("Denied PUBLISH") && l.contains("thermalert/notifier/alerts/s1")
        });
    broker.sync(&obs, "operator");
    let got: Vec<String> = seen(&obs).into_iter().map(|s| s.payload).collect();
    assert!(got.iter().any(|p| p.contains("genuine-1")), "{got:?}");
    assert!(!got.iter().any(|p| p.contains("forged-1")), "{got:?}");
}

#[test]
fn a_forged_payload_or_response_topic_is_not_answered_elsewhere() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let acks = broker.observe(&["thermalert/+/acks"]);
    let n = notifier(&broker, "forged", &["--no-desktop"]);
    // gw2 (allowed to publish on its own alert topic) claims to be gw1 and
    // asks for the answer on gw1's acks topic.
    publish_alert_as(
        &broker,
        "gw2",
        "thermalert/gw2/alerts/s9",
        &alert_json("forged-2", "gw1", "s1"),
        "thermalert/gw1/acks",
        "forged-2",
    );
    // A genuine alert of gw2 after it: its answer marks the point by which
    // an answer to the forged one would have been seen (one connection,
    // answered in order).
    publish_alert_as(
        &broker,
        "gw2",
        "thermalert/gw2/alerts/s2",
        &alert_json("genuine-2", "gw2", "s2"),
        "thermalert/gw2/acks",
        "genuine-2",
    );
    acks.out.wait("the answer to the genuine alert", |l| {
        l.starts_with("MSG|thermalert/gw2/acks|") && l.contains("genuine-2")
    });
    let answered: Vec<Seen> = seen(&acks);
    assert!(
        !answered.iter().any(|s| s.payload.contains("forged-2")),
        "the forged alert was answered: {answered:?}"
    );
    assert!(
        !answered.iter().any(|s| s.topic == "thermalert/gw1/acks"),
        "an answer went to gw1: {answered:?}"
    );
    // It was shown, under the gateway and sensor of its topic.
    let shown = notifier_alerts(&n);
    let forged: Vec<_> = shown.iter().filter(|a| a["id"] == "forged-2").collect();
    assert_eq!(forged.len(), 1, "{shown:?}");
    assert_eq!(forged[0]["gateway"], "gw2", "{shown:?}");
    assert_eq!(forged[0]["sensor"], "s9", "{shown:?}");
    let log = n.err.snapshot().join("\n");
    assert!(
        log.contains("claims gateway \"gw1\"") && log.contains("not answered"),
        "{log}"
    );
}

#[test]
fn add_user_gives_one_account_one_role() {
    let t = tmp();
    let dir = t.path();
    let add = |role: &str, name: &str| {
        std::process::Command::new("bash")
            .arg(std::path::Path::new(ROOT).join("mosquitto/add-user.sh"))
            .arg("--passwd")
            .arg(dir.join("passwd"))
            .arg("--acl")
            .arg(dir.join("acl"))
            .arg("--password-out")
            .arg(dir.join(format!("{name}.pass")))
            .args([role, name])
            .env("THERMALERT_PASSWORD", "a-test-password")
            .output()
            .expect("add-user.sh")
    };
    assert!(add("gateway", "gw7").status.success());
    assert!(add("notifier", "alice").status.success());
    let acl = std::fs::read_to_string(dir.join("acl")).expect("acl");
    // A gateway's block grants its own topics; no line lets anyone else
    // publish alerts.
    assert!(
        acl.contains("user gw7\ntopic write thermalert/gw7/status\n"),
        "{acl}"
    );
    assert!(
        acl.contains("topic readwrite thermalert/gw7/alerts/#"),
        "{acl}"
    );
    assert!(
        !acl.lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("%u/alerts")),
        "{acl}"
    );
    // The other role for the same name is refused, the files unchanged.
    for (role, name) in [("notifier", "gw7"), ("gateway", "alice")] {
        let out = add(role, name);
        assert_eq!(out.status.code(), Some(1), "{role} {name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("one account has one role"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(dir.join("acl")).expect("acl"), acl);
}
