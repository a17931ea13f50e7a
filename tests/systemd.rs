//! The daemon as a systemd service, proven against the real binary: a fake
//! `NOTIFY_SOCKET` (a datagram socket bound by the test) receives READY,
//! STATUS, WATCHDOG, RELOADING and STOPPING; a stalled sensor loop stops the
//! WATCHDOG pings; SIGHUP reloads the configuration without a reconnect and
//! rejects a bad one; a stand-in journal socket receives one native entry
//! per alert with its priority and fields.

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A datagram and when it arrived.
type Received = (Instant, Vec<u8>);

/// Datagrams received on a socket the test bound, with their arrival time.
#[derive(Clone, Default)]
struct Datagrams {
    inner: Arc<(Mutex<Vec<Received>>, Condvar)>,
}

impl Datagrams {
    /// Binds `path` and collects every datagram on a thread.
    fn bind(path: &Path) -> Datagrams {
        let sock = UnixDatagram::bind(path).expect("bind datagram socket");
        let d = Datagrams::default();
        let inner = d.inner.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = sock.recv(&mut buf) {
                let (m, c) = &*inner;
                m.lock()
                    .expect("lock")
                    .push((Instant::now(), buf[..n].to_vec()));
                c.notify_all();
            }
        });
        d
    }

    fn snapshot(&self) -> Vec<Received> {
        self.inner.0.lock().expect("lock").clone()
    }

    /// Waits until the `n`th datagram (counting from 1) matching `pred`
    /// arrived; returns its index.
    fn wait_nth(&self, what: &str, n: usize, pred: impl Fn(&str) -> bool) -> usize {
        let (m, c) = &*self.inner;
        let deadline = Instant::now() + WAIT;
        let mut g = m.lock().expect("lock");
        loop {
            let hits: Vec<usize> = g
                .iter()
                .enumerate()
                .filter(|(_, (_, b))| pred(&String::from_utf8_lossy(b)))
                .map(|(i, _)| i)
                .collect();
            if hits.len() >= n {
                return hits[n - 1];
            }
            let now = Instant::now();
            if now >= deadline {
                let all: Vec<String> = g
                    .iter()
                    .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
                    .collect();
                panic!(
                    "timed out waiting for {n} x {what}; got:\n{}",
                    all.join("\n--\n")
                );
            }
            g = c.wait_timeout(g, deadline - now).expect("wait").0;
        }
    }

    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> usize {
        self.wait_nth(what, 1, pred)
    }

    /// Waits for the first datagram after index `after` matching `pred`.
    fn wait_after(&self, after: usize, what: &str, pred: impl Fn(&str) -> bool) -> usize {
        let mut k = 1;
        loop {
            let i = self.wait_nth(what, k, &pred);
            if i > after {
                return i;
            }
            k += 1;
        }
    }
}

/// Whether a notify message carries `state` (e.g. `READY=1`) on a line.
fn has(msg: &str, state: &str) -> bool {
    msg.lines().any(|l| l == state)
}

fn status_of(msg: &str) -> Option<&str> {
    msg.lines().find_map(|l| l.strip_prefix("STATUS="))
}

/// The notify messages as text, in order.
fn texts(d: &Datagrams) -> Vec<String> {
    d.snapshot()
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect()
}

/// The env of a daemon under a fake systemd with a 1 s watchdog.
fn notify_env(sock: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("NOTIFY_SOCKET", sock.display().to_string()),
        ("WATCHDOG_USEC", "1000000".into()),
    ]
}

fn spawn(config: &Path, env: &[(&str, String)]) -> Proc {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    daemon_env(config, &env)
}

/// A configuration whose broker does not exist (a closed port).
fn config_without_broker(dir: &Path, sensors: &str) -> PathBuf {
    let pki = Pki::new(&dir.join("pki"), "thermalert test CA", &["localhost"], &[]);
    let p = dir.join("gw1.toml");
    std::fs::write(
        &p,
        format!(
            "gateway_id = \"gw1\"\n\n[mqtt]\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\nkeep_alive_secs = 5\nreconnect_min_ms = 200\nreconnect_max_secs = 2\n\n[sensors]\nbackend = \"sim\"\npoll_interval_ms = 100\n{sensors}",
            free_port(),
            pki.ca().display()
        ),
    )
    .expect("write config");
    p
}

