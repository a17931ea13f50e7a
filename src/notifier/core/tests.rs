//! The notifier's decisions, fed messages, hook outcomes and ticks with a
//! fixed clock; each test asserts on the actions.

use super::*;
use std::time::Duration;

const ACKS: &str = "thermalert/gw1/acks";

fn t0() -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    }
}

fn later(now: Now, secs: u64) -> Now {
    Now {
        mono: now.mono + Duration::from_secs(secs),
        wall: now.wall + Duration::from_secs(secs),
    }
}

fn cfg() -> CoreConfig {
    CoreConfig {
        prefix: "thermalert".into(),
        client_id: "me".into(),
        json: false,
        filter: Filter::default(),
        share_group: None,
        exec: false,
        watch: WatchConfig {
            stale_intervals: 5,
            stale_after: Duration::from_secs(120),
            broker_grace: Duration::from_secs(60),
        },
    }
}

fn core(cfg: CoreConfig, now: Now) -> Core {
    let mut n = 0;
    Core::new(cfg, Seen::new(100), now).with_ids(move || {
        n += 1;
        format!("id{n}")
    })
}

fn alert(id: &str, level: AlertLevel) -> Alert {
    Alert {
        ts: "T".into(),
        message: "freezer is hot".into(),
        ..Alert::sample(id, level)
    }
}

fn reply(id: &str) -> Reply {
    Reply {
        topic: ACKS.into(),
        correlation: Some(bytes::Bytes::from(id.to_string())),
    }
}

/// Feeds `a` as its gateway publishes it: answerable, not retained.
fn feed(c: &mut Core, a: &Alert, now: Now) -> Vec<Action> {
    feed_as(c, a, false, Some(reply(&a.id)), now)
}

fn feed_as(c: &mut Core, a: &Alert, retain: bool, r: Option<Reply>, now: Now) -> Vec<Action> {
    let body = payload::encode(a);
    let topic = format!("thermalert/{}/alerts/{}", a.gateway, a.sensor);
    c.on_message(
        Message {
            topic: &topic,
            payload: &body,
            retain,
            reply: r,
        },
        now,
    )
}

fn raw(c: &mut Core, topic: &str, payload: &[u8], now: Now) -> Vec<Action> {
    c.on_message(
        Message {
            topic,
            payload,
            retain: false,
            reply: None,
        },
        now,
    )
}

fn answer(id: &str, status: &'static str) -> Action {
    Action::Answer {
        alert_id: id.into(),
        reply: reply(id),
        status,
    }
}

