//! Test harness: a real Mosquitto started per test with the project's own
//! kind of configuration (TLS listener on a free loopback port, password
//! file, the project's ACL, no anonymous access, persistence), certificates
//! made by the project's `certs/make-certs.sh`, the real binaries as child
//! processes, and `mosquitto_sub` / `mosquitto_pub` as independent clients.
//!
//! Nothing here sleeps to synchronise: every wait is for a line of output
//! (a log line, a message seen by an observer) with a generous deadline.

#![allow(dead_code)]

pub mod proxy;
pub mod w1_kernel;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub const DAEMON: &str = env!("CARGO_BIN_EXE_thermalertd");
pub const NOTIFIER: &str = env!("CARGO_BIN_EXE_thermalert-notifier");

/// The default deadline for an awaited event.
pub const WAIT: Duration = Duration::from_secs(20);

/// Users every test broker knows, with their passwords.
pub const USERS: &[(&str, &str)] = &[
    ("gw1", "gw1-secret"),
    ("gw2", "gw2-secret"),
    ("notifier", "notifier-secret"),
    ("observer", "observer-secret"),
];

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A CA and a server certificate made by the project's script.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, ca_name: &str, sans: &[&str], extra: &[&str]) -> Pki {
        std::fs::create_dir_all(dir).expect("mkdir");
        let out = Command::new("bash")
            .arg(Path::new(ROOT).join("certs/make-certs.sh"))
            .arg("--out")
            .arg(dir)
            .arg("--ca-name")
            .arg(ca_name)
            .args(extra)
            .args(sans)
            .output()
            .expect("run make-certs.sh");
        assert!(
            out.status.success(),
            "make-certs.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

/// Lines read from a child's stdout or stderr, shared with waiters.
#[derive(Clone, Default)]
pub struct Lines {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
    /// The reader reached the end of the stream.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

/// Where a child's output lines go, as they are read.
pub trait Sink: Clone + Default + Send + 'static {
    fn push(&self, line: String);

    /// The stream ended: every line has been pushed.
    fn close(&self) {}

    /// Reads `r` line by line on a thread of its own, into this sink.
    fn follow(&self, r: impl Read + Send + 'static) {
        let sink = self.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(r).lines() {
                match l {
                    Ok(l) => sink.push(l),
                    Err(_) => break,
                }
            }
            sink.close();
        });
    }
}

/// Spawns `cmd` (`name` in a failure message) with stdin from /dev/null,
/// its stdout and stderr followed into two new sinks.
pub fn spawn_piped<S: Sink>(name: &str, cmd: &mut Command) -> (Child, S, S) {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let out = S::default();
    let err = S::default();
    if let Some(o) = child.stdout.take() {
        out.follow(o);
    }
    if let Some(e) = child.stderr.take() {
        err.follow(e);
    }
    (child, out, err)
}

impl Sink for Lines {
    fn push(&self, l: String) {
        let (m, c) = &*self.inner;
        m.lock().expect("lock").push(l);
        c.notify_all();
    }

    fn close(&self) {
        let (m, c) = &*self.inner;
        let _g = m.lock().expect("lock");
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        c.notify_all();
    }
}

impl Lines {
    pub fn snapshot(&self) -> Vec<String> {
        self.inner.0.lock().expect("lock").clone()
    }

    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.snapshot().iter().filter(|l| pred(l)).count()
    }

    /// Waits until `n` lines satisfy `pred`; returns them, or panics with
    /// the output so far.
    pub fn wait_n(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let (m, c) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut g = m.lock().expect("lock");
        loop {
            let hits: Vec<String> = g.iter().filter(|l| pred(l)).cloned().collect();
            if hits.len() >= n {
                return hits;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "timed out waiting for {n} x {what}; got {}. Output so far:\n{}",
                    hits.len(),
                    g.join("\n")
                );
            }
            g = c.wait_timeout(g, deadline - now).expect("wait").0;
        }
    }

    /// Waits until the process's stream ended and every line was read
    /// (after the process exited).
    pub fn wait_closed(&self) {
        let (m, c) = &*self.inner;
        let deadline = Instant::now() + WAIT;
        let mut g = m.lock().expect("lock");
        while !self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            let now = Instant::now();
            assert!(now < deadline, "the stream did not end");
            g = c.wait_timeout(g, deadline - now).expect("wait").0;
        }
    }

    /// Returns after a new line arrives or `timeout` passes.
    pub fn wait_timeout(&self, timeout: Duration) {
        let (m, c) = &*self.inner;
        let g = m.lock().expect("lock");
        let _ = c.wait_timeout(g, timeout).expect("wait");
    }

    pub fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_n(what, 1, WAIT, pred).remove(0)
    }

    pub fn wait_contains(&self, needle: &str) -> String {
        self.wait(needle, |l| l.contains(needle))
    }
}