#[test]
fn notify_ready_status_watchdog_reloading_stopping_in_order() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/status", "test/sync/#"]);
    let cfg = GwConfig::new(&broker, "gw1").write(t.path());
    let sock = t.path().join("notify.sock");
    let n = Datagrams::bind(&sock);
    let mut d = spawn(&cfg, &notify_env(&sock));

    let ready = n.wait("READY=1", |m| has(m, "READY=1"));
    let first = &texts(&n)[ready];
    assert!(
        status_of(first).is_some(),
        "READY carries a STATUS: {first}"
    );
    let connected = n.wait("STATUS connected", |m| {
        status_of(m)
            .is_some_and(|s| s.starts_with("connected to localhost:") && s.contains("1 sensor"))
    });
    let ping = n.wait_nth("3 x WATCHDOG=1", 3, |m| has(m, "WATCHDOG=1"));

    d.signal("HUP");
    let reloading = n.wait("RELOADING=1", |m| has(m, "RELOADING=1"));
    let ready2 = n.wait_nth("READY=1 after the reload", 2, |m| has(m, "READY=1"));
    d.err.wait_contains("reload: configuration reloaded");

    d.signal("TERM");
    let stopping = n.wait("STOPPING=1", |m| has(m, "STOPPING=1"));
    assert_eq!(d.wait_exit(WAIT), Some(0));

    assert!(
        ready <= connected,
        "READY before or with the connected status"
    );
    assert!(ready < ping, "READY first, then the pings");
    assert!(ping < reloading && reloading < ready2 && ready2 < stopping);
    let all = texts(&n);
    assert!(
        all[..ready].iter().all(|m| !has(m, "WATCHDOG=1")),
        "no WATCHDOG=1 before READY=1"
    );
    assert!(
        all[stopping..].iter().all(|m| !has(m, "READY=1")),
        "nothing claims READY after STOPPING"
    );
    // The offline status of a clean stop followed.
    broker.sync(&obs, "stop");
    let offline = seen(&obs)
        .into_iter()
        .filter(|s| s.topic == "thermalert/gw1/status")
        .map(|s| json(&s.payload))
        .filter(|v| v["state"] == "offline" && v["reason"] == "shutdown")
        .count();
    assert_eq!(offline, 1, "one clean offline status");
}

#[test]
fn ready_arrives_with_no_broker_and_the_status_says_so() {
    let t = tmp();
    let cfg = config_without_broker(
        t.path(),
        &sensor(
            "28-000000000001",
            "freezer",
            "critical_above = 40.0",
            "[[0.0, 20.0]]",
        ),
    );
    let sock = t.path().join("notify.sock");
    let n = Datagrams::bind(&sock);
    let mut d = spawn(&cfg, &notify_env(&sock));
    let ready = n.wait("READY=1", |m| has(m, "READY=1"));
    let msg = &texts(&n)[ready];
    let status = status_of(msg).unwrap_or_default();
    assert!(
        status.starts_with("not connected to localhost:") && status.contains("1 sensor"),
        "{msg}"
    );
    d.err.wait_contains("cannot connect to the broker");
    // A loop that backs off between connection attempts is making progress.
    n.wait_nth("3 x WATCHDOG=1", 3, |m| has(m, "WATCHDOG=1"));
    assert!(d.is_running());
    d.signal("TERM");
    n.wait("STOPPING=1", |m| has(m, "STOPPING=1"));
    assert_eq!(d.wait_exit(WAIT), Some(0));
}

