//! The notifier's I/O shell: the MQTT client, standard output, the
//! desktop and the hooks. It feeds what arrives to the
//! [`Core`](crate::notifier::core::Core) and carries out its actions, in
//! batches: the lines of a batch are written and their alert ids recorded
//! before anything of it is answered or acknowledged.
//!
//! One shutdown ([`Shutdown`]): every task is spawned through it. At SIGTERM
//! (or SIGINT) the notifier stops taking messages, waits up to
//! [`SHUTDOWN_GRACE`] for the --exec hooks still running (killing their
//! process groups at the deadline), sends their answers, and only then
//! disconnects.

use std::io::Write;
use std::time::Duration;

use rumqttc::{AsyncClient, BrokerSessionResumePolicy, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::mqtt::conn::{self, Link};
use crate::mqtt::payload::Alert;
use crate::mqtt::store::FileSessionStore;
use crate::notifier::answer::Answerer;
use crate::notifier::channels::{Channels, HookOutcome};
use crate::notifier::core::{
    without_share, Action, Core, CoreConfig, Message, Now, Reply, SEEN_CAP,
};
use crate::notifier::seen::Seen;
use crate::notifier::settings::Settings;
use crate::sys::backoff::Backoff;
use crate::sys::shutdown::Shutdown;

/// How long SIGTERM waits for running --exec hooks (and their answers)
/// before their process groups are killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the last answers and the connection's end get past that deadline.
const LAST_MOMENT: Duration = Duration::from_secs(2);

/// Requests the MQTT client takes per turn of its loop.
const MAX_REQUEST_BATCH: usize = 2 * BATCH;

/// How many queued messages are handled before their lines are written,
/// their ids recorded and their answers sent.
const BATCH: usize = 64;

/// The notifier cannot show alerts any more.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output: {0}")]
pub struct OutputError(#[from] std::io::Error);

/// Why the notifier stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error("cannot listen for SIGTERM: {0}")]
    Signal(#[source] std::io::Error),
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// A finished --exec hook, to be answered from the MQTT loop.
struct HookDone {
    alert_id: String,
    reply: Reply,
    outcome: HookOutcome,
}

/// Work held back until the messages handled so far are shown and
/// recorded, so that nothing is answered or acknowledged before that.
enum Deferred {
    /// Answer an alert on its ResponseTopic.
    Answer {
        alert_id: String,
        reply: Reply,
        status: &'static str,
    },
    /// Acknowledge (PUBACK/PUBREC) a handled message.
    Ack(Box<rumqttc::Publish>),
    /// Run the --exec hook of a new alert (answered when it ends).
    Hook { alert: Alert, reply: Reply },
}

struct Shell {
    core: Core,
    client: AsyncClient,
    answerer: Answerer,
    channels: Channels,
    tasks: Shutdown,
    /// Cancelled at the shutdown deadline: running hooks are killed.
    hooks_stop: CancellationToken,
    hook_tx: mpsc::UnboundedSender<HookDone>,
    /// Lines for standard output, written in one go by `flush`.
    out: Vec<u8>,
    /// Answers, acknowledgements and hooks that wait until the lines
    /// before them are written and the alert ids recorded: see `flush`.
    deferred: Vec<Deferred>,
    /// Shutting down: the answers' confirmations are awaited before the
    /// disconnect.
    stopping: bool,
    answers: Vec<JoinHandle<()>>,
}

/// Runs the notifier with only the terminal as its channel.
pub async fn run(settings: Settings) -> Result<(), NotifierError> {
    run_with(settings, Channels::default()).await
}

/// Runs the notifier with `channels` until SIGTERM or SIGINT.
pub async fn run_with(settings: Settings, channels: Channels) -> Result<(), NotifierError> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(NotifierError::Signal)?;
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
    let tasks = Shutdown::new();
    // Not the shutdown's token: the connection carries the last answers
    // after the shutdown began, and ends with the DISCONNECT.
    let conn_stop = CancellationToken::new();
    let (link_tx, mut link_rx) = mpsc::channel(1024);
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    tasks.spawn(conn::drive(eventloop, link_tx, backoff, conn_stop.clone()));
    log::info!(
        "thermalert-notifier {} as {} to {}:{}",
        env!("CARGO_PKG_VERSION"),
        settings.endpoint.client_id,
        settings.endpoint.host,
        settings.endpoint.port
    );
    let (certs, stop) = (settings.cert_files.clone(), tasks.token());
    tasks.spawn(async move {
        tokio::select! {
            () = crate::sys::certwatch::watch_daily(certs, |_| {}) => {}
            () = stop.cancelled() => {}
        }
    });
    let (hook_tx, mut hook_rx) = mpsc::unbounded_channel();
    let core = Core::new(
        CoreConfig {
            prefix: settings.prefix.clone(),
            client_id: settings.endpoint.client_id.clone(),
            json: settings.json,
            filter: channels.filter.clone(),
            share_group: channels.share_group.clone(),
            exec: channels.exec.is_some(),
            watch: channels.watch,
        },
        Seen::open(&settings.state_dir, SEEN_CAP),
        Now::system(),
    );
    let mut n = Shell {
        core,
        answerer: Answerer {
            client: client.clone(),
            by: settings.endpoint.client_id.clone(),
            tasks: tasks.clone(),
        },
        client,
        channels,
        tasks: tasks.clone(),
        hooks_stop: CancellationToken::new(),
        hook_tx,
        out: Vec::new(),
        deferred: Vec::new(),
        stopping: false,
        answers: Vec::new(),
    };
    let mut watch_tick = tokio::time::interval(Duration::from_millis(250));
    let mut result = Ok(());
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            Some(done) = hook_rx.recv() => n.on_hook_done(done),
            _ = watch_tick.tick() => {
                let actions = n.core.tick(Now::system());
                n.execute(actions);
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
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    if result.is_ok() {
        result = n
            .finish_hooks(deadline, &mut hook_rx, &mut link_rx, &mut sigterm)
            .await;
    }
    // The answers out before the DISCONNECT (those of hooks killed at the
    // deadline get a moment too).
    let last = deadline.max(Instant::now() + LAST_MOMENT);
    for a in std::mem::take(&mut n.answers) {
        let _ = tokio::time::timeout_at(last, a).await;
    }
    let _ = n.client.disconnect().await;
    conn_stop.cancel();
    tasks.trigger();
    // Whatever else is still running (hooks of watch events, desktop
    // notifications, the connection's end) gets the rest of the time, then
    // is killed.
    let rest = last.saturating_duration_since(Instant::now());
    if tasks.wait(rest.max(LAST_MOMENT)).await > 0 {
        n.hooks_stop.cancel();
        let left = tasks.wait(LAST_MOMENT).await;
        if left > 0 {
            log::debug!("{left} task(s) still running at exit");
        }
    }
    Ok(result?)
}

impl Shell {
    /// The last duty at shutdown: new messages are left to the broker (not
    /// shown, not acknowledged: it delivers them again), running hooks end
    /// within [`SHUTDOWN_GRACE`] (or a second signal) or are killed, and
    /// are answered.
    async fn finish_hooks(
        &mut self,
        deadline: Instant,
        hook_rx: &mut mpsc::UnboundedReceiver<HookDone>,
        link_rx: &mut mpsc::Receiver<Link>,
        sigterm: &mut tokio::signal::unix::Signal,
    ) -> Result<(), OutputError> {
        self.stopping = true;
        let running = self.core.hooks_running();
        if running == 0 {
            return Ok(());
        }
        log::info!("stopping: waiting up to {SHUTDOWN_GRACE:?} for {running} running hook(s)");
        while self.core.hooks_running() > 0 {
            tokio::select! {
                done = hook_rx.recv() => {
                    let Some(done) = done else { break };
                    self.on_hook_done(done);
                    self.flush().await?;
                }
                () = tokio::time::sleep_until(deadline), if !self.hooks_stop.is_cancelled() => {
                    log::warn!(
                        "stopping: {} hook(s) still running after {SHUTDOWN_GRACE:?}: killing them",
                        self.core.hooks_running()
                    );
                    self.hooks_stop.cancel();
                }
                _ = async {
                    tokio::select! {
                        _ = sigterm.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }, if !self.hooks_stop.is_cancelled() => {
                    log::warn!("stopping: a second signal: killing the running hook(s)");
                    self.hooks_stop.cancel();
                }
                link = link_rx.recv() => {
                    if link.is_none() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    async fn on_link(&mut self, link: Link) {
        match link {
            Link::Connected {
                session_present,
                shared_subscriptions,
                ..
            } => {
                let actions = self.core.on_link_up(Now::system());
                self.execute(actions);
                // A broker without shared subscriptions (ejabberd) ends the
                // connection on a `$share/...` filter: every member then
                // takes every alert and skips those another member already
                // answered (see "Fleets" in the README).
                let plain = self.core.in_share_group() && !shared_subscriptions;
                if plain {
                    log::warn!(
                        "the broker has no shared subscriptions: every member of the share group receives every alert, and skips those another member already answered"
                    );
                }
                if session_present {
                    log::info!("session resumed: subscriptions kept");
                    if self.core.in_share_group() && !plain {
                        // Some brokers (Mosquitto 2.0.11 after a restart
                        // from its persistence file) resume the session
                        // without its shared subscriptions: subscribe again
                        // (idempotent; retained messages never go to shared
                        // subscriptions).
                        let f = self.core.alerts_filter();
                        if let Err(e) = self.client.subscribe(f, QoS::ExactlyOnce).await {
                            log::error!("cannot renew the shared subscription: {e}");
                        }
                    }
                    return;
                }
                let mut s = self.core.subscriptions();
                if plain {
                    for f in &mut s.exactly_once {
                        *f = without_share(f);
                    }
                }
                let subs = s
                    .exactly_once
                    .iter()
                    .map(|f| rumqttc::SubscribeFilterInput::new(f.clone(), QoS::ExactlyOnce))
                    .chain([rumqttc::SubscribeFilterInput::new(
                        s.readings,
                        QoS::AtMostOnce,
                    )])
                    .chain(
                        s.acks
                            .map(|a| rumqttc::SubscribeFilterInput::new(a, QoS::AtLeastOnce)),
                    );
                match self.client.subscribe_many_tracked(subs).await {
                    Ok(notice) => {
                        let what = s.exactly_once.join(", ");
                        self.tasks.spawn(async move {
                            match notice.wait_async().await {
                                Ok(_) => log::info!("subscribed to {what} at QoS 2"),
                                Err(e) => log::error!("subscription to {what} failed: {e}"),
                            }
                        });
                    }
                    Err(e) => log::error!("cannot subscribe: {e}"),
                }
            }
            Link::Down => self.core.on_link_down(Now::system()),
            Link::Message(p) => {
                // Acknowledged (PUBREC/PUBACK) only once handled, shown and
                // recorded: see run() and flush().
                self.on_message(&p);
                self.deferred.push(Deferred::Ack(p));
            }
        }
    }

    fn on_message(&mut self, p: &rumqttc::Publish) {
        let Ok(topic) = std::str::from_utf8(&p.topic) else {
            log::warn!("skipping a message with a non-UTF-8 topic");
            return;
        };
        let props = p.properties.as_ref();
        let reply = props
            .and_then(|pr| pr.response_topic.clone())
            .map(|topic| Reply {
                topic,
                correlation: props.and_then(|pr| pr.correlation_data.clone()),
            });
        let m = Message {
            topic,
            payload: &p.payload,
            retain: p.retain,
            reply,
        };
        let actions = self.core.on_message(m, Now::system());
        self.execute(actions);
    }

    fn on_hook_done(&mut self, d: HookDone) {
        let actions = self.core.on_hook_done(d.alert_id, d.reply, &d.outcome);
        self.execute(actions);
    }

    /// Carries out the core's actions: lines and answers wait for `flush`.
    fn execute(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Print(line) => {
                    self.out.extend_from_slice(line.as_bytes());
                    self.out.push(b'\n');
                }
                Action::Notify(alert) => {
                    if let Some(d) = &self.channels.desktop {
                        d.show(&alert, &self.tasks);
                    }
                }
                Action::Answer {
                    alert_id,
                    reply,
                    status,
                } => self.deferred.push(Deferred::Answer {
                    alert_id,
                    reply,
                    status,
                }),
                Action::Hook {
                    alert,
                    reply: Some(reply),
                } => self.deferred.push(Deferred::Hook { alert, reply }),
                Action::Hook { alert, reply: None } => {
                    // A watcher's event: not answered.
                    if let Some(hook) = self.channels.exec.clone() {
                        let stop = self.hooks_stop.clone();
                        self.tasks.spawn(async move {
                            if let HookOutcome::Failed(why) = hook.run(&alert, &stop).await {
                                log::warn!("hook for {} failed: {why}", alert.id);
                            }
                        });
                    }
                }
            }
        }
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
        self.core.flush_seen();
        for d in std::mem::take(&mut self.deferred) {
            match d {
                Deferred::Answer {
                    alert_id,
                    reply,
                    status,
                } => {
                    let confirmed = self.answerer.send(&alert_id, reply, status).await;
                    if self.stopping {
                        self.answers.extend(confirmed);
                    }
                }
                Deferred::Ack(p) => {
                    if let Err(e) = self.client.ack(&p).await {
                        log::warn!("cannot acknowledge a message: {e}");
                    }
                }
                Deferred::Hook { alert, reply } => {
                    let Some(hook) = self.channels.exec.clone() else {
                        continue;
                    };
                    let (tx, stop) = (self.hook_tx.clone(), self.hooks_stop.clone());
                    self.tasks.spawn(async move {
                        let outcome = hook.run(&alert, &stop).await;
                        let _ = tx.send(HookDone {
                            alert_id: alert.id,
                            reply,
                            outcome,
                        });
                    });
                }
            }
        }
        Ok(())
    }
}
