//! The notifier's settings: each option declared once, in [`Options`], for
//! both its flag and its key in the TOML file; flags win over the file key
//! by key ([`Options::or`]); the defaults are applied here, in
//! [`Settings::resolve`] (the connection) and [`Options::channels`] (the
//! channels, filter and watchers).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Deserializer};

use crate::mqtt::conn::Endpoint;
use crate::mqtt::tls;
use crate::notifier::channels::{Channels, Desktop, ExecHook};
use crate::notifier::filter::{Filter, FilterError};
use crate::notifier::watch::WatchConfig;

#[derive(Debug, Parser)]
#[command(
    name = "thermalert-notifier",
    version,
    about = "Shows thermalert alerts and gateway status, and answers each alert"
)]
pub struct Cli {
    /// A TOML file with any of the options below, channels included (keys as the long flags, with '_' for '-'); flags win.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub options: Options,
    #[command(subcommand)]
    pub command: Option<NotifierCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum NotifierCommand {
    /// Print every known gateway (online or offline, since when) and every
    /// active alert from the broker's retained messages, then exit: 0 when
    /// all is well, 1 when a gateway is offline, an alert is active, or no
    /// gateway is known.
    Status {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

/// Every notifier option, once: a long flag (`--ca-file`) and a key of the
/// TOML file (`ca_file`). Each is optional in both; a switch (`--json`,
/// `--no-desktop`) is `Some(true)` when its flag is given, `None` when not,
/// so that a file's `json = true` holds unless overridden. The file's
/// values are checked as they are read (a bad filter or share group names
/// its line); the flags' in [`Options::channels`].
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    #[serde(default, deserialize_with = "at_least_one")]
    pub port: Option<u16>,
    /// CA certificate (PEM) that signed the broker's certificate.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    #[arg(long)]
    pub client_cert: Option<PathBuf>,
    #[arg(long)]
    pub client_key: Option<PathBuf>,
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the MQTT password (first line).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Client id; keep it stable so the broker can keep the session. Default: thermalert-notifier-<username>-<hostname>.
    #[arg(long)]
    pub client_id: Option<String>,
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// How long the broker keeps alerts for this notifier while it is away.
    #[arg(long)]
    pub session_expiry_secs: Option<u32>,
    #[arg(long)]
    #[serde(default, deserialize_with = "at_least_one")]
    pub keep_alive_secs: Option<u16>,
    #[arg(long)]
    #[serde(default, deserialize_with = "at_least_one")]
    pub receive_maximum: Option<u16>,
    /// Where the notifier keeps its MQTT session between runs. Default:
    /// $XDG_STATE_HOME/thermalert-notifier or ~/.local/state/thermalert-notifier.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// One JSON object per line instead of readable lines.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub json: Option<bool>,
    /// Run CMD with `sh -c` for each new alert: the alert as JSON on stdin
    /// and in THERMALERT_* environment variables; exit status 0 answers
    /// `delivered`, anything else (or the timeout) `failed`.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Seconds a --exec hook may run before it is killed and counts as failed [default: 30].
    #[arg(long, value_name = "SECS")]
    #[serde(default, deserialize_with = "at_least_one")]
    pub exec_timeout: Option<u64>,
    /// Handle only some alerts: gateway=NAME, sensor=ID_OR_NAME, level>=LEVEL
    /// (repeatable; same key: any of them, different keys: all).
    #[arg(long = "filter", value_name = "COND")]
    #[serde(default, deserialize_with = "filter_conditions")]
    pub filter: Option<Vec<String>>,
    /// No desktop notifications.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub no_desktop: Option<bool>,
    /// Alarm when the broker connection is down for longer than this [default: 60].
    #[arg(long, value_name = "SECS")]
    #[serde(default, deserialize_with = "at_least_one")]
    pub broker_grace_secs: Option<u64>,
    /// Alarm when an online gateway sends no reading for this many of its poll intervals [default: 5].
    #[arg(long, value_name = "N")]
    #[serde(default, deserialize_with = "at_least_one")]
    pub stale_intervals: Option<u32>,
    /// ... or for this long, when the gateway does not announce its poll interval [default: 120].
    #[arg(long, value_name = "SECS")]
    #[serde(default, deserialize_with = "at_least_one")]
    pub stale_after_secs: Option<u64>,
    /// Share the alerts with the other notifiers of this group (MQTT v5
    /// shared subscription `$share/NAME/<prefix>/+/alerts/+`): each alert
    /// goes to one of them. Status and readings are still seen by all.
    #[arg(long, value_name = "NAME")]
    #[serde(default, deserialize_with = "share_group")]
    pub share_group: Option<String>,
}

/// The numeric options where 0 means nothing useful (a zero port, a zero
/// Receive Maximum that MQTT forbids, keep-alive off so a dead link is
/// never noticed, timeouts that expire at once): refused, with the flag's
/// or the file's line and key.
const AT_LEAST_ONE: &str = "must be at least 1, not 0";

/// A file's numeric option that must not be 0, checked where its line is
/// known.
fn at_least_one<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default + PartialEq,
{
    let v = T::deserialize(d)?;
    if v == T::default() {
        return Err(serde::de::Error::custom(AT_LEAST_ONE));
    }
    Ok(Some(v))
}

/// A file's `filter`, checked where its line is known.
fn filter_conditions<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let conditions = Vec::<String>::deserialize(d)?;
    Filter::parse(&conditions).map_err(serde::de::Error::custom)?;
    Ok(Some(conditions))
}

/// A file's `share_group`, checked where its line is known.
fn share_group<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let g = String::deserialize(d)?;
    if !crate::config::is_topic_word(&g) {
        return Err(serde::de::Error::custom(format!(
            "{g:?}: use letters, digits, '-' and '_'"
        )));
    }
    Ok(Some(g))
}