#[test]
fn a_stalled_sensor_loop_stops_the_watchdog_pings() {
    let t = tmp();
    // The sensor loop's sweep hangs from 2 s to 7 s after start.
    let cfg = config_without_broker(
        t.path(),
        "\n[[sensor]]\nid = \"28-000000000001\"\ncritical_above = 40.0\n[sensor.sim]\nsteps = [[0.0, 20.0]]\nfaults = [{ from = 2.0, until = 7.0, kind = \"stall\" }]\n",
    );
    let sock = t.path().join("notify.sock");
    let n = Datagrams::bind(&sock);
    let mut d = spawn(&cfg, &notify_env(&sock));
    n.wait("READY=1", |m| has(m, "READY=1"));
    let stalled = n.wait("STATUS=STALLED", |m| {
        status_of(m).is_some_and(|s| s.starts_with("STALLED: sensor loop"))
    });
    let recovered = n.wait_after(stalled, "STATUS without STALLED", |m| {
        status_of(m).is_some_and(|s| !s.starts_with("STALLED"))
    });
    let first_after = n.wait_after(recovered, "WATCHDOG=1 after the recovery", |m| {
        has(m, "WATCHDOG=1")
    });
    let all = n.snapshot();
    let msgs = texts(&n);
    assert!(
        msgs[stalled..recovered]
            .iter()
            .all(|m| !has(m, "WATCHDOG=1")),
        "no WATCHDOG=1 while the sensor loop is stalled:\n{}",
        msgs.join("\n--\n")
    );
    let last_before = (0..stalled)
        .rev()
        .find(|&i| has(&msgs[i], "WATCHDOG=1"))
        .expect("pings before the stall");
    let gap = all[first_after].0 - all[last_before].0;
    assert!(
        gap >= Duration::from_millis(2000),
        "the pings paused for {gap:?} only (a ping every 500 ms, a stall of 5 s)"
    );
    d.err
        .wait_contains("watchdog: the sensor loop has made no progress");
    d.err
        .wait_contains("watchdog: every loop is making progress again");
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT), Some(0));
}

/// `[[sensor]]` tables for the reload test.
fn reload_sensors(a_thresholds: &str, b: bool, c: bool) -> String {
    let mut s = sensor("28-00000000000a", "alpha", a_thresholds, "[[0.0, 35.0]]");
    if b {
        s.push_str(&sensor(
            "28-00000000000b",
            "bravo",
            "critical_above = 40.0",
            "[[0.0, 20.0]]",
        ));
    }
    if c {
        s.push_str(&sensor(
            "28-00000000000c",
            "charlie",
            "critical_above = 40.0",
            "[[0.0, 50.0]]",
        ));
    }
    s
}

