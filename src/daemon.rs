//! `thermalertd`: CLI -> logging -> config -> sensor thread + MQTT link ->
//! alerts -> clean shutdown.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use rumqttc::{
    AsyncClient, LastWill, LastWillProperties, PublishNotice, PublishNoticeError, PublishOptions,
    PublishProperties, PublishResult, QoS,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::alert::{self, AlertLevel, Level, SensorAlarm};
use crate::backoff::Backoff;
use crate::config::{self, Config};
use crate::mqtt::conn::{self, Endpoint, Link};
use crate::mqtt::payload::{self, Ack, Alert, Reading, Status};
use crate::mqtt::topics::Topics;
use crate::mqtt::{tls, CONTENT_TYPE_JSON};
use crate::sensor::{self, Sample};
use crate::timefmt;

#[derive(Debug, Parser)]
#[command(
    name = "thermalertd",
    version,
    about = "DS18B20 temperature alert gateway: MQTT v5 over TLS"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the configuration and exit (0 when valid, 78 when not).
    CheckConfig,
    /// List every sensor the configured backend finds.
    Scan,
}

/// The daemon's entry point; returns the process exit code.
pub fn main() -> i32 {
    crate::logging::init();
    let cli = Cli::parse();
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            log::error!("invalid configuration: {e}");
            return crate::EXIT_CONFIG;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => check_config(&cfg, &cli.config),
        Command::Scan => scan(&cfg),
        Command::Run => {
            let endpoint = match endpoint(&cfg) {
                Ok(e) => e,
                Err(e) => {
                    log::error!("invalid configuration: {}: {e:#}", cli.config.display());
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
            match rt.block_on(run(cfg, endpoint)) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{e:#}");
                    1
                }
            }
        }
    }
}

fn check_config(cfg: &Config, path: &std::path::Path) -> i32 {
    if let Err(e) = endpoint(cfg) {
        log::error!("invalid configuration: {}: {e:#}", path.display());
        return crate::EXIT_CONFIG;
    }
    println!(
        "{}: OK: gateway {}, broker {}:{}, {} sensor(s), backend {:?}",
        path.display(),
        cfg.gateway_id,
        cfg.mqtt.host,
        cfg.mqtt.port,
        cfg.sensor.len(),
        cfg.sensors.backend
    );
    0
}

fn scan(cfg: &Config) -> i32 {
    let mut backend = match sensor::open(cfg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("scan failed: {e}");
            return 1;
        }
    };
    let found = match backend.scan() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("scan failed: {e}");
            return 1;
        }
    };
    if found.is_empty() {
        eprintln!("scan: no sensors found on the bus");
        return 1;
    }
    println!(
        "{:<18} {:>10} {:>5} {:<9} CONFIGURED",
        "ROM ID", "CELSIUS", "BITS", "POWER"
    );
    for f in &found {
        let configured = cfg.sensor.iter().find(|s| s.id == f.id);
        println!(
            "{:<18} {:>10} {:>5} {:<9} {}",
            f.id,
            match &f.celsius {
                Ok(c) => format!("{c:.3}"),
                Err(e) => format!("({e})"),
            },
            f.resolution_bits.map_or("?".into(), |b| b.to_string()),
            match f.parasite {
                Some(true) => "parasite",
                Some(false) => "external",
                None => "?",
            },
            configured.map_or("no".to_string(), |s| format!("yes ({})", s.display_name()))
        );
    }
    0
}

/// TLS and credentials from the configuration.
pub fn endpoint(cfg: &Config) -> anyhow::Result<Endpoint> {
    use anyhow::Context;
    let m = &cfg.mqtt;
    let client = m.client_cert.as_deref().zip(m.client_key.as_deref());
    let tls = tls::client_config(&m.ca_file, client).context("mqtt.ca_file / client_cert")?;
    let password = cfg.password().context("mqtt.password_file")?;
    Ok(Endpoint {
        host: m.host.clone(),
        port: m.port,
        client_id: cfg.client_id(),
        username: m.username.clone(),
        password,
        tls,
        keep_alive_secs: m.keep_alive_secs,
        connect_timeout: Duration::from_secs(m.connect_timeout_secs),
        session_expiry_secs: m.session_expiry_secs,
        receive_maximum: m.receive_maximum,
        resume_on_start: false,
    })
}