impl Options {
    /// Refuses a flag's 0 where it means nothing useful (a file's was
    /// refused as the file was read).
    pub fn check_nonzero(&self) -> Result<(), SettingsError> {
        let zero = [
            ("port", self.port.map(u64::from)),
            ("keep-alive-secs", self.keep_alive_secs.map(u64::from)),
            ("receive-maximum", self.receive_maximum.map(u64::from)),
            ("exec-timeout", self.exec_timeout),
            ("broker-grace-secs", self.broker_grace_secs),
            ("stale-intervals", self.stale_intervals.map(u64::from)),
            ("stale-after-secs", self.stale_after_secs),
        ]
        .into_iter()
        .find(|(_, v)| *v == Some(0));
        match zero {
            Some((flag, _)) => Err(SettingsError::Zero(flag)),
            None => Ok(()),
        }
    }

    /// These options, each falling back to `file`'s where not given.
    pub fn or(self, file: Options) -> Options {
        Options {
            host: self.host.or(file.host),
            port: self.port.or(file.port),
            ca_file: self.ca_file.or(file.ca_file),
            client_cert: self.client_cert.or(file.client_cert),
            client_key: self.client_key.or(file.client_key),
            username: self.username.or(file.username),
            password_file: self.password_file.or(file.password_file),
            client_id: self.client_id.or(file.client_id),
            topic_prefix: self.topic_prefix.or(file.topic_prefix),
            session_expiry_secs: self.session_expiry_secs.or(file.session_expiry_secs),
            keep_alive_secs: self.keep_alive_secs.or(file.keep_alive_secs),
            receive_maximum: self.receive_maximum.or(file.receive_maximum),
            state_dir: self.state_dir.or(file.state_dir),
            json: self.json.or(file.json),
            exec: self.exec.or(file.exec),
            exec_timeout: self.exec_timeout.or(file.exec_timeout),
            filter: self.filter.or(file.filter),
            no_desktop: self.no_desktop.or(file.no_desktop),
            broker_grace_secs: self.broker_grace_secs.or(file.broker_grace_secs),
            stale_intervals: self.stale_intervals.or(file.stale_intervals),
            stale_after_secs: self.stale_after_secs.or(file.stale_after_secs),
            share_group: self.share_group.or(file.share_group),
        }
    }
}