#[test]
fn sighup_rejects_a_bad_file_and_applies_a_good_one_without_reconnecting() {
    let t = tmp();
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/#", "test/sync/#"]);
    let mut gw = GwConfig::new(&broker, "gw1");
    gw.sensors = reload_sensors("warning_above = 30.0\ncritical_above = 40.0", true, false);
    let path = gw.write(t.path());
    let sock = t.path().join("notify.sock");
    let n = Datagrams::bind(&sock);
    let mut d = spawn(&path, &notify_env(&sock));
    n.wait("READY=1", |m| has(m, "READY=1"));
    // alpha reads 35: WARNING under warning_above = 30.
    obs.out.wait("alpha WARNING", |l| {
        parse_seen(l).is_some_and(|s| {
            s.topic == "thermalert/gw1/alerts/28-00000000000a"
                && json(&s.payload)["level"] == "WARNING"
        })
    });

    // 1. A bad file: critical below warning. Rejected, named, old one kept.
    gw.sensors = reload_sensors("warning_above = 30.0\ncritical_above = 25.0", true, false);
    gw.write(t.path());
    d.signal("HUP");
    n.wait_nth("READY=1 after the rejected reload", 2, |m| {
        has(m, "READY=1")
    });
    let line = d.err.wait_contains("reload: invalid configuration");
    assert!(
        line.contains("gw1.toml:") && line.contains("key `sensor[0].critical_above`"),
        "names the file, line and key: {line}"
    );
    assert!(line.contains("keeping the running one"), "{line}");
    assert!(d.is_running());
    assert_eq!(d.err.count(|l| l.contains("configuration reloaded")), 0);

    // 2. A good file: alpha's critical threshold drops to 34, bravo goes,
    // charlie comes; a changed port waits for a restart.
    gw.sensors = reload_sensors("warning_above = 30.0\ncritical_above = 34.0", false, true);
    let good = gw.write(t.path());
    let text = std::fs::read_to_string(&good).expect("read");
    std::fs::write(
        &good,
        text.replace(&format!("port = {}", broker.port), "port = 1"),
    )
    .expect("write");
    d.signal("HUP");
    n.wait_nth("READY=1 after the good reload", 3, |m| has(m, "READY=1"));
    let summary = d.err.wait_contains("reload: configuration reloaded");
    assert!(
        summary.contains("added 28-00000000000c") && summary.contains("removed 28-00000000000b"),
        "{summary}"
    );
    d.err
        .wait_contains("reload: mqtt.port changed; it needs a restart");

    // The new threshold applies to alpha, whose WARNING state was kept.
    let crit = obs.out.wait("alpha CRITICAL", |l| {
        parse_seen(l).is_some_and(|s| {
            s.topic == "thermalert/gw1/alerts/28-00000000000a"
                && json(&s.payload)["level"] == "CRITICAL"
        })
    });
    let crit = json(&parse_seen(&crit).expect("seen").payload);
    assert_eq!(crit["threshold"], 34.0);
    assert_eq!(
        crit["previous"], "WARNING",
        "alarm state kept across the reload"
    );
    // The new sensor is polled and alarms.
    obs.out.wait("charlie CRITICAL", |l| {
        parse_seen(l).is_some_and(|s| {
            s.topic == "thermalert/gw1/alerts/28-00000000000c"
                && json(&s.payload)["level"] == "CRITICAL"
        })
    });
    // The removed one is no longer polled: three more charlie readings,
    // and no bravo reading among them.
    let bravo = |s: &Seen| s.topic == "thermalert/gw1/sensors/28-00000000000b/reading";
    let charlie = |l: &str| {
        parse_seen(l).is_some_and(|s| s.topic == "thermalert/gw1/sensors/28-00000000000c/reading")
    };
    broker.sync(&obs, "after-reload");
    let bravo_before = seen(&obs).iter().filter(|s| bravo(s)).count();
    let charlie_before = obs.out.count(charlie);
    obs.out
        .wait_n("3 more charlie readings", charlie_before + 3, WAIT, charlie);
    broker.sync(&obs, "later");
    assert_eq!(
        seen(&obs).iter().filter(|s| bravo(s)).count(),
        bravo_before,
        "bravo is no longer polled"
    );
    // One connection through it all.
    assert_eq!(
        broker.log().count(|l| l.contains("as thermalertd-gw1")),
        1,
        "a reload does not reconnect"
    );
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT), Some(0));
}

// journald ---------------------------------------------------------------------

/// Parses a native-protocol journal entry into (name, value) pairs.
fn parse_entry(mut b: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Some(nl) = b.iter().position(|&c| c == b'\n') {
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            out.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            b = &b[nl + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let len_bytes: [u8; 8] = b[nl + 1..nl + 9].try_into().expect("length");
            let len = u64::from_le_bytes(len_bytes) as usize;
            let start = nl + 9;
            out.push((
                name,
                String::from_utf8_lossy(&b[start..start + len]).into_owned(),
            ));
            b = &b[start + len + 1..];
        }
    }
    out
}

fn field<'a>(e: &'a [(String, String)], k: &str) -> Option<&'a str> {
    e.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// A sensor that goes WARNING, CRITICAL, RESOLVED, then FAULT.
const JOURNEY: &str = "\n[[sensor]]\nid = \"28-000000000001\"\nname = \"freezer\"\nwarning_above = 30.0\ncritical_above = 40.0\n[sensor.sim]\nsteps = [[0.0, 35.0], [1.0, 45.0], [2.0, 20.0]]\nfaults = [{ from = 3.0, until = 100.0, kind = \"missing\" }]\n";

