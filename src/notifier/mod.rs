//! `thermalert-notifier`: subscribe -> show -> answer.
//!
//! Runs on an operator's workstation. Subscribes at QoS 2 to every
//! gateway's alerts and status with a persistent session, prints one line
//! (or one JSON object) per alert and status change, answers every alert on
//! its ResponseTopic with its CorrelationData, and never shows the same
//! alert id twice.

pub mod channels;
pub mod filter;
pub mod seen;
pub mod status;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::io::Write;
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

use crate::core::alert::AlertLevel;
use crate::mqtt::conn::{self, Endpoint, Link};
use crate::mqtt::payload::{self, Ack, Alert, Status};
use crate::mqtt::store::FileSessionStore;
use crate::mqtt::topics::{self, Parsed};
use crate::mqtt::{tls, CONTENT_TYPE_JSON};
use crate::sys::backoff::Backoff;
use crate::sys::timefmt;

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
    #[command(flatten)]
    pub channels: crate::notifier::channels::ChannelArgs,
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
    // The channel options (see `ChannelArgs`).
    pub exec: Option<String>,
    pub exec_timeout: Option<u64>,
    pub filter: Option<toml::Spanned<Vec<String>>>,
    pub no_desktop: Option<bool>,
    pub broker_grace_secs: Option<u64>,
    pub stale_intervals: Option<u32>,
    pub stale_after_secs: Option<u64>,
    pub share_group: Option<toml::Spanned<String>>,
}

impl FileConfig {
    /// The channel options of the file.
    pub fn channels(&self) -> crate::notifier::channels::ChannelFile {
        crate::notifier::channels::ChannelFile {
            exec: self.exec.clone(),
            exec_timeout: self.exec_timeout,
            filter: self.filter.as_ref().map(|f| f.get_ref().clone()),
            no_desktop: self.no_desktop,
            broker_grace_secs: self.broker_grace_secs,
            stale_intervals: self.stale_intervals,
            stale_after_secs: self.stale_after_secs,
            share_group: self.share_group.as_ref().map(|g| g.get_ref().clone()),
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
    /// The channel options from the file (the flags win over them).
    pub channel_file: crate::notifier::channels::ChannelFile,
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
    let mut f: FileConfig = toml::from_str(&src).map_err(|e| {
        // A bad value's message does not name its key: take it from the line.
        let at = crate::config::locate::toml_error(&src, &e);
        SettingsError::Syntax {
            path: path.to_path_buf(),
            line: at.line,
            message: at.message_with_key(),
        }
    })?;
    // Checked here, where the file's line is known.
    let at = |span: std::ops::Range<usize>, message: String| SettingsError::Syntax {
        path: path.to_path_buf(),
        line: crate::config::locate::line_of(&src, span.start),
        message,
    };
    if let Some(filter) = &f.filter {
        if let Err(e) = crate::notifier::filter::Filter::parse(filter.get_ref()) {
            return Err(at(filter.span(), format!("filter: {e}")));
        }
    }
    if let Some(g) = &f.share_group {
        if !crate::config::is_topic_word(g.get_ref()) {
            return Err(at(
                g.span(),
                format!(
                    "share_group: {:?}: use letters, digits, '-' and '_'",
                    g.get_ref()
                ),
            ));
        }
    }
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
    pub fn resolve(cli: &Cli) -> Result<Self, SettingsError> {
        let f = match &cli.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let channel_file = f.channels();
        let ca_file = cli
            .ca_file
            .clone()
            .or(f.ca_file)
            .ok_or(SettingsError::Missing(
                "--ca-file (the CA that signed the broker's certificate)",
            ))?;
        let cert = cli.client_cert.clone().or(f.client_cert);
        let cert_files = crate::sys::certwatch::certificate_files(&ca_file, cert.as_deref());
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
            Some(p) => Some(crate::config::secret::read_secret(&p).map_err(|e| {
                SettingsError::Invalid {
                    key: "password-file",
                    message: format!("{}: {}", e.path.display(), e.source),
                }
            })?),
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
            cert_files,
            channel_file,
        })
    }
}

