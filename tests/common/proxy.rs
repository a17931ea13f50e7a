//! A test-only MQTT proxy that terminates TLS on both sides, so it sees
//! plaintext MQTT between a client and the test broker, and forwards whole
//! packets (it parses just the fixed header: the packet type in the high
//! nibble of byte 0, then the Remaining Length varint).
//!
//! It can be told to cut the connection (close both sides) right after a
//! chosen packet type has passed in a chosen direction, once or N times,
//! and to freeze all traffic (stop forwarding without closing) until
//! released. At a cut the packet, the TLS close and the FIN leave in one
//! TCP write, so the receiver reads the packet and the end of the
//! connection together. The client connects to [`Proxy::port`] as `localhost` with its
//! normal configuration: the proxy serves the broker's own certificate
//! (the test PKI's SANs list localhost and 127.0.0.1) and trusts the test
//! CA towards the broker.
//!
//! A cut can be limited to one QoS 2 flow: the PUBLISH on a topic
//! containing a given text with a non-empty payload, and the PUBREC,
//! PUBREL and PUBCOMP that carry its packet id in their proper directions.
//! That keeps a cut away from the other traffic (status, readings, retained
//! clears) that shares the connection.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const PINGREQ: u8 = 12;
pub const PINGRESP: u8 = 13;

/// The name of a packet type, for messages.
pub fn packet_name(kind: u8) -> &'static str {
    match kind {
        CONNECT => "CONNECT",
        CONNACK => "CONNACK",
        PUBLISH => "PUBLISH",
        PUBACK => "PUBACK",
        PUBREC => "PUBREC",
        PUBREL => "PUBREL",
        PUBCOMP => "PUBCOMP",
        8 => "SUBSCRIBE",
        9 => "SUBACK",
        PINGREQ => "PINGREQ",
        PINGRESP => "PINGRESP",
        14 => "DISCONNECT",
        _ => "other",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// From the client to the broker.
    ClientToBroker,
    /// From the broker to the client.
    BrokerToClient,
}

impl Dir {
    fn flip(self) -> Dir {
        match self {
            Dir::ClientToBroker => Dir::BrokerToClient,
            Dir::BrokerToClient => Dir::ClientToBroker,
        }
    }
}

/// When to cut.
#[derive(Debug, Clone)]
struct Rule {
    dir: Dir,
    kind: u8,
    /// Only packets of the QoS 2 flow of a PUBLISH whose topic contains
    /// this (and whose payload is not empty).
    topic: Option<String>,
    remaining: usize,
    /// Freeze all traffic at the cut (the client's reconnect is held).
    then_freeze: bool,
}

/// One packet that passed, for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub dir: Dir,
    pub kind: u8,
    /// The proxy's connection number, from 1.
    pub connection: usize,
    /// Whether it belongs to a QoS 2 flow the cut rule tracks.
    pub in_flow: bool,
}

#[derive(Default)]
struct State {
    rule: Option<Rule>,
    /// QoS 2 flows of PUBLISHes matching the rule's topic: (direction of
    /// the PUBLISH, packet id).
    flows: HashSet<(Dir, u16)>,
    cuts: usize,
    connections: usize,
    passed: Vec<Passed>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    frozen: watch::Sender<bool>,
}

impl Shared {
    /// Records a packet about to be forwarded; returns whether the
    /// connection is to be cut right after it.
    fn passing(&self, dir: Dir, pkt: &[u8], connection: usize) -> bool {
        let kind = pkt[0] >> 4;
        let mut st = self.state.lock().expect("lock");
        let Some(rule) = st.rule.clone() else {
            st.passed.push(Passed {
                dir,
                kind,
                connection,
                in_flow: false,
            });
            self.changed.notify_all();
            return false;
        };
        let in_flow = match &rule.topic {
            None => true,
            Some(t) => match kind {
                PUBLISH => match publish_flow(pkt) {
                    Some((topic, pid, non_empty)) if non_empty && topic.contains(t.as_str()) => {
                        st.flows.insert((dir, pid));
                        true
                    }
                    _ => false,
                },
                // The receiver answers PUBREC and PUBCOMP; the sender PUBREL.
                PUBREC | PUBCOMP => {
                    packet_id(pkt).is_some_and(|pid| st.flows.contains(&(dir.flip(), pid)))
                }
                PUBREL => packet_id(pkt).is_some_and(|pid| st.flows.contains(&(dir, pid))),
                _ => false,
            },
        };
        st.passed.push(Passed {
            dir,
            kind,
            connection,
            in_flow,
        });
        let cut = in_flow && rule.remaining > 0 && rule.dir == dir && rule.kind == kind;
        if cut {
            if let Some(r) = st.rule.as_mut() {
                r.remaining -= 1;
            }
            st.cuts += 1;
            if rule.then_freeze {
                self.frozen.send_replace(true);
            }
            eprintln!(
                "proxy: cutting connection {connection} after {} ({dir:?})",
                packet_name(kind)
            );
        }
        self.changed.notify_all();
        cut
    }
}

