//! The daemon's I/O shell: it owns the MQTT client, the outbox's disk
//! log, the sensor thread, the alarm pin, Home Assistant discovery and the
//! signals; it reads the clock, feeds every event to the pure
//! [`Gateway`] and carries out the [`Action`]s it returns. It decides
//! nothing itself.
//!
//! One shutdown ([`Shutdown`]): every task (the MQTT driver, the
//! certificate watch, the outbox's syncs, the publish notices, the sensor
//! thread's join) is spawned through its tracker; SIGTERM cancels its
//! token (the sensor thread and the certificate watch stop), the last
//! duties run (the outbox synced and handed out, the offline status
//! published, a clean disconnect), then the MQTT link's own token stops
//! the driver, and the tracker is awaited within a deadline. The link
//! has a token of its own because it must outlive the program's token by
//! those last duties.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::mqttbytes::v5::PubRecReason;
use rumqttc::{
    AsyncClient, ClientError, PublishNotice, PublishNoticeError, PublishOptions, PublishProperties,
    PublishResult, QoS,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::alarm::{self, Alarm};
use super::homeassistant::{Discoverer, Discovery};
use super::{poller, status};
use crate::config::Config;
use crate::core::gateway::{Action, Gateway, Kind, Now, Outcome, Publish};
use crate::mqtt::conn::{self, Endpoint, Link};
use crate::mqtt::payload;
use crate::outbox::{self, Disk, OutboxError, Queue};
use crate::sensor;
use crate::sys::backoff::Backoff;
use crate::sys::shutdown::Shutdown;
use crate::sys::systemd::{Heartbeat, Notify};

/// How long SIGTERM's last duties may take (then the offline status gets
/// one more second to be confirmed).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot install the {signal} handler")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the sensor thread")]
    SensorThread(#[source] std::io::Error),
}

type Done = (u64, Result<PublishResult, PublishNoticeError>);
type Synced = (u64, Result<(), OutboxError>);

/// The time of an event; whether the clock is synchronised is probed
/// once per sweep (the only decision that reads it), see [`Shell::sweep_now`].
fn now_with(clock_synced: bool) -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
        clock_synced,
    }
}

/// What the shell holds besides the gateway.
struct Shell {
    gateway: Gateway,
    client: AsyncClient,
    /// The outbox's log (none: memory only).
    disk: Option<Disk>,
    alarm: Option<Alarm>,
    /// Home Assistant discovery, when enabled.
    ha: Option<Discoverer>,
    /// Reloaded configurations for the sensor thread (dropped at shutdown
    /// to wake it).
    sensors: Option<std::sync::mpsc::Sender<Config>>,
    shutdown: Shutdown,
    done_tx: mpsc::UnboundedSender<Done>,
    /// Outbox syncs report here (sequence number covered, result).
    sync_tx: mpsc::UnboundedSender<Synced>,
    /// Whether the wall clock was synchronised at the last sweep.
    clock_synced: bool,
    /// The sensor backend's status note, for the status line.
    sensor_note: Option<String>,
}

