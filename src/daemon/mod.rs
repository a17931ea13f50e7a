//! `thermalertd`: CLI -> logging -> config -> sensor thread + MQTT link ->
//! alerts -> clean shutdown.

pub mod alarm;
pub mod drill;
pub mod homeassistant;
pub mod reload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
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

use crate::config::{self, Config};
use crate::core::alert::{self, AlertLevel, Level, SensorAlarm};
use crate::core::escalation::Escalator;
use crate::mqtt::conn::{self, Endpoint, Link};
use crate::mqtt::payload::{self, Ack, Alert, Reading, Status};
use crate::mqtt::topics::Topics;
use crate::mqtt::{tls, CONTENT_TYPE_JSON};
use crate::outbox::{Item, Outbox};
use crate::sensor::{self, Sample};
use crate::sys::backoff::Backoff;
use crate::sys::systemd::{Heartbeat, Notify, StatusInfo};
use crate::sys::timefmt;

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
    /// Fire drill: publish a TEST alert through the broker, print who
    /// answered and how fast; exit 1 when nobody answered in time.
    Drill {
        /// Seconds to wait for answers.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Stop as soon as this many notifiers answered.
        #[arg(long)]
        expect: Option<usize>,
    },
}

/// The daemon's entry point; returns the process exit code.
pub fn main() -> i32 {
    crate::sys::logging::init();
    let cli = Cli::parse();
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            // Several problems: one line each.
            for line in e.to_string().lines() {
                log::error!("invalid configuration: {line}");
            }
            return crate::EXIT_CONFIG;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => check_config(&cfg, &cli.config),
        Command::Scan => scan(&cfg),
        Command::Drill { timeout, expect } => {
            crate::daemon::drill::main(&cfg, &cli.config, Duration::from_secs(timeout), expect)
        }
        Command::Run => {
            let endpoint = match endpoint(&cfg) {
                Ok(e) => e,
                Err(e) => {
                    log::error!("invalid configuration: {}: {e:#}", cli.config.display());
                    return crate::EXIT_CONFIG;
                }
            };
            // One thread: the outbox's per-sweep fsync runs on the blocking
            // pool, so the MQTT link does not wait for it (BENCHMARKS.md);
            // only the log's occasional compaction (every few dozen
            // alerts) still syncs here.
            let Some(rt) = crate::mqtt::oneshot::runtime() else {
                return 1;
            };
            match rt.block_on(run(cfg, endpoint, &cli.config)) {
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
    let mut backend = match sensor::open(&cfg.sensors, &cfg.sensor) {
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
        "{:<18} {:<15} {:>10} {:>5} {:<9} CONFIGURED",
        "ROM ID", "FAMILY", "CELSIUS", "BITS", "POWER"
    );
    for f in &found {
        let configured = cfg.sensor.iter().find(|s| s.id == f.id);
        println!(
            "{:<18} {:<15} {:>10} {:>5} {:<9} {}",
            f.id,
            f.family.unwrap_or("?"),
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
    /// The backend's status note after this sweep (a slower mode, and why).
    note: Option<String>,
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
    /// Alerts not yet confirmed by PUBCOMP, mirrored on disk.
    outbox: Outbox,
    escalator: Escalator,
    /// Correlation data -> alert, until the alert expires.
    awaiting: HashMap<Bytes, Awaiting>,
    connected: bool,
    /// The last alert raised, for the systemd status line.
    last_alert: Option<Alert>,
    /// Whether the first sweep has been judged (then stale retained
    /// CRITICALs from an earlier run are cleared).
    swept_once: bool,
    /// The sensor backend's status note.
    sensor_note: Option<String>,
    /// Sensors now CRITICAL: their retained alert and when it was last
    /// published, to refresh it before its message expiry removes it.
    critical: HashMap<String, (Alert, Instant)>,
    /// After a refusal, nothing is handed to the client before this.
    hold_until: Option<Instant>,
    /// Whether the wall clock was synchronised at the last sweep.
    clock_synced: Option<bool>,
    /// The local alarm output, on while a CRITICAL is unacknowledged.
    alarm: Option<crate::daemon::alarm::Alarm>,
    done_tx: mpsc::UnboundedSender<(u64, Result<PublishResult, PublishNoticeError>)>,
    /// Outbox syncs report here (sequence number covered, result).
    sync_tx: mpsc::UnboundedSender<(u64, Result<(), crate::outbox::OutboxError>)>,
    /// Home Assistant discovery, when enabled.
    ha: Option<crate::daemon::homeassistant::Discoverer>,
}

fn status_payload(cfg: &Config, state: &str, reason: Option<&str>) -> Vec<u8> {
    let ts = (state == "online" || reason == Some("shutdown")).then(timefmt::now_rfc3339);
    payload::encode(&Status {
        state: state.into(),
        reason: reason.map(Into::into),
        gateway: Some(cfg.gateway_id.clone()),
        // Only a status with a time says whether to trust it (not the Will).
        clock_synced: ts.is_none() || crate::sys::clock::synced_now(),
        ts,
        version: Some(env!("CARGO_PKG_VERSION").into()),
        sensors: (state == "online").then_some(cfg.sensor.len()),
        poll_interval_ms: (state == "online").then_some(cfg.sensors.poll_interval_ms),
        expiry_secs: Some(cfg.mqtt.status_expiry_secs),
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

/// Runs the gateway until SIGTERM or SIGINT; SIGHUP reloads `config_path`.
pub async fn run(cfg: Config, endpoint: Endpoint, config_path: &Path) -> anyhow::Result<()> {
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
    let mut notify = Notify::from_env();
    let mqtt_beat = Arc::new(Heartbeat::new("MQTT loop", Instant::now()));
    let driver = tokio::spawn(conn::drive_with_heartbeat(
        eventloop,
        link_tx,
        backoff,
        stop.clone(),
        Some(mqtt_beat.clone()),
    ));

    let mut backend = sensor::Reopening::open(&cfg.sensors, &cfg.sensor);
    let cfg = adopt_unconfigured(cfg, &mut backend);
    let (sweep_tx, mut sweep_rx) = mpsc::channel::<Sweep>(4);
    let sensors_stop = Arc::new(AtomicBool::new(false));
    let sensor_beat = Arc::new(Heartbeat::new("sensor loop", Instant::now()));
    let (sensors_ctl, sensors_ctl_rx) = std::sync::mpsc::channel::<Config>();
    let sensor_thread = spawn_sensor_thread(
        &cfg,
        Box::new(backend),
        sweep_tx,
        sensors_stop.clone(),
        sensor_beat.clone(),
        sensors_ctl_rx,
    )?;

    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (sync_tx, mut sync_rx) = mpsc::unbounded_channel();
    let mut d = Daemon {
        alarms: cfg
            .sensor
            .iter()
            .map(|s| SensorAlarm::new(s.thresholds(), cfg.sensors.fault_after))
            .collect(),
        topics,
        client,
        outbox: Outbox::open(&cfg.state_dir(), cfg.outbox_max_bytes),
        escalator: Escalator::new(Some(Duration::from_secs(u64::from(cfg.ack_timeout_secs)))),
        awaiting: HashMap::new(),
        connected: false,
        last_alert: None,
        swept_once: false,
        sensor_note: None,
        critical: HashMap::new(),
        hold_until: None,
        clock_synced: None,
        alarm: crate::daemon::alarm::from_config(&cfg),
        done_tx,
        sync_tx,
        ha: cfg.homeassistant.enabled.then(|| {
            crate::daemon::homeassistant::Discoverer::new(
                crate::daemon::homeassistant::Discovery::new(&cfg),
            )
        }),
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

    let (cert_tx, mut cert_rx) = mpsc::unbounded_channel();
    let cert_watch = tokio::spawn(crate::sys::certwatch::watch_daily(
        d.certificate_files(),
        move |list| {
            let _ = cert_tx.send(list);
        },
    ));
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    // Often enough to refresh retained CRITICALs well within their expiry.
    let tick_ms = (u64::from(d.cfg.mqtt.alert_expiry_secs) * 1000 / 4).clamp(250, 5000);
    let mut housekeeping = tokio::time::interval(Duration::from_millis(tick_ms.min(1000)));
    let mut watchdog = notify.watchdog_interval().map(tokio::time::interval);
    notify.ready(|| d.status_info());
    loop {
        tokio::select! {
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => { log::info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                notify.reloading();
                d.reload(config_path, &sensors_ctl);
                d.homeassistant_after_reload().await;
                notify.ready(|| d.status_info());
            }
            Some(sweep) = sweep_rx.recv() => d.on_sweep(sweep).await,
            Some(link) = link_rx.recv() => d.on_link(link).await,
            Some((seq, res)) = done_rx.recv() => d.on_done(seq, res),
            Some((upto, res)) = sync_rx.recv() => d.on_synced(upto, res),
            _ = housekeeping.tick() => d.expire_awaiting(),
            Some(list) = cert_rx.recv() => d.on_expiring_certificates(list),
            _ = crate::sys::systemd::tick(&mut watchdog) => {
                notify.watchdog(Instant::now(), &[&sensor_beat, &mqtt_beat]);
            }
        }
        d.start_sync();
        notify.status(|| d.status_info());
    }
    cert_watch.abort();

    // Shutdown: stop the sensors, publish the offline status ourselves,
    // give queued alerts a moment, then disconnect cleanly (no Will).
    notify.stopping();
    sensors_stop.store(true, Ordering::Relaxed);
    drop(sweep_rx);
    d.shutdown(&mut link_rx, &mut done_rx).await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), driver).await;
    let _ = sensor_thread.join();
    log::info!("stopped");
    Ok(())
}

/// Reports sensors on the bus that the config does not name, and
/// configured ones that are missing; with `monitor_unconfigured`, adds the
/// former with the default thresholds.
fn adopt_unconfigured(mut cfg: Config, backend: &mut dyn sensor::Backend) -> Config {
    let found = match backend.discover() {
        Ok(f) => f,
        Err(e) => {
            log::warn!("cannot list the sensors on the bus: {e}");
            return cfg;
        }
    };
    for id in &found {
        if cfg.sensor.iter().any(|s| &s.id == id) {
            continue;
        }
        if cfg.sensors.monitor_unconfigured {
            log::warn!("sensor {id} is on the bus but not in the config; monitoring it with the default thresholds");
            let sensor = cfg.sensors.defaults.sensor(id);
            cfg.sensor.push(sensor);
        } else {
            log::warn!(
                "sensor {id} is on the bus but not in the config: add a [[sensor]] entry to monitor it (or set monitor_unconfigured = true)"
            );
        }
    }
    for s in cfg.sensor.iter().filter(|s| !found.contains(&s.id)) {
        log::warn!(
            "configured sensor {} ({}) is not on the bus",
            s.display_name(),
            s.id
        );
    }
    cfg
}

/// The sensor thread: sweeps every poll interval, takes reloaded
/// configurations from `reload`, and promises on `beat` when its next
/// sweep will be done.
fn spawn_sensor_thread(
    cfg: &Config,
    mut backend: Box<dyn sensor::Backend>,
    tx: mpsc::Sender<Sweep>,
    stop: Arc<AtomicBool>,
    beat: Arc<Heartbeat>,
    reload: std::sync::mpsc::Receiver<Config>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut ids: Vec<String> = cfg.sensor.iter().map(|s| s.id.clone()).collect();
    let mut interval = Duration::from_millis(cfg.sensors.poll_interval_ms);
    Ok(std::thread::Builder::new()
        .name("sensors".into())
        .spawn(move || {
            let mut next = Instant::now();
            // A backend that learns mid-sweep how long the sweep takes
            // (the w1 bulk conversion confirmed or not) re-promises.
            let b = beat.clone();
            backend.set_deadline_hook(Arc::new(move |rest| b.due_by(Instant::now() + rest)));
            beat.due_by(next + backend.sweep_budget(ids.len()));
            while !stop.load(Ordering::Relaxed) {
                while let Ok(c) = reload.try_recv() {
                    backend.reconfigure(&c.sensor);
                    ids = c.sensor.iter().map(|s| s.id.clone()).collect();
                    interval = Duration::from_millis(c.sensors.poll_interval_ms);
                }
                let samples = backend.sweep(&ids);
                let note = backend.status_note();
                if tx.blocking_send(Sweep { samples, note }).is_err() {
                    return;
                }
                next += interval;
                let now = Instant::now();
                if next <= now {
                    next = now;
                }
                beat.due_by(next + backend.sweep_budget(ids.len()));
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
        })?)
}

impl Daemon {
    /// The certificates whose expiry is watched.
    fn certificate_files(&self) -> Vec<(&'static str, PathBuf)> {
        self.cfg.mqtt.certificate_files()
    }

    /// A certificate expires soon: a FAULT alert per certificate.
    fn on_expiring_certificates(&mut self, list: Vec<crate::sys::certwatch::Expiring>) {
        for e in &list {
            let alert = crate::sys::certwatch::alert(&self.cfg.gateway_id, e);
            self.outbox.push(Item::Alert {
                alert: alert.clone(),
            });
            crate::sys::logging::alert(&alert);
        }
        self.pump();
    }

    async fn on_sweep(&mut self, sweep: Sweep) {
        self.sensor_note = sweep.note;
        let ts = timefmt::now_rfc3339();
        let clock_synced = crate::sys::clock::synced_now();
        if self.clock_synced != Some(clock_synced) {
            if !clock_synced {
                log::warn!("the clock is not synchronised: alerts and status say \"clock_synced\": false until it is");
            } else if self.clock_synced.is_some() {
                log::info!("the clock is synchronised now");
            }
            self.clock_synced = Some(clock_synced);
        }
        for sample in sweep.samples {
            // By id: a sweep begun before a reload may list other sensors.
            let Some(i) = self.cfg.sensor.iter().position(|s| s.id == sample.id) else {
                continue;
            };
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
                    clock_synced,
                };
                self.last_alert = Some(alert.clone());
                if dec.previous == Level::Critical && dec.state != Level::Critical {
                    self.critical.remove(&sc.id);
                    self.outbox.push(Item::ClearRetained {
                        sensor: sc.id.clone(),
                    });
                }
                if dec.state == Level::Critical {
                    self.critical
                        .insert(sc.id.clone(), (alert.clone(), Instant::now()));
                }
                // Logged once written to the outbox (and fsynced with the
                // rest of the sweep's alerts before it is published).
                self.outbox.push(Item::Alert {
                    alert: alert.clone(),
                });
                crate::sys::logging::alert(&alert);
                if let Some(a) = &mut self.alarm {
                    a.raised(&alert);
                }
            }
        }
        if !self.swept_once {
            // A previous run may have left a retained CRITICAL for a sensor
            // that is no longer critical (it recovered while the daemon was
            // down): this process is the truth for its sensors, so clear
            // every retained alert it does not stand behind.
            self.swept_once = true;
            let stale: Vec<String> = self
                .cfg
                .sensor
                .iter()
                .filter(|s| !self.critical.contains_key(&s.id))
                .map(|s| s.id.clone())
                .collect();
            for sensor in stale {
                self.outbox.push(Item::ClearRetained { sensor });
            }
        }
        self.pump();
    }

    fn status_info(&self) -> StatusInfo {
        StatusInfo::new(&self.cfg, self.connected, self.last_alert.as_ref())
            .with_note(self.sensor_note.clone())
    }

    /// SIGHUP: loads the file again and applies what can change without
    /// a reconnect; a bad file is logged and the running one kept.
    fn reload(&mut self, path: &Path, sensors: &std::sync::mpsc::Sender<Config>) {
        let new = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                log::error!("reload: invalid configuration, keeping the running one: {e}");
                return;
            }
        };
        let a = crate::daemon::reload::apply(&self.cfg, std::mem::take(&mut self.alarms), new);
        for key in &a.restart_needed {
            log::warn!("reload: {key} changed; it needs a restart to take effect");
        }
        for sensor in &a.removed_critical {
            self.critical.remove(sensor);
            self.outbox.push(Item::ClearRetained {
                sensor: sensor.clone(),
            });
        }
        log::info!(
            "reload: configuration reloaded from {}: {}",
            path.display(),
            a.summary()
        );
        if a.sensors_changed && sensors.send(a.cfg.clone()).is_err() {
            log::error!("reload: the sensor thread has stopped");
        }
        self.cfg = a.cfg;
        self.alarms = a.alarms;
        self.pump();
    }

    /// After a reload, Home Assistant discovery follows the new sensors:
    /// the exchange runs again (new entities published, removed ones
    /// cleared).
    async fn homeassistant_after_reload(&mut self) {
        if !self.cfg.homeassistant.enabled {
            self.ha = None;
            return;
        }
        let ha = self
            .ha
            .insert(crate::daemon::homeassistant::Discoverer::new(
                crate::daemon::homeassistant::Discovery::new(&self.cfg),
            ));
        if self.connected {
            ha.connected(&self.client, false).await;
        }
    }

    /// Group commit: one fdatasync, on a blocking thread, for every alert
    /// written to the outbox since the last one (all of a sweep's alerts);
    /// the MQTT link keeps moving meanwhile. The entries are handed to the
    /// client when it reports ([`Daemon::on_synced`]).
    fn start_sync(&mut self) {
        match self.outbox.sync_job() {
            Some(job) => {
                let tx = self.sync_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = tx.send((job.upto, job.run()));
                });
            }
            // Nothing to sync, or the log could not be synced at all (its
            // entries are ready then): hand out what is ready.
            None => self.pump(),
        }
    }

    fn on_synced(&mut self, upto: u64, res: Result<(), crate::outbox::OutboxError>) {
        self.outbox.synced(upto, res);
        self.pump();
    }

    /// Hands queued entries to the client while connected, in order.
    fn pump(&mut self) {
        if self.hold_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        while self.connected && self.outbox.in_flight() < MAX_HANDED {
            let Some(entry) = self.outbox.pop() else {
                return;
            };
            let (topic, body, opts) = match &entry.item {
                Item::ClearRetained { sensor } => (
                    self.topics.alert(sensor),
                    Vec::new(),
                    PublishOptions::new(QoS::ExactlyOnce).retain(true),
                ),
                Item::RefreshRetained { alert } => {
                    // Not escalated: the alert itself was handed and
                    // tracked when first published.
                    let (props, corr) = self.alert_props(alert, self.cfg.mqtt.alert_expiry_secs);
                    self.awaiting.insert(
                        corr,
                        Awaiting {
                            id: alert.id.clone(),
                            raised: Instant::now(),
                            answers: 0,
                        },
                    );
                    (
                        self.topics.alert(&alert.sensor),
                        payload::encode(alert),
                        PublishOptions::new(QoS::ExactlyOnce)
                            .retain(true)
                            .properties(props),
                    )
                }
                Item::Alert { alert } => {
                    let waited = entry.waited().as_secs();
                    let expiry = u64::from(self.cfg.mqtt.alert_expiry_secs).saturating_sub(waited);
                    if expiry == 0 {
                        log::error!(
                            "alert {} ({} {}) expired after {waited}s before the broker could take it; dropped",
                            alert.id,
                            alert.level,
                            alert.name
                        );
                        self.outbox.finish(&entry);
                        continue;
                    }
                    self.escalator.handed(alert);
                    let (props, corr) =
                        self.alert_props(alert, u32::try_from(expiry).unwrap_or(u32::MAX));
                    self.awaiting.entry(corr).or_insert_with(|| Awaiting {
                        id: alert.id.clone(),
                        raised: entry.since,
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
                    let tx = self.done_tx.clone();
                    tokio::spawn(wait_notice(entry.seq, notice, tx));
                    self.outbox.handed(entry);
                }
                Err(e) => {
                    log::debug!("client queue full ({e}); will retry");
                    self.outbox.unpop(entry);
                    return;
                }
            }
        }
    }

    /// The v5 properties of an alert: expiry, ResponseTopic, CorrelationData.
    fn alert_props(&self, alert: &Alert, expiry: u32) -> (PublishProperties, Bytes) {
        let mut props = json_props(expiry);
        props.response_topic = Some(self.topics.acks());
        let corr = Bytes::from(alert.id.clone().into_bytes());
        props.correlation_data = Some(corr.clone());
        (props, corr)
    }

    fn on_done(&mut self, seq: u64, res: Result<PublishResult, PublishNoticeError>) {
        let Some(entry) = self.outbox.take_handed(seq) else {
            return;
        };
        let what = entry.item.describe();
        match res {
            Ok(PublishResult::Qos2Completed(_)) => {
                log::debug!("{what}: delivered to the broker (PUBCOMP)");
                if let Item::Alert { alert } = &entry.item {
                    self.escalator.delivered(alert, Instant::now());
                }
                self.outbox.finish(&entry);
            }
            Ok(PublishResult::Qos2PubRecRejected(rec)) => {
                log::error!(
                    "{what}: the broker refused it ({:?}); will retry",
                    rec.reason
                );
                self.retry_later(entry);
            }
            Ok(other) => {
                log::debug!("{what}: {other:?}");
                self.outbox.finish(&entry);
            }
            Err(e) => {
                log::warn!("{what}: {e}; publishing it again");
                self.outbox.requeue(entry);
            }
        }
        self.pump();
    }

    fn retry_later(&mut self, entry: crate::outbox::Entry) {
        // A refusal (quota, ACL) may clear: keep the entry, in order, and
        // hold the outbox a while instead of hammering the broker.
        self.outbox.requeue(entry);
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
                if let Some(ha) = &mut self.ha {
                    ha.connected(&self.client, session_present).await;
                }
                self.pump();
            }
            Link::Down => {
                self.connected = false;
                if let Some(ha) = &mut self.ha {
                    ha.on_down();
                }
            }
            Link::Message(p) => {
                if let Some(ha) = &mut self.ha {
                    if ha.message(&self.client, &p).await {
                        return;
                    }
                }
                self.on_message(&p)
            }
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
        self.escalator.answered(&String::from_utf8_lossy(&corr));
        if let Some(a) = &mut self.alarm {
            a.answered(&String::from_utf8_lossy(&corr));
        }
        let Some(w) = self.awaiting.get_mut(&corr) else {
            if crate::daemon::drill::is_drill_id(&corr) {
                log::info!("a notifier answered a fire drill (thermalertd drill)");
                return;
            }
            log::warn!(
                "ignoring an answer that matches no alert (correlation {:?})",
                String::from_utf8_lossy(&corr)
            );
            return;
        };
        w.answers += 1;
        let rtt = w.raised.elapsed();
        if w.answers > 1 {
            log::debug!(
                "alert {} answered again ({} answers) after {:.1} ms",
                w.id,
                w.answers,
                rtt.as_secs_f64() * 1000.0
            );
            return;
        }
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
        // A hung fdatasync must not hold alerts back (they are pumped below).
        self.outbox.check_stall(Instant::now());
        // A retained CRITICAL must outlive its message expiry while the
        // sensor stays critical: publish it again at half its lifetime.
        let half = Duration::from_secs(u64::from(self.cfg.mqtt.alert_expiry_secs)) / 2;
        let due: Vec<Alert> = self
            .critical
            .values_mut()
            .filter(|(_, at)| at.elapsed() >= half)
            .map(|(a, at)| {
                *at = Instant::now();
                a.clone()
            })
            .collect();
        for alert in due {
            log::debug!(
                "refreshing the retained CRITICAL {} ({})",
                alert.id,
                alert.name
            );
            self.outbox.push(Item::RefreshRetained { alert });
        }
        let keep = Duration::from_secs(u64::from(self.cfg.mqtt.alert_expiry_secs) * 2);
        self.awaiting.retain(|_, w| {
            let alive = w.raised.elapsed() < keep;
            if !alive && w.answers == 0 {
                log::warn!("alert {} was never answered by a notifier", w.id);
            }
            alive
        });
        for alert in self.escalator.due(Instant::now()) {
            log::error!(
                "ESCALATION {} of alert {} ({} {}): no notifier answered; publishing it again",
                alert.escalation,
                alert.id,
                alert.level,
                alert.name
            );
            self.outbox.push(Item::Alert { alert });
        }
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
        self.outbox.sync_now();
        self.pump();
        // Let alerts already queued reach the broker first.
        while self.connected && self.outbox.queued() + self.outbox.in_flight() > 0 {
            tokio::select! {
                Some((seq, res)) = done_rx.recv() => self.on_done(seq, res),
                Some(link) = link_rx.recv() => self.on_link(link).await,
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let pending = self.outbox.queued() + self.outbox.in_flight();
        if pending > 0 {
            log::warn!(
                "{pending} alert(s) not yet delivered to the broker at shutdown; kept in the outbox"
            );
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