/// One sweep's results, stamped when it finished.
struct Sweep {
    samples: Vec<Sample>,
}

/// Something waiting to be published at QoS 2, in order.
#[derive(Debug, Clone)]
enum Outgoing {
    Alert {
        alert: Alert,
        raised: Instant,
    },
    /// An empty retained message that clears a sensor's retained CRITICAL.
    ClearRetained {
        sensor: String,
    },
}

struct Outbox {
    /// Not yet handed to the client.
    queue: VecDeque<(u64, Outgoing)>,
    /// Handed to the client, waiting for the QoS 2 handshake to complete.
    handed: HashMap<u64, Outgoing>,
    next_seq: u64,
}

/// Most entries handed to the MQTT client at once; the rest wait in the
/// outbox, so a long outage cannot block the sensor loop.
const MAX_HANDED: usize = 64;

/// A published alert waiting for answers.
struct Awaiting {
    id: String,
    raised: Instant,
    answers: u32,
}

struct Daemon {
    cfg: Config,
    topics: Topics,
    client: AsyncClient,
    alarms: Vec<SensorAlarm>,
    outbox: Outbox,
    /// Correlation data -> alert, until the alert expires.
    awaiting: HashMap<Bytes, Awaiting>,
    connected: bool,
    /// After a refusal, nothing is handed to the client before this.
    hold_until: Option<Instant>,
    done_tx: mpsc::UnboundedSender<(u64, Result<PublishResult, PublishNoticeError>)>,
}

fn status_payload(cfg: &Config, state: &str, reason: Option<&str>) -> Vec<u8> {
    payload::encode(&Status {
        state: state.into(),
        reason: reason.map(Into::into),
        gateway: Some(cfg.gateway_id.clone()),
        ts: (state == "online" || reason == Some("shutdown")).then(timefmt::now_rfc3339),
        version: Some(env!("CARGO_PKG_VERSION").into()),
        sensors: (state == "online").then_some(cfg.sensor.len()),
    })
}

fn json_props(expiry: u32) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(expiry),
        content_type: Some(CONTENT_TYPE_JSON.into()),
        ..Default::default()
    }
}

/// Runs the gateway until SIGTERM or SIGINT.
pub async fn run(cfg: Config, endpoint: Endpoint) -> anyhow::Result<()> {
    let topics = Topics::new(&cfg.topic_prefix, &cfg.gateway_id);
    let will = LastWill::new(
        topics.status(),
        status_payload(&cfg, "offline", Some("connection lost")),
        QoS::AtLeastOnce,
        true,
        Some(LastWillProperties {
            message_expiry_interval: Some(cfg.mqtt.status_expiry_secs),
            content_type: Some(CONTENT_TYPE_JSON.into()),
            payload_format_indicator: Some(1),
            delay_interval: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        }),
    );
    let options = endpoint.options(Some(will));
    let (client, eventloop) = AsyncClient::builder(options).capacity(256).build();

    let stop = CancellationToken::new();
    let (link_tx, mut link_rx) = mpsc::channel(256);
    let backoff = Backoff::new(
        Duration::from_millis(cfg.mqtt.reconnect_min_ms),
        Duration::from_secs(cfg.mqtt.reconnect_max_secs),
    );
    let driver = tokio::spawn(conn::drive(eventloop, link_tx, backoff, stop.clone()));

    let (sweep_tx, mut sweep_rx) = mpsc::channel::<Sweep>(4);
    let sensors_stop = Arc::new(AtomicBool::new(false));
    let sensor_thread = spawn_sensor_thread(&cfg, sweep_tx, sensors_stop.clone())?;

    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut d = Daemon {
        alarms: cfg
            .sensor
            .iter()
            .map(|s| SensorAlarm::new(s.thresholds(), cfg.sensors.fault_after))
            .collect(),
        topics,
        client,
        outbox: Outbox {
            queue: VecDeque::new(),
            handed: HashMap::new(),
            next_seq: 0,
        },
        awaiting: HashMap::new(),
        connected: false,
        hold_until: None,
        done_tx,
        cfg,
    };
    log::info!(
        "thermalertd {} started: gateway {}, {} sensor(s), broker {}:{}",
        env!("CARGO_PKG_VERSION"),
        d.cfg.gateway_id,
        d.cfg.sensor.len(),
        d.cfg.mqtt.host,
        d.cfg.mqtt.port
    );

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut housekeeping = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => { log::info!("SIGINT: stopping"); break; }
            Some(sweep) = sweep_rx.recv() => d.on_sweep(sweep).await,
            Some(link) = link_rx.recv() => d.on_link(link).await,
            Some((seq, res)) = done_rx.recv() => d.on_done(seq, res),
            _ = housekeeping.tick() => d.expire_awaiting(),
        }
    }

    // Shutdown: stop the sensors, publish the offline status ourselves,
    // give queued alerts a moment, then disconnect cleanly (no Will).
    sensors_stop.store(true, Ordering::Relaxed);
    drop(sweep_rx);
    d.shutdown(&mut link_rx, &mut done_rx).await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), driver).await;
    let _ = sensor_thread.join();
    log::info!("stopped");
    Ok(())
}