/// Runs the gateway until SIGTERM or SIGINT; SIGHUP reloads `config_path`.
pub async fn run(cfg: Config, endpoint: Endpoint, config_path: &Path) -> Result<(), DaemonError> {
    let shutdown = Shutdown::new();
    let topics = crate::mqtt::topics::Topics::new(&cfg.topic_prefix, &cfg.gateway_id);
    let options = endpoint.options(Some(status::will(&cfg, &topics)));
    let (client, eventloop) = AsyncClient::builder(options).capacity(256).build();

    let link_stop = CancellationToken::new();
    let (link_tx, mut link_rx) = mpsc::channel(256);
    let backoff = Backoff::new(
        Duration::from_millis(cfg.mqtt.reconnect_min_ms),
        Duration::from_secs(cfg.mqtt.reconnect_max_secs),
    );
    let mut notify = Notify::from_env();
    let mqtt_beat = Arc::new(Heartbeat::new("MQTT loop", Instant::now()));
    shutdown.spawn(conn::drive_with_heartbeat(
        eventloop,
        link_tx,
        backoff,
        link_stop.clone(),
        Some(mqtt_beat.clone()),
    ));

    let mut backend = sensor::Reopening::open(&cfg.sensors, &cfg.sensor);
    let cfg = poller::adopt_unconfigured(cfg, &mut backend);
    let (sweep_tx, mut sweep_rx) = mpsc::channel::<poller::Sweep>(4);
    let sensor_beat = Arc::new(Heartbeat::new("sensor loop", Instant::now()));
    let (sensors_ctl, sensors_ctl_rx) = std::sync::mpsc::channel::<Config>();
    let sensor_thread = poller::spawn(
        &cfg,
        Box::new(backend),
        sweep_tx,
        shutdown.token(),
        sensor_beat.clone(),
        sensors_ctl_rx,
    )
    .map_err(DaemonError::SensorThread)?;
    shutdown.spawn_blocking(move || {
        let _ = sensor_thread.join();
    });

    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (sync_tx, mut sync_rx) = mpsc::unbounded_channel();
    let opened = Disk::open(&cfg.state_dir(), cfg.outbox_max_bytes);
    let queue = match &opened.disk {
        Some(_) => Queue::loaded(
            opened.pending,
            Instant::now(),
            outbox::unix_ms(SystemTime::now()),
        ),
        // Read but not rewritable (read-only or full): delivered from
        // memory (Disk::open said so).
        None => Queue::loaded_in_memory(
            opened.pending,
            Instant::now(),
            outbox::unix_ms(SystemTime::now()),
        ),
    };
    let alarm = alarm::from_config(cfg.alarm.as_ref());
    let ha = cfg
        .homeassistant
        .enabled
        .then(|| Discoverer::new(Discovery::new(&cfg)));
    let ids = Box::new(|| uuid::Uuid::new_v4().to_string());
    let mut d = Shell {
        gateway: Gateway::new(cfg, queue, ids, alarm.is_some()),
        client,
        disk: opened.disk,
        alarm,
        ha,
        sensors: Some(sensors_ctl),
        shutdown: shutdown.clone(),
        done_tx,
        sync_tx,
        clock_synced: crate::sys::clock::synced_now(),
        sensor_note: None,
    };
    let cfg = d.gateway.config();
    log::info!(
        "thermalertd {} started: gateway {}, {} sensor(s), broker {}:{}",
        env!("CARGO_PKG_VERSION"),
        cfg.gateway_id,
        cfg.sensor.len(),
        cfg.mqtt.host,
        cfg.mqtt.port
    );

    let (cert_tx, mut cert_rx) = mpsc::unbounded_channel();
    let cert_watch =
        crate::sys::certwatch::watch_daily(cfg.mqtt.certificate_files(), move |list| {
            let _ = cert_tx.send(list);
        });
    let token = shutdown.token();
    shutdown.spawn(async move {
        tokio::select! {
            () = cert_watch => {}
            () = token.cancelled() => {}
        }
    });
    use tokio::signal::unix::{signal, SignalKind};
    let signal_error = |signal| move |source| DaemonError::Signal { signal, source };
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_error("SIGTERM"))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(signal_error("SIGHUP"))?;
    let mut housekeeping = tokio::time::interval(d.gateway.timings().tick);
    let mut watchdog = notify.watchdog_interval().map(tokio::time::interval);
    notify.ready(|| status::info(&d.gateway, d.sensor_note.clone()));
    loop {
        let actions = tokio::select! {
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => { log::info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                notify.reloading();
                let actions = d.reload(config_path);
                d.execute(actions).await;
                d.homeassistant_after_reload().await;
                notify.ready(|| status::info(&d.gateway, d.sensor_note.clone()));
                Vec::new()
            }
            Some(sweep) = sweep_rx.recv() => {
                d.sensor_note = sweep.note;
                let now = d.sweep_now();
                d.gateway.on_sweep(sweep.samples, now)
            }
            Some(link) = link_rx.recv() => d.on_link(link).await,
            Some((seq, res)) = done_rx.recv() => d.gateway.on_published(seq, outcome(res), d.now()),
            Some((upto, res)) = sync_rx.recv() => {
                if let Some(disk) = &mut d.disk {
                    disk.sync_result(&res);
                }
                d.gateway.on_synced(upto, d.now())
            }
            _ = housekeeping.tick() => d.gateway.tick(d.now()),
            Some(list) = cert_rx.recv() => {
                let gw = d.gateway.config().gateway_id.clone();
                let alerts = list.iter().map(|e| crate::sys::certwatch::alert(&gw, e)).collect();
                d.gateway.raise(alerts, d.now())
            }
            _ = crate::sys::systemd::tick(&mut watchdog) => {
                notify.watchdog(Instant::now(), &[&sensor_beat, &mqtt_beat]);
                Vec::new()
            }
        };
        d.execute(actions).await;
        let actions = d.gateway.flush(d.now());
        d.execute(actions).await;
        notify.status(|| status::info(&d.gateway, d.sensor_note.clone()));
    }

    // Shutdown: stop the sensors (and wake their thread), publish the
    // offline status ourselves, give queued alerts a moment, then
    // disconnect cleanly (no Will).
    notify.stopping();
    shutdown.trigger();
    d.sensors = None;
    drop(sweep_rx);
    d.last_duties(&mut link_rx, &mut done_rx).await;
    link_stop.cancel();
    let left = shutdown.wait(SHUTDOWN_DEADLINE).await;
    if left > 0 {
        log::warn!("{left} task(s) still running at exit");
    }
    log::info!("stopped");
    Ok(())
}

