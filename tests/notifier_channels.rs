//! The notifier's channels and watchers against a real Mosquitto, real
//! daemons and the real notifier: --exec hooks decide the answer,
//! --filter, desktop notifications without a notification service, the
//! status command, and the watchers (Will, silent gateway, broker lost).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn lines_of(p: &Proc, kind: &str) -> Vec<serde_json::Value> {
    p.out
        .snapshot()
        .iter()
        .map(|l| json(l))
        .filter(|v| v["type"] == kind)
        .collect()
}

fn acks(obs: &Proc) -> Vec<serde_json::Value> {
    seen(obs)
        .into_iter()
        .filter(|s| s.topic.ends_with("/acks"))
        .map(|s| json(&s.payload))
        .collect()
}

/// Reads a FIFO on a thread, so that a hook that never runs fails the
/// test instead of hanging it.
fn read_fifo(path: &Path) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read_to_string(p));
    });
    rx.recv_timeout(WAIT)
        .expect("the hook did not start")
        .expect("read fifo")
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("mkfifo");
    assert!(st.success());
}

#[test]
fn exec_hook_gets_the_alert_and_its_exit_status_is_the_answer() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&[
        "thermalert/gw1/acks",
        "thermalert/gw1/alerts/+",
        "test/sync/#",
    ]);
    let hooks = t.path().join("hooks");
    std::fs::create_dir_all(&hooks).expect("mkdir");
    let (started, release) = (hooks.join("started"), hooks.join("release"));
    mkfifo(&started);
    mkfifo(&release);
    // The freezer's hook waits for the test; the other's fails.
    let script = format!(
        "cat > {d}/$THERMALERT_ID.json; env | grep ^THERMALERT_ | sort > {d}/$THERMALERT_ID.env; \
         if [ \"$THERMALERT_NAME\" = freezer ]; then echo go > {s}; read x < {r}; exit 0; else exit 3; fi",
        d = hooks.display(),
        s = started.display(),
        r = release.display()
    );
    let n = notifier_env(&broker, "hooked", &["--exec", &script, "--no-desktop"], &[]);
    let sensors = freezer(CRIT, "[[0.0, 45.0]]") + &cellar(CRIT, "[[0.0, 46.0]]");
    let _d = daemon(&GwConfig::with_sensors(&broker, "gw1", sensors).write(t.path()));

    // The cellar's hook failed: answered `failed`, so the gateway escalates.
    let failed = obs
        .out
        .wait("failed answer", |l| l.contains("\"status\":\"failed\""));
    let failed = json(&parse_seen(&failed).expect("seen").payload);
    // The freezer's hook is still running: no answer for it yet.
    assert_eq!(read_fifo(&started).trim(), "go");
    broker.sync(&obs, "hook-running");
    assert_eq!(
        acks(&obs).len(),
        1,
        "only the failed hook answered: {:?}",
        acks(&obs)
    );
    std::fs::write(&release, "x\n").expect("release the hook");
    let delivered = obs.out.wait("delivered answer", |l| {
        l.contains("\"status\":\"delivered\"")
    });
    let delivered = json(&parse_seen(&delivered).expect("seen").payload);

    n.out.wait_n("two alerts shown", 2, WAIT, |l| {
        l.contains("\"type\":\"alert\"")
    });
    let alerts = lines_of(&n, "alert");
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    for a in &alerts {
        let id = a["id"].as_str().expect("id");
        let expect = if a["name"] == "freezer" {
            &delivered
        } else {
            &failed
        };
        assert_eq!(expect["alert_id"], id);
        // The hook got the alert as JSON on stdin ...
        let stdin = std::fs::read_to_string(hooks.join(format!("{id}.json"))).expect("stdin");
        assert_eq!(json(&stdin)["id"], id);
        assert_eq!(json(&stdin)["level"], "CRITICAL");
        // ... and in its environment.
        let env = std::fs::read_to_string(hooks.join(format!("{id}.env"))).expect("env");
        for want in [
            format!("THERMALERT_ID={id}"),
            "THERMALERT_LEVEL=CRITICAL".into(),
            "THERMALERT_GATEWAY=gw1".into(),
            format!(
                "THERMALERT_SENSOR={}",
                a["sensor"].as_str().expect("sensor")
            ),
            format!("THERMALERT_NAME={}", a["name"].as_str().expect("name")),
            format!(
                "THERMALERT_CELSIUS={:.2}",
                a["celsius"].as_f64().expect("celsius")
            ),
            format!(
                "THERMALERT_MESSAGE={}",
                a["message"].as_str().expect("message")
            ),
        ] {
            assert!(env.lines().any(|l| l == want), "{want} not in {env}");
        }
    }
}

