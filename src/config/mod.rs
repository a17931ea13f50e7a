//! The daemon's configuration: TOML parsed with serde (unknown keys
//! rejected), then [`Config::validate`] for meaning. Every error names the
//! file, the key and the line.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::alert::Thresholds;

/// Where the daemon looks for its configuration unless `--config` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/thermalert/thermalertd.toml";

/// The name of the systemd credential that carries the MQTT password.
pub const PASSWORD_CREDENTIAL: &str = "mqtt-password";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}:{line}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The gateway's name: the second level of every topic, and by
    /// convention its MQTT username.
    pub gateway_id: String,
    /// First level of every topic.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    pub mqtt: MqttConfig,
    pub sensors: SensorsConfig,
    #[serde(default, rename = "sensor")]
    pub sensor: Vec<SensorConfig>,
    /// `[homeassistant]`: MQTT discovery (off by default).
    #[serde(default)]
    pub homeassistant: crate::daemon::homeassistant::HomeAssistantConfig,
    /// Where the outbox lives; default `$STATE_DIRECTORY` (systemd's
    /// `StateDirectory=`) or [`DEFAULT_STATE_DIR`].
    pub state_dir: Option<PathBuf>,
    /// Bound of the on-disk outbox (bytes of pending alerts).
    #[serde(default = "default_outbox_max_bytes")]
    pub outbox_max_bytes: u64,
    /// An alert nobody answered within this many seconds is re-published
    /// with its `escalation` counter incremented; 0 turns escalation off.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_secs: u32,
    /// `[alarm]`: the optional local alarm output.
    #[serde(default)]
    pub alarm: Option<AlarmConfig>,
}

/// A buzzer or LED on a GPIO pin, on while any CRITICAL alert is
/// unacknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmConfig {
    /// BCM GPIO number (0..=27 on the Pi's header).
    pub gpio_pin: u8,
}

/// The state directory when neither `state_dir` nor `$STATE_DIRECTORY` is set.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/thermalert";

fn default_outbox_max_bytes() -> u64 {
    1024 * 1024
}

fn default_ack_timeout() -> u32 {
    300
}

fn default_prefix() -> String {
    "thermalert".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// The CA that signed the broker's certificate (PEM).
    pub ca_file: PathBuf,
    /// Optional client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Host name to verify in the broker's certificate, when it differs from `host`.
    pub tls_server_name: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Client id; defaults to `thermalertd-<gateway_id>`.
    pub client_id: Option<String>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u16,
    #[serde(default = "default_alert_expiry")]
    pub alert_expiry_secs: u32,
    /// Message expiry of the retained status and of the Last Will.
    #[serde(default = "default_status_expiry")]
    pub status_expiry_secs: u32,
    /// Whether each poll's readings are published (QoS 0, not retained).
    #[serde(default = "default_true")]
    pub publish_readings: bool,
    #[serde(default = "default_reading_expiry")]
    pub reading_expiry_secs: u32,
    /// The Receive Maximum sent to the broker.
    #[serde(default = "default_receive_maximum")]
    pub receive_maximum: u16,
    /// How long the broker keeps the daemon's session (and queued acks) while it is away.
    #[serde(default = "default_session_expiry")]
    pub session_expiry_secs: u32,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_secs: u64,
}