/// Waits until a line of `a` or of `b` satisfies `pred` (two processes
/// that share work, e.g. notifiers in a share group).
pub fn wait_either(a: &Lines, b: &Lines, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + WAIT;
    while a.count(&pred) + b.count(&pred) == 0 {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Each side's condition variable wakes on its own lines only: wait
        // on one briefly, then look at both again.
        a.wait_timeout(Duration::from_millis(20));
    }
}

/// A child process whose output is collected; killed on drop.
pub struct Proc {
    pub child: Child,
    pub out: Lines,
    pub err: Lines,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let (child, out, err) = spawn_piped(name, &mut cmd);
        Proc {
            child,
            out,
            err,
            name: name.into(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(st.success(), "kill -{sig} {}", self.name);
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if Instant::now() >= deadline {
                panic!("{} did not exit in {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.pid().to_string())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running Mosquitto and everything it needs, in a temporary folder.
pub struct Broker {
    pub dir: PathBuf,
    pub port: u16,
    pub pki: Pki,
    pub proc: Option<Proc>,
    conf: PathBuf,
}

#[derive(Default)]
pub struct BrokerOpts<'a> {
    /// Extra mosquitto.conf lines (e.g. `max_inflight_messages 1`).
    pub extra: &'a [&'a str],
    /// Serve plaintext instead of TLS (to prove the daemon refuses it).
    pub plaintext: bool,
    /// Use this PKI instead of making one for localhost.
    pub pki: Option<Pki>,
    /// Users besides [`USERS`] (e.g. more gateways), with their passwords.
    pub users: &'a [(&'a str, &'a str)],
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        Self::start_with(dir, BrokerOpts::default())
    }

    pub fn start_with(dir: &Path, opts: BrokerOpts<'_>) -> Broker {
        std::fs::create_dir_all(dir).expect("mkdir");
        let pki = opts.pki.unwrap_or_else(|| {
            Pki::new(
                &dir.join("pki"),
                "thermalert test CA",
                &["localhost", "127.0.0.1"],
                &[],
            )
        });
        // The project's ACL, with each user added by the project's
        // add-user.sh in its role (gateways gw1 and gw2, the rest notifiers),
        // plus a test observer that may read and write everything (it plays
        // the independent client).
        let passwd = dir.join("passwd");
        let acl = dir.join("acl");
        std::fs::copy(Path::new(ROOT).join("mosquitto/thermalert.acl"), &acl).expect("project ACL");
        for (u, p) in USERS
            .iter()
            .chain(opts.users)
            .filter(|(u, _)| *u != "observer")
        {
            let role = if u.starts_with("gw") {
                "gateway"
            } else {
                "notifier"
            };
            let out = Command::new("bash")
                .arg(Path::new(ROOT).join("mosquitto/add-user.sh"))
                .arg("--passwd")
                .arg(&passwd)
                .arg("--acl")
                .arg(&acl)
                .arg("--password-out")
                .arg(dir.join(format!("{u}.pass")))
                .args([role, u])
                .env("THERMALERT_PASSWORD", p)
                .output()
                .expect("add-user.sh");
            assert!(
                out.status.success(),
                "add-user.sh {role} {u}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let st = Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(&passwd)
            .args(["observer", "observer-secret"])
            .output()
            .expect("mosquitto_passwd");
        assert!(st.status.success(), "mosquitto_passwd: {st:?}");
        // add-user.sh wrote the others' with mode 600.
        write_secret(&dir.join("observer.pass"), "observer-secret\n");
        let mut text = std::fs::read_to_string(&acl).expect("read acl");
        text.push_str("\nuser observer\ntopic readwrite #\n");
        std::fs::write(&acl, text).expect("write acl");
        // The project's own broker configuration, rendered for this folder.
        let certs = dir.join("certs");
        if pki.dir != certs {
            std::fs::create_dir_all(&certs).expect("mkdir");
            for f in ["ca.crt", "server.crt", "server.key"] {
                std::fs::copy(pki.dir.join(f), certs.join(f)).expect("copy cert");
            }
        }
        let port = free_port();
        let mut render = Command::new("bash");
        render
            .arg(Path::new(ROOT).join("mosquitto/render-conf.sh"))
            .arg("--dir")
            .arg(dir)
            .arg("--port")
            .arg(port.to_string());
        if opts.plaintext {
            render.arg("--plaintext");
        }
        for l in opts.extra {
            render.arg("--extra").arg(l);
        }
        let out = render.output().expect("render-conf.sh");
        assert!(
            out.status.success(),
            "render-conf.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = String::from_utf8_lossy(&out.stdout).into_owned();
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).expect("write conf");
        let mut b = Broker {
            dir: dir.to_path_buf(),
            port,
            pki,
            proc: None,
            conf: conf_path,
        };
        b.restart();
        b
    }

    /// Starts (again) the broker with the same configuration and port.
    pub fn restart(&mut self) {
        let mut cmd = Command::new("mosquitto");
        cmd.arg("-c").arg(&self.conf);
        let p = Proc::spawn("mosquitto", cmd);
        p.err
            .wait(&format!("broker listening on {}", self.port), |l| {
                l.contains("running") || l.contains("Error")
            });
        if let Some(l) = p.err.snapshot().iter().find(|l| l.contains("Error")) {
            panic!(
                "mosquitto failed to start: {l}\n{}",
                p.err.snapshot().join("\n")
            );
        }
        self.proc = Some(p);
    }

    /// Kills the broker (SIGKILL: no chance to save anything).
    pub fn kill(&mut self) {
        self.proc = None;
    }

    pub fn log(&self) -> &Lines {
        &self.proc.as_ref().expect("broker running").err
    }

    pub fn pass_file(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.pass"))
    }

    fn client_args(&self, user: &str) -> Vec<String> {
        let pw = USERS
            .iter()
            .find(|(u, _)| *u == user)
            .map_or("wrong", |(_, p)| p);
        let mut args: Vec<String> = vec![
            "-V".into(),
            "mqttv5".into(),
            "-h".into(),
            "localhost".into(),
            "-p".into(),
            self.port.to_string(),
            "--cafile".into(),
            self.pki.ca().display().to_string(),
            "-u".into(),
            user.into(),
            "-P".into(),
            pw.into(),
        ];
        let cert = self.pki.dir.join(format!("{user}.crt"));
        if cert.exists() {
            // Mutual TLS: the user's client certificate, when the PKI has one.
            let key = self.pki.dir.join(format!("{user}.key"));
            args.extend(["--cert".into(), cert.display().to_string()]);
            args.extend(["--key".into(), key.display().to_string()]);
        }
        args
    }

    /// An independent subscriber (`mosquitto_sub` as `observer`). Each
    /// message is one line: `topic|qos|retain|expiry|response topic|correlation|content type|payload`.
    /// Returns once the broker has acknowledged the subscription.
    pub fn observe(&self, topics: &[&str]) -> Proc {
        // stdbuf: mosquitto_sub block-buffers its output into a pipe.
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "mosquitto_sub"])
            .args(self.client_args("observer"))
            .args(["-q", "2", "-d", "-F", "MSG|%t|%q|%r|%E|%R|%D|%C|%p"]);
        for t in topics {
            cmd.arg("-t").arg(t);
        }
        let p = Proc::spawn("mosquitto_sub", cmd);
        p.out.wait_n("SUBACK", 1, WAIT, |l| l.contains("SUBACK"));
        p
    }

    /// Like [`observe`](Self::observe) but as `user`, under the project's
    /// ACL. Returns once the SUBACK arrived (whatever it granted).
    pub fn observe_as(&self, user: &str, topics: &[&str]) -> Proc {
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "mosquitto_sub"])
            .args(self.client_args(user))
            .args(["-q", "1", "-d", "-F", "MSG|%t|%q|%r|%E|%R|%D|%C|%p"]);
        for t in topics {
            cmd.arg("-t").arg(t);
        }
        let p = Proc::spawn("mosquitto_sub", cmd);
        p.out.wait_n("SUBACK", 1, WAIT, |l| l.contains("SUBACK"));
        p
    }