fn spawn_sensor_thread(
    cfg: &Config,
    tx: mpsc::Sender<Sweep>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut backend = sensor::open(cfg)?;
    let ids: Vec<String> = cfg.sensor.iter().map(|s| s.id.clone()).collect();
    let interval = Duration::from_millis(cfg.sensors.poll_interval_ms);
    Ok(std::thread::Builder::new()
        .name("sensors".into())
        .spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let samples = backend.sweep(&ids);
                if tx.blocking_send(Sweep { samples }).is_err() {
                    return;
                }
                next += interval;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        })?)
}

impl Daemon {
    async fn on_sweep(&mut self, sweep: Sweep) {
        let ts = timefmt::now_rfc3339();
        // Borrowed, not cloned per sample: alerts are queued after the loop.
        let mut raised = Vec::new();
        for (i, sample) in sweep.samples.into_iter().enumerate() {
            let Some(sc) = self.cfg.sensor.get(i) else {
                continue;
            };
            if let (Ok(c), true, true) =
                (&sample.read, self.cfg.mqtt.publish_readings, self.connected)
            {
                let body = payload::encode(&Reading {
                    celsius: *c,
                    ts: ts.clone(),
                });
                let opts = PublishOptions::new(QoS::AtMostOnce)
                    .properties(json_props(self.cfg.mqtt.reading_expiry_secs));
                if self
                    .client
                    .try_publish(self.topics.reading(&sc.id), body, opts)
                    .is_err()
                {
                    log::debug!("reading for {} dropped: client busy", sc.id);
                }
            }
            if let Err(e) = &sample.read {
                log::debug!("{} ({}): read failed: {e}", sc.display_name(), sc.id);
            }
            let decisions = match self.alarms.get_mut(i) {
                Some(a) => a.observe(sample.read),
                None => continue,
            };
            for dec in decisions {
                let alert = Alert {
                    id: uuid::Uuid::new_v4().to_string(),
                    gateway: self.cfg.gateway_id.clone(),
                    sensor: sc.id.clone(),
                    name: sc.display_name().to_string(),
                    level: dec.level,
                    celsius: dec.celsius,
                    threshold: dec.threshold,
                    previous: Some(dec.previous),
                    ts: ts.clone(),
                    message: alert::message(sc.display_name(), &dec),
                    escalation: 0,
                };
                log_alert(&alert);
                if dec.previous == Level::Critical && dec.state != Level::Critical {
                    raised.push(Outgoing::ClearRetained {
                        sensor: sc.id.clone(),
                    });
                }
                raised.push(Outgoing::Alert {
                    alert,
                    raised: Instant::now(),
                });
            }
        }
        for o in raised {
            self.enqueue(o);
        }
        self.pump();
    }

    fn enqueue(&mut self, o: Outgoing) {
        let seq = self.outbox.next_seq;
        self.outbox.next_seq += 1;
        self.outbox.queue.push_back((seq, o));
    }

