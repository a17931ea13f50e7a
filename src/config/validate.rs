//! Meaning checks: pure (no file, no environment), and they report every
//! problem, not the first (ntpd-rs `daemon/config/mod.rs` does the same).
//! Checks that touch the filesystem or the environment are in
//! [`super::preflight`].

use super::locate::KeyPath;
use super::{Backend, Config, HomeAssistantConfig, SensorConfig};

/// One thing wrong with a configuration, before it is placed in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: KeyPath,
    pub message: String,
}

impl Problem {
    pub fn new(key: KeyPath, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

/// Every meaning problem of `cfg`, in the order of its sections; empty
/// when it is valid.
pub fn validate(cfg: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    top_level(cfg, &mut out);
    mqtt(cfg, &mut out);
    homeassistant(&cfg.homeassistant, cfg.mqtt.publish_readings, &mut out);
    sensors(cfg, &mut out);
    alarm(cfg, &mut out);
    for (i, sc) in cfg.sensor.iter().enumerate() {
        sensor(i, sc, &cfg.sensor[..i], &mut out);
    }
    out
}

fn top_level(cfg: &Config, out: &mut Vec<Problem>) {
    if !is_topic_word(&cfg.gateway_id) {
        out.push(Problem::new(
            KeyPath::keys(&["gateway_id"]),
            format!(
                "{:?} must be non-empty and use only letters, digits, '-' and '_' (it becomes a topic level)",
                cfg.gateway_id
            ),
        ));
    }
    if let Some(why) = topic_prefix_problem(&cfg.topic_prefix) {
        out.push(Problem::new(
            KeyPath::keys(&["topic_prefix"]),
            format!("{:?} {why}", cfg.topic_prefix),
        ));
    }
    if cfg.outbox_max_bytes < 4096 {
        out.push(Problem::new(
            KeyPath::keys(&["outbox_max_bytes"]),
            format!("{} is too small: at least 4096", cfg.outbox_max_bytes),
        ));
    }
}

fn mqtt(cfg: &Config, out: &mut Vec<Problem>) {
    let m = &cfg.mqtt;
    let mk = |k: &'static str| KeyPath::keys(&["mqtt", k]);
    if m.host.trim().is_empty() {
        out.push(Problem::new(mk("host"), "must not be empty"));
    }
    if m.port == 0 {
        out.push(Problem::new(
            mk("port"),
            "0 is not a port: 1 to 65535 (8883 is MQTT over TLS)",
        ));
    }
    if let Some(id) = &m.client_id {
        if let Some(why) = client_id_problem(id) {
            out.push(Problem::new(mk("client_id"), format!("{id:?} {why}")));
        }
    }
    match (&m.client_cert, &m.client_key) {
        (Some(_), None) => out.push(Problem::new(
            mk("client_cert"),
            "client_key must be set as well",
        )),
        (None, Some(_)) => out.push(Problem::new(
            mk("client_key"),
            "client_cert must be set as well",
        )),
        _ => {}
    }
    if m.password_file.is_some() && m.username.is_none() {
        out.push(Problem::new(
            mk("password_file"),
            "a password needs a username: set mqtt.username",
        ));
    }
    if m.keep_alive_secs < 1 {
        out.push(Problem::new(mk("keep_alive_secs"), "must be at least 1"));
    }
    if m.alert_expiry_secs < 1 {
        out.push(Problem::new(mk("alert_expiry_secs"), "must be at least 1"));
    }
    if m.receive_maximum < 1 {
        out.push(Problem::new(mk("receive_maximum"), "must be at least 1"));
    }
    if m.reconnect_min_ms < 1 || m.reconnect_max_secs.saturating_mul(1000) < m.reconnect_min_ms {
        out.push(Problem::new(
            mk("reconnect_max_secs"),
            "reconnect_min_ms must be at least 1 and not above reconnect_max_secs",
        ));
    }
}

/// `[homeassistant]`: checked only when enabled.
fn homeassistant(h: &HomeAssistantConfig, publish_readings: bool, out: &mut Vec<Problem>) {
    if let Err((k, msg)) = h.check(publish_readings) {
        out.push(Problem::new(KeyPath::keys(&["homeassistant", k]), msg));
    }
}

fn sensors(cfg: &Config, out: &mut Vec<Problem>) {
    let s = &cfg.sensors;
    let sk = |k: &'static str| KeyPath::keys(&["sensors", k]);
    if s.poll_interval_ms < 50 {
        out.push(Problem::new(
            sk("poll_interval_ms"),
            format!("{} is too short: at least 50", s.poll_interval_ms),
        ));
    } else if s.poll_interval_ms > MAX_POLL_INTERVAL_MS {
        // A sensor read this rarely is not watched; and the values past
        // it overflowed (Home Assistant's expiry is three intervals).
        out.push(Problem::new(
            sk("poll_interval_ms"),
            format!(
                "{} is too long: at most {MAX_POLL_INTERVAL_MS} (one hour)",
                s.poll_interval_ms
            ),
        ));
    }
    if s.fault_after < 1 {
        out.push(Problem::new(sk("fault_after"), "must be at least 1"));
    }
    if !(1..=10).contains(&s.gpio.attempts) {
        out.push(Problem::new(
            KeyPath::keys(&["sensors", "gpio", "attempts"]),
            format!("{} is out of range: 1 to 10", s.gpio.attempts),
        ));
    }
    if s.gpio.pin > 53 {
        out.push(Problem::new(
            KeyPath::keys(&["sensors", "gpio", "pin"]),
            format!("{} is not a BCM GPIO number (0 to 53)", s.gpio.pin),
        ));
    }
    if s.monitor_unconfigured {
        if let Err((k, msg)) = s.defaults.sensor("defaults").thresholds().check() {
            out.push(Problem::new(
                KeyPath::keys(&["sensors", "defaults", k]),
                msg,
            ));
        }
    }
    if cfg.sensor.is_empty() && !s.monitor_unconfigured {
        out.push(Problem::new(
            KeyPath::keys(&["sensors"]),
            "no [[sensor]] configured: add at least one, or set monitor_unconfigured = true",
        ));
    }
}

fn alarm(cfg: &Config, out: &mut Vec<Problem>) {
    let Some(a) = &cfg.alarm else { return };
    let key = || KeyPath::keys(&["alarm", "gpio_pin"]);
    let s = &cfg.sensors;
    if a.gpio_pin > 27 {
        out.push(Problem::new(
            key(),
            format!(
                "{} is not a GPIO on the Pi's header (0..=27, BCM numbering)",
                a.gpio_pin
            ),
        ));
    } else if s.backend == Backend::Gpio && s.gpio.pin == a.gpio_pin {
        out.push(Problem::new(
            key(),
            format!(
                "GPIO {} is the 1-Wire data pin (sensors.gpio.pin)",
                a.gpio_pin
            ),
        ));
    }
}

/// `[[sensor]]` number `i`; `before` are the entries above it.
fn sensor(i: usize, sc: &SensorConfig, before: &[SensorConfig], out: &mut Vec<Problem>) {
    let sk = |k: &'static str| KeyPath::keys(&["sensor"]).index(i).key(k);
    if !is_topic_word(&sc.id) {
        out.push(Problem::new(
            sk("id"),
            format!(
                "{:?} must use only letters, digits, '-' and '_' (e.g. 28-0316a2791dff)",
                sc.id
            ),
        ));
    } else if before.iter().any(|o| o.id == sc.id) {
        out.push(Problem::new(
            sk("id"),
            format!("{:?} is listed twice", sc.id),
        ));
    }
    if let Err((k, msg)) = sc.thresholds().check() {
        out.push(Problem::new(sk(k), msg));
    }
    if let Some(bits) = sc.resolution {
        if !(9..=12).contains(&bits) {
            out.push(Problem::new(
                sk("resolution"),
                format!("{bits} bits is not a DS18B20 resolution: 9, 10, 11 or 12"),
            ));
        }
    }
    let Some(sim) = &sc.sim else { return };
    let simk = |k: &'static str| sk("sim").key(k);
    let mut last = f64::NEG_INFINITY;
    for st in &sim.steps {
        if !st[0].is_finite() || !st[1].is_finite() || st[0] < last || st[0] < 0.0 {
            out.push(Problem::new(
                simk("steps"),
                "each step is [seconds, celsius], finite, with seconds >= 0 and in increasing order",
            ));
            break;
        }
        last = st[0];
    }
    if let Some(l) = sim.loop_secs {
        if !(l > 0.0 && l.is_finite()) {
            out.push(Problem::new(
                simk("loop_secs"),
                "must be a positive number of seconds",
            ));
        }
    }
    if sim
        .faults
        .iter()
        .any(|f| f.from.is_nan() || f.until.is_nan() || f.from > f.until)
    {
        out.push(Problem::new(
            simk("faults"),
            "each fault needs from <= until",
        ));
    }
}

/// The longest `sensors.poll_interval_ms` accepted: one hour.
pub const MAX_POLL_INTERVAL_MS: u64 = 3_600_000;

/// True for a non-empty string usable as one topic level: ASCII letters,
/// digits, `-` and `_`.
pub fn is_topic_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// True for a usable topic prefix (one or more levels): non-empty, no
/// wildcard, no leading or trailing `/`, no empty level, not a `$` topic
/// and no control character (see [`topic_prefix_problem`]).
pub fn is_topic_prefix(p: &str) -> bool {
    topic_prefix_problem(p).is_none()
}

/// Why `p` cannot be the first levels of the topics published and
/// subscribed to; `None` when it can.
pub fn topic_prefix_problem(p: &str) -> Option<&'static str> {
    if p.is_empty() {
        return Some("must not be empty");
    }
    if p.contains(['+', '#']) {
        return Some("must not contain the wildcards '+' or '#' (topics are published under it)");
    }
    if p.starts_with('$') {
        return Some(
            "starts with '$': such topics ($SYS, $share) belong to the broker, a client's publishes there are refused",
        );
    }
    if p.starts_with('/') || p.ends_with('/') || p.contains("//") {
        return Some("must not have a leading or trailing '/' or an empty level ('//')");
    }
    if p.chars().any(char::is_control) {
        return Some("must not contain control characters");
    }
    None
}

/// Why `id` cannot be the daemon's MQTT client id; `None` when it can.
/// Mosquitto denies every publish and subscription of a client whose id
/// contains `+` or `#` (and some ACL plugins also `/`), which the client
/// only sees as lost messages; control characters make the CONNECT
/// malformed; an empty id gets a random one from the broker, so the
/// session (and its queued answers) would not survive a reconnect.
pub fn client_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        return Some("must not be empty (the broker would pick a new one at every connection, losing the session)");
    }
    if id.contains(['+', '#', '/']) {
        return Some(
            "must not contain '/', '+' or '#': Mosquitto denies every publish of such a client (\"dangerous client id\")",
        );
    }
    if id.chars().any(char::is_control) {
        return Some("must not contain control characters");
    }
    if id.len() > usize::from(u16::MAX) {
        return Some("is too long: MQTT allows at most 65535 bytes");
    }
    None
}