/// Resolved settings.
pub struct Settings {
    pub endpoint: Endpoint,
    pub prefix: String,
    pub json: bool,
    pub state_dir: PathBuf,
    /// The CA file and client certificate, watched for expiry.
    pub cert_files: Vec<(&'static str, PathBuf)>,
    /// The options as given (flags over file), for [`Options::channels`].
    pub options: Options,
}

fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("thermalert-notifier");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".local/state/thermalert-notifier");
    }
    PathBuf::from(".thermalert-notifier")
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("missing setting: {0}")]
    Missing(&'static str),
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("--filter {0}")]
    Filter(#[source] FilterError),
    #[error("--share-group {0:?}: use letters, digits, '-' and '_'")]
    ShareGroup(String),
    #[error("--{0} 0: {AT_LEAST_ONE}")]
    Zero(&'static str),
}

fn load_file(path: &Path) -> Result<Options, SettingsError> {
    let src = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut f: Options = toml::from_str(&src).map_err(|e| {
        // A bad value's message does not name its key: take it from the line.
        let at = crate::config::locate::toml_error(&src, &e);
        SettingsError::Syntax {
            path: path.to_path_buf(),
            line: at.line,
            message: at.message_with_key(),
        }
    })?;
    crate::config::paths::resolve_relative(
        path,
        [
            f.ca_file.as_mut(),
            f.client_cert.as_mut(),
            f.client_key.as_mut(),
            f.password_file.as_mut(),
            f.state_dir.as_mut(),
        ],
    );
    Ok(f)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Settings {
    /// The flags over the file (`--config`), then the defaults.
    pub fn resolve(cli: &Cli) -> Result<Self, SettingsError> {
        let file = match &cli.config {
            Some(p) => load_file(p)?,
            None => Options::default(),
        };
        cli.options.check_nonzero()?;
        if let Some(NotifierCommand::Status { timeout: 0 }) = cli.command {
            return Err(SettingsError::Zero("timeout"));
        }
        let o = cli.options.clone().or(file);
        let ca_file = o.ca_file.clone().ok_or(SettingsError::Missing(
            "--ca-file (the CA that signed the broker's certificate)",
        ))?;
        let cert = o.client_cert.clone();
        let cert_files = crate::sys::certwatch::certificate_files(&ca_file, cert.as_deref());
        let tls = tls::client_config(&ca_file, cert.as_deref().zip(o.client_key.as_deref()))
            .map_err(|e| SettingsError::Invalid {
                key: "ca-file",
                message: e.to_string(),
            })?;
        let username = o.username.clone();
        let password =
            match &o.password_file {
                Some(p) => Some(crate::config::secret::read_secret(p).map_err(|e| {
                    SettingsError::Invalid {
                        key: "password-file",
                        message: format!("{}: {}", e.path.display(), e.source),
                    }
                })?),
                None => None,
            };
        let client_id = o.client_id.clone().unwrap_or_else(|| {
            format!(
                "thermalert-notifier-{}-{}",
                username.as_deref().unwrap_or("anon"),
                hostname()
            )
        });
        Ok(Self {
            endpoint: Endpoint {
                host: o.host.clone().unwrap_or_else(|| "localhost".into()),
                port: o.port.unwrap_or(8883),
                client_id,
                username,
                password,
                tls,
                keep_alive_secs: o.keep_alive_secs.unwrap_or(30),
                connect_timeout: Duration::from_secs(10),
                session_expiry_secs: o.session_expiry_secs.unwrap_or(24 * 3600),
                receive_maximum: o.receive_maximum.unwrap_or(100),
                resume_on_start: true,
            },
            prefix: o
                .topic_prefix
                .clone()
                .unwrap_or_else(|| "thermalert".into()),
            json: o.json.unwrap_or(false),
            state_dir: o.state_dir.clone().unwrap_or_else(default_state_dir),
            cert_files,
            options: o,
        })
    }
}

impl Options {
    /// The channels, filter and watchers, with their defaults. The file's
    /// values were checked as it was read; what fails here is a flag's.
    pub fn channels(&self) -> Result<Channels, SettingsError> {
        let o = self;
        o.check_nonzero()?;
        if let Some(g) = &o.share_group {
            if !crate::config::is_topic_word(g) {
                return Err(SettingsError::ShareGroup(g.clone()));
            }
        }
        let exec_timeout = o.exec_timeout.unwrap_or(30);
        Ok(Channels {
            share_group: o.share_group.clone(),
            exec: o
                .exec
                .clone()
                .map(|c| ExecHook::new(c, Duration::from_secs(exec_timeout))),
            desktop: (!o.no_desktop.unwrap_or(false)).then(Desktop::default),
            filter: Filter::parse(o.filter.as_deref().unwrap_or_default())
                .map_err(SettingsError::Filter)?,
            watch: WatchConfig {
                stale_intervals: o.stale_intervals.unwrap_or(5),
                stale_after: Duration::from_secs(o.stale_after_secs.unwrap_or(120)),
                broker_grace: Duration::from_secs(o.broker_grace_secs.unwrap_or(60)),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::alert::AlertLevel;
    use crate::mqtt::payload::Alert;

    #[test]
    fn the_example_file_loads_with_every_documented_key() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/notifier.toml");
        let src = std::fs::read_to_string(&example).expect("read the example");
        // Uncomment every `# key = value` line: each must be a known key.
        let all: String = src
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") => rest.split("   #").next().unwrap_or(rest),
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("notifier.toml");
        std::fs::write(&p, all).expect("write");
        let f = load_file(&p).expect("every documented key is known");
        assert_eq!(f.exec_timeout, Some(30));
        assert_eq!(
            f.filter,
            Some(vec![
                "gateway=gw1".to_string(),
                "level>=CRITICAL".to_string()
            ])
        );
        assert_eq!(f.share_group.as_deref(), Some("night-shift"));
        assert_eq!(
            f.ca_file,
            Some(dir.path().join("ca.crt")),
            "relative to the file"
        );
    }

    fn alert(level: AlertLevel) -> Alert {
        Alert::sample("id-1", level)
    }

    fn flags(args: &[&str]) -> Options {
        Cli::parse_from(std::iter::once("t").chain(args.iter().copied())).options
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_defaults() {
        let file = Options {
            exec: Some("file-hook".into()),
            exec_timeout: Some(7),
            filter: Some(vec!["level>=CRITICAL".into()]),
            no_desktop: Some(true),
            broker_grace_secs: Some(11),
            stale_intervals: Some(3),
            stale_after_secs: Some(33),
            share_group: Some("ops".into()),
            ..Options::default()
        };
        let c = flags(&[]).or(file.clone()).channels().expect("resolve");
        assert_eq!(
            c.exec.as_ref().map(|e| e.command.as_str()),
            Some("file-hook")
        );
        assert_eq!(
            c.exec.as_ref().map(|e| e.timeout),
            Some(Duration::from_secs(7))
        );
        assert!(c.desktop.is_none());
        assert!(!c.filter.accepts(&alert(AlertLevel::Warning)));
        assert_eq!(c.watch.broker_grace, Duration::from_secs(11));
        assert_eq!(c.watch.stale_intervals, 3);
        assert_eq!(c.watch.stale_after, Duration::from_secs(33));
        assert_eq!(c.share_group.as_deref(), Some("ops"));

        let given = flags(&[
            "--exec",
            "flag-hook",
            "--exec-timeout",
            "9",
            "--filter",
            "level>=WARNING",
            "--stale-intervals",
            "4",
            "--share-group",
            "night",
        ]);
        let c = given.or(file).channels().expect("resolve");
        assert_eq!(
            c.exec.as_ref().map(|e| e.command.as_str()),
            Some("flag-hook")
        );
        assert_eq!(
            c.exec.as_ref().map(|e| e.timeout),
            Some(Duration::from_secs(9))
        );
        assert!(c.filter.accepts(&alert(AlertLevel::Warning)));
        assert_eq!(c.watch.stale_intervals, 4);
        assert_eq!(
            c.watch.broker_grace,
            Duration::from_secs(11),
            "from the file"
        );
        assert_eq!(c.share_group.as_deref(), Some("night"));

        let c = flags(&[])
            .or(Options::default())
            .channels()
            .expect("defaults");
        assert!(c.exec.is_none() && c.desktop.is_some() && c.share_group.is_none());
        assert_eq!(c.watch.stale_intervals, 5);
        assert_eq!(c.watch.stale_after, Duration::from_secs(120));
        assert_eq!(c.watch.broker_grace, Duration::from_secs(60));
    }

    #[test]
    fn a_switch_is_unset_unless_given_so_the_file_can_turn_it_on() {
        let none = flags(&[]);
        assert_eq!((none.json, none.no_desktop), (None, None));
        let on = flags(&["--json", "--no-desktop"]);
        assert_eq!((on.json, on.no_desktop), (Some(true), Some(true)));
        let file = Options {
            json: Some(true),
            no_desktop: Some(true),
            ..Options::default()
        };
        let o = flags(&[]).or(file);
        assert_eq!(o.json, Some(true), "the file's json = true holds");
        assert!(o.channels().expect("channels").desktop.is_none());
        // A switch takes no value, as before.
        assert!(Cli::try_parse_from(["t", "--json=false"]).is_err());
        assert!(Cli::try_parse_from(["t", "--json", "--json"]).is_err());
    }

    #[test]
    fn a_bad_flag_is_named_by_its_flag() {
        let e = flags(&["--filter", "colour=red"])
            .channels()
            .expect_err("bad filter")
            .to_string();
        assert!(
            e.starts_with("--filter ") && e.contains("colour=red"),
            "{e}"
        );
        let e = flags(&["--share-group", "a/b"])
            .channels()
            .expect_err("bad group")
            .to_string();
        assert_eq!(e, "--share-group \"a/b\": use letters, digits, '-' and '_'");
    }

    #[test]
    fn a_bad_file_value_names_the_file_line_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("n.toml");
        for (body, want) in [
            ("host = \"h\"\nfilter = [\"level>=HOT\"]\n", ":2: filter: "),
            ("\n\nshare_group = \"a/b\"\n", ":3: share_group: \"a/b\""),
            ("stale_intervals = -1\n", ":1: stale_intervals"),
            ("json = true\nexec_timeot = 3\n", ":2: "),
        ] {
            std::fs::write(&p, body).expect("write");
            let e = load_file(&p).expect_err("an error").to_string();
            assert!(e.starts_with(&format!("{}{want}", p.display())), "{e}");
        }
    }
}
