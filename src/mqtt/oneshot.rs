//! What the one-shot commands (`thermalertd drill`, `thermalert-notifier
//! status`) share: a current-thread runtime, and a short-lived MQTT
//! connection under a client id of its own (`<client_id>-<suffix>`) with a
//! clean, non-persistent session, so that the program's own session is
//! left alone.

use std::time::Duration;

use rumqttc::AsyncClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::mqtt::conn::{self, Endpoint, Link};
use crate::sys::backoff::Backoff;

/// A current-thread runtime; `None` (the reason logged) when none can be
/// made.
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            log::error!("cannot start the runtime: {e}");
            None
        }
    }
}

/// A one-shot command's connection: the client, and the connection's
/// events as the driver reports them.
pub struct Connection {
    pub client: AsyncClient,
    pub links: mpsc::Receiver<Link>,
    stop: CancellationToken,
    driver: JoinHandle<()>,
}

impl Connection {
    /// Starts connecting to `endpoint` as `<client_id>-<suffix>`, clean
    /// start, no session expiry; `queue` events are buffered. Runs within
    /// a runtime (it spawns the driver).
    pub fn open(mut endpoint: Endpoint, suffix: &str, queue: usize) -> Connection {
        endpoint.client_id = format!("{}-{suffix}", endpoint.client_id);
        endpoint.session_expiry_secs = 0;
        endpoint.resume_on_start = false;
        let (client, eventloop) = AsyncClient::builder(endpoint.options(None))
            .capacity(16)
            .build();
        let stop = CancellationToken::new();
        let (tx, links) = mpsc::channel(queue);
        let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        let driver = tokio::spawn(conn::drive(eventloop, tx, backoff, stop.clone()));
        Connection {
            client,
            links,
            stop,
            driver,
        }
    }

    /// Disconnects, and gives the driver up to 2 s to finish.
    pub async fn close(self) {
        let _ = self.client.disconnect().await;
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.driver).await;
    }
}