fn prints(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Print(l) => Some(l.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_alert_is_shown_notified_and_answered_delivered() {
    let now = t0();
    let mut c = core(cfg(), now);
    let a = alert("a1", AlertLevel::Critical);
    let actions = feed(&mut c, &a, now);
    assert_eq!(
        actions,
        vec![
            Action::Print(render::alert_line(
                &a,
                Some(render::Seen {
                    retained: false,
                    watch: false
                })
            )),
            Action::Notify(a.clone()),
            answer("a1", "delivered"),
        ]
    );
}

#[test]
fn a_repeat_is_answered_again_but_not_shown() {
    let now = t0();
    let mut c = core(cfg(), now);
    let a = alert("a1", AlertLevel::Critical);
    feed(&mut c, &a, now);
    assert_eq!(feed(&mut c, &a, now), vec![answer("a1", "delivered")]);
}

#[test]
fn an_escalation_of_a_seen_alert_is_shown_again() {
    let now = t0();
    let mut c = core(cfg(), now);
    let a = alert("a1", AlertLevel::Critical);
    feed(&mut c, &a, now);
    let again = Alert {
        escalation: 1,
        ..a.clone()
    };
    let actions = feed(&mut c, &again, now);
    assert_eq!(prints(&actions).len(), 1, "{actions:?}");
    assert!(actions.contains(&Action::Notify(again)));
}

#[test]
fn a_retained_alert_is_marked_so() {
    let now = t0();
    let mut c = core(cfg(), now);
    let a = alert("a1", AlertLevel::Critical);
    let actions = feed_as(&mut c, &a, true, Some(reply("a1")), now);
    assert!(prints(&actions)[0].contains(" [retained]: "), "{actions:?}");
}

#[test]
fn an_alert_the_filter_rejects_is_neither_shown_nor_answered() {
    let now = t0();
    let mut c = core(
        CoreConfig {
            filter: Filter::parse(&["level>=CRITICAL"]).expect("filter"),
            ..cfg()
        },
        now,
    );
    assert_eq!(feed(&mut c, &alert("w", AlertLevel::Warning), now), vec![]);
    assert_eq!(
        feed(&mut c, &alert("c", AlertLevel::Critical), now).len(),
        3
    );
}

#[test]
fn an_alert_without_a_response_topic_is_shown_but_not_answered() {
    let now = t0();
    let mut c = core(cfg(), now);
    let a = alert("a1", AlertLevel::Critical);
    let actions = feed_as(&mut c, &a, false, None, now);
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(matches!(actions[0], Action::Print(_)));
    assert_eq!(actions[1], Action::Notify(a));
}

#[test]
fn a_cleared_retained_alert_and_garbage_do_nothing() {
    let now = t0();
    let mut c = core(cfg(), now);
    assert_eq!(raw(&mut c, "thermalert/gw1/alerts/28-1", b"", now), vec![]);
    assert_eq!(
        raw(&mut c, "thermalert/gw1/alerts/28-1", b"{not json", now),
        vec![]
    );
    assert_eq!(raw(&mut c, "thermalert/gw1/status", b"[]", now), vec![]);
    assert_eq!(raw(&mut c, "elsewhere/x", b"{}", now), vec![]);
}

#[test]
fn with_a_hook_the_hook_answers_once_it_ends() {
    let now = t0();
    let mut c = core(
        CoreConfig {
            exec: true,
            ..cfg()
        },
        now,
    );
    let a = alert("a1", AlertLevel::Critical);
    let actions = feed(&mut c, &a, now);
    assert_eq!(
        actions.last(),
        Some(&Action::Hook {
            alert: a.clone(),
            reply: Some(reply("a1"))
        })
    );
    assert_eq!(c.hooks_running(), 1);
    // A repeat while it runs: its hook answers when it ends.
    assert_eq!(feed(&mut c, &a, now), vec![]);
    let done = c.on_hook_done(
        "a1".into(),
        reply("a1"),
        &HookOutcome::Failed("exit 3".into()),
    );
    assert_eq!(done, vec![answer("a1", "failed")]);
    assert_eq!(c.hooks_running(), 0);
    // A repeat afterwards gets the hook's answer, without running it again.
    assert_eq!(feed(&mut c, &a, now), vec![answer("a1", "failed")]);
    // An escalation runs it again.
    let esc = Alert { escalation: 1, ..a };
    assert!(matches!(
        feed(&mut c, &esc, now).last(),
        Some(Action::Hook { reply: Some(_), .. })
    ));
}

#[test]
fn in_a_share_group_an_alert_answered_elsewhere_is_not_shown() {
    let now = t0();
    let mut c = core(
        CoreConfig {
            share_group: Some("ops".into()),
            ..cfg()
        },
        now,
    );
    let ack = |id: &str, by: &str, status: &str| {
        payload::encode(&Ack {
            alert_id: id.into(),
            status: status.into(),
            by: by.into(),
            ts: "T".into(),
        })
    };
    raw(&mut c, ACKS, &ack("a1", "other", "delivered"), now);
    raw(&mut c, ACKS, &ack("a2", "me", "delivered"), now);
    raw(&mut c, ACKS, &ack("a3", "other", "failed"), now);
    assert_eq!(
        feed(&mut c, &alert("a1", AlertLevel::Critical), now),
        vec![]
    );
    assert_eq!(
        feed(&mut c, &alert("a2", AlertLevel::Critical), now).len(),
        3,
        "our own answer"
    );
    assert_eq!(
        feed(&mut c, &alert("a3", AlertLevel::Critical), now).len(),
        3,
        "a failed answer elsewhere"
    );
    let s = c.subscriptions();
    assert_eq!(s.exactly_once[0], "$share/ops/thermalert/+/alerts/+");
    assert_eq!(s.acks.as_deref(), Some("thermalert/+/acks"));
    assert!(c.in_share_group());
}

#[test]
fn alone_it_subscribes_to_every_alert_and_no_acks() {
    let c = core(cfg(), t0());
    assert_eq!(
        c.subscriptions(),
        Subscriptions {
            exactly_once: ["thermalert/+/alerts/+".into(), "thermalert/+/status".into()],
            readings: "thermalert/+/sensors/+/reading".into(),
            acks: None,
        }
    );
}

#[test]
fn a_status_is_shown_when_it_changes_and_a_will_is_dated_now() {
    let now = t0();
    let mut c = core(cfg(), now);
    let will = br#"{"state":"offline","reason":"connection lost"}"#;
    let actions = raw(&mut c, "thermalert/gw1/status", will, now);
    let when = timefmt::rfc3339(now.wall);
    assert_eq!(
        prints(&actions)[0],
        format!("{when} -- gateway gw1 is offline (connection lost)")
    );
    // The Will is also the watchers' alarm.
    assert!(prints(&actions)[1].contains(" [watch]: gateway gw1 is OFFLINE"));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Notify(a) if a.level == AlertLevel::Critical)));
    assert_eq!(raw(&mut c, "thermalert/gw1/status", will, now), vec![]);
    let online = br#"{"state":"online","ts":"T1"}"#;
    let actions = raw(&mut c, "thermalert/gw1/status", online, now);
    assert_eq!(prints(&actions)[0], "T1 -- gateway gw1 is online");
}