/// The notifier's entry point; returns the process exit code.
pub fn main() -> i32 {
    crate::sys::logging::init();
    let cli = Cli::parse();
    let settings = match Settings::resolve(&cli) {
        Ok(s) => s,
        Err(e) => {
            log::error!("invalid configuration: {e}");
            return crate::EXIT_CONFIG;
        }
    };
    if let Some(NotifierCommand::Status { timeout }) = cli.command {
        return crate::notifier::status::main(settings, Duration::from_secs(timeout));
    }
    let channels = match cli.channels.resolve(&settings.channel_file) {
        Ok(c) => c,
        Err(e) => {
            log::error!("invalid configuration: {e}");
            return crate::EXIT_CONFIG;
        }
    };
    // One thread: the MQTT client, this loop and the channels' tasks take
    // turns, so that a batch of messages is handled and answered in one go
    // (one checkpoint, one write) instead of each crossing between worker
    // threads (see BENCHMARKS.md).
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
    match rt.block_on(run_with(settings, channels)) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e:#}");
            1
        }
    }
}

pub use crate::notifier::seen::Seen;

/// Alert ids remembered to show each alert once.
const SEEN_CAP: usize = 10_000;

struct Notifier {
    settings: Settings,
    client: AsyncClient,
    seen: Seen,
    statuses: HashMap<String, String>,
    channels: crate::notifier::channels::Channels,
    watch: crate::notifier::watch::Watch,
    /// Alerts whose --exec hook runs (answered when it ends), and the
    /// answers of finished hooks (for repeats).
    hooks_running: HashSet<String>,
    hook_results: HashMap<String, &'static str>,
    hook_tx: mpsc::UnboundedSender<HookDone>,
    /// In a share group: alerts another member answered `delivered`.
    answered_elsewhere: Seen,
    /// Lines for standard output, written in one go by `flush`.
    out: Vec<u8>,
    /// Answers, acknowledgements and hooks that wait until the lines
    /// before them are written and the alert ids recorded: see `flush`.
    deferred: Vec<Deferred>,
}

/// Work held back until the messages handled so far are shown and
/// recorded, so that nothing is answered or acknowledged before that.
enum Deferred {
    /// Answer an alert on its ResponseTopic.
    Answer {
        alert_id: String,
        response_topic: String,
        correlation: Option<bytes::Bytes>,
        status: &'static str,
    },
    /// Acknowledge (PUBACK/PUBREC) a handled message.
    Ack(Box<rumqttc::Publish>),
    /// Run the --exec hook of a new alert (answered when it ends).
    Hook {
        hook: crate::notifier::channels::ExecHook,
        alert: Alert,
        response_topic: String,
        correlation: Option<bytes::Bytes>,
    },
}

/// Requests the MQTT client takes per turn of its loop.
const MAX_REQUEST_BATCH: usize = 2 * BATCH;

/// How many queued messages are handled before their lines are written,
/// their ids recorded and their answers sent.
const BATCH: usize = 64;

/// The notifier cannot show alerts any more.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output: {0}")]
pub struct OutputError(#[from] std::io::Error);

/// A finished --exec hook, to be answered from the MQTT loop.
struct HookDone {
    alert_id: String,
    response_topic: String,
    correlation: Option<bytes::Bytes>,
    outcome: crate::notifier::channels::HookOutcome,
}

/// Runs the notifier with only the terminal as its channel.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    run_with(settings, crate::notifier::channels::Channels::default()).await
}