#[test]
fn exec_hook_past_its_timeout_answers_failed() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/acks"]);
    let n = notifier_env(
        &broker,
        "slow",
        &["--exec", "sleep 60", "--exec-timeout", "1", "--no-desktop"],
        &[],
    );
    let cfg = GwConfig::with_sensors(&broker, "gw1", freezer(CRIT, "[[0.0, 45.0]]"));
    let _d = daemon(&cfg.write(t.path()));
    obs.out
        .wait("failed answer", |l| l.contains("\"status\":\"failed\""));
    n.err.wait_contains("timed out after 1s");
}

#[test]
fn filter_shows_and_answers_only_matching_alerts() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/+/acks", "thermalert/+/alerts/+"]);
    let n = notifier_env(
        &broker,
        "filtered",
        &[
            "--filter",
            "gateway=gw1",
            "--filter",
            "level>=CRITICAL",
            "--no-desktop",
        ],
        &[],
    );
    // gw2 goes CRITICAL first; then gw1 WARNING, then gw1 CRITICAL.
    let c2 = GwConfig::with_sensors(&broker, "gw2", cellar(CRIT, "[[0.0, 45.0]]"));
    let _d2 = daemon(&c2.write(&t.path().join("gw2")));
    obs.out
        .wait("gw2 alert", |l| l.starts_with("MSG|thermalert/gw2/alerts/"));
    let c1 = GwConfig::with_sensors(&broker, "gw1", freezer(HOT, "[[0.0, 35.0], [1.0, 45.0]]"));
    let _d1 = daemon(&c1.write(&t.path().join("gw1")));
    // The gw1 CRITICAL is the last alert; once it is answered, the
    // notifier has handled every alert before it.
    obs.out
        .wait("gw1 answer", |l| l.starts_with("MSG|thermalert/gw1/acks|"));
    // Its pipe is read on a thread of its own: wait for its line too.
    n.out.wait("the gw1 CRITICAL shown", |l| {
        l.contains("\"gateway\":\"gw1\"") && l.contains("\"level\":\"CRITICAL\"")
    });
    let shown = lines_of(&n, "alert");
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["gateway"], "gw1");
    assert_eq!(shown[0]["level"], "CRITICAL");
    let answered = acks(&obs);
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(answered[0]["alert_id"], shown[0]["id"]);
    assert_eq!(
        obs.out.count(|l| l.contains("\"level\":\"WARNING\"")),
        1,
        "the WARNING was published, and filtered out"
    );
}

