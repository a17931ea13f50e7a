//! `thermalert-notifier`: subscribe -> show -> answer.
//!
//! Runs on an operator's workstation. Subscribes at QoS 2 to every
//! gateway's alerts and status with a persistent session, prints one line
//! (or one JSON object) per alert and status change, answers every alert on
//! its ResponseTopic with its CorrelationData, and never shows the same
//! alert id twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use rumqttc::{
    AsyncClient, BrokerSessionResumePolicy, PublishNoticeError, PublishOptions, PublishProperties,
    QoS,
};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::alert::AlertLevel;
use crate::backoff::Backoff;
use crate::mqtt::conn::{self, Endpoint, Link};
use crate::mqtt::payload::{self, Ack, Alert, Status};
use crate::mqtt::store::FileSessionStore;
use crate::mqtt::topics::{self, Parsed};
use crate::mqtt::{tls, CONTENT_TYPE_JSON};
use crate::timefmt;

#[derive(Debug, Parser)]
#[command(
    name = "thermalert-notifier",
    version,
    about = "Shows thermalert alerts and gateway status, and answers each alert"
)]
pub struct Cli {
    /// A TOML file with any of the options below (keys as the long flags, with '_' for '-').
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
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
    pub keep_alive_secs: Option<u16>,
    #[arg(long)]
    pub receive_maximum: Option<u16>,
    /// Where the notifier keeps its MQTT session between runs. Default:
    /// $XDG_STATE_HOME/thermalert-notifier or ~/.local/state/thermalert-notifier.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// One JSON object per line instead of readable lines.
    #[arg(long)]
    pub json: bool,
}

/// The notifier's settings; every key optional, flags win over the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub client_id: Option<String>,
    pub topic_prefix: Option<String>,
    pub session_expiry_secs: Option<u32>,
    pub keep_alive_secs: Option<u16>,
    pub receive_maximum: Option<u16>,
    pub state_dir: Option<PathBuf>,
    pub json: Option<bool>,
}

/// Resolved settings.
pub struct Settings {
    pub endpoint: Endpoint,
    pub prefix: String,
    pub json: bool,
    pub state_dir: PathBuf,
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
}

