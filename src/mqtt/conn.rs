//! Connection options and connection-state reporting shared by the daemon
//! and the notifier.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    ConnectReturnCode, ConnectionError, LastWill, MqttOptions, NetworkOptions, TlsConfiguration,
    Transport,
};

/// The largest MQTT packet either program accepts (Maximum Packet Size).
pub const MAX_PACKET: u32 = 256 * 1024;

/// The most QoS 1/2 publishes either program has in flight to the broker
/// (the broker's Receive Maximum may lower it further; Mosquitto's default
/// is 20). Without it the client sizes its in-flight table for 65,535
/// publishes before the CONNACK arrives: about 16 MB touched at start-up
/// (see BENCHMARKS.md). The daemon hands at most 64 entries to the client.
pub const MAX_OUTGOING_INFLIGHT: u16 = 128;

/// What both programs need to reach the broker.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Arc<rustls::ClientConfig>,
    pub keep_alive_secs: u16,
    pub connect_timeout: Duration,
    /// Session Expiry Interval; with it the session survives reconnects
    /// (clean start off).
    pub session_expiry_secs: u32,
    pub receive_maximum: u16,
    /// Resume the broker's session at start-up (the notifier: it wants
    /// what was queued while it was away). The daemon starts clean, since
    /// a new process cannot finish the old one's QoS 2 handshakes; both
    /// resume the session on every reconnect after that.
    pub resume_on_start: bool,
}

/// Why the daemon's [`Endpoint`] cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("mqtt.ca_file / client_cert")]
    Tls(#[source] super::tls::TlsError),
    #[error("mqtt.password_file")]
    Password(#[source] crate::config::secret::SecretError),
}

/// The daemon's endpoint (TLS and credentials) from its configuration;
/// `thermalertd run`, `check-config` and `drill` share it.
pub fn endpoint(cfg: &crate::config::Config) -> Result<Endpoint, EndpointError> {
    let m = &cfg.mqtt;
    let client = m.client_cert.as_deref().zip(m.client_key.as_deref());
    let tls = super::tls::client_config(&m.ca_file, client).map_err(EndpointError::Tls)?;
    let password = cfg.password().map_err(EndpointError::Password)?;
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

impl Endpoint {
    /// MQTT v5 options: TLS only, clean start off with a session expiry,
    /// our Receive Maximum, TCP_NODELAY (alerts are small and urgent).
    pub fn options(&self, will: Option<LastWill>) -> MqttOptions {
        let mut o = MqttOptions::new(self.client_id.clone(), (self.host.clone(), self.port));
        o.set_keep_alive(self.keep_alive_secs);
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            self.tls.clone(),
        )));
        if let Some(u) = &self.username {
            o.set_credentials(u.clone(), self.password.clone().unwrap_or_default());
        }
        o.set_clean_start(!self.resume_on_start);
        o.set_session_expiry_interval(Some(self.session_expiry_secs));
        o.set_receive_maximum(Some(self.receive_maximum));
        o.set_connect_timeout(self.connect_timeout);
        // Tell the broker the largest packet we take, so that it drops
        // bigger ones instead of sending what we would have to refuse.
        o.set_max_packet_size(Some(MAX_PACKET));
        o.set_outgoing_inflight_upper_limit(MAX_OUTGOING_INFLIGHT);
        // Requests already queued go out with one flush (one TLS write):
        // a sweep's readings, or a burst of alerts and answers.
        o.set_max_request_batch(MAX_REQUEST_BATCH);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        o.set_network_options(net);
        if let Some(w) = will {
            o.set_last_will(w);
        }
        o
    }
}

/// Most client requests the event loop takes before it flushes.
pub const MAX_REQUEST_BATCH: usize = 32;