/// The Remaining Length varint at `buf[1..]`: (value, bytes it took), or
/// `None` if incomplete. Panics on a malformed one (more than 4 bytes).
fn remaining_length(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    panic!("proxy: malformed Remaining Length");
}

/// The length of the first whole packet in `buf`, if it holds one.
pub fn whole_packet(buf: &[u8]) -> Option<usize> {
    let (len, n) = remaining_length(buf)?;
    let total = 1 + n + len;
    (buf.len() >= total).then_some(total)
}

/// The packet id of a PUBACK/PUBREC/PUBREL/PUBCOMP.
fn packet_id(pkt: &[u8]) -> Option<u16> {
    let (_, n) = remaining_length(pkt)?;
    let b = pkt.get(1 + n..3 + n)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// A QoS 2 PUBLISH's topic, packet id, and whether its payload is not
/// empty (MQTT v5: topic, packet id, properties, payload).
fn publish_flow(pkt: &[u8]) -> Option<(String, u16, bool)> {
    if (pkt[0] >> 1) & 3 != 2 {
        return None;
    }
    let (_, n) = remaining_length(pkt)?;
    let body = pkt.get(1 + n..)?;
    let tlen = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let topic = String::from_utf8_lossy(body.get(2..2 + tlen)?).into_owned();
    let at = 2 + tlen;
    let pid = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
    // Properties length (a varint), then the properties, then the payload.
    let mut plen = 0usize;
    let mut i = at + 2;
    for shift in 0..4 {
        let b = *body.get(i)?;
        i += 1;
        plen |= usize::from(b & 0x7f) << (7 * shift);
        if b & 0x80 == 0 {
            break;
        }
    }
    let payload_at = i + plen;
    Some((topic, pid, body.len() > payload_at))
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    _rt: tokio::runtime::Runtime,
}

impl Proxy {
    /// A proxy in front of the broker on `broker_port`, serving the
    /// certificate in `pki_dir` (server.crt, server.key) and trusting its
    /// ca.crt towards the broker.
    pub fn start(pki_dir: &Path, broker_port: u16) -> Proxy {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(pki_dir.join("server.crt"))
                .expect("server.crt")
                .collect::<Result<_, _>>()
                .expect("server.crt");
        let key = PrivateKeyDer::from_pem_file(pki_dir.join("server.key")).expect("server.key");
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(pki_dir.join("ca.crt")).expect("ca.crt") {
            roots.add(c.expect("ca.crt")).expect("add CA");
        }
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            frozen: watch::channel(false).0,
        });
        let s = shared.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let connection = {
                    let mut st = s.state.lock().expect("lock");
                    st.connections += 1;
                    s.changed.notify_all();
                    st.connections
                };
                let (acceptor, connector, s) = (acceptor.clone(), connector.clone(), s.clone());
                tokio::spawn(async move {
                    let Ok(client) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(tcp) = TcpStream::connect(("127.0.0.1", broker_port)).await else {
                        return;
                    };
                    let _ = tcp.set_nodelay(true);
                    let name = ServerName::try_from("localhost").expect("name");
                    let Ok(broker) = connector.connect(name, tcp).await else {
                        return;
                    };
                    relay(client, broker, s, connection).await;
                });
            }
        });
        Proxy {
            port,
            shared,
            _rt: rt,
        }
    }

    /// Cuts the connection right after `times` packets of type `kind` have
    /// passed in direction `dir` (any packets of that type).
    pub fn cut_after(&self, dir: Dir, kind: u8, times: usize) {
        self.set_rule(dir, kind, None, times, false);
    }

    /// Like [`cut_after`](Self::cut_after), counting only the packets of
    /// QoS 2 flows whose PUBLISH's topic contains `topic` and carries a
    /// payload.
    pub fn cut_in_flow(&self, topic: &str, dir: Dir, kind: u8, times: usize) {
        self.set_rule(dir, kind, Some(topic.to_string()), times, false);
    }

    /// Like [`cut_in_flow`](Self::cut_in_flow) once, then freezes all
    /// traffic (as [`freeze`](Self::freeze)) so that the client cannot
    /// resume its session before the test is done with it.
    pub fn cut_in_flow_then_freeze(&self, topic: &str, dir: Dir, kind: u8) {
        self.set_rule(dir, kind, Some(topic.to_string()), 1, true);
    }

    fn set_rule(&self, dir: Dir, kind: u8, topic: Option<String>, times: usize, then_freeze: bool) {
        let mut st = self.shared.state.lock().expect("lock");
        st.rule = Some(Rule {
            dir,
            kind,
            topic,
            remaining: times,
            then_freeze,
        });
        st.flows.clear();
    }

    /// Stops forwarding in both directions, on every connection (new ones
    /// included), without closing anything.
    pub fn freeze(&self) {
        self.shared.frozen.send_replace(true);
    }

    /// Forwards again what was held, and everything after.
    pub fn unfreeze(&self) {
        self.shared.frozen.send_replace(false);
    }

    /// How many cuts were made so far.
    pub fn cuts(&self) -> usize {
        self.shared.state.lock().expect("lock").cuts
    }

    /// How many connections clients made to the proxy so far.
    pub fn connections(&self) -> usize {
        self.shared.state.lock().expect("lock").connections
    }

    /// Every packet that passed so far.
    pub fn passed(&self) -> Vec<Passed> {
        self.shared.state.lock().expect("lock").passed.clone()
    }

    /// Waits until `n` cuts were made; panics after `timeout`.
    pub fn wait_cuts(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().expect("lock");
        while st.cuts < n {
            let now = Instant::now();
            assert!(
                now < deadline,
                "proxy: {} of {n} cuts after {timeout:?}",
                st.cuts
            );
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .expect("wait")
                .0;
        }
    }
}