/// Runs the notifier with `channels` until SIGTERM or SIGINT.
pub async fn run_with(
    settings: Settings,
    channels: crate::notifier::channels::Channels,
) -> anyhow::Result<()> {
    let mut options = settings.endpoint.options(None);
    // A restarted notifier has no local session state but wants what the
    // broker queued for it; duplicates are filtered by alert id.
    // Its session is checkpointed on disk so that a restart resumes it
    // strictly; if the checkpoint is lost, it still takes what the broker
    // queued (broker-only resume) and answers at QoS 0 until it reconnects.
    options.set_session_store(FileSessionStore::new(settings.state_dir.clone()));
    options.set_broker_session_resume_policy(BrokerSessionResumePolicy::AllowBrokerOnly);
    // PUBREC/PUBACK only once a message was handled (shown, recorded,
    // answered). With automatic acknowledgement rumqttc-next sends PUBREC as
    // it reads a PUBLISH, and if the connection breaks in the same read it
    // drops the queued message while remembering the PUBREC, then takes the
    // broker's repeat for a duplicate: the alert was never shown
    // (tests/cuts.rs). Acknowledged by hand, an unhandled message is repeated
    // by the broker and shown; a repeat of a handled one is de-duplicated.
    options.set_ack_mode(rumqttc::AckMode::Manual);
    // Up to this many requests (answers, acknowledgements) go out per
    // client loop turn, behind one session checkpoint and one TLS write;
    // by default each request costs its own.
    options.set_max_request_batch(MAX_REQUEST_BATCH);
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
    let cert_watch = tokio::spawn(crate::sys::certwatch::watch_daily(
        settings.cert_files.clone(),
        |_| {},
    ));
    let (hook_tx, mut hook_rx) = mpsc::unbounded_channel();
    let mut n = Notifier {
        client,
        seen: Seen::open(&settings.state_dir, SEEN_CAP),
        statuses: HashMap::new(),
        watch: crate::notifier::watch::Watch::new(channels.watch),
        channels,
        hooks_running: HashSet::new(),
        hook_results: HashMap::new(),
        hook_tx,
        answered_elsewhere: Seen::new(100_000),
        settings,
        out: Vec::new(),
        deferred: Vec::new(),
    };
    // Not connected yet: the broker grace period runs from the start.
    n.watch.on_link_down(std::time::Instant::now());
    let mut watch_tick = tokio::time::interval(Duration::from_millis(250));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut result = Ok(());
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            Some(done) = hook_rx.recv() => n.on_hook_done(done),
            _ = watch_tick.tick() => {
                let events = n.watch.tick(std::time::Instant::now());
                n.on_watch(events);
            }
            link = link_rx.recv() => match link {
                Some(l) => {
                    n.on_link(l).await;
                    // Whatever else already arrived joins this batch: one
                    // write for its lines and ids, its answers sent together.
                    for _ in 1..BATCH {
                        let Ok(l) = link_rx.try_recv() else { break };
                        if !matches!(l, Link::Message(_)) {
                            // Acknowledgements belong to the connection
                            // they came in on.
                            if let Err(e) = n.flush().await {
                                result = Err(e);
                                break;
                            }
                        }
                        n.on_link(l).await;
                    }
                }
                None => break,
            },
        }
        if result.is_err() {
            break;
        }
        if let Err(e) = n.flush().await {
            result = Err(e);
            break;
        }
    }
    cert_watch.abort();
    let _ = n.client.disconnect().await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
    Ok(result?)
}

impl Notifier {
    async fn on_link(&mut self, link: Link) {
        match link {
            Link::Connected {
                session_present,
                shared_subscriptions,
                ..
            } => {
                let events = self.watch.on_link_up(std::time::Instant::now());
                // A broker without shared subscriptions (ejabberd) ends the
                // connection on a `$share/...` filter: every member then
                // takes every alert, and skips those another member already
                // answered (see "Fleets" in the README).
                let alerts_filter = if shared_subscriptions {
                    self.channels.alerts_filter(&self.settings.prefix)
                } else {
                    if self.channels.share_group.is_some() {
                        log::warn!(
                            "the broker has no shared subscriptions: every member of the share group receives every alert, and skips those another member already answered"
                        );
                    }
                    topics::all_alerts(&self.settings.prefix)
                };
                self.on_watch(events);
                if session_present {
                    log::info!("session resumed: subscriptions kept");
                    if self.channels.share_group.is_some() && shared_subscriptions {
                        // Some brokers (Mosquitto 2.0.11 after a restart
                        // from its persistence file) resume the session
                        // without its shared subscriptions: subscribe again
                        // (idempotent; retained messages never go to shared
                        // subscriptions).
                        if let Err(e) = self.client.subscribe(alerts_filter, QoS::ExactlyOnce).await
                        {
                            log::error!("cannot renew the shared subscription: {e}");
                        }
                    }
                    return;
                }
                let filters = [alerts_filter, topics::all_statuses(&self.settings.prefix)];
                // Readings at QoS 0, only to notice when they stop.
                let readings = topics::all_readings(&self.settings.prefix);
                // In a share group, the other members' answers.
                let acks = self
                    .channels
                    .share_group
                    .as_ref()
                    .map(|_| topics::all_acks(&self.settings.prefix));
                let subs = filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilterInput::new(f.clone(), QoS::ExactlyOnce))
                    .chain([rumqttc::SubscribeFilterInput::new(
                        readings,
                        QoS::AtMostOnce,
                    )])
                    .chain(acks.map(|a| rumqttc::SubscribeFilterInput::new(a, QoS::AtLeastOnce)));
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
            Link::Down => self.watch.on_link_down(std::time::Instant::now()),
            Link::Message(p) => {
                // Acknowledged (PUBREC/PUBACK) only once handled, shown and
                // recorded: see run() and flush().
                self.on_message(&p).await;
                self.deferred.push(Deferred::Ack(p));
            }
        }
    }

