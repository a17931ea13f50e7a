//! The daemon's configuration: TOML parsed with serde (unknown keys
//! rejected), then checked in two steps: [`validate`] for meaning (pure,
//! every problem at once) and [`preflight`] for what touches the
//! filesystem and the environment. Every error names the file, the key and
//! the line ([`locate`]).

pub mod locate;
pub mod paths;
pub mod preflight;
pub mod secret;
mod sensors;
pub mod validate;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use sensors::{
    Backend, DefaultThresholds, GpioConfig, GpioDriver, SensorConfig, SensorsConfig, SimConfig,
    SimFault, SimFaultKind, W1Config,
};
pub use validate::{client_id_problem, is_topic_word, topic_prefix_problem, Problem};

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
    /// Meaning and preflight problems, each on its own line.
    #[error("{}", Located::lines(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Located>,
    },
}

/// A [`Problem`] placed in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub line: usize,
    /// The key path, e.g. `sensor[0].critical_above`.
    pub key: String,
    pub message: String,
}

impl Located {
    /// `file:line: key `k`: message`, one line per problem.
    fn lines(path: &Path, problems: &[Located]) -> String {
        problems
            .iter()
            .map(|p| {
                format!(
                    "{}:{}: key `{}`: {}",
                    path.display(),
                    p.line,
                    p.key,
                    p.message
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
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
    pub homeassistant: HomeAssistantConfig,
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

/// `[homeassistant]` in the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantConfig {
    /// Publish discovery configs.
    #[serde(default)]
    pub enabled: bool,
    /// Home Assistant's discovery prefix (its MQTT integration setting).
    #[serde(default = "default_ha_prefix")]
    pub discovery_prefix: String,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            discovery_prefix: default_ha_prefix(),
        }
    }
}

fn default_ha_prefix() -> String {
    "homeassistant".into()
}

impl HomeAssistantConfig {
    /// Meaning checks; on error the offending key and a message.
    pub fn check(&self, publish_readings: bool) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        if let Some(why) = validate::topic_prefix_problem(&self.discovery_prefix) {
            return Err(("discovery_prefix", why.to_string()));
        }
        if !publish_readings {
            return Err((
                "enabled",
                "Home Assistant reads temperatures from the reading topic: set mqtt.publish_readings = true".into(),
            ));
        }
        Ok(())
    }
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
pub(crate) fn default_true() -> bool {
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

impl Config {
    /// Reads, parses and checks the file at `path`; relative paths inside
    /// it are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&src, path)
    }

    /// Parses and checks `src`, which was read from `path`: every
    /// [`validate`] and [`preflight`] problem is reported, in file order.
    pub fn parse(src: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg = Self::from_toml(src, path)?;
        let mut problems = validate::validate(&cfg);
        problems.extend(preflight::preflight(&cfg));
        if problems.is_empty() {
            return Ok(cfg);
        }
        let mut located: Vec<Located> = problems
            .into_iter()
            .map(|p| Located {
                line: locate::line_of_key(src, &p.key),
                key: p.key.to_string(),
                message: p.message,
            })
            .collect();
        located.sort_by_key(|l| l.line);
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: located,
        })
    }

    /// Parses `src` (read from `path`) and resolves its relative paths,
    /// without checking what it means.
    pub fn from_toml(src: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(src).map_err(|e| {
            // A value of the wrong type (or an unknown key) names its key
            // path, as the meaning errors do.
            let at = locate::toml_error(src, &e);
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line: at.line,
                column: at.column,
                message: at.message_naming_key(),
            }
        })?;
        let m = &mut cfg.mqtt;
        paths::resolve_relative(
            path,
            [
                cfg.state_dir.as_mut(),
                Some(&mut m.ca_file),
                m.client_cert.as_mut(),
                m.client_key.as_mut(),
                m.password_file.as_mut(),
            ],
        );
        Ok(cfg)
    }

    pub fn client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("thermalertd-{}", self.gateway_id))
    }
}

impl MqttConfig {
    /// The certificates whose expiry is watched: the CA and, for mutual
    /// TLS, the client certificate.
    pub fn certificate_files(&self) -> Vec<(&'static str, PathBuf)> {
        crate::sys::certwatch::certificate_files(&self.ca_file, self.client_cert.as_deref())
    }
}

#[cfg(test)]
mod tests;