/// A one-line explanation of why a connection failed, for a person.
pub fn explain(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => format!(
                "the broker refused the username or password ({code:?}): check the username, the password file and the broker's password_file"
            ),
            other => format!("the broker refused the connection: {other:?}"),
        },
        _ => {
            let text = error_chain(e);
            if text.contains("UnknownIssuer") || text.contains("BadSignature") {
                format!("TLS: the broker's certificate is not signed by the CA in ca_file ({text})")
            } else if text.contains("NotValidForName") || text.contains("not valid for name") {
                format!("TLS: the broker's certificate is not valid for this host name; its SAN must list the host you connect to ({text})")
            } else if text.contains("Expired")
                || text.contains("NotValidYet")
                || text.contains("certificate expired")
                || text.contains("not valid yet")
            {
                format!("TLS: the broker's certificate is expired or not yet valid ({text})")
            } else if text.contains("CorruptMessage") || text.contains("InvalidContentType") || text.contains("received corrupt message") {
                format!("TLS: the server did not answer with TLS (a plaintext listener?) ({text})")
            } else {
                text
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Tracks the connection state so that the log shows one line per change,
/// not one per retry.
#[derive(Debug, Default)]
pub struct ConnLog {
    last_error: Option<String>,
    connected: bool,
    failures: u32,
}

impl ConnLog {
    /// A connection was established.
    pub fn connected(&mut self, what: &str) {
        if self.failures > 0 {
            log::info!("{what} after {} failed attempt(s)", self.failures);
        } else {
            log::info!("{what}");
        }
        self.connected = true;
        self.last_error = None;
        self.failures = 0;
    }

    /// A connection attempt failed or a connection broke; logs when the
    /// reason changed and returns whether it did.
    pub fn failed(&mut self, e: &ConnectionError, retry_in: Duration) -> bool {
        let why = explain(e);
        self.failures += 1;
        let changed = self.connected || self.last_error.as_deref() != Some(&why);
        if changed {
            if self.connected {
                log::warn!(
                    "connection to the broker lost: {why}; reconnecting in {:.1}s",
                    retry_in.as_secs_f64()
                );
            } else {
                log::error!(
                    "cannot connect to the broker: {why}; retrying in {:.1}s",
                    retry_in.as_secs_f64()
                );
            }
        } else {
            log::debug!(
                "still cannot connect: {why}; retrying in {:.1}s",
                retry_in.as_secs_f64()
            );
        }
        self.connected = false;
        self.last_error = Some(why);
        changed
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }
}

/// What the connection driver reports to the program.
#[derive(Debug)]
pub enum Link {
    /// CONNACK received.
    Connected {
        session_present: bool,
        /// The broker's Receive Maximum, if it sent one.
        broker_receive_max: Option<u16>,
        /// Whether the broker takes shared subscriptions (`$share/...`):
        /// false when its CONNACK says so (ejabberd's mod_mqtt).
        shared_subscriptions: bool,
    },
    /// An incoming PUBLISH.
    Message(Box<rumqttc::Publish>),
    /// The connection broke or could not be made; the driver is backing off.
    Down,
}

/// Drives the event loop: forwards what the program needs, reconnects
/// after failures with exponential backoff and jitter (the client never
/// reconnects by itself), and ends once a DISCONNECT has been sent or
/// `stop` fires while disconnected.
pub async fn drive(
    eventloop: rumqttc::EventLoop,
    tx: tokio::sync::mpsc::Sender<Link>,
    backoff: crate::sys::backoff::Backoff,
    stop: tokio_util::sync::CancellationToken,
) {
    drive_with_heartbeat(eventloop, tx, backoff, stop, None).await;
}

/// [`drive`], promising on `beat` when it will report next (for the
/// systemd watchdog): connected, within 1.5 x keep-alive (a PINGREQ is due
/// by then); connecting, within the connect timeout; backing off, when the
/// delay ends.
pub async fn drive_with_heartbeat(
    mut eventloop: rumqttc::EventLoop,
    tx: tokio::sync::mpsc::Sender<Link>,
    mut backoff: crate::sys::backoff::Backoff,
    stop: tokio_util::sync::CancellationToken,
    beat: Option<Arc<crate::sys::systemd::Heartbeat>>,
) {
    use rumqttc::{Event, Incoming, Outgoing};
    let mut state = ConnLog::default();
    let promise = |within: Duration| {
        if let Some(b) = &beat {
            b.due_by(std::time::Instant::now() + within);
        }
    };
    loop {
        promise(if state.is_connected() {
            eventloop.options.keep_alive().mul_f32(1.5)
        } else {
            eventloop.options.connect_timeout()
        });
        let polled = tokio::select! {
            p = eventloop.poll() => p,
            () = stop.cancelled(), if !state.is_connected() => return,
        };
        match polled {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                backoff.reset();
                // From now on, reconnects resume this session.
                eventloop.options.set_clean_start(false);
                let broker_receive_max = ack.properties.as_ref().and_then(|p| p.receive_max);
                let shared_subscriptions = ack
                    .properties
                    .as_ref()
                    .and_then(|p| p.shared_subscription_available)
                    != Some(0);
                state.connected(&format!(
                    "connected to the broker (session {}, broker receive maximum {})",
                    if ack.session_present {
                        "resumed"
                    } else {
                        "new"
                    },
                    broker_receive_max.map_or_else(|| "65535".to_string(), |r| r.to_string())
                ));
                let _ = tx
                    .send(Link::Connected {
                        session_present: ack.session_present,
                        broker_receive_max,
                        shared_subscriptions,
                    })
                    .await;
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let _ = tx.send(Link::Message(Box::new(p))).await;
            }
            Ok(Event::Incoming(Incoming::Disconnect(d))) => {
                log::warn!(
                    "the broker closed the connection: {:?}{}",
                    d.reason_code,
                    d.properties
                        .as_ref()
                        .and_then(|p| p.reason_string.as_ref())
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(Event::Outgoing(Outgoing::PingReq)) => log::trace!("PINGREQ sent"),
            Ok(_) => {}
            Err(rumqttc::ConnectionError::RequestsDone) => return,
            Err(e) => {
                let delay = backoff.next_delay();
                let was_connected = state.is_connected();
                state.failed(&e, delay);
                if was_connected {
                    let _ = tx.send(Link::Down).await;
                }
                promise(delay);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(resume: bool) -> Endpoint {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Endpoint {
            host: "localhost".into(),
            port: 8883,
            client_id: "c".into(),
            username: Some("u".into()),
            password: Some("p".into()),
            tls: Arc::new(tls),
            keep_alive_secs: 7,
            connect_timeout: Duration::from_secs(3),
            session_expiry_secs: 60,
            receive_maximum: 13,
            resume_on_start: resume,
        }
    }

    #[test]
    fn options_carry_receive_maximum_session_expiry_and_keep_alive() {
        let o = endpoint(false).options(None);
        assert_eq!(
            o.receive_maximum(),
            Some(13),
            "the daemon sends a Receive Maximum"
        );
        assert_eq!(o.session_expiry_interval(), Some(60));
        assert_eq!(o.keep_alive(), Duration::from_secs(7));
        assert_eq!(o.max_packet_size(), Some(MAX_PACKET));
        assert!(
            o.clean_start(),
            "a new daemon process starts a clean session"
        );
        assert!(
            !endpoint(true).options(None).clean_start(),
            "the notifier resumes its session"
        );
    }
}