    async fn on_message(&mut self, p: &rumqttc::Publish) {
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
                    Ok(a) => self.on_alert(topic, p, a),
                    Err(e) => log::warn!("skipping a malformed alert on {topic}: {e}"),
                }
            }
            Parsed::Status { gateway } => {
                if p.payload.is_empty() {
                    return;
                }
                match payload::decode::<Status>(&p.payload) {
                    Ok(s) => {
                        let events = self.watch.on_status(gateway, &s, std::time::Instant::now());
                        self.on_status(gateway, s, p.retain);
                        self.on_watch(events);
                    }
                    Err(e) => log::warn!("skipping a malformed status on {topic}: {e}"),
                }
            }
            Parsed::Reading { gateway, .. } => {
                if !self.watch.armed(gateway) {
                    log::info!("watching the readings of gateway {gateway}");
                }
                let events = self.watch.on_reading(gateway, std::time::Instant::now());
                self.on_watch(events);
            }
            Parsed::Acks { .. } => {
                // Another member of the share group answered: a copy of
                // that alert reaching us later (a bridge re-sending its
                // retained messages, a retained refresh) is not shown again.
                if let Ok(ack) = payload::decode::<Ack>(&p.payload) {
                    if ack.status == "delivered" && ack.by != self.settings.endpoint.client_id {
                        self.answered_elsewhere.first(&ack.alert_id);
                    }
                }
            }
            Parsed::Other => log::debug!("ignoring {topic}"),
        }
    }

    fn on_alert(&mut self, topic: &str, p: &rumqttc::Publish, a: Alert) {
        if !self.channels.filter.accepts(&a) {
            log::debug!(
                "alert {} not for this notifier (--filter): not shown, not answered",
                a.id
            );
            return;
        }
        let first = self.seen.is_new(&a.id, a.escalation);
        if first && !self.answered_elsewhere.is_new(&a.id, a.escalation) {
            log::info!(
                "alert {} already answered by another notifier of the share group; not shown",
                a.id
            );
            return;
        }
        if first {
            self.show_alert(&a, p.retain, "alert");
            self.seen.record(&a.id, a.escalation);
            if let Some(d) = &self.channels.desktop {
                d.show(&a);
            }
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
        let correlation = props.and_then(|pr| pr.correlation_data.clone());
        let status = if let Some(hook) = self.channels.exec.clone() {
            if self.hooks_running.contains(&a.id) {
                // Its hook answers when it ends.
                return;
            }
            // A new alert, or an escalation of one, runs the hook (again).
            match self.hook_results.get(&a.id).filter(|_| !first) {
                Some(status) => *status,
                None => {
                    // Off the MQTT loop; answered from on_hook_done.
                    self.hooks_running.insert(a.id.clone());
                    self.deferred.push(Deferred::Hook {
                        hook,
                        alert: a,
                        response_topic,
                        correlation,
                    });
                    return;
                }
            }
        } else {
            "delivered"
        };
        self.deferred.push(Deferred::Answer {
            alert_id: a.id,
            response_topic,
            correlation,
            status,
        });
    }

    /// Writes the lines shown so far and records their alert ids, then
    /// sends what waited for that: answers, acknowledgements, hooks. A
    /// crash before this point leaves the messages unacknowledged, so the
    /// broker delivers them again and they are shown (a crash after the
    /// lines were written but before the ids were: shown twice, never
    /// lost). Standard output failing ends the notifier, unacknowledged.
    async fn flush(&mut self) -> Result<(), OutputError> {
        if !self.out.is_empty() {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&self.out)?;
            stdout.flush()?;
            self.out.clear();
        }
        self.seen.flush();
        for d in std::mem::take(&mut self.deferred) {
            match d {
                Deferred::Answer {
                    alert_id,
                    response_topic,
                    correlation,
                    status,
                } => {
                    self.answer(&alert_id, response_topic, correlation, status)
                        .await
                }
                Deferred::Ack(p) => {
                    if let Err(e) = self.client.ack(&p).await {
                        log::warn!("cannot acknowledge a message: {e}");
                    }
                }
                Deferred::Hook {
                    hook,
                    alert,
                    response_topic,
                    correlation,
                } => {
                    let tx = self.hook_tx.clone();
                    tokio::spawn(async move {
                        let outcome = hook.run(&alert).await;
                        let _ = tx.send(HookDone {
                            alert_id: alert.id,
                            response_topic,
                            correlation,
                            outcome,
                        });
                    });
                }
            }
        }
        Ok(())
    }

    fn on_hook_done(&mut self, d: HookDone) {
        self.hooks_running.remove(&d.alert_id);
        match &d.outcome {
            crate::notifier::channels::HookOutcome::Delivered => {
                log::info!("hook for alert {} succeeded", d.alert_id)
            }
            crate::notifier::channels::HookOutcome::Failed(why) => {
                log::warn!("hook for alert {} failed: {why}", d.alert_id)
            }
        }
        if self.hook_results.len() >= 10_000 {
            self.hook_results.clear();
        }
        self.hook_results
            .insert(d.alert_id.clone(), d.outcome.status());
        self.deferred.push(Deferred::Answer {
            status: d.outcome.status(),
            alert_id: d.alert_id,
            response_topic: d.response_topic,
            correlation: d.correlation,
        });
    }

    /// Shows and notifies the watchers' events; they are not answered
    /// (nobody asked), but --exec hooks run for them.
    fn on_watch(&mut self, events: Vec<crate::notifier::watch::Event>) {
        for e in events {
            let a = crate::notifier::channels::watch_alert(&e);
            if !self.channels.filter.accepts(&a) {
                continue;
            }
            if e.is_alarm() {
                log::error!("watch: {}", a.message);
            } else {
                log::info!("watch: {}", a.message);
            }
            self.show_alert(&a, false, "watch");
            if let Some(d) = &self.channels.desktop {
                d.show(&a);
            }
            if let Some(hook) = self.channels.exec.clone() {
                tokio::spawn(async move {
                    if let crate::notifier::channels::HookOutcome::Failed(why) = hook.run(&a).await
                    {
                        log::warn!("hook for {} failed: {why}", a.id);
                    }
                });
            }
        }
    }

    /// Publishes the answer to an alert on its ResponseTopic.
    async fn answer(
        &self,
        alert_id: &str,
        response_topic: String,
        correlation: Option<bytes::Bytes>,
        status: &'static str,
    ) {
        let ack = Ack {
            alert_id: alert_id.to_string(),
            status: status.into(),
            by: self.settings.endpoint.client_id.clone(),
            ts: timefmt::now_rfc3339(),
        };
        let props = PublishProperties {
            correlation_data: correlation,
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
                let id = alert_id.to_string();
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
            Err(e) => log::error!("cannot answer alert {alert_id}: {e}"),
        }
    }

    /// Adds a line for `a` to the output, written by `flush`.
    fn show_alert(&mut self, a: &Alert, retained: bool, kind: &str) {
        if self.settings.json {
            let mut v = serde_json::to_value(a).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("type".into(), kind.into());
                o.insert("retained".into(), retained.into());
            }
            let _ = writeln!(self.out, "{v}");
            return;
        }
        let mark = match a.level {
            AlertLevel::Critical => "!!",
            AlertLevel::Fault => "??",
            AlertLevel::Warning => "! ",
            AlertLevel::Resolved => "ok",
            AlertLevel::Test => "TT",
        };
        let _ = writeln!(
            self.out,
            "{} {mark} {:<8} {}/{} ({}) {}{}{}: {}",
            a.ts,
            a.level.as_str(),
            a.gateway,
            a.name,
            a.sensor,
            a.celsius
                .map_or_else(|| "--".to_string(), |c| format!("{c:.2} C")),
            match (retained, kind) {
                (true, _) => " [retained]",
                (false, "watch") => " [watch]",
                _ => "",
            },
            if a.clock_synced {
                ""
            } else {
                " [gateway clock not synchronised]"
            },
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
            let _ = writeln!(self.out, "{v}");
        } else {
            let _ = writeln!(
                self.out,
                "{} -- gateway {gateway} is {}{}",
                s.ts.clone().unwrap_or_else(timefmt::now_rfc3339),
                s.state,
                s.reason.map(|r| format!(" ({r})")).unwrap_or_default()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = f.channels();
        assert_eq!(c.exec_timeout, Some(30));
        assert_eq!(
            c.filter,
            Some(vec![
                "gateway=gw1".to_string(),
                "level>=CRITICAL".to_string()
            ])
        );
        assert_eq!(c.share_group.as_deref(), Some("night-shift"));
        assert_eq!(
            f.ca_file,
            Some(dir.path().join("ca.crt")),
            "relative to the file"
        );
    }
}
