//! End-to-end benchmark of thermalert (issue 6): the release binaries against
//! a real Mosquitto over TLS with QoS 2, started from the project's own broker
//! configuration by the test harness (`tests/common`).
//!
//! Run it with `scripts/bench.sh` (or `cargo bench --bench e2e`). Without
//! `--bench` (as `cargo test --all-targets` runs it) it does nothing. It
//! writes `target/bench/results.json` and `target/bench/results.md`.
//! `BENCH_ONLY=roundtrip,burst` runs a subset; `BENCH_FOOTPRINT_SECS`
//! (default 60) sets the CPU/RSS measuring window.
//!
//! Sections:
//! 1. round trip: the daemon's decision -> the notifier's answer matched by
//!    the daemon (the daemon's own "answered ... after N ms" log lines);
//! 2. detection latency: the w1 sysfs input changes -> the notifier prints,
//!    per poll interval;
//! 3. burst: 1000 sensors cross at once, broker Receive Maximum 20 and 1;
//! 4. footprint: RSS, CPU per hour at 10 sensors @ 1 Hz, start-up, binary size;
//! 5. 1-Wire sweep time in the wire-level simulator's virtual time;
//! 6. the notifier alone, flooded by an in-process rumqttc publisher.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{Broker, BrokerOpts, Sink};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

// ---------------------------------------------------------------- processes

/// Lines of a child's output, each stamped when the harness read it.
type Stamped = Vec<(Instant, String)>;

#[derive(Clone, Default)]
struct Timed {
    inner: Arc<(Mutex<Stamped>, Condvar)>,
}

impl Sink for Timed {
    fn push(&self, l: String) {
        let (m, c) = &*self.inner;
        m.lock().expect("lock").push((Instant::now(), l));
        c.notify_all();
    }
}

impl Timed {
    fn len(&self) -> usize {
        self.inner.0.lock().expect("lock").len()
    }

    fn snapshot(&self) -> Vec<(Instant, String)> {
        self.inner.0.lock().expect("lock").clone()
    }