fn default_port() -> u16 {
    8883
}
fn default_keep_alive() -> u16 {
    30
}
fn default_alert_expiry() -> u32 {
    300
}
fn default_status_expiry() -> u32 {
    7 * 24 * 3600
}
fn default_true() -> bool {
    true
}
fn default_reading_expiry() -> u32 {
    60
}
fn default_receive_maximum() -> u16 {
    20
}
fn default_session_expiry() -> u32 {
    3600
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_reconnect_min() -> u64 {
    500
}
fn default_reconnect_max() -> u64 {
    60
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Backend {
    #[serde(rename = "sim")]
    Sim,
    /// The kernel's w1-gpio + w1_therm drivers, read through sysfs.
    #[serde(rename = "w1-sysfs")]
    W1Sysfs,
    /// Bit-banged 1-Wire on a GPIO pin, in user space.
    #[serde(rename = "gpio")]
    Gpio,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorsConfig {
    pub backend: Backend,
    #[serde(default = "default_poll_interval")]
    pub poll_interval_ms: u64,
    /// Consecutive failed reads before a sensor raises FAULT.
    #[serde(default = "default_fault_after")]
    pub fault_after: u32,
    /// Whether sensors found on the bus but absent from the config are
    /// monitored with default thresholds.
    #[serde(default)]
    pub monitor_unconfigured: bool,
    /// `[sensors.defaults]`: thresholds for sensors monitored without a
    /// `[[sensor]]` entry.
    #[serde(default)]
    pub defaults: DefaultThresholds,
    /// `[sensors.w1]`: the kernel backend's settings.
    #[serde(default)]
    pub w1: W1Config,
    /// `[sensors.gpio]`: the bit-banging backend's settings.
    #[serde(default)]
    pub gpio: GpioConfig,
}

/// Thresholds for unconfigured sensors (`monitor_unconfigured = true`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultThresholds {
    pub warning_above: Option<f64>,
    pub critical_above: Option<f64>,
    pub warning_below: Option<f64>,
    pub critical_below: Option<f64>,
    pub hysteresis: Option<f64>,
}

impl DefaultThresholds {
    /// A `[[sensor]]` entry for an unconfigured sensor found on the bus.
    pub fn sensor(&self, id: &str) -> SensorConfig {
        SensorConfig {
            id: id.to_string(),
            name: None,
            warning_above: self.warning_above,
            critical_above: self.critical_above,
            warning_below: self.warning_below,
            critical_below: self.critical_below,
            hysteresis: self.hysteresis.unwrap_or_else(default_hysteresis),
            resolution: None,
            sim: None,
        }
    }
}

/// Where the kernel's w1 devices are and how to read them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct W1Config {
    #[serde(default = "default_w1_root")]
    pub root: PathBuf,
    /// Use the bus master's `therm_bulk_read` when the kernel offers it.
    #[serde(default = "default_true")]
    pub bulk_read: bool,
}

impl Default for W1Config {
    fn default() -> Self {
        Self {
            root: default_w1_root(),
            bulk_read: true,
        }
    }
}

fn default_w1_root() -> PathBuf {
    PathBuf::from("/sys/bus/w1/devices")
}

/// The 1-Wire data pin for the bit-banging backend.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    /// How the pin is driven: `rppal` (Raspberry Pi, /dev/gpiomem) or
    /// `cdev` (any Linux board: the GPIO character device `chip`, through
    /// linux-embedded-hal, with the line requested open-drain).
    #[serde(default)]
    pub driver: GpioDriver,
    /// BCM GPIO number of the data line (`rppal`), or line offset on `chip` (`cdev`).
    #[serde(default = "default_gpio_pin")]
    pub pin: u8,
    /// The GPIO character device (named in permission errors).
    #[serde(default = "default_gpio_chip")]
    pub chip: PathBuf,
    /// Attempts per sensor and sweep before a read counts as failed
    /// (user-space timing can be preempted mid-slot).
    #[serde(default = "default_gpio_attempts")]
    pub attempts: u32,
}