#[test]
fn json_lines_carry_their_type() {
    let now = t0();
    let mut c = core(
        CoreConfig {
            json: true,
            ..cfg()
        },
        now,
    );
    let actions = feed(&mut c, &alert("a1", AlertLevel::Critical), now);
    let v: serde_json::Value = serde_json::from_str(prints(&actions)[0]).expect("json");
    assert_eq!(v["type"], "alert");
    assert_eq!(v["retained"], false);
    let actions = raw(
        &mut c,
        "thermalert/gw1/status",
        br#"{"state":"online"}"#,
        now,
    );
    let v: serde_json::Value = serde_json::from_str(prints(&actions)[0]).expect("json");
    assert_eq!(
        (v["type"].as_str(), v["gateway"].as_str()),
        (Some("status"), Some("gw1"))
    );
}

#[test]
fn silent_readings_raise_a_watch_alert_with_an_unanswered_hook() {
    let now = t0();
    let mut c = core(
        CoreConfig {
            exec: true,
            ..cfg()
        },
        now,
    );
    c.on_link_up(now);
    raw(
        &mut c,
        "thermalert/gw1/status",
        br#"{"state":"online"}"#,
        now,
    );
    raw(&mut c, "thermalert/gw1/sensors/28-1/reading", b"{}", now);
    assert_eq!(c.tick(later(now, 119)), vec![]);
    let actions = c.tick(later(now, 120));
    let line = prints(&actions)[0].to_string();
    assert!(line.contains(" [watch]: "), "{line}");
    assert!(line.contains("!! CRITICAL gw1/gateway gw1 "), "{line}");
    let Some(Action::Hook { alert, reply }) = actions.last() else {
        panic!("{actions:?}")
    };
    assert_eq!((alert.id.as_str(), reply), ("watch-id1", &None));
    assert_eq!(alert.ts, timefmt::rfc3339(later(now, 120).wall));
    assert_eq!(c.hooks_running(), 0, "a watch hook answers nothing");
    assert_eq!(c.tick(later(now, 200)), vec![], "raised once");
    let back = raw(
        &mut c,
        "thermalert/gw1/sensors/28-1/reading",
        b"{}",
        later(now, 201),
    );
    assert!(prints(&back)[0].contains("ok RESOLVED"), "{back:?}");
}