    /// Waits for `n` lines at index `from` or later that satisfy `pred`.
    fn wait(
        &self,
        from: usize,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<Vec<(Instant, String)>, String> {
        let (m, c) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut hits = Vec::new();
        let mut scanned = from;
        let mut g = m.lock().expect("lock");
        loop {
            for (t, l) in g.iter().skip(scanned) {
                if pred(l) {
                    hits.push((*t, l.clone()));
                }
            }
            scanned = scanned.max(g.len());
            if hits.len() >= n {
                return Ok(hits);
            }
            let now = Instant::now();
            if now >= deadline {
                let tail: Vec<&str> = g.iter().rev().take(15).map(|(_, l)| l.as_str()).collect();
                return Err(format!(
                    "timed out after {timeout:?}: {} of {n} lines; last lines:\n{}",
                    hits.len(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            g = c.wait_timeout(g, deadline - now).expect("wait").0;
        }
    }
}

/// A child process under measurement; killed on drop.
struct Proc {
    child: Child,
    out: Timed,
    err: Timed,
    spawned: Instant,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        // Log lines carry timestamps unless journald is the log's reader.
        cmd.env_remove("JOURNAL_STREAM");
        let spawned = Instant::now();
        let (child, out, err) = common::spawn_piped("benchmarked process", &mut cmd);
        Proc {
            child,
            out,
            err,
            spawned,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then up to 5 s for a clean exit.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CONNECTED: &str = "connected to the broker";

/// The command for `bin`, prefixed by `$<wrap_var>` when set (e.g.
/// `BENCH_NOTIFIER_WRAP="perf record -g -o notifier.perf --"`), for
/// profiling; /proc figures then describe the wrapper.
fn command(bin: &str, wrap_var: &str) -> Command {
    let wrap = std::env::var(wrap_var).unwrap_or_default();
    let mut words = wrap.split_whitespace();
    match words.next() {
        Some(w) => {
            let mut c = Command::new(w);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

fn daemon(config: &Path) -> Proc {
    let mut cmd = command(common::DAEMON, "BENCH_DAEMON_WRAP");
    cmd.arg("--config").arg(config);
    Proc::spawn(cmd)
}

/// The notifier as user `notifier`; waits until it has subscribed.
fn notifier(broker: &Broker, client_id: &str, json: bool) -> Proc {
    let mut cmd = command(common::NOTIFIER, "BENCH_NOTIFIER_WRAP");
    cmd.args(common::notifier_args(broker, broker.port, client_id))
        .arg("--state-dir")
        .arg(common::notifier_state_dir(broker, client_id));
    if json {
        cmd.arg("--json");
    }
    let p = Proc::spawn(cmd);
    p.err
        .wait(0, 1, common::WAIT, |l| {
            l.contains("subscribed to") || l.contains("subscriptions kept")
        })
        .expect("notifier subscribed");
    p
}

/// A daemon configuration for gateway `gw1` on `broker`.
fn daemon_config(
    broker: &Broker,
    dir: &Path,
    name: &str,
    mqtt_extra: &str,
    sensors_section: &str,
    sensors: &str,
) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let s = format!(
        "gateway_id = \"gw1\"\nstate_dir = \"{}\"\n\n[mqtt]\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\nusername = \"gw1\"\npassword_file = \"{}\"\nkeep_alive_secs = 30\n{mqtt_extra}\n\n[sensors]\n{sensors_section}\n{sensors}",
        // A fresh state folder (on-disk outbox) per configuration.
        dir.join(format!("state-{name}")).display(),
        broker.port,
        broker.pki.ca().display(),
        broker.pass_file("gw1").display(),
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, s).expect("write config");
    p
}

fn sim_sensor(i: usize, thresholds: &str, sim: &str) -> String {
    let id = thermalert::onewire::Rom::new(0x28, i as u64 + 1).id();
    format!("\n[[sensor]]\nid = \"{id}\"\nname = \"s{i}\"\n{thresholds}\n[sensor.sim]\n{sim}\n")
}

// ---------------------------------------------------------------- /proc

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds (clock-tick resolution).
fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clk_tck())
}

/// Time on CPU of every live thread of a process, in seconds (ns resolution).
fn schedstat_secs(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let t = t.ok()?;
        let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
        ns += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e9)
}

/// Resident memory by mapping (file name, `[heap]`, `[stack]` or `[anon]`),
/// largest first, in kB: where the RSS goes.
fn rss_by_mapping(pid: u32) -> Vec<(String, u64)> {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    let mut by: HashMap<String, u64> = HashMap::new();
    let mut name = String::new();
    for l in s.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first()
            .is_some_and(|a| a.contains('-') && !a.ends_with(':'))
        {
            name = f.get(5).map_or("[anon]".to_string(), |n| {
                n.rsplit('/').next().unwrap_or(n).to_string()
            });
        } else if f.first() == Some(&"Rss:") {
            *by.entry(name.clone()).or_default() +=
                f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    let mut v: Vec<(String, u64)> = by.into_iter().filter(|(_, kb)| *kb > 0).collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v
}

// ---------------------------------------------------------------- parsing

/// `2026-..Z INFO  alert <id> answered by <by> (<status>) after <ms> ms`
fn parse_answered(l: &str) -> Option<(String, f64)> {
    let i = l.find(" alert ")?;
    let (id, rest) = l[i + 7..].split_once(' ')?;
    if !rest.starts_with("answered") {
        return None;
    }
    let a = rest.rfind(" after ")?;
    let ms = rest[a + 7..].strip_suffix(" ms")?.parse().ok()?;
    Some((id.to_string(), ms))
}

fn is_alert_line(l: &str) -> bool {
    l.contains(" ALERT ") && l.contains(" id=")
}

/// The RFC 3339 timestamp that opens a log line.
fn log_time(l: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(l.split_whitespace().next()?).ok()
}

fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------- stats

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram")
}

/// Percentiles of a histogram of microseconds, in milliseconds.
fn summary(h: &Histogram<u64>) -> Value {
    let ms = |v: u64| (v as f64 / 1000.0 * 1000.0).round() / 1000.0;
    json!({
        "n": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p95_ms": ms(h.value_at_quantile(0.95)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
        "mean_ms": (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The Markdown table, row by row.
struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    fn row(&mut self, what: &str, result: String, target: &str, verdict: &str) {
        self.rows
            .push([what.into(), result, target.into(), verdict.into()]);
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

// ---------------------------------------------------------------- sections

/// 1. Alert round trip at about 100 alerts per second.
fn roundtrip(dir: &Path, t: &mut Table) -> Value {
    let broker = Broker::start(&dir.join("broker"));
    let mut n = notifier(&broker, "bench-rt", true);
    // 48 sensors, each WARNING then RESOLVED once a second, at phases
    // spread over the second: about 96 alerts per second.
    let mut sensors = String::new();
    for i in 0..48 {
        let p = 0.02 + (i % 24) as f64 * 0.02;
        sensors.push_str(&sim_sensor(
            i,
            "warning_above = 30.0",
            &format!(
                "steps = [[0.0, 20.0], [{p:.2}, 35.0], [{:.2}, 20.0]]\nloop_secs = 1.0",
                p + 0.5
            ),
        ));
    }
    let cfg = daemon_config(
        &broker,
        dir,
        "rt",
        "publish_readings = false",
        "backend = \"sim\"\npoll_interval_ms = 50",
        &sensors,
    );
    let mut d = daemon(&cfg);
    const SKIP: usize = 100;
    const WANT: usize = 1100;
    let lines = d
        .err
        .wait(0, SKIP + WANT, Duration::from_secs(120), |l| {
            parse_answered(l).is_some()
        })
        .expect("round-trip answers");
    let cpu = cpu_secs(d.pid());
    let hwm = proc_status_kb(d.pid(), "VmHWM");
    d.stop();
    n.stop();
    let mut h = hist();
    let mut first = None;
    let mut last = None;
    for (_, l) in lines.iter().skip(SKIP) {
        if let Some((_, ms)) = parse_answered(l) {
            h.record((ms * 1000.0).round().max(1.0) as u64)
                .expect("record");
        }
        let ts = log_time(l);
        first = first.or(ts);
        last = ts.or(last);
    }
    let span_ms = first.zip(last).map_or(f64::NAN, |(a, b)| ms_between(a, b));
    let rate = (h.len() as f64 - 1.0) / (span_ms / 1000.0);
    let s = summary(&h);
    let p99 = s["p99_ms"].as_f64().unwrap_or(f64::NAN);
    t.row(
        "1. alert round trip (decision -> answer matched), TLS + QoS 2",
        format!(
            "p50 {} / p95 {} / p99 {} / max {} ms over {} alerts at {rate:.0} alerts/s",
            s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"], s["n"]
        ),
        "p99 < 5 ms",
        verdict(p99 < 5.0),
    );
    json!({ "latency": s, "alerts_per_s": rate, "daemon_cpu_s": cpu, "daemon_vmhwm_kb": hwm })
}

/// The `w1_slave` file w1_therm prints for `celsius` at 12 bit.
fn w1_slave(celsius: f64) -> String {
    use thermalert::onewire::{build_scratchpad, encode_temperature, Resolution};
    let raw = encode_temperature(celsius);
    let sp = build_scratchpad(raw, 75, 70, Resolution::Bits12, 0x0e);
    let hex: Vec<String> = sp.iter().map(|b| format!("{b:02x}")).collect();
    let hex = hex.join(" ");
    let millis = i64::from(raw) * 1000 / 16;
    format!("{hex} : crc={:02x} YES\n{hex} t={millis}\n", sp[8])
}

/// 2. Detection latency: the w1 sysfs input changes -> the notifier prints.
fn detection(dir: &Path, t: &mut Table) -> Value {
    let broker = Broker::start(&dir.join("broker"));
    let root = dir.join("w1/devices");
    let id = "28-000000000001";
    let dev = root.join(id);
    std::fs::create_dir_all(&dev).expect("mkdir");
    let set = |c: f64| {
        // Renamed into place so that a sweep never reads half a file.
        let tmp = dir.join("w1/w1_slave.tmp");
        std::fs::write(&tmp, w1_slave(c)).expect("write");
        std::fs::rename(&tmp, dev.join("w1_slave")).expect("rename");
    };
    set(20.0);
    let mut n = notifier(&broker, "bench-detect", false);
    let mut out = serde_json::Map::new();
    let mut cells = Vec::new();
    for (poll, samples) in [(100u64, 16), (250, 16), (500, 12), (1000, 10)] {
        let cfg = daemon_config(
            &broker,
            dir,
            &format!("detect-{poll}"),
            "publish_readings = false",
            &format!(
                "backend = \"w1-sysfs\"\npoll_interval_ms = {poll}\n[sensors.w1]\nroot = \"{}\"\nbulk_read = false",
                root.display()
            ),
            &format!("\n[[sensor]]\nid = \"{id}\"\nname = \"probe\"\nwarning_above = 30.0\n"),
        );
        set(20.0);
        let mut d = daemon(&cfg);
        d.err
            .wait(0, 1, common::WAIT, |l| l.contains(CONNECTED))
            .expect("daemon connected");
        std::thread::sleep(Duration::from_millis(2 * poll));
        let mut h = hist();
        let mut hot = false;
        for _ in 0..samples {
            // A random moment within the poll period.
            std::thread::sleep(Duration::from_millis(fastrand::u64(0..poll)));
            hot = !hot;
            let from = n.out.len();
            set(if hot { 35.0 } else { 20.0 });
            let t0 = Instant::now();
            let want = if hot { "WARNING" } else { "RESOLVED" };
            let got = n
                .out
                .wait(from, 1, Duration::from_millis(3 * poll + 10_000), |l| {
                    l.contains(want)
                })
                .expect("notifier printed the alert");
            let us = got[0].0.saturating_duration_since(t0).as_micros() as u64;
            h.record(us.max(1)).expect("record");
        }
        d.stop();
        let s = summary(&h);
        cells.push(format!(
            "{poll} ms: p50 {} / max {} ms",
            s["p50_ms"], s["max_ms"]
        ));
        out.insert(format!("poll_{poll}_ms"), s);
    }
    n.stop();
    t.row(
        "2. detection latency (w1 sysfs input changes -> notifier prints), by poll interval",
        cells.join("; "),
        "(none; expect about poll/2 median, poll max)",
        "-",
    );
    Value::Object(out)
}

/// 3. 1000 sensors crossing at once, broker Receive Maximum `rm`.
fn burst(dir: &Path, rm: u16, t: &mut Table) -> Value {
    const N: usize = 1000;
    let extra = format!("max_inflight_messages {rm}");
    let broker = Broker::start_with(
        &dir.join("broker"),
        BrokerOpts {
            extra: &[&extra],
            ..Default::default()
        },
    );
    let mut n = notifier(&broker, "bench-burst", true);
    let mut sensors = String::new();
    for i in 0..N {
        sensors.push_str(&sim_sensor(
            i,
            "warning_above = 30.0",
            "steps = [[0.0, 20.0], [3.0, 35.0]]",
        ));
    }
    let cfg = daemon_config(
        &broker,
        dir,
        &format!("burst-{rm}"),
        "publish_readings = false",
        "backend = \"sim\"\npoll_interval_ms = 500",
        &sensors,
    );
    let mut d = daemon(&cfg);
    let timeout = Duration::from_secs(if rm == 1 { 180 } else { 60 });
    let answered = d.err.wait(0, N, timeout, |l| parse_answered(l).is_some());
    // Anything late (a duplicate) has a moment to show up.
    std::thread::sleep(Duration::from_secs(1));
    let hwm = proc_status_kb(d.pid(), "VmHWM");
    let notifier_hwm = proc_status_kb(n.pid(), "VmHWM");
    d.stop();
    n.stop();
    let log = d.err.snapshot();
    let answers: Vec<(String, f64)> = log.iter().filter_map(|(_, l)| parse_answered(l)).collect();
    let unique: HashSet<&str> = answers.iter().map(|(id, _)| id.as_str()).collect();
    let raised: Vec<&String> = log
        .iter()
        .map(|(_, l)| l)
        .filter(|l| is_alert_line(l))
        .collect();
    let connected_at = log
        .iter()
        .find(|(_, l)| l.contains(CONNECTED))
        .and_then(|(_, l)| log_time(l));
    // What the broker announced in CONNACK, as the daemon logged it.
    let announced_rm: Option<u16> = log
        .iter()
        .find_map(|(_, l)| l.split_once("broker receive maximum "))
        .and_then(|(_, r)| r.trim_end_matches(')').parse().ok());
    let first_raised = raised.first().and_then(|l| log_time(l));
    let last_answer = log
        .iter()
        .filter(|(_, l)| parse_answered(l).is_some())
        .filter_map(|(_, l)| log_time(l))
        .max();
    let total_ms = first_raised
        .zip(last_answer)
        .map_or(f64::NAN, |(a, b)| ms_between(a, b));
    let max_rtt = answers.iter().map(|(_, ms)| *ms).fold(0.0, f64::max);
    let shown: Vec<String> = n
        .out
        .snapshot()
        .iter()
        .map(|(_, l)| common::json(l))
        .filter(|v| v["type"] == "alert")
        .map(|v| v["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut shown_count: HashMap<&str, usize> = HashMap::new();
    for s in &shown {
        *shown_count.entry(s.as_str()).or_default() += 1;
    }
    let lost = N.saturating_sub(unique.len());
    let duplicated = answers.len() - unique.len() + shown.len() - shown_count.len();
    let ok = answered.is_ok() && lost == 0 && duplicated == 0;
    let target = if rm == 20 {
        "< 2 s, 0 lost, 0 dup"
    } else {
        "0 lost, 0 dup"
    };
    t.row(
        &format!(
            "3. burst: {N} sensors cross at once, broker Receive Maximum {rm} (CONNACK: {})",
            announced_rm.map_or("?".into(), |r| r.to_string())
        ),
        format!(
            "all answered {total_ms:.0} ms after the first decision (max round trip {max_rtt:.0} ms); {} raised, {} shown, {} answered; lost {lost}, duplicated {duplicated}",
            raised.len(),
            shown_count.len(),
            unique.len()
        ),
        target,
        verdict(ok && (rm != 20 || total_ms < 2000.0)),
    );
    json!({
        "receive_maximum": rm,
        "receive_maximum_announced": announced_rm,
        "alerts": N,
        "raised": raised.len(),
        "shown_unique": shown_count.len(),
        "answered_unique": unique.len(),
        "lost": lost,
        "duplicated": duplicated,
        "all_answered_ms": total_ms,
        "max_round_trip_ms": max_rtt,
        "connected_before_crossing": connected_at.zip(first_raised).map(|(c, f)| c <= f),
        "daemon_vmhwm_kb": hwm,
        "notifier_vmhwm_kb": notifier_hwm,
        "error": answered.err(),
    })
}

/// 4. Footprint at 10 sensors polled every second, and start-up time.
fn footprint(dir: &Path, t: &mut Table) -> Value {
    let broker = Broker::start(&dir.join("broker"));
    let mut sensors = String::new();
    for i in 0..10 {
        sensors.push_str(&sim_sensor(
            i,
            "warning_above = 30.0\ncritical_above = 40.0",
            "steps = [[0.0, 20.0], [5.0, 20.5]]",
        ));
    }
    let cfg = daemon_config(
        &broker,
        dir,
        "footprint",
        "",
        "backend = \"sim\"\npoll_interval_ms = 1000",
        &sensors,
    );
    // Start-up: spawn -> READY=1 on a stand-in NOTIFY_SOCKET (sd-notify),
    // and spawn -> "connected to the broker".
    let sock_path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(common::WAIT))
        .expect("socket timeout");
    let mut starts = Vec::new();
    let mut readies = Vec::new();
    for _ in 0..7 {
        let mut cmd = command(common::DAEMON, "BENCH_DAEMON_WRAP");
        cmd.arg("--config")
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &sock_path);
        let mut d = Proc::spawn(cmd);
        let mut buf = [0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).expect("sd-notify datagram");
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                readies.push(d.spawned.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
        let l = d
            .err
            .wait(0, 1, common::WAIT, |l| l.contains(CONNECTED))
            .expect("connected");
        starts.push(l[0].0.duration_since(d.spawned).as_secs_f64() * 1000.0);
        d.stop();
        // Drain what the stop sent (STOPPING=1).
        sock.set_nonblocking(true).expect("nonblocking");
        while sock.recv(&mut buf).is_ok() {}
        sock.set_nonblocking(false).expect("blocking");
    }
    let first_start = starts[0];
    let start_ms = median(&mut starts);
    let start_max = starts.iter().copied().fold(0.0, f64::max);
    let ready_ms = median(&mut readies);
    let ready_max = readies.iter().copied().fold(0.0, f64::max);

    let secs: u64 = std::env::var("BENCH_FOOTPRINT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut d = daemon(&cfg);
    d.err
        .wait(0, 1, common::WAIT, |l| l.contains(CONNECTED))
        .expect("connected");
    std::thread::sleep(Duration::from_secs(5));
    let pid = d.pid();
    let (c0, s0, t0) = (cpu_secs(pid), schedstat_secs(pid), Instant::now());
    let mut rss = Vec::new();
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(kb) = proc_status_kb(pid, "VmRSS") {
            rss.push(kb as f64);
        }
    }
    let (c1, s1, el) = (cpu_secs(pid), schedstat_secs(pid), t0.elapsed());
    let hwm = proc_status_kb(pid, "VmHWM").unwrap_or(0);
    let threads = proc_status_kb(pid, "Threads");
    let mappings = rss_by_mapping(pid);
    d.stop();
    let per_hour = |a: Option<f64>, b: Option<f64>| {
        a.zip(b)
            .map_or(f64::NAN, |(a, b)| (b - a) / el.as_secs_f64() * 3600.0)
    };
    let cpu_h_ticks = per_hour(c0, c1);
    let cpu_h = per_hour(s0, s1);
    let rss_steady = median(&mut rss);
    t.row(
        "4a. daemon steady RSS (10 sensors @ 1 Hz, readings on)",
        format!(
            "{:.1} MB (VmRSS median over {secs} s); peak VmHWM {:.1} MB",
            rss_steady / 1024.0,
            hwm as f64 / 1024.0
        ),
        "< 8 MB",
        verdict(rss_steady < 8.0 * 1024.0),
    );
    t.row(
        "4b. daemon CPU per hour (10 sensors @ 1 Hz, readings on)",
        format!(
            "{cpu_h:.2} s/h (schedstat; utime+stime: {cpu_h_ticks:.2} s/h) measured over {secs} s"
        ),
        "< 1.5 s/h",
        verdict(cpu_h < 1.5),
    );
    t.row(
        "4c. start-up: spawn -> READY=1 (sd-notify), and -> \"connected to the broker\"",
        format!("READY=1: median {ready_ms:.1} ms, max {ready_max:.1} ms; connected: median {start_ms:.1} ms, max {start_max:.1} ms (7 starts)"),
        "< 200 ms",
        verdict(ready_ms < 200.0 && start_ms < 200.0),
    );
    json!({
        "steady_rss_kb": rss_steady,
        "peak_rss_kb": hwm,
        "threads": threads,
        "rss_kb_by_mapping": mappings,
        "cpu_s_per_hour": cpu_h,
        "cpu_s_per_hour_utime_stime": cpu_h_ticks,
        "measured_secs": el.as_secs_f64(),
        "ready_ms_median": ready_ms,
        "ready_ms_max": ready_max,
        "ready_ms_all": readies,
        "startup_ms_median": start_ms,
        "startup_ms_max": start_max,
        "startup_ms_first": first_start,
        "startup_ms_all": starts,
    })
}

fn binary_sizes(t: &mut Table) -> Value {
    let root = Path::new(common::ROOT);
    let size = |p: PathBuf| std::fs::metadata(p).ok().map(|m| m.len());
    let mut out = serde_json::Map::new();
    let mut cells = Vec::new();
    let mut aarch64_ok = None;
    for (target, dir) in [
        ("x86_64", root.join("target/release")),
        (
            "aarch64",
            root.join("target/aarch64-unknown-linux-gnu/release"),
        ),
    ] {
        for bin in ["thermalertd", "thermalert-notifier"] {
            let s = size(dir.join(bin));
            out.insert(format!("{target}_{bin}_bytes"), json!(s));
            if let Some(s) = s {
                cells.push(format!("{target} {bin} {:.2} MB", s as f64 / 1048576.0));
                if target == "aarch64" && bin == "thermalertd" {
                    aarch64_ok = Some(s < 6 * 1024 * 1024);
                }
            } else if bin == "thermalertd" {
                cells.push(format!("{target}: not built"));
            }
        }
    }
    t.row(
        "4d. stripped release binary size",
        cells.join("; "),
        "aarch64 thermalertd < 6 MB",
        aarch64_ok.map_or("not measured", verdict),
    );
    Value::Object(out)
}

/// 5. 1-Wire sweep in the simulator's virtual bus time.
fn sweep(t: &mut Table) -> Value {
    use thermalert::onewire::sim::{DeviceSpec, SimBus};
    use thermalert::onewire::Rom;
    use thermalert::sensor::gpio::{ConvertMode, GpioBackend};
    use thermalert::sensor::Backend;
    let mut out = serde_json::Map::new();
    let mut cells = Vec::new();
    for n in [1u64, 10, 50] {
        let bus = SimBus::new();
        let ids: Vec<String> = (0..n)
            .map(|i| {
                let rom = Rom::new(0x28, 0x1000 + i * 7919);
                bus.add(DeviceSpec::new(rom, 20.0));
                rom.id()
            })
            .collect();
        let mut b = GpioBackend::new(bus.pin(), bus.delay(), 3).expect("backend");
        b.sweep(&ids); // the first sweep also reads each configuration
        let t0 = bus.now_us();
        let s = b.sweep(&ids);
        let simultaneous = (bus.now_us() - t0) as f64 / 1000.0;
        assert!(s.iter().all(|s| s.read == Ok(20.0)), "{s:?}");
        b.set_convert_mode(ConvertMode::PerSensor);
        let t0 = bus.now_us();
        b.sweep(&ids);
        let per_sensor = (bus.now_us() - t0) as f64 / 1000.0;
        cells.push(format!("N={n}: {simultaneous:.1} ms vs {per_sensor:.1} ms"));
        out.insert(
            format!("n_{n}"),
            json!({
                "simultaneous_ms": simultaneous,
                "per_sensor_ms": per_sensor,
                "per_sensor_overhead_ms": (simultaneous - 750.0) / n as f64,
            }),
        );
    }
    t.row(
        "5. 1-Wire sweep at 12 bit, simultaneous vs per-sensor conversion (virtual bus time)",
        cells.join("; "),
        "about 750 ms + a few ms per sensor vs N x 750 ms",
        "-",
    );
    Value::Object(out)
}

/// Section 6, the notifier alone: a flood of alerts from an in-process
/// publisher, with at most `WINDOW` unanswered (the broker queues at most
/// 1000 per client), until `N` answers came back.
fn notifier_flood(dir: &Path, t: &mut Table) -> Value {
    use rumqttc::{AsyncClient, Event, Incoming, PublishOptions, PublishProperties, QoS};
    use thermalert::mqtt::conn::Endpoint;
    const N: usize = 20_000;
    const WINDOW: usize = 500;
    let broker = Broker::start(&dir.join("broker"));
    let mut n = notifier(&broker, "bench-flood", false);
    // Who else is busy: the broker relays 12 TLS packets per alert, and the
    // publisher runs in this process; all share the machine's cores.
    let broker_pid = broker.proc.as_ref().map(|p| p.pid() as u32);
    let broker_cpu0 = broker_pid.and_then(cpu_secs);
    let self_cpu0 = cpu_secs(std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let endpoint = Endpoint {
        host: "localhost".into(),
        port: broker.port,
        client_id: "bench-flood-publisher".into(),
        username: Some("gw1".into()),
        password: Some("gw1-secret".into()),
        tls: thermalert::mqtt::tls::client_config(&broker.pki.ca(), None).expect("tls"),
        keep_alive_secs: 30,
        connect_timeout: Duration::from_secs(10),
        session_expiry_secs: 0,
        receive_maximum: 1000,
        resume_on_start: false,
    };
    let (elapsed, answers) = rt.block_on(async move {
        let (client, mut el) = AsyncClient::builder(endpoint.options(None))
            .capacity(1024)
            .build();
        let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let w = window.clone();
        let driver = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut done = Some(done_tx);
            let mut seen = HashSet::new();
            let mut total = 0usize;
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        total += 1;
                        let corr = p.properties.and_then(|pr| pr.correlation_data);
                        if corr.is_some_and(|c| seen.insert(c)) {
                            w.add_permits(1);
                        }
                        if seen.len() >= N {
                            if let Some(d) = done.take() {
                                let _ = d.send((Instant::now(), seen.len(), total));
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("flood publisher: {e}");
                        return;
                    }
                }
            }
        });
        client
            .subscribe("thermalert/gw1/acks", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        ready_rx.await.expect("suback");
        let topic = "thermalert/gw1/alerts/28-000000000001";
        let t0 = Instant::now();
        for i in 0..N {
            window.acquire().await.expect("window").forget();
            let id = format!("flood-{i:06}");
            let body = thermalert::mqtt::payload::encode(&thermalert::mqtt::payload::Alert {
                id: id.clone(),
                gateway: "gw1".into(),
                sensor: "28-000000000001".into(),
                name: "flood".into(),
                level: thermalert::core::alert::AlertLevel::Warning,
                celsius: Some(35.0),
                threshold: Some(30.0),
                previous: Some(thermalert::core::alert::Level::Normal),
                ts: thermalert::sys::timefmt::now_rfc3339(),
                message: "flood is WARNING at 35.00 C (above 30.00 C)".into(),
                escalation: 0,
                clock_synced: true,
            });
            let props = PublishProperties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(300),
                content_type: Some("application/json".into()),
                response_topic: Some("thermalert/gw1/acks".into()),
                correlation_data: Some(id.into_bytes().into()),
                ..Default::default()
            };
            client
                .publish(
                    topic,
                    body,
                    PublishOptions::new(QoS::ExactlyOnce).properties(props),
                )
                .await
                .expect("publish");
        }
        let res = tokio::time::timeout(Duration::from_secs(120), done_rx).await;
        driver.abort();
        match res {
            Ok(Ok((end, unique, total))) => (end.duration_since(t0), (unique, total)),
            _ => (t0.elapsed(), (0, 0)),
        }
    });
    let broker_cpu = broker_pid
        .and_then(cpu_secs)
        .zip(broker_cpu0)
        .map(|(b, a)| b - a);
    let publisher_cpu = cpu_secs(std::process::id())
        .zip(self_cpu0)
        .map(|(b, a)| b - a);
    std::thread::sleep(Duration::from_millis(500));
    let pid = n.pid();
    let cpu = cpu_secs(pid);
    let hwm = proc_status_kb(pid, "VmHWM");
    n.stop();
    let shown = n
        .out
        .snapshot()
        .iter()
        .filter(|(_, l)| l.contains("flood is WARNING"))
        .count();
    let rate = answers.0 as f64 / elapsed.as_secs_f64();
    // The notifier's own cost: alerts it handles per second of one core.
    let per_core = cpu.filter(|c| *c > 0.0).map(|c| N as f64 / c);
    let complete = answers.0 == N && shown == N;
    t.row(
        "6. notifier alone: alerts received, shown and answered per second",
        format!(
            "{rate:.0} alerts/s ({} answered, {shown} shown of {N} in {:.2} s; CPU: notifier {:.2} s = {:.0} us/alert = {:.0} alerts/s of one core, broker {:.1} s, publisher {:.1} s; notifier peak RSS {:.1} MB)",
            answers.0,
            elapsed.as_secs_f64(),
            cpu.unwrap_or(f64::NAN),
            cpu.map_or(f64::NAN, |c| c * 1e6 / N as f64),
            per_core.unwrap_or(f64::NAN),
            broker_cpu.unwrap_or(f64::NAN),
            publisher_cpu.unwrap_or(f64::NAN),
            hwm.unwrap_or(0) as f64 / 1024.0
        ),
        ">= 10,000 alerts/s",
        if complete && rate >= 10_000.0 {
            "met"
        } else if complete && per_core.is_some_and(|r| r >= 10_000.0) {
            // Broker, publisher and notifier share the machine's cores.
            "machine-bound: the notifier's own cost is within the target"
        } else {
            "MISSED"
        },
    );
    json!({
        "alerts": N,
        "window": WINDOW,
        "answered_unique": answers.0,
        "answers_received": answers.1,
        "shown": shown,
        "seconds": elapsed.as_secs_f64(),
        "alerts_per_s": rate,
        "notifier_cpu_s": cpu,
        "notifier_alerts_per_core_s": per_core,
        "broker_cpu_s": broker_cpu,
        "publisher_cpu_s": publisher_cpu,
        "notifier_vmhwm_kb": hwm,
    })
}

/// The criterion micro-benchmarks' medians, when `cargo bench --bench
/// micro` ran before (target/criterion/*/new/{benchmark,estimates}.json).
fn micro(t: &mut Table) -> Value {
    let dir = Path::new(common::ROOT).join("target/criterion");
    let mut out = serde_json::Map::new();
    let mut rows: Vec<(String, f64)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let read = |f: &str| {
                std::fs::read_to_string(e.path().join("new").join(f))
                    .ok()
                    .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            };
            let id = read("benchmark.json")?["full_id"].as_str()?.to_string();
            let ns = read("estimates.json")?["median"]["point_estimate"].as_f64()?;
            Some((id, ns))
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, ns) in rows {
        t.row(
            &format!("micro: {id}"),
            format!("{ns:.1} ns (criterion median)"),
            "-",
            "-",
        );
        out.insert(id, json!({ "median_ns": ns }));
    }
    Value::Object(out)
}

// ---------------------------------------------------------------- main

fn machine() -> Value {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mosquitto = Command::new("mosquitto")
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        });
    json!({ "loadavg": load.trim(), "cpu": cpu, "cores": cores, "mosquitto": mosquitto })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "e2e benchmark: skipped (run it with scripts/bench.sh or cargo bench --bench e2e)"
        );
        return;
    }
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let want = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    let out_dir = Path::new(common::ROOT).join("target/bench");
    std::fs::create_dir_all(&out_dir).expect("mkdir target/bench");
    let scratch = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut t = Table { rows: Vec::new() };
    let mut results = serde_json::Map::new();
    results.insert("machine_at_start".into(), machine());
    results.insert(
        "date".into(),
        json!(thermalert::sys::timefmt::now_rfc3339()),
    );
    let mut run = |name: &str, f: &mut dyn FnMut(&Path, &mut Table) -> Value| {
        if !want(name) {
            return;
        }
        eprintln!("== {name}");
        let s = Instant::now();
        let dir = scratch.path().join(name);
        let v = f(&dir, &mut t);
        eprintln!("   {name}: {:.1} s: {v}", s.elapsed().as_secs_f64());
        results.insert(name.into(), v);
    };
    run("roundtrip", &mut |d, t| roundtrip(d, t));
    run("detection", &mut |d, t| detection(d, t));
    run("burst_rm20", &mut |d, t| burst(d, 20, t));
    run("burst_rm1", &mut |d, t| burst(d, 1, t));
    run("footprint", &mut |d, t| footprint(d, t));
    run("binary_size", &mut |_, t| binary_sizes(t));
    run("sweep", &mut |_, t| sweep(t));
    run("notifier", &mut |d, t| notifier_flood(d, t));
    run("micro", &mut |_, t| micro(t));
    results.insert("machine_at_end".into(), machine());
    results.insert("duration_s".into(), json!(started.elapsed().as_secs_f64()));

    let mut md = String::from("| measure | result | target | verdict |\n|---|---|---|---|\n");
    for [a, b, c, d] in &t.rows {
        md.push_str(&format!("| {a} | {b} | {c} | {d} |\n"));
    }
    let json_text = serde_json::to_string_pretty(&Value::Object(results)).expect("json");
    std::fs::write(out_dir.join("results.json"), &json_text).expect("write results.json");
    std::fs::write(out_dir.join("results.md"), &md).expect("write results.md");
    println!("{md}");
    println!(
        "wrote {} and results.md in {:.0} s",
        out_dir.join("results.json").display(),
        started.elapsed().as_secs_f64()
    );
}