impl Default for GpioConfig {
    fn default() -> Self {
        Self {
            driver: GpioDriver::default(),
            pin: default_gpio_pin(),
            chip: default_gpio_chip(),
            attempts: default_gpio_attempts(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpioDriver {
    #[default]
    Rppal,
    Cdev,
}

fn default_gpio_pin() -> u8 {
    4
}
fn default_gpio_chip() -> PathBuf {
    PathBuf::from("/dev/gpiochip0")
}
fn default_gpio_attempts() -> u32 {
    3
}

fn default_poll_interval() -> u64 {
    1000
}
fn default_fault_after() -> u32 {
    3
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// The sensor's ROM id as the kernel names it, e.g. `28-0316a2791dff`.
    pub id: String,
    /// A human name, e.g. `freezer`; defaults to the id.
    pub name: Option<String>,
    pub warning_above: Option<f64>,
    pub critical_above: Option<f64>,
    pub warning_below: Option<f64>,
    pub critical_below: Option<f64>,
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f64,
    /// Conversion resolution in bits (9..=12) for the hardware backends;
    /// unset leaves the sensor's own setting (12 bit from the factory).
    pub resolution: Option<u8>,
    /// Script for the simulated backend.
    pub sim: Option<SimConfig>,
}

fn default_hysteresis() -> f64 {
    0.5
}

impl SensorConfig {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            warning_above: self.warning_above,
            critical_above: self.critical_above,
            warning_below: self.warning_below,
            critical_below: self.critical_below,
            hysteresis: self.hysteresis,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// `[seconds since start, celsius]`: the temperature steps to that value at that time.
    #[serde(default)]
    pub steps: Vec<[f64; 2]>,
    /// When set, the script starts over every `loop_secs` seconds.
    pub loop_secs: Option<f64>,
    /// Injected faults: `{ from = 10.0, until = 15.0, kind = "missing" }`.
    #[serde(default)]
    pub faults: Vec<SimFault>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimFault {
    pub from: f64,
    pub until: f64,
    pub kind: SimFaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimFaultKind {
    /// The sensor does not answer (vanished from the bus).
    Missing,
    /// Every read fails its CRC.
    Crc,
    /// The sensor lost power: it reads the 85.000 C power-on value.
    PowerOnReset,
    /// For tests: a sweep that starts in the window blocks until it ends
    /// (a hung bus), so the sensor loop stops making progress.
    Stall,
}

/// One step of a key path, for locating a key's line in the source.
#[derive(Debug, Clone)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

/// A meaning error before it is located in the file.
struct Problem {
    path: Vec<Seg>,
    message: String,
}

fn problem(path: Vec<Seg>, message: impl Into<String>) -> Problem {
    Problem {
        path,
        message: message.into(),
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`; relative paths inside
    /// it are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&src, path)
    }

    /// Parses and validates `src`, which was read from `path`.
    pub fn parse(src: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(src).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(src, s.start)).unwrap_or((1, 1));
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        cfg.check().map_err(|p| {
            let line = locate(src, &p.path).map_or(1, |s| line_col(src, s.start).0);
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                key: key_name(&p.path),
                message: p.message,
            }
        })?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let m = &mut self.mqtt;
        for p in [
            self.state_dir.as_mut(),
            Some(&mut m.ca_file),
            m.client_cert.as_mut(),
            m.client_key.as_mut(),
            m.password_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// The state directory: `state_dir`, else systemd's `$STATE_DIRECTORY`
    /// (its first entry), else [`DEFAULT_STATE_DIR`].
    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        std::env::var_os("STATE_DIRECTORY")
            .and_then(|v| {
                v.to_str()
                    .and_then(|s| s.split(':').next())
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    pub fn client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("thermalertd-{}", self.gateway_id))
    }

    /// The MQTT password: the systemd credential `mqtt-password` when
    /// `$CREDENTIALS_DIRECTORY` is set, else `password_file`. A trailing
    /// newline is not part of the password.
    pub fn password(&self) -> Result<Option<String>, std::io::Error> {
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let p = Path::new(&dir).join(PASSWORD_CREDENTIAL);
            if p.exists() {
                return read_secret(&p).map(Some);
            }
        }
        match &self.mqtt.password_file {
            Some(p) => read_secret(p).map(Some),
            None => Ok(None),
        }
    }

    fn check(&self) -> Result<(), Problem> {
        use Seg::{Index, Key};
        if !is_topic_word(&self.gateway_id) {
            return Err(problem(
                vec![Key("gateway_id")],
                format!(
                    "{:?} must be non-empty and use only letters, digits, '-' and '_' (it becomes a topic level)",
                    self.gateway_id
                ),
            ));
        }
        if self.topic_prefix.is_empty()
            || self.topic_prefix.contains(['+', '#'])
            || self.topic_prefix.starts_with('/')
            || self.topic_prefix.ends_with('/')
        {
            return Err(problem(
                vec![Key("topic_prefix")],
                "must be non-empty, without '+', '#' or a leading/trailing '/'",
            ));
        }
        if self.outbox_max_bytes < 4096 {
            return Err(problem(
                vec![Key("outbox_max_bytes")],
                format!("{} is too small: at least 4096", self.outbox_max_bytes),
            ));
        }
        let m = &self.mqtt;
        let mk = |k: &'static str| vec![Key("mqtt"), Key(k)];
        if m.host.trim().is_empty() {
            return Err(problem(mk("host"), "must not be empty"));
        }
        readable(&m.ca_file).map_err(|e| problem(mk("ca_file"), e))?;
        match (&m.client_cert, &m.client_key) {
            (Some(c), Some(k)) => {
                readable(c).map_err(|e| problem(mk("client_cert"), e))?;
                readable(k).map_err(|e| problem(mk("client_key"), e))?;
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(problem(mk("client_cert"), "client_key must be set as well"))
            }
            (None, Some(_)) => {
                return Err(problem(mk("client_key"), "client_cert must be set as well"))
            }
        }
        if let Some(p) = &m.password_file {
            if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
                readable(p).map_err(|e| problem(mk("password_file"), e))?;
            }
        }
        if m.password_file.is_some() && m.username.is_none() {
            return Err(problem(
                mk("password_file"),
                "a password needs a username: set mqtt.username",
            ));
        }
        if m.keep_alive_secs < 1 {
            return Err(problem(mk("keep_alive_secs"), "must be at least 1"));
        }
        if m.alert_expiry_secs < 1 {
            return Err(problem(mk("alert_expiry_secs"), "must be at least 1"));
        }
        if m.receive_maximum < 1 {
            return Err(problem(mk("receive_maximum"), "must be at least 1"));
        }
        if m.reconnect_min_ms < 1 || m.reconnect_max_secs * 1000 < m.reconnect_min_ms {
            return Err(problem(
                mk("reconnect_max_secs"),
                "reconnect_min_ms must be at least 1 and not above reconnect_max_secs",
            ));
        }
        self.homeassistant
            .check(m.publish_readings)
            .map_err(|(k, msg)| problem(vec![Key("homeassistant"), Key(k)], msg))?;
        let s = &self.sensors;
        if s.poll_interval_ms < 50 {
            return Err(problem(
                vec![Key("sensors"), Key("poll_interval_ms")],
                format!("{} is too short: at least 50", s.poll_interval_ms),
            ));
        }
        if s.fault_after < 1 {
            return Err(problem(
                vec![Key("sensors"), Key("fault_after")],
                "must be at least 1",
            ));
        }
        if let Some(a) = &self.alarm {
            let key = || vec![Key("alarm"), Key("gpio_pin")];
            if a.gpio_pin > 27 {
                return Err(problem(
                    key(),
                    format!(
                        "{} is not a GPIO on the Pi's header (0..=27, BCM numbering)",
                        a.gpio_pin
                    ),
                ));
            }
            if s.backend == Backend::Gpio && s.gpio.pin == a.gpio_pin {
                return Err(problem(
                    key(),
                    format!(
                        "GPIO {} is the 1-Wire data pin (sensors.gpio.pin)",
                        a.gpio_pin
                    ),
                ));
            }
        }
        if !(1..=10).contains(&s.gpio.attempts) {
            return Err(problem(
                vec![Key("sensors"), Key("gpio"), Key("attempts")],
                format!("{} is out of range: 1 to 10", s.gpio.attempts),
            ));
        }
        if s.gpio.pin > 53 {
            return Err(problem(
                vec![Key("sensors"), Key("gpio"), Key("pin")],
                format!("{} is not a BCM GPIO number (0 to 53)", s.gpio.pin),
            ));
        }
        if s.monitor_unconfigured {
            s.defaults
                .sensor("defaults")
                .thresholds()
                .check()
                .map_err(|(k, msg)| problem(vec![Key("sensors"), Key("defaults"), Key(k)], msg))?;
        }
        if self.sensor.is_empty() && !s.monitor_unconfigured {
            return Err(problem(
                vec![Key("sensors")],
                "no [[sensor]] configured: add at least one, or set monitor_unconfigured = true",
            ));
        }
        for (i, sc) in self.sensor.iter().enumerate() {
            let sk = |k: &'static str| vec![Key("sensor"), Index(i), Key(k)];
            if !is_topic_word(&sc.id) {
                return Err(problem(
                    sk("id"),
                    format!(
                        "{:?} must use only letters, digits, '-' and '_' (e.g. 28-0316a2791dff)",
                        sc.id
                    ),
                ));
            }
            if self.sensor[..i].iter().any(|o| o.id == sc.id) {
                return Err(problem(sk("id"), format!("{:?} is listed twice", sc.id)));
            }
            sc.thresholds()
                .check()
                .map_err(|(k, msg)| problem(sk(k), msg))?;
            if let Some(bits) = sc.resolution {
                if !(9..=12).contains(&bits) {
                    return Err(problem(
                        sk("resolution"),
                        format!("{bits} bits is not a DS18B20 resolution: 9, 10, 11 or 12"),
                    ));
                }
            }
            if let Some(sim) = &sc.sim {
                let mut last = f64::NEG_INFINITY;
                for st in &sim.steps {
                    if !st[0].is_finite() || !st[1].is_finite() || st[0] < last || st[0] < 0.0 {
                        return Err(problem(
                            vec![Key("sensor"), Index(i), Key("sim"), Key("steps")],
                            "each step is [seconds, celsius], finite, with seconds >= 0 and in increasing order",
                        ));
                    }
                    last = st[0];
                }
                if let Some(l) = sim.loop_secs {
                    if !(l > 0.0 && l.is_finite()) {
                        return Err(problem(
                            vec![Key("sensor"), Index(i), Key("sim"), Key("loop_secs")],
                            "must be a positive number of seconds",
                        ));
                    }
                }
                for f in &sim.faults {
                    if f.from.is_nan() || f.until.is_nan() || f.from > f.until {
                        return Err(problem(
                            vec![Key("sensor"), Index(i), Key("sim"), Key("faults")],
                            "each fault needs from <= until",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn read_secret(p: &Path) -> Result<String, std::io::Error> {
    let s = std::fs::read_to_string(p)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

fn readable(p: &Path) -> Result<(), String> {
    std::fs::File::open(p)
        .map(|_| ())
        .map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// True for a non-empty string usable as one topic level: ASCII letters,
/// digits, `-` and `_`.
pub fn is_topic_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn key_name(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |n| before.len() - n - 1)
        + 1;
    (line, column)
}

/// The byte span of the deepest part of `path` found in `src`.
fn locate(src: &str, path: &[Seg]) -> Option<Range<usize>> {
    use toml_edit::{Item, Table};
    enum Cur<'a> {
        Item(&'a Item),
        Table(&'a Table),
    }
    let doc = toml_edit::ImDocument::parse(src).ok()?;
    let mut cur = Cur::Table(doc.as_table());
    let mut span = None;
    for seg in path {
        match (seg, cur) {
            (Seg::Key(k), c) => {
                let t: &dyn toml_edit::TableLike = match c {
                    Cur::Table(t) => t,
                    Cur::Item(i) => match i.as_table_like() {
                        Some(t) => t,
                        None => break,
                    },
                };
                let Some((key, item)) = t.get_key_value(k) else {
                    break;
                };
                span = key.span().or_else(|| item.span()).or(span);
                cur = Cur::Item(item);
            }
            (Seg::Index(i), Cur::Item(Item::ArrayOfTables(a))) => {
                let Some(t) = a.get(*i) else { break };
                span = t.span().or(span);
                cur = Cur::Table(t);
            }
            _ => break,
        }
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_files() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("certs")).expect("mkdir");
        std::fs::create_dir_all(d.path().join("secrets")).expect("mkdir");
        std::fs::write(d.path().join("certs/ca.crt"), "x").expect("write");
        std::fs::write(d.path().join("secrets/gw1.pass"), "pw\n").expect("write");
        d
    }

    const EXAMPLE: &str = r#"gateway_id = "gw1"

[mqtt]
host = "localhost"
port = 8883
ca_file = "certs/ca.crt"
username = "gw1"
password_file = "secrets/gw1.pass"   # also: password from $CREDENTIALS_DIRECTORY/mqtt-password when set
keep_alive_secs = 5
alert_expiry_secs = 300

[sensors]
backend = "sim"
poll_interval_ms = 500

[[sensor]]
id = "28-000000000001"
name = "freezer"
warning_above = 30.0
critical_above = 40.0
hysteresis = 0.5
[sensor.sim]
steps = [[0.0, 20.0], [3.0, 35.0], [6.0, 45.0], [12.0, 20.0]]   # [seconds since start, celsius]
"#;

    #[test]
    fn the_issue_example_parses_and_resolves_paths() {
        let d = dir_with_files();
        let p = d.path().join("thermalertd.toml");
        let c = Config::parse(EXAMPLE, &p).expect("valid");
        assert_eq!(c.gateway_id, "gw1");
        assert_eq!(c.mqtt.ca_file, d.path().join("certs/ca.crt"));
        assert_eq!(c.password().expect("pw").as_deref(), Some("pw"));
        assert_eq!(c.sensor[0].display_name(), "freezer");
        assert_eq!(c.sensor[0].sim.as_ref().map(|s| s.steps.len()), Some(4));
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let d = dir_with_files();
        let p = d.path().join("t.toml");
        let src = EXAMPLE.replace("hysteresis = 0.5", "hysteresis = 0.5\nwarnign_above = 3.0");
        let e = Config::parse(&src, &p).expect_err("typo must be rejected");
        let msg = e.to_string();
        assert!(msg.contains("warnign_above"), "{msg}");
        assert!(msg.contains("t.toml:22:"), "{msg}");
    }

    #[test]
    fn meaning_errors_name_key_and_line() {
        let d = dir_with_files();
        let p = d.path().join("t.toml");
        let src = EXAMPLE.replace("critical_above = 40.0", "critical_above = 25.0");
        let msg = Config::parse(&src, &p).expect_err("invalid").to_string();
        assert!(
            msg.contains("t.toml:20: key `sensor[0].critical_above`"),
            "{msg}"
        );
    }

    #[test]
    fn the_alarm_section_parses_and_is_validated() {
        let d = dir_with_files();
        let p = d.path().join("t.toml");
        let c = Config::parse(&format!("{EXAMPLE}\n[alarm]\ngpio_pin = 17\n"), &p).expect("valid");
        assert_eq!(c.alarm, Some(AlarmConfig { gpio_pin: 17 }));
        assert_eq!(Config::parse(EXAMPLE, &p).expect("valid").alarm, None);
        let msg = Config::parse(&format!("{EXAMPLE}\n[alarm]\ngpio_pin = 40\n"), &p)
            .expect_err("no such pin")
            .to_string();
        assert!(
            msg.contains("key `alarm.gpio_pin`") && msg.contains("0..=27"),
            "{msg}"
        );
        let msg = Config::parse(&format!("{EXAMPLE}\n[alarm]\npin = 17\n"), &p)
            .expect_err("unknown key")
            .to_string();
        assert!(msg.contains("pin"), "{msg}");
    }

    #[test]
    fn missing_ca_file_is_reported_with_its_path() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("t.toml");
        let msg = Config::parse(EXAMPLE, &p).expect_err("no ca").to_string();
        assert!(msg.contains("mqtt.ca_file"), "{msg}");
        assert!(msg.contains("certs/ca.crt"), "{msg}");
    }

    #[test]
    fn duplicate_sensor_ids_are_rejected() {
        let d = dir_with_files();
        let p = d.path().join("t.toml");
        let src = format!("{EXAMPLE}\n[[sensor]]\nid = \"28-000000000001\"\n");
        let msg = Config::parse(&src, &p).expect_err("dup").to_string();
        assert!(msg.contains("listed twice"), "{msg}");
        assert!(msg.contains(":26:"), "{msg}");
    }

    #[test]
    fn hardware_backends_and_their_sections_parse() {
        let d = dir_with_files();
        let p = d.path().join("t.toml");
        let src = EXAMPLE
            .replace("backend = \"sim\"", "backend = \"w1-sysfs\"")
            .replace(
                "poll_interval_ms = 500",
                "poll_interval_ms = 500\nmonitor_unconfigured = true\n[sensors.w1]\nroot = \"/tmp/w1\"\nbulk_read = false\n[sensors.gpio]\npin = 17",
            )
            .replace("hysteresis = 0.5", "hysteresis = 0.5\nresolution = 10");
        let c = Config::parse(&src, &p).expect("valid");
        assert_eq!(c.sensors.backend, Backend::W1Sysfs);
        assert!(c.sensors.monitor_unconfigured);
        assert_eq!(c.sensors.w1.root, PathBuf::from("/tmp/w1"));
        assert!(!c.sensors.w1.bulk_read);
        assert_eq!(c.sensors.gpio.pin, 17);
        assert_eq!(c.sensors.gpio.chip, PathBuf::from("/dev/gpiochip0"));
        assert_eq!(c.sensors.gpio.attempts, 3);
        assert_eq!(c.sensor[0].resolution, Some(10));

        let gpio = EXAMPLE.replace("backend = \"sim\"", "backend = \"gpio\"");
        let c = Config::parse(&gpio, &p).expect("valid");
        assert_eq!(c.sensors.backend, Backend::Gpio);
        assert_eq!(c.sensors.gpio.pin, 4);
        assert_eq!(c.sensors.w1.root, PathBuf::from("/sys/bus/w1/devices"));
        assert!(c.sensors.w1.bulk_read);
        assert!(!c.sensors.monitor_unconfigured);
        assert_eq!(c.sensor[0].resolution, None);
    }

    #[test]
    fn resolution_outside_9_to_12_is_rejected() {
        let d = dir_with_files();
        let p = d.path().join("t.toml");
        for bad in ["8", "13"] {
            let src = EXAMPLE.replace(
                "hysteresis = 0.5",
                &format!("hysteresis = 0.5\nresolution = {bad}"),
            );
            let msg = Config::parse(&src, &p)
                .expect_err("bad resolution")
                .to_string();
            assert!(
                msg.contains("t.toml:22: key `sensor[0].resolution`"),
                "{msg}"
            );
        }
    }

    #[test]
    fn unknown_keys_in_hardware_sections_are_rejected() {
        let d = dir_with_files();
        let p = d.path().join("t.toml");
        let src = EXAMPLE.replace(
            "poll_interval_ms = 500",
            "poll_interval_ms = 500\n[sensors.w1]\nrooot = \"/x\"",
        );
        let msg = Config::parse(&src, &p).expect_err("typo").to_string();
        assert!(msg.contains("rooot"), "{msg}");
        let src = EXAMPLE.replace(
            "poll_interval_ms = 500",
            "poll_interval_ms = 500\n[sensors.gpio]\nattempts = 0",
        );
        let msg = Config::parse(&src, &p).expect_err("attempts").to_string();
        assert!(msg.contains("sensors.gpio.attempts"), "{msg}");
    }

    #[test]
    fn bad_gateway_id_is_rejected() {
        let d = dir_with_files();
        let p = d.path().join("t.toml");
        let src = EXAMPLE.replace("\"gw1\"\n\n[mqtt]", "\"gw/1\"\n\n[mqtt]");
        let msg = Config::parse(&src, &p).expect_err("slash").to_string();
        assert!(msg.contains("t.toml:1: key `gateway_id`"), "{msg}");
    }

    proptest::proptest! {
        /// Any text, and any mangling of a valid file, is a value or an
        /// error naming a line: never a panic.
        #[test]
        fn parse_never_panics(src in "\\PC{0,400}") {
            let _ = Config::parse(&src, Path::new("/nonexistent/t.toml"));
        }

        #[test]
        fn mangled_example_never_panics(at in 0usize..700, cut in 0usize..40, insert in "\\PC{0,12}") {
            let mut src = EXAMPLE.to_string();
            let at = at.min(src.len());
            let at = (0..=at).rev().find(|i| src.is_char_boundary(*i)).unwrap_or(0);
            let end = (at + cut).min(src.len());
            let end = (end..=src.len()).find(|i| src.is_char_boundary(*i)).unwrap_or(src.len());
            src.replace_range(at..end, &insert);
            if let Err(e) = Config::parse(&src, Path::new("/nonexistent/t.toml")) {
                let msg = e.to_string();
                proptest::prop_assert!(msg.starts_with("/nonexistent/t.toml"), "{}", msg);
            }
        }
    }
}