#[test]
fn bad_filter_is_a_configuration_error() {
    let t = tmp();
    let pki = Pki::new(&t.path().join("pki"), "ca", &["localhost"], &[]);
    let out = Command::new(NOTIFIER)
        .arg("--ca-file")
        .arg(pki.ca())
        .args(["--filter", "colour=red"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour=red"));
}

#[test]
fn without_a_notification_service_it_says_so_once_and_keeps_printing() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let bus = format!("unix:path={}", t.path().join("no-bus").display());
    let n = notifier_env(
        &broker,
        "desk",
        &[],
        &[
            ("DBUS_SESSION_BUS_ADDRESS", bus.as_str()),
            ("THERMALERT_LOG", "debug"),
        ],
    );
    let sensors = freezer(CRIT, "[[0.0, 45.0]]") + &cellar(CRIT, "[[0.0, 46.0]]");
    let _d = daemon(&GwConfig::with_sensors(&broker, "gw1", sensors).write(t.path()));
    n.out
        .wait_n("two alerts", 2, WAIT, |l| l.contains("\"type\":\"alert\""));
    // Both notifications were tried: one warning, then debug lines.
    n.err.wait_contains("desktop notification failed");
    assert_eq!(
        n.err
            .count(|l| l.contains("desktop notifications unavailable")),
        1,
        "{:?}",
        n.err.snapshot()
    );
}

fn run_status(broker: &Broker, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(NOTIFIER)
        .args(notifier_args(broker, broker.port, "ops"))
        .args(extra)
        .args(["status", "--timeout", "15"])
        .output()
        .expect("status");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn status_lists_gateways_and_active_alerts_then_exits() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/+/status", "thermalert/+/alerts/+"]);
    // All well: one gateway online, no alert.
    let d2c = GwConfig {
        keep_alive_secs: 1,
        ..GwConfig::new(&broker, "gw2")
    };
    let d2 = daemon(&d2c.write(&t.path().join("gw2")));
    obs.out.wait("gw2 online", |l| {
        l.contains("gw2/status") && l.contains("online")
    });
    let (code, out) = run_status(&broker, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("gw2 ") && out.contains(" online "), "{out}");
    assert!(out.contains("active alerts: 0"), "{out}");
    assert!(
        !out.contains("no end-of-list marker"),
        "the sentinel worked: {out}"
    );

    // gw1 CRITICAL (retained); gw2 dies (its Will).
    let c1 = GwConfig::with_sensors(&broker, "gw1", freezer(CRIT, "[[0.0, 45.0]]"));
    let _d1 = daemon(&c1.write(&t.path().join("gw1")));
    obs.out.wait("gw1 CRITICAL", |l| l.contains("\"CRITICAL\""));
    drop(d2);
    obs.out.wait("gw2 Will", |l| {
        l.contains("gw2/status") && l.contains("connection lost")
    });
    let (code, out) = run_status(&broker, &["--json"]);
    assert_eq!(code, Some(1), "{out}");
    let r = json(out.trim());
    assert_eq!(r["complete"], true, "{r}");
    let gws = r["gateways"].as_array().expect("gateways");
    assert_eq!(gws.len(), 2, "{r}");
    let gw2 = gws.iter().find(|g| g["gateway"] == "gw2").expect("gw2");
    assert_eq!(gw2["state"], "offline");
    assert_eq!(gw2["reason"], "connection lost");
    assert!(
        gw2["since"].is_string(),
        "a Will is dated by its expiry: {r}"
    );
    let alerts = r["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{r}");
    assert_eq!(alerts[0]["level"], "CRITICAL");
    assert_eq!(alerts[0]["name"], "freezer");
}

#[test]
fn watchers_alarm_on_a_will_silent_readings_and_a_lost_broker() {
    let t = tmp();
    let mut broker = Broker::start(&t.path().join("b"));
    let n = notifier_env(
        &broker,
        "watcher",
        &["--broker-grace-secs", "1", "--no-desktop"],
        &[],
    );
    let watch = |what: &str, level: &'static str, needle: &'static str| {
        n.out.wait(what, move |l| {
            let v = json(l);
            v["type"] == "watch"
                && v["level"] == level
                && v["message"].as_str().is_some_and(|m| m.contains(needle))
        })
    };
    let c = GwConfig {
        keep_alive_secs: 1,
        ..GwConfig::new(&broker, "gw1")
    };
    let path = c.write(t.path());
    let d = daemon(&path);
    // Readings stop while the process hangs (keep-alive 1 s: the Will
    // follows 1.5 s later, after 5 silent poll intervals of 100 ms).
    n.err.wait_contains("watching the readings of gateway gw1");
    d.signal("STOP");
    watch("silent gateway", "CRITICAL", "sent no reading");
    // Then the broker gives up on it: the Will.
    watch("Will", "CRITICAL", "OFFLINE (connection lost)");
    drop(d);
    let d = daemon(&path);
    watch("back", "RESOLVED", "gateway gw1 is back online");
    drop(d);
    // The notifier loses the broker for longer than its grace period.
    broker.kill();
    watch("broker lost", "CRITICAL", "no connection to the broker");
    broker.restart();
    watch("broker back", "RESOLVED", "connected to the broker again");
    assert_eq!(
        lines_of(&n, "alert").len(),
        0,
        "watch events are not alerts"
    );
}

#[test]
fn status_without_a_sentinel_falls_back_to_a_bounded_quiet_period() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    // Under another prefix the ACL grants no sentinel topic (nor anything
    // else): the command must still end, and say the list may be incomplete.
    let started = std::time::Instant::now();
    let (code, out) = run_status(&broker, &["--topic-prefix", "elsewhere"]);
    assert_eq!(code, Some(1), "no gateway known: {out}");
    assert!(out.contains("no end-of-list marker"), "{out}");
    assert!(out.contains("no gateway has published a status"), "{out}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(14),
        "bounded by the quiet period, not the timeout"
    );
}