/// A publish notice's result, for the gateway: a refusal that will not
/// change (the broker finds the topic or the payload invalid) is told
/// apart from one that may clear (quota, authorisation, a busy broker).
fn outcome(res: Result<PublishResult, PublishNoticeError>) -> Outcome {
    match res {
        Ok(PublishResult::Qos2Completed(_)) => Outcome::Completed,
        Ok(PublishResult::Qos2PubRecRejected(rec)) if refused_for_good(rec.reason) => {
            Outcome::Rejected(format!("the broker: {:?}", rec.reason))
        }
        Ok(PublishResult::Qos2PubRecRejected(rec)) => Outcome::Refused(format!("{:?}", rec.reason)),
        Ok(other) => Outcome::Other(format!("{other:?}")),
        Err(PublishNoticeError::V5PubRec(reason)) if refused_for_good(reason) => {
            Outcome::Rejected(format!("the broker: {reason:?}"))
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// A PUBREC reason the same message will get every time.
fn refused_for_good(reason: PubRecReason) -> bool {
    matches!(
        reason,
        PubRecReason::TopicNameInvalid | PubRecReason::PayloadFormatInvalid
    )
}

/// What to tell the gateway when the client would not take entry `seq`:
/// `None` when its queue is full (busy: it goes back, in order), the
/// outcome when the client will refuse it every time (an invalid topic).
fn client_refusal(e: &ClientError) -> Option<Outcome> {
    match e {
        ClientError::InvalidRequest(_) => Some(Outcome::Rejected(format!("the client: {e}"))),
        // Full, disconnected (reconnecting), or anything newer: may clear.
        _ => None,
    }
}

/// The publish options of a gateway [`Publish`].
fn publish_options(p: &Publish) -> PublishOptions {
    let qos = match p.kind {
        Kind::Reading => QoS::AtMostOnce,
        Kind::Entry(_) => QoS::ExactlyOnce,
    };
    let mut opts = PublishOptions::new(qos).retain(p.retain);
    if let Some(expiry) = p.expiry {
        let mut props: PublishProperties = payload::json_properties(Some(expiry));
        if let Some((topic, corr)) = &p.response {
            props.response_topic = Some(topic.clone());
            props.correlation_data = Some(corr.clone());
        }
        opts = opts.properties(props);
    }
    opts
}

impl Shell {
    fn now(&self) -> Now {
        now_with(self.clock_synced)
    }

    /// The time of a sweep, with the clock's synchronisation probed anew.
    fn sweep_now(&mut self) -> Now {
        self.clock_synced = crate::sys::clock::synced_now();
        self.now()
    }

    /// Carries out the gateway's actions, in order.
    async fn execute(&mut self, actions: Vec<Action>) {
        let mut queue = std::collections::VecDeque::from(actions);
        // Once the client refused an entry, the later ones go back too.
        let mut busy = false;
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Log { level, line } => log::log!(level, "{line}"),
                Action::LogAlert(alert) => crate::sys::logging::alert(&alert),
                Action::Store { seq, at_ms, item } => {
                    let stored = self
                        .disk
                        .as_mut()
                        .is_some_and(|d| d.store(seq, at_ms, &item));
                    if !stored {
                        self.gateway.on_store_failed(seq);
                    }
                }
                Action::Forget { seq, what } => {
                    if let Some(d) = &mut self.disk {
                        d.done(seq, &what);
                    }
                }
                Action::Sync { upto } => self.start_sync(upto),
                Action::SyncNow { upto } => {
                    if let Some(d) = &mut self.disk {
                        let r = d.sync_now();
                        d.sync_result(&r);
                    }
                    queue.extend(self.gateway.on_synced_now(upto, self.now()));
                }
                Action::Publish(p) => match p.kind {
                    Kind::Reading => {
                        let opts = publish_options(&p);
                        if self
                            .client
                            .try_publish(p.topic.clone(), p.payload, opts)
                            .is_err()
                        {
                            log::debug!("reading on {} dropped: client busy", p.topic);
                        }
                    }
                    Kind::Entry(seq) if busy => self.gateway.on_client_busy(seq),
                    Kind::Entry(seq) => {
                        let opts = publish_options(&p);
                        match self.client.try_publish_tracked(p.topic, p.payload, opts) {
                            Ok(notice) => {
                                self.shutdown
                                    .spawn(wait_notice(seq, notice, self.done_tx.clone()));
                            }
                            Err(e) => match client_refusal(&e) {
                                Some(refused) => {
                                    let now = self.now();
                                    queue.extend(self.gateway.on_published(seq, refused, now));
                                }
                                None => {
                                    log::debug!("client queue full ({e}); will retry");
                                    self.gateway.on_client_busy(seq);
                                    busy = true;
                                }
                            },
                        }
                    }
                },
                Action::Subscribe { topic } => {
                    if let Err(e) = self.client.subscribe(topic.clone(), QoS::AtLeastOnce).await {
                        log::error!("cannot subscribe to {topic}: {e}");
                    }
                }
                Action::PublishOnline => {
                    let cfg = self.gateway.config();
                    let topic = self.gateway.topics().status();
                    let body = status::payload(cfg, "online", None);
                    if let Err(e) = self.client.publish(topic, body, status::options(cfg)).await {
                        log::error!("cannot publish the online status: {e}");
                    }
                }
                Action::HomeAssistant { session_present } => {
                    if let Some(ha) = &mut self.ha {
                        ha.connected(&self.client, session_present, &self.shutdown)
                            .await;
                    }
                }
                Action::SetAlarm(on) => {
                    if let Some(a) = &mut self.alarm {
                        a.set(on);
                    }
                }
                Action::ReconfigureSensors(cfg) => {
                    let sent = self.sensors.as_ref().is_some_and(|s| s.send(*cfg).is_ok());
                    if !sent {
                        log::error!("reload: the sensor thread has stopped");
                    }
                }
            }
        }
    }

    /// Group commit: one fdatasync, on a blocking thread, for every alert
    /// written to the outbox since the last one; the MQTT link keeps
    /// moving meanwhile.
    fn start_sync(&mut self, upto: u64) {
        let job = match self.disk.as_mut().map(|d| d.sync_job(upto)) {
            Some(Ok(job)) => job,
            // No handle on the log: its entries are ready all the same.
            Some(Err(e)) => {
                let _ = self.sync_tx.send((upto, Err(e)));
                return;
            }
            None => {
                let _ = self.sync_tx.send((upto, Ok(())));
                return;
            }
        };
        let tx = self.sync_tx.clone();
        self.shutdown.spawn_blocking(move || {
            let _ = tx.send((job.upto, job.run()));
        });
    }

    async fn on_link(&mut self, link: Link) -> Vec<Action> {
        match link {
            Link::Connected {
                session_present, ..
            } => self.gateway.on_link_up(session_present, self.now()),
            Link::Down => {
                if let Some(ha) = &mut self.ha {
                    ha.on_down();
                }
                self.gateway.on_link_down()
            }
            Link::Message(p) => {
                if let Some(ha) = &mut self.ha {
                    if ha.message(&self.client, &p, &self.shutdown).await {
                        return Vec::new();
                    }
                }
                let topic = String::from_utf8_lossy(&p.topic);
                let corr = p
                    .properties
                    .as_ref()
                    .and_then(|pr| pr.correlation_data.as_deref());
                self.gateway
                    .on_message(&topic, corr, &p.payload, self.now())
            }
        }
    }

    /// SIGHUP: loads the file again; a bad file is logged and the running
    /// one kept.
    fn reload(&mut self, path: &Path) -> Vec<Action> {
        match Config::load(path) {
            Ok(new) => self.gateway.reload(new, path, self.now()),
            Err(e) => {
                log::error!("reload: invalid configuration, keeping the running one: {e}");
                Vec::new()
            }
        }
    }

    /// After a reload, Home Assistant discovery follows the new sensors:
    /// the exchange runs again (new entities published, removed ones
    /// cleared).
    async fn homeassistant_after_reload(&mut self) {
        let cfg = self.gateway.config();
        if !cfg.homeassistant.enabled {
            self.ha = None;
            return;
        }
        let ha = self.ha.insert(Discoverer::new(Discovery::new(cfg)));
        if self.gateway.connected() {
            ha.connected(&self.client, false, &self.shutdown).await;
        }
    }

    /// SIGTERM's last duties: the outbox synced and handed out, alerts
    /// already queued given until the deadline to reach the broker, the
    /// offline status, a clean disconnect.
    async fn last_duties(
        &mut self,
        link_rx: &mut mpsc::Receiver<Link>,
        done_rx: &mut mpsc::UnboundedReceiver<Done>,
    ) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
        let actions = self.gateway.begin_shutdown(self.now());
        self.execute(actions).await;
        // Let alerts already queued reach the broker first.
        while self.gateway.connected() && self.gateway.pending() > 0 {
            let actions = tokio::select! {
                Some((seq, res)) = done_rx.recv() => self.gateway.on_published(seq, outcome(res), self.now()),
                Some(link) = link_rx.recv() => self.on_link(link).await,
                () = tokio::time::sleep_until(deadline) => break,
            };
            self.execute(actions).await;
        }
        let pending = self.gateway.pending();
        if pending > 0 {
            log::warn!(
                "{pending} alert(s) not yet delivered to the broker at shutdown; kept in the outbox"
            );
        }
        if !self.gateway.connected() {
            return;
        }
        let cfg = self.gateway.config();
        let body = status::payload(cfg, "offline", Some("shutdown"));
        match self
            .client
            .publish_tracked(self.gateway.topics().status(), body, status::options(cfg))
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

async fn wait_notice(seq: u64, notice: PublishNotice, tx: mpsc::UnboundedSender<Done>) {
    let res = notice.wait_async().await;
    let _ = tx.send((seq, res));
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn publish(kind: Kind, expiry: Option<u32>, response: Option<(String, Bytes)>) -> Publish {
        Publish {
            topic: "t".into(),
            payload: Vec::new(),
            retain: true,
            expiry,
            response,
            kind,
        }
    }

    #[test]
    fn a_refusal_that_will_not_change_is_told_apart_from_a_busy_client() {
        use rumqttc::mqttbytes::v5::PubRec;
        let rec = |reason| {
            Ok(PublishResult::Qos2PubRecRejected(PubRec {
                reason,
                ..PubRec::new(1, None)
            }))
        };
        assert!(matches!(
            outcome(rec(PubRecReason::TopicNameInvalid)),
            Outcome::Rejected(_)
        ));
        assert!(matches!(
            outcome(rec(PubRecReason::PayloadFormatInvalid)),
            Outcome::Rejected(_)
        ));
        assert!(matches!(
            outcome(Err(PublishNoticeError::V5PubRec(
                PubRecReason::TopicNameInvalid
            ))),
            Outcome::Rejected(_)
        ));
        for may_clear in [
            PubRecReason::QuotaExceeded,
            PubRecReason::NotAuthorized,
            PubRecReason::UnspecifiedError,
        ] {
            assert!(matches!(outcome(rec(may_clear)), Outcome::Refused(_)));
        }
        assert!(matches!(
            outcome(Err(PublishNoticeError::SessionReset)),
            Outcome::Failed(_)
        ));
        // The client itself: an invalid topic is refused every time; a
        // full queue only for now.
        let (client, _eventloop) =
            AsyncClient::builder(rumqttc::MqttOptions::new("t", "localhost"))
                .capacity(1)
                .build();
        let opts = PublishOptions::new(QoS::ExactlyOnce);
        let invalid = client
            .try_publish_tracked("a/+/b", Vec::new(), opts.clone())
            .expect_err("a wildcard in a topic");
        assert!(matches!(
            client_refusal(&invalid),
            Some(Outcome::Rejected(_))
        ));
        client
            .try_publish_tracked("a/b", Vec::new(), opts.clone())
            .expect("room for one");
        let full = client
            .try_publish_tracked("a/b", Vec::new(), opts)
            .expect_err("the queue is full");
        assert!(client_refusal(&full).is_none(), "{full}");
    }

    #[test]
    fn a_retained_clear_goes_at_qos2_without_properties() {
        let o = publish_options(&publish(Kind::Entry(1), None, None));
        assert_eq!(o, PublishOptions::new(QoS::ExactlyOnce).retain(true));
    }

    #[test]
    fn an_alert_carries_the_json_properties_its_answer_topic_and_correlation() {
        let corr = Bytes::from_static(b"id-1");
        let o = publish_options(&publish(
            Kind::Entry(1),
            Some(42),
            Some(("acks".into(), corr.clone())),
        ));
        let mut props = payload::json_properties(Some(42));
        props.response_topic = Some("acks".into());
        props.correlation_data = Some(corr);
        assert_eq!(
            o,
            PublishOptions::new(QoS::ExactlyOnce)
                .retain(true)
                .properties(props)
        );
        let r = publish_options(&publish(Kind::Reading, Some(60), None));
        assert_eq!(
            r,
            PublishOptions::new(QoS::AtMostOnce)
                .retain(true)
                .properties(payload::json_properties(Some(60)))
        );
    }
}