fn load_file(path: &Path) -> Result<FileConfig, SettingsError> {
    let src = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut f: FileConfig = toml::from_str(&src).map_err(|e| SettingsError::Syntax {
        path: path.to_path_buf(),
        line: e.span().map_or(1, |s| {
            src[..s.start.min(src.len())].matches('\n').count() + 1
        }),
        message: e.message().to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [
        f.ca_file.as_mut(),
        f.client_cert.as_mut(),
        f.client_key.as_mut(),
        f.password_file.as_mut(),
        f.state_dir.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
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
    pub fn resolve(cli: &Cli) -> Result<Self, SettingsError> {
        let f = match &cli.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let ca_file = cli
            .ca_file
            .clone()
            .or(f.ca_file)
            .ok_or(SettingsError::Missing(
                "--ca-file (the CA that signed the broker's certificate)",
            ))?;
        let cert = cli.client_cert.clone().or(f.client_cert);
        let key = cli.client_key.clone().or(f.client_key);
        let tls =
            tls::client_config(&ca_file, cert.as_deref().zip(key.as_deref())).map_err(|e| {
                SettingsError::Invalid {
                    key: "ca-file",
                    message: e.to_string(),
                }
            })?;
        let username = cli.username.clone().or(f.username);
        let password = match cli.password_file.clone().or(f.password_file) {
            Some(p) => Some(
                std::fs::read_to_string(&p)
                    .map_err(|e| SettingsError::Invalid {
                        key: "password-file",
                        message: format!("{}: {e}", p.display()),
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => None,
        };
        let client_id = cli.client_id.clone().or(f.client_id).unwrap_or_else(|| {
            format!(
                "thermalert-notifier-{}-{}",
                username.as_deref().unwrap_or("anon"),
                hostname()
            )
        });
        let prefix = cli
            .topic_prefix
            .clone()
            .or(f.topic_prefix)
            .unwrap_or_else(|| "thermalert".into());
        Ok(Self {
            endpoint: Endpoint {
                host: cli
                    .host
                    .clone()
                    .or(f.host)
                    .unwrap_or_else(|| "localhost".into()),
                port: cli.port.or(f.port).unwrap_or(8883),
                client_id,
                username,
                password,
                tls,
                keep_alive_secs: cli.keep_alive_secs.or(f.keep_alive_secs).unwrap_or(30),
                connect_timeout: Duration::from_secs(10),
                session_expiry_secs: cli
                    .session_expiry_secs
                    .or(f.session_expiry_secs)
                    .unwrap_or(24 * 3600),
                receive_maximum: cli.receive_maximum.or(f.receive_maximum).unwrap_or(100),
                resume_on_start: true,
            },
            prefix,
            json: cli.json || f.json.unwrap_or(false),
            state_dir: cli
                .state_dir
                .clone()
                .or(f.state_dir)
                .unwrap_or_else(default_state_dir),
        })
    }
}

/// The notifier's entry point; returns the process exit code.
pub fn main() -> i32 {
    crate::logging::init();
    let cli = Cli::parse();
    let settings = match Settings::resolve(&cli) {
        Ok(s) => s,
        Err(e) => {
            log::error!("invalid configuration: {e}");
            return crate::EXIT_CONFIG;
        }
    };
    // One thread: every task here is a short step between awaits, and
    // cross-thread wake-ups cost more CPU than they save (BENCHMARKS.md).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(settings)) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e:#}");
            1
        }
    }
}

pub use crate::seen::Seen;

/// Alert ids remembered to show each alert once.
const SEEN_CAP: usize = 10_000;

struct Notifier {
    settings: Settings,
    client: AsyncClient,
    seen: Seen,
    statuses: HashMap<String, String>,
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut options = settings.endpoint.options(None);
    // A restarted notifier has no local session state but wants what the
    // broker queued for it; duplicates are filtered by alert id.
    // Its session is checkpointed on disk so that a restart resumes it
    // strictly; if the checkpoint is lost, it still takes what the broker
    // queued (broker-only resume) and answers at QoS 0 until it reconnects.
    options.set_session_store(FileSessionStore::new(settings.state_dir.clone()));
    options.set_broker_session_resume_policy(BrokerSessionResumePolicy::AllowBrokerOnly);
    let (client, eventloop) = AsyncClient::builder(options).capacity(256).build();
    let stop = CancellationToken::new();
    let (link_tx, mut link_rx) = mpsc::channel(1024);
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let driver = tokio::spawn(conn::drive(eventloop, link_tx, backoff, stop.clone()));
    log::info!(
        "thermalert-notifier {} as {} to {}:{}",
        env!("CARGO_PKG_VERSION"),
        settings.endpoint.client_id,
        settings.endpoint.host,
        settings.endpoint.port
    );
    let mut n = Notifier {
        client,
        seen: Seen::open(&settings.state_dir, SEEN_CAP),
        statuses: HashMap::new(),
        settings,
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            link = link_rx.recv() => match link {
                Some(l) => n.on_link(l).await,
                None => break,
            },
        }
    }
    let _ = n.client.disconnect().await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
    Ok(())
}

impl Notifier {
    async fn on_link(&mut self, link: Link) {
        match link {
            Link::Connected {
                session_present, ..
            } => {
                if session_present {
                    log::info!("session resumed: subscriptions kept");
                    return;
                }
                let filters = [
                    topics::all_alerts(&self.settings.prefix),
                    topics::all_statuses(&self.settings.prefix),
                ];
                let subs = filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilterInput::new(f.clone(), QoS::ExactlyOnce));
                match self.client.subscribe_many_tracked(subs).await {
                    Ok(notice) => {
                        let what = filters.join(", ");
                        tokio::spawn(async move {
                            match notice.wait_async().await {
                                Ok(_) => log::info!("subscribed to {what} at QoS 2"),
                                Err(e) => log::error!("subscription to {what} failed: {e}"),
                            }
                        });
                    }
                    Err(e) => log::error!("cannot subscribe: {e}"),
                }
            }
            Link::Down => {}
            Link::Message(p) => self.on_message(*p).await,
        }
    }

    async fn on_message(&mut self, p: rumqttc::Publish) {
        let Ok(topic) = std::str::from_utf8(&p.topic) else {
            log::warn!("skipping a message with a non-UTF-8 topic");
            return;
        };
        match topics::parse(&self.settings.prefix, topic) {
            Parsed::Alert { .. } => {
                if p.payload.is_empty() {
                    // A retained CRITICAL being cleared.
                    log::debug!("{topic}: retained alert cleared");
                    return;
                }
                match payload::decode::<Alert>(&p.payload) {
                    Ok(a) => self.on_alert(topic, &p, a).await,
                    Err(e) => log::warn!("skipping a malformed alert on {topic}: {e}"),
                }
            }
            Parsed::Status { gateway } => {
                if p.payload.is_empty() {
                    return;
                }
                match payload::decode::<Status>(&p.payload) {
                    Ok(s) => self.on_status(gateway, s, p.retain),
                    Err(e) => log::warn!("skipping a malformed status on {topic}: {e}"),
                }
            }
            Parsed::Other => log::debug!("ignoring {topic}"),
        }
    }

    async fn on_alert(&mut self, topic: &str, p: &rumqttc::Publish, a: Alert) {
        if self.seen.is_new(&a.id, a.escalation) {
            self.show_alert(&a, p.retain);
            self.seen.record(&a.id, a.escalation);
        } else {
            log::debug!(
                "alert {} (escalation {}) seen before; answering again",
                a.id,
                a.escalation
            );
        }
        let props = p.properties.as_ref();
        let Some(response_topic) = props.and_then(|pr| pr.response_topic.clone()) else {
            log::warn!(
                "alert {} on {topic} has no ResponseTopic; cannot answer",
                a.id
            );
            return;
        };
        let ack = Ack {
            alert_id: a.id.clone(),
            status: "delivered".into(),
            by: self.settings.endpoint.client_id.clone(),
            ts: timefmt::now_rfc3339(),
        };
        let props = PublishProperties {
            correlation_data: props.and_then(|pr| pr.correlation_data.clone()),
            content_type: Some(CONTENT_TYPE_JSON.into()),
            payload_format_indicator: Some(1),
            ..Default::default()
        };
        let body = payload::encode(&ack);
        let opts = PublishOptions::new(QoS::AtLeastOnce).properties(props.clone());
        match self
            .client
            .publish_tracked(response_topic.clone(), body.clone(), opts)
            .await
        {
            Ok(notice) => {
                let client = self.client.clone();
                let id = a.id.clone();
                tokio::spawn(async move {
                    match notice.wait_async().await {
                        Ok(_) => {}
                        Err(PublishNoticeError::BrokerOnlySessionResume) => {
                            // No local packet-id state for this resumed
                            // session: answer at QoS 0 rather than not at all.
                            let opts = PublishOptions::new(QoS::AtMostOnce).properties(props);
                            if let Err(e) = client.publish(response_topic, body, opts).await {
                                log::error!("cannot answer alert {id}: {e}");
                            }
                        }
                        Err(e) => log::warn!("answer to alert {id} not confirmed: {e}"),
                    }
                });
            }
            Err(e) => log::error!("cannot answer alert {}: {e}", a.id),
        }
    }

    fn show_alert(&self, a: &Alert, retained: bool) {
        if self.settings.json {
            let mut v = serde_json::to_value(a).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("type".into(), "alert".into());
                o.insert("retained".into(), retained.into());
            }
            println!("{v}");
            return;
        }
        let mark = match a.level {
            AlertLevel::Critical => "!!",
            AlertLevel::Fault => "??",
            AlertLevel::Warning => "! ",
            AlertLevel::Resolved => "ok",
        };
        println!(
            "{} {mark} {:<8} {}/{} ({}) {}{}: {}",
            a.ts,
            a.level.as_str(),
            a.gateway,
            a.name,
            a.sensor,
            a.celsius
                .map_or_else(|| "--".to_string(), |c| format!("{c:.2} C")),
            if retained { " [retained]" } else { "" },
            a.message
        );
    }

    fn on_status(&mut self, gateway: &str, s: Status, retained: bool) {
        let key = format!("{}:{}", s.state, s.reason.as_deref().unwrap_or(""));
        if self.statuses.get(gateway) == Some(&key) {
            return;
        }
        self.statuses.insert(gateway.to_string(), key);
        if self.settings.json {
            let mut v = serde_json::to_value(&s).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("type".into(), "status".into());
                o.insert("gateway".into(), gateway.into());
                o.insert("retained".into(), retained.into());
            }
            println!("{v}");
        } else {
            println!(
                "{} -- gateway {gateway} is {}{}",
                s.ts.clone().unwrap_or_else(timefmt::now_rfc3339),
                s.state,
                s.reason.map(|r| format!(" ({r})")).unwrap_or_default()
            );
        }
    }
}