/// Forwards both directions until one ends (end of stream, error or cut),
/// then closes both sides with a FIN (the side a cut's packet went to also
/// gets the TLS close_notify in the same write as the packet, see
/// [`write_last`]; the other side none: a cut, not a goodbye), then reads
/// what is left, so that the close does not become a reset that could make
/// a peer discard what was passed.
///
/// One task owns both streams: what was read is written after the read
/// completes, so nothing passes after a cut's packet.
async fn relay(
    mut client: tokio_rustls::server::TlsStream<TcpStream>,
    mut broker: tokio_rustls::client::TlsStream<TcpStream>,
    shared: Arc<Shared>,
    connection: usize,
) {
    let mut frozen = shared.frozen.subscribe();
    let (mut to_broker, mut to_client) = (Vec::new(), Vec::new());
    let (mut c_chunk, mut b_chunk) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    'relay: loop {
        if !*frozen.borrow_and_update() {
            for (buf, dir) in [
                (&mut to_broker, Dir::ClientToBroker),
                (&mut to_client, Dir::BrokerToClient),
            ] {
                while let Some(len) = whole_packet(buf) {
                    let pkt: Vec<u8> = buf.drain(..len).collect();
                    let cut = shared.passing(dir, &pkt, connection);
                    let written = match (dir, cut) {
                        (Dir::ClientToBroker, false) => write(&mut broker, &pkt).await,
                        (Dir::BrokerToClient, false) => write(&mut client, &pkt).await,
                        (Dir::ClientToBroker, true) => {
                            let (tcp, tls) = broker.get_mut();
                            write_last(tcp, tls, &pkt).await
                        }
                        (Dir::BrokerToClient, true) => {
                            let (tcp, tls) = client.get_mut();
                            write_last(tcp, tls, &pkt).await
                        }
                    };
                    if !written || cut {
                        break 'relay;
                    }
                }
            }
        }
        tokio::select! {
            r = client.read(&mut c_chunk) => match r {
                Ok(0) | Err(_) => break 'relay,
                Ok(n) => to_broker.extend_from_slice(&c_chunk[..n]),
            },
            r = broker.read(&mut b_chunk) => match r {
                Ok(0) | Err(_) => break 'relay,
                Ok(n) => to_client.extend_from_slice(&b_chunk[..n]),
            },
            _ = frozen.changed() => {}
        }
    }
    let (mut c, mut b) = (client.into_inner().0, broker.into_inner().0);
    let _ = tokio::join!(c.shutdown(), b.shutdown());
    tokio::join!(drain(c), drain(b));
}

/// Writes `pkt` and the TLS close_notify in one TCP write, then FIN: the
/// packet and the end of the connection arrive together, so the peer
/// reads both in one go (the harshest timing for its packet handling).
async fn write_last<D>(
    tcp: &mut TcpStream,
    tls: &mut rustls::ConnectionCommon<D>,
    pkt: &[u8],
) -> bool {
    use std::io::Write;
    if tls.writer().write_all(pkt).is_err() {
        return false;
    }
    tls.send_close_notify();
    let mut out = Vec::new();
    while tls.wants_write() {
        if tls.write_tls(&mut out).is_err() {
            return false;
        }
    }
    tcp.write_all(&out).await.is_ok() && tcp.shutdown().await.is_ok()
}

async fn write<S: AsyncWrite + Unpin>(s: &mut S, pkt: &[u8]) -> bool {
    s.write_all(pkt).await.is_ok() && s.flush().await.is_ok()
}

async fn drain(mut tcp: TcpStream) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}