fn test_alert(id: &str) -> String {
    format!(
        "{{\"id\":\"{id}\",\"gateway\":\"gw1\",\"sensor\":\"s1\",\"name\":\"freezer\",\"level\":\"CRITICAL\",\"celsius\":45.0,\"threshold\":40.0,\"ts\":\"2026-01-01T00:00:00.000Z\",\"message\":\"m\"}}"
    )
}

/// Whether process `pid` runs (a zombie not yet reaped counts as dead).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

#[test]
fn a_hook_running_at_sigterm_completes_and_its_answer_reaches_the_gateway() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/acks", "test/sync/#"]);
    let (started, release) = (t.path().join("started"), t.path().join("release"));
    mkfifo(&started);
    mkfifo(&release);
    let script = format!(
        "echo go > {s}; read x < {r}; exit 0",
        s = started.display(),
        r = release.display()
    );
    let mut n = notifier_env(
        &broker,
        "stopping",
        &["--exec", &script, "--no-desktop"],
        &[],
    );
    broker.publish_alert("gw1", "s1", test_alert("a-1").as_bytes(), "a-1");
    assert_eq!(read_fifo(&started).trim(), "go");
    // SIGTERM while the hook runs: the notifier waits for it.
    n.signal("TERM");
    n.err
        .wait_contains("waiting up to 10s for 1 running hook(s)");
    broker.sync(&obs, "hook-running");
    assert_eq!(acks(&obs).len(), 0, "not answered before the hook ends");
    assert!(n.is_running(), "still there for the hook");
    std::fs::write(&release, "x\n").expect("release the hook");
    let answer = obs.out.wait("the hook's answer", |l| {
        l.starts_with("MSG|thermalert/gw1/acks|")
    });
    let answer = json(&parse_seen(&answer).expect("seen").payload);
    assert_eq!(answer["alert_id"], "a-1");
    assert_eq!(answer["status"], "delivered");
    assert_eq!(n.wait_exit(WAIT), Some(0));
    n.err.wait_contains("hook for alert a-1 succeeded");
}

#[test]
fn a_hook_past_the_shutdown_deadline_is_killed_with_its_process_group() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/acks"]);
    let pidfile = t.path().join("child.pid");
    // The hook's child (a mailer, say) outlives the notifier's deadline.
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let mut n = notifier_env(
        &broker,
        "deadline",
        &["--exec", &script, "--exec-timeout", "600", "--no-desktop"],
        &[],
    );
    broker.publish_alert("gw1", "s1", test_alert("a-2").as_bytes(), "a-2");
    let started = std::time::Instant::now() + WAIT;
    let child: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        assert!(
            std::time::Instant::now() < started,
            "the hook did not start"
        );
        n.err.wait_timeout(std::time::Duration::from_millis(20));
    };
    assert!(alive(child));
    let stopped = std::time::Instant::now();
    n.signal("TERM");
    n.err.wait_contains("still running after 10s: killing them");
    // Its answer still goes out: failed, so the gateway escalates.
    let answer = obs.out.wait("the killed hook's answer", |l| {
        l.starts_with("MSG|thermalert/gw1/acks|")
    });
    let answer = json(&parse_seen(&answer).expect("seen").payload);
    assert_eq!(answer["alert_id"], "a-2");
    assert_eq!(answer["status"], "failed");
    assert_eq!(n.wait_exit(WAIT), Some(0));
    assert!(
        stopped.elapsed() >= std::time::Duration::from_secs(10),
        "the deadline was waited for"
    );
    n.err
        .wait_contains("hook for alert a-2 failed: still running at shutdown: killed");
    let deadline = std::time::Instant::now() + WAIT;
    while alive(child) {
        assert!(
            std::time::Instant::now() < deadline,
            "the hook's child {child} was not killed with its process group"
        );
        n.err.wait_timeout(std::time::Duration::from_millis(20));
    }
}