    /// Hands queued entries to the client while connected, in order.
    fn pump(&mut self) {
        if self.hold_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        while self.connected && self.outbox.handed.len() < MAX_HANDED {
            let Some((seq, o)) = self.outbox.queue.pop_front() else {
                return;
            };
            let (topic, body, opts) = match &o {
                Outgoing::ClearRetained { sensor } => (
                    self.topics.alert(sensor),
                    Vec::new(),
                    PublishOptions::new(QoS::ExactlyOnce).retain(true),
                ),
                Outgoing::Alert { alert, raised } => {
                    let waited = raised.elapsed().as_secs();
                    let expiry = u64::from(self.cfg.mqtt.alert_expiry_secs).saturating_sub(waited);
                    if expiry == 0 {
                        log::error!(
                            "alert {} ({} {}) expired after {waited}s before the broker could take it; dropped",
                            alert.id,
                            alert.level,
                            alert.name
                        );
                        continue;
                    }
                    let mut props = json_props(u32::try_from(expiry).unwrap_or(u32::MAX));
                    props.response_topic = Some(self.topics.acks());
                    let corr = Bytes::from(alert.id.clone().into_bytes());
                    props.correlation_data = Some(corr.clone());
                    self.awaiting.entry(corr).or_insert_with(|| Awaiting {
                        id: alert.id.clone(),
                        raised: *raised,
                        answers: 0,
                    });
                    (
                        self.topics.alert(&alert.sensor),
                        payload::encode(alert),
                        PublishOptions::new(QoS::ExactlyOnce)
                            .retain(alert.level == AlertLevel::Critical)
                            .properties(props),
                    )
                }
            };
            match self.client.try_publish_tracked(topic, body, opts) {
                Ok(notice) => {
                    self.outbox.handed.insert(seq, o);
                    let tx = self.done_tx.clone();
                    tokio::spawn(wait_notice(seq, notice, tx));
                }
                Err(e) => {
                    log::debug!("client queue full ({e}); will retry");
                    self.outbox.queue.push_front((seq, o));
                    return;
                }
            }
        }
    }

    fn on_done(&mut self, seq: u64, res: Result<PublishResult, PublishNoticeError>) {
        let Some(o) = self.outbox.handed.remove(&seq) else {
            return;
        };
        let what = match &o {
            Outgoing::Alert { alert, .. } => {
                format!("alert {} ({} {})", alert.id, alert.level, alert.name)
            }
            Outgoing::ClearRetained { sensor } => format!("retained CRITICAL clear for {sensor}"),
        };
        match res {
            Ok(PublishResult::Qos2Completed(_)) => {
                log::debug!("{what}: delivered to the broker (PUBCOMP)")
            }
            Ok(PublishResult::Qos2PubRecRejected(rec)) => {
                log::error!(
                    "{what}: the broker refused it ({:?}); will retry",
                    rec.reason
                );
                self.retry_later(seq, o);
            }
            Ok(other) => log::debug!("{what}: {other:?}"),
            Err(e) => {
                log::warn!("{what}: {e}; publishing it again");
                self.outbox.queue.push_front((seq, o));
                self.outbox.queue.make_contiguous().sort_by_key(|(s, _)| *s);
            }
        }
        self.pump();
    }

    fn retry_later(&mut self, seq: u64, o: Outgoing) {
        // A refusal (quota, ACL) may clear: keep the entry, in order, and
        // hold the outbox a while instead of hammering the broker.
        self.outbox.queue.push_back((seq, o));
        self.outbox.queue.make_contiguous().sort_by_key(|(s, _)| *s);
        self.hold_until = Some(Instant::now() + Duration::from_secs(5));
    }

    async fn on_link(&mut self, link: Link) {
        match link {
            Link::Connected {
                session_present, ..
            } => {
                self.connected = true;
                if !session_present {
                    if let Err(e) = self
                        .client
                        .subscribe(self.topics.acks(), QoS::AtLeastOnce)
                        .await
                    {
                        log::error!("cannot subscribe to {}: {e}", self.topics.acks());
                    }
                }
                let opts = PublishOptions::new(QoS::AtLeastOnce)
                    .retained()
                    .properties(json_props(self.cfg.mqtt.status_expiry_secs));
                if let Err(e) = self
                    .client
                    .publish(
                        self.topics.status(),
                        status_payload(&self.cfg, "online", None),
                        opts,
                    )
                    .await
                {
                    log::error!("cannot publish the online status: {e}");
                }
                self.pump();
            }
            Link::Down => self.connected = false,
            Link::Message(p) => self.on_message(&p),
        }
    }