#[test]
fn every_alert_is_one_journal_entry_with_its_priority_and_fields() {
    use std::os::unix::fs::MetadataExt;
    let t = tmp();
    let cfg = config_without_broker(t.path(), JOURNEY);
    let journal = t.path().join("journal.sock");
    let j = Datagrams::bind(&journal);
    // Stderr is a stream socket, as journald's is; JOURNAL_STREAM names it.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let meta = std::fs::File::from(std::os::fd::OwnedFd::from(
        theirs.try_clone().expect("clone"),
    ))
    .metadata()
    .expect("fstat");
    let mut cmd = Command::new(DAEMON);
    cmd.arg("--config")
        .arg(&cfg)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("THERMALERT_JOURNAL_SOCKET", &journal)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs,
        )));
    let child = cmd.spawn().expect("spawn thermalertd");
    drop(cmd);
    let mut d = Proc {
        child,
        out: Lines::default(),
        err: Lines::default(),
        name: "thermalertd".into(),
    };
    j.wait("the FAULT alert entry", |m| m.contains("LEVEL=FAULT"));
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT), Some(0));
    let entries: Vec<Vec<(String, String)>> = j
        .snapshot()
        .iter()
        .filter(|(_, b)| !b.is_empty())
        .map(|(_, b)| parse_entry(b))
        .collect();

    let alerts: Vec<&Vec<(String, String)>> = entries
        .iter()
        .filter(|e| field(e, "ALERT_ID").is_some())
        .collect();
    let levels: Vec<(&str, &str)> = alerts
        .iter()
        .map(|e| {
            (
                field(e, "LEVEL").unwrap_or("?"),
                field(e, "PRIORITY").unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        levels,
        [
            ("WARNING", "4"),
            ("CRITICAL", "2"),
            ("RESOLVED", "5"),
            ("FAULT", "3")
        ],
        "one entry per alert, priority by level"
    );
    let mut ids: Vec<&str> = alerts.iter().filter_map(|e| field(e, "ALERT_ID")).collect();
    ids.dedup();
    assert_eq!(ids.len(), 4, "distinct alert ids");
    for e in &alerts {
        assert_eq!(field(e, "SENSOR_ID"), Some("28-000000000001"));
        assert_eq!(field(e, "SENSOR_NAME"), Some("freezer"));
        assert_eq!(field(e, "GATEWAY"), Some("gw1"));
        assert_eq!(field(e, "SYSLOG_IDENTIFIER"), Some("thermalertd"));
        assert!(field(e, "MESSAGE").is_some_and(|m| m.starts_with("ALERT ")));
        assert_eq!(
            e.iter().filter(|(n, _)| n == "PRIORITY").count(),
            1,
            "one PRIORITY"
        );
    }
    assert_eq!(field(alerts[1], "CELSIUS"), Some("45.00"));
    assert_eq!(field(alerts[1], "THRESHOLD"), Some("40.00"));
    assert_eq!(
        field(alerts[3], "CELSIUS"),
        None,
        "a FAULT has no temperature"
    );
    // `journalctl -p crit` (PRIORITY <= 2) shows exactly the CRITICAL alerts.
    let crit: Vec<Option<&str>> = entries
        .iter()
        .filter(|e| {
            field(e, "PRIORITY")
                .and_then(|p| p.parse::<u8>().ok())
                .is_some_and(|p| p <= 2)
        })
        .map(|e| field(e, "LEVEL"))
        .collect();
    assert_eq!(crit, [Some("CRITICAL")]);
    // Ordinary lines are there too, at info.
    assert!(entries.iter().any(|e| {
        field(e, "MESSAGE").is_some_and(|m| m.contains("started"))
            && field(e, "PRIORITY") == Some("6")
    }));
    // And nothing went to stderr.
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut &ours, &mut rest);
    assert!(!rest.contains("ALERT"), "stderr: {rest}");
}

#[test]
fn without_the_journal_alerts_go_to_stderr() {
    let t = tmp();
    let cfg = config_without_broker(t.path(), JOURNEY);
    let journal = t.path().join("journal.sock");
    let j = Datagrams::bind(&journal);
    // JOURNAL_STREAM names another file: stderr is not the journal.
    let d = spawn(
        &cfg,
        &[
            ("JOURNAL_STREAM", "1:1".to_string()),
            ("THERMALERT_JOURNAL_SOCKET", journal.display().to_string()),
        ],
    );
    let line = d.err.wait_contains("ALERT CRITICAL freezer");
    assert!(line.contains("celsius=45.00 threshold=40.00"), "{line}");
    assert!(
        j.snapshot().is_empty(),
        "nothing was sent to the journal socket"
    );
}