    /// Publishes one message as `user` with mosquitto_pub; extra args are
    /// passed through (e.g. `-D publish correlation-data x`).
    pub fn publish(&self, user: &str, topic: &str, payload: &[u8], extra: &[&str]) {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(self.client_args(user))
            .args(["-q", "1", "-t", topic, "-s"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("mosquitto_pub");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(payload).expect("write payload");
        }
        let out = child.wait_with_output().expect("mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Publishes `payload` as an alert of `gateway`'s `sensor`, as a gateway
    /// does (ResponseTopic = the gateway's acks topic, CorrelationData =
    /// `id`), as `observer`.
    pub fn publish_alert(&self, gateway: &str, sensor: &str, payload: &[u8], id: &str) {
        let acks = format!("thermalert/{gateway}/acks");
        self.publish(
            "observer",
            &format!("thermalert/{gateway}/alerts/{sensor}"),
            payload,
            &[
                "-D",
                "publish",
                "response-topic",
                &acks,
                "-D",
                "publish",
                "correlation-data",
                id,
            ],
        );
    }

    /// Waits until everything published before now has passed through the
    /// broker to `obs`: publishes a sentinel and waits for it. The sentinel
    /// goes at QoS 2 like the messages it follows: libmosquitto hands a
    /// QoS 2 message to mosquitto_sub only at PUBREL, so a QoS 1 sentinel
    /// could overtake a QoS 2 message queued before it.
    pub fn sync(&self, obs: &Proc, tag: &str) {
        let topic = format!("test/sync/{tag}");
        // mosquitto_pub takes the last -q it is given.
        self.publish("observer", &topic, b"sync", &["-q", "2"]);
        obs.out.wait(&format!("sentinel {tag}"), |l| {
            l.starts_with(&format!("MSG|{topic}|"))
        });
    }
}

/// A parsed observer line.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub expiry: Option<u32>,
    pub response_topic: String,
    pub correlation: String,
    pub content_type: String,
    pub payload: String,
}

pub fn parse_seen(l: &str) -> Option<Seen> {
    let rest = l.strip_prefix("MSG|")?;
    let mut it = rest.splitn(8, '|');
    Some(Seen {
        topic: it.next()?.into(),
        qos: it.next()?.parse().ok()?,
        retain: it.next()? == "1",
        expiry: it.next()?.parse().ok(),
        response_topic: it.next()?.into(),
        correlation: it.next()?.into(),
        content_type: it.next()?.into(),
        payload: it.next()?.into(),
    })
}

pub fn seen(p: &Proc) -> Vec<Seen> {
    p.out
        .snapshot()
        .iter()
        .filter_map(|l| parse_seen(l))
        .collect()
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
}

/// A daemon configuration for `gateway` against `broker`, with the given
/// `[[sensor]]` tables and extra `[mqtt]` lines.
pub struct GwConfig {
    pub gateway: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: PathBuf,
    pub host: String,
    pub port: u16,
    pub keep_alive_secs: u16,
    pub mqtt_extra: String,
    pub sensors_extra: String,
    pub sensors: String,
    /// Top-level keys (e.g. `ack_timeout_secs = 2`).
    pub top_extra: String,
    /// The daemon's state directory (its outbox); default `<dir>/state-<gateway>`.
    pub state_dir: Option<PathBuf>,
}

impl GwConfig {
    pub fn new(broker: &Broker, gateway: &str) -> GwConfig {
        GwConfig {
            gateway: gateway.into(),
            username: Some(gateway.into()),
            password_file: Some(broker.pass_file(gateway)),
            ca_file: broker.pki.ca(),
            host: "localhost".into(),
            port: broker.port,
            keep_alive_secs: 5,
            mqtt_extra: String::new(),
            sensors_extra: String::new(),
            sensors: freezer(HOT, "[[0.0, 20.0]]"),
            top_extra: String::new(),
            state_dir: None,
        }
    }

    /// [`new`](Self::new) with these `[[sensor]]` tables instead of the
    /// default freezer.
    pub fn with_sensors(broker: &Broker, gateway: &str, sensors: String) -> GwConfig {
        GwConfig {
            sensors,
            ..GwConfig::new(broker, gateway)
        }
    }

    pub fn write(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("mkdir");
        let state = self
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.join(format!("state-{}", self.gateway)));
        let mut s = format!(
            "gateway_id = \"{}\"\nstate_dir = \"{}\"\n{}\n[mqtt]\nhost = \"{}\"\nport = {}\nca_file = \"{}\"\nkeep_alive_secs = {}\nreconnect_min_ms = 200\nreconnect_max_secs = 2\n",
            self.gateway,
            state.display(),
            self.top_extra,
            self.host,
            self.port,
            self.ca_file.display(),
            self.keep_alive_secs
        );
        if let Some(u) = &self.username {
            s.push_str(&format!("username = \"{u}\"\n"));
        }
        if let Some(p) = &self.password_file {
            s.push_str(&format!("password_file = \"{}\"\n", p.display()));
        }
        s.push_str(&self.mqtt_extra);
        s.push_str("\n[sensors]\nbackend = \"sim\"\npoll_interval_ms = 100\n");
        s.push_str(&self.sensors_extra);
        s.push('\n');
        s.push_str(&self.sensors);
        let p = dir.join(format!("{}.toml", self.gateway));
        std::fs::write(&p, s).expect("write config");
        p
    }
}

/// A `[[sensor]]` table with thresholds and sim steps.
pub fn sensor(id: &str, name: &str, thresholds: &str, steps: &str) -> String {
    format!("\n[[sensor]]\nid = \"{id}\"\nname = \"{name}\"\n{thresholds}\n[sensor.sim]\nsteps = {steps}\n")
}

/// The first test sensor (`28-000000000001`, "freezer") as a `[[sensor]]` table.
pub fn freezer(thresholds: &str, steps: &str) -> String {
    sensor("28-000000000001", "freezer", thresholds, steps)
}

/// The second test sensor (`28-000000000002`, "cellar") as a `[[sensor]]` table.
pub fn cellar(thresholds: &str, steps: &str) -> String {
    sensor("28-000000000002", "cellar", thresholds, steps)
}

pub fn daemon(config: &Path) -> Proc {
    daemon_env(config, &[])
}

pub fn daemon_env(config: &Path, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(DAEMON);
    cmd.arg("--config").arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn("thermalertd", cmd)
}

/// The notifier's command-line arguments to connect as `notifier` to
/// `port` (`broker`'s, or a proxy's in front of it) with `client_id`.
pub fn notifier_args(broker: &Broker, port: u16, client_id: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["--host", "localhost", "--port", &port.to_string()]
        .iter()
        .map(OsString::from)
        .collect();
    args.extend([
        "--ca-file".into(),
        broker.pki.ca().into(),
        "--username".into(),
        "notifier".into(),
        "--password-file".into(),
        broker.pass_file("notifier").into(),
        "--client-id".into(),
        client_id.into(),
    ]);
    args
}

/// The notifier's state folder for `client_id`.
pub fn notifier_state_dir(broker: &Broker, client_id: &str) -> PathBuf {
    broker.dir.join(format!("notifier-state-{client_id}"))
}

/// The notifier as `notifier`, printing JSON, with a stable client id.
pub fn notifier(broker: &Broker, client_id: &str, extra: &[&str]) -> Proc {
    notifier_env(broker, client_id, extra, &[])
}

/// [`notifier`], connecting to `port` (a proxy in front of `broker`).
pub fn notifier_via(broker: &Broker, port: u16, client_id: &str, extra: &[&str]) -> Proc {
    spawn_notifier(broker, port, client_id, extra, &[])
}

/// [`notifier`] with extra environment variables.
pub fn notifier_env(
    broker: &Broker,
    client_id: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    spawn_notifier(broker, broker.port, client_id, extra, env)
}

/// Starts the notifier; returns once its subscriptions are in place.
fn spawn_notifier(
    broker: &Broker,
    port: u16,
    client_id: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let mut cmd = Command::new(NOTIFIER);
    cmd.args(notifier_args(broker, port, client_id))
        .args(["--json", "--state-dir"])
        .arg(notifier_state_dir(broker, client_id))
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let p = Proc::spawn("thermalert-notifier", cmd);
    p.err.wait("subscriptions in place", |l| {
        l.contains("subscribed to") || l.contains("subscriptions kept")
    });
    p
}

/// The JSON alerts a notifier printed.
pub fn notifier_alerts(p: &Proc) -> Vec<serde_json::Value> {
    p.out
        .snapshot()
        .iter()
        .map(|l| json(l))
        .filter(|v| v["type"] == "alert")
        .collect()
}

/// Thresholds most tests use: WARNING above 30 C, CRITICAL above 40 C.
pub const HOT: &str = "warning_above = 30.0\ncritical_above = 40.0";

/// CRITICAL above 40 C, no WARNING level.
pub const CRIT: &str = "critical_above = 40.0";

/// Writes a password file with mode 0600 (as `mosquitto/add-user.sh`
/// does): `check-config` refuses one others can read.
pub fn write_secret(path: &Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).expect("write secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Whether a daemon log line is an ALERT line.
pub fn is_alert_line(l: &str) -> bool {
    l.contains(" ALERT ") || l.starts_with("ALERT ")
}

/// The ids of the alerts the daemon raised, in order.
pub fn raised_ids(d: &Proc) -> Vec<String> {
    d.err
        .snapshot()
        .iter()
        .filter(|l| is_alert_line(l))
        .filter_map(|l| {
            let rest = &l[l.find(" id=")? + 4..];
            Some(rest[..rest.find(':')?].to_string())
        })
        .collect()
}