    fn on_message(&mut self, p: &rumqttc::Publish) {
        let topic = String::from_utf8_lossy(&p.topic);
        if topic != self.topics.acks() {
            log::debug!("ignoring message on {topic}");
            return;
        }
        let corr = p
            .properties
            .as_ref()
            .and_then(|pr| pr.correlation_data.clone());
        let ack: Option<Ack> = match payload::decode::<Ack>(&p.payload) {
            Ok(a) => Some(a),
            Err(e) => {
                log::warn!("skipping a malformed answer on {topic}: {e}");
                None
            }
        };
        let Some(corr) = corr else {
            log::warn!("ignoring an answer on {topic} without CorrelationData");
            return;
        };
        let Some(w) = self.awaiting.get_mut(&corr) else {
            log::warn!(
                "ignoring an answer that matches no alert (correlation {:?})",
                String::from_utf8_lossy(&corr)
            );
            return;
        };
        w.answers += 1;
        let rtt = w.raised.elapsed();
        match ack {
            Some(a) => {
                if a.alert_id != w.id {
                    log::warn!(
                        "answer's alert_id {} differs from its CorrelationData {}",
                        a.alert_id,
                        w.id
                    );
                }
                log::info!(
                    "alert {} answered by {} ({}) after {:.1} ms",
                    w.id,
                    a.by,
                    a.status,
                    rtt.as_secs_f64() * 1000.0
                );
            }
            None => log::info!(
                "alert {} answered (unreadable payload) after {:.1} ms",
                w.id,
                rtt.as_secs_f64() * 1000.0
            ),
        }
    }

    fn expire_awaiting(&mut self) {
        let keep = Duration::from_secs(u64::from(self.cfg.mqtt.alert_expiry_secs) * 2);
        self.awaiting.retain(|_, w| {
            let alive = w.raised.elapsed() < keep;
            if !alive && w.answers == 0 {
                log::warn!("alert {} was never answered by a notifier", w.id);
            }
            alive
        });
        if !self.connected {
            return;
        }
        self.pump();
    }

    async fn shutdown(
        &mut self,
        link_rx: &mut mpsc::Receiver<Link>,
        done_rx: &mut mpsc::UnboundedReceiver<(u64, Result<PublishResult, PublishNoticeError>)>,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        // Let alerts already queued reach the broker first.
        while self.connected && !(self.outbox.queue.is_empty() && self.outbox.handed.is_empty()) {
            tokio::select! {
                Some((seq, res)) = done_rx.recv() => self.on_done(seq, res),
                Some(link) = link_rx.recv() => self.on_link(link).await,
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let pending = self.outbox.queue.len() + self.outbox.handed.len();
        if pending > 0 {
            log::warn!("{pending} alert(s) not yet delivered to the broker at shutdown");
        }
        if self.connected {
            let opts = PublishOptions::new(QoS::AtLeastOnce)
                .retained()
                .properties(json_props(self.cfg.mqtt.status_expiry_secs));
            match self
                .client
                .publish_tracked(
                    self.topics.status(),
                    status_payload(&self.cfg, "offline", Some("shutdown")),
                    opts,
                )
                .await
            {
                Ok(n) => {
                    if tokio::time::timeout_at(deadline + Duration::from_secs(1), n.wait_async())
                        .await
                        .is_err()
                    {
                        log::warn!("the broker did not confirm the offline status in time");
                    }
                }
                Err(e) => log::warn!("cannot publish the offline status: {e}"),
            }
            if let Err(e) = self.client.disconnect().await {
                log::warn!("disconnect: {e}");
            }
        }
    }
}

async fn wait_notice(
    seq: u64,
    notice: PublishNotice,
    tx: mpsc::UnboundedSender<(u64, Result<PublishResult, PublishNoticeError>)>,
) {
    let res = notice.wait_async().await;
    let _ = tx.send((seq, res));
}

fn log_alert(a: &Alert) {
    let line = format!(
        "ALERT {} {} ({}) celsius={} threshold={} id={}: {}",
        a.level,
        a.name,
        a.sensor,
        a.celsius.map_or("null".into(), |c| format!("{c:.2}")),
        a.threshold.map_or("null".into(), |t| format!("{t:.2}")),
        a.id,
        a.message
    );
    match a.level {
        AlertLevel::Critical | AlertLevel::Fault => log::error!("{line}"),
        AlertLevel::Warning => log::warn!("{line}"),
        AlertLevel::Resolved => log::info!("{line}"),
    }
}