#[test]
fn the_broker_lost_past_its_grace_is_a_watch_alert_the_filter_can_hide() {
    let now = t0();
    let mut c = core(cfg(), now);
    // Down from the start.
    assert_eq!(c.tick(later(now, 59)), vec![]);
    let actions = c.tick(later(now, 60));
    assert!(
        prints(&actions)[0].contains("broker connection"),
        "{actions:?}"
    );
    let back = c.on_link_up(later(now, 61));
    assert!(prints(&back)[0].contains("RESOLVED"), "{back:?}");

    let mut hidden = core(
        CoreConfig {
            filter: Filter::parse(&["gateway=gw1"]).expect("filter"),
            ..cfg()
        },
        now,
    );
    assert_eq!(hidden.tick(later(now, 60)), vec![], "gateway '-' filtered");
}

/// Feeds `a` on `topic` with the ResponseTopic `reply_topic`.
fn feed_on(c: &mut Core, topic: &str, a: &Alert, reply_topic: &str, now: Now) -> Vec<Action> {
    let body = payload::encode(a);
    c.on_message(
        Message {
            topic,
            payload: &body,
            retain: false,
            reply: Some(Reply {
                topic: reply_topic.into(),
                correlation: Some(bytes::Bytes::from(a.id.clone())),
            }),
        },
        now,
    )
}

#[test]
fn an_alert_is_shown_under_the_gateway_and_sensor_of_its_topic() {
    let now = t0();
    let mut c = core(cfg(), now);
    // The payload claims gw1's sensor 28-1; the topic is gw2's sensor s9.
    let a = alert("f1", AlertLevel::Critical);
    let actions = feed_on(
        &mut c,
        "thermalert/gw2/alerts/s9",
        &a,
        "thermalert/gw2/acks",
        now,
    );
    let shown = Alert {
        gateway: "gw2".into(),
        sensor: "s9".into(),
        ..a.clone()
    };
    assert!(actions.contains(&Action::Notify(shown)), "{actions:?}");
    assert!(
        prints(&actions).iter().all(|l| !l.contains("gw1")),
        "{actions:?}"
    );
    // Answered on gw2's own acks topic, the one the broker lets gw2 read.
    assert!(actions.iter().any(|x| matches!(x,
        Action::Answer { reply, .. } if reply.topic == "thermalert/gw2/acks")));
}

#[test]
fn an_alert_asking_for_its_answer_elsewhere_is_shown_but_not_answered() {
    let now = t0();
    for exec in [false, true] {
        let mut c = core(CoreConfig { exec, ..cfg() }, now);
        let a = Alert {
            gateway: "gw2".into(),
            ..alert("f2", AlertLevel::Critical)
        };
        let actions = feed_on(&mut c, "thermalert/gw2/alerts/28-1", &a, ACKS, now);
        assert!(actions.contains(&Action::Notify(a.clone())), "{actions:?}");
        assert!(
            !actions.iter().any(|x| matches!(
                x,
                Action::Answer { .. } | Action::Hook { reply: Some(_), .. }
            )),
            "exec {exec}: {actions:?}"
        );
    }
}

#[test]
fn a_shared_filter_loses_its_group_and_a_plain_one_stays() {
    assert_eq!(
        without_share("$share/ops/thermalert/+/alerts/+"),
        "thermalert/+/alerts/+"
    );
    assert_eq!(without_share("thermalert/+/status"), "thermalert/+/status");
}
