//! The sensor side of the daemon: which sensors to watch
//! ([`adopt_unconfigured`]) and the sensor thread that sweeps them
//! ([`spawn`]). Blocking reads (a w1 conversion takes 750 ms) run on this
//! thread, never on the runtime.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::sensor::{self, Sample};
use crate::sys::systemd::Heartbeat;

/// Reports sensors on the bus that the config does not name, and
/// configured ones that are missing; with `monitor_unconfigured`, adds the
/// former with the default thresholds.
pub fn adopt_unconfigured(mut cfg: Config, backend: &mut dyn sensor::Backend) -> Config {
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

/// One sweep's results.
pub struct Sweep {
    pub samples: Vec<Sample>,
    /// The backend's status note after this sweep (a slower mode, and why).
    pub note: Option<String>,
}

/// The sensor thread: sweeps every poll interval until `stop` is
/// cancelled (or the sweeps' receiver is gone), takes reloaded
/// configurations from `reload` (applied before the next sweep), and
/// promises on `beat` when its next sweep will be done. Dropping the
/// `reload` sender wakes it from its sleep at once (at shutdown).
pub fn spawn(
    cfg: &Config,
    mut backend: Box<dyn sensor::Backend>,
    tx: mpsc::Sender<Sweep>,
    stop: CancellationToken,
    beat: Arc<Heartbeat>,
    reload: Receiver<Config>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut ids: Vec<String> = cfg.sensor.iter().map(|s| s.id.clone()).collect();
    let mut interval = Duration::from_millis(cfg.sensors.poll_interval_ms);
    std::thread::Builder::new()
        .name("sensors".into())
        .spawn(move || {
            let mut next = Instant::now();
            let mut reloaded: Vec<Config> = Vec::new();
            // A backend that learns mid-sweep how long the sweep takes
            // (the w1 bulk conversion confirmed or not) re-promises.
            let b = beat.clone();
            backend.set_deadline_hook(Arc::new(move |rest| b.due_by(Instant::now() + rest)));
            beat.due_by(next + backend.sweep_budget(ids.len()));
            while !stop.is_cancelled() {
                reloaded.extend(reload.try_iter());
                for c in reloaded.drain(..) {
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
                // Sleep until the next sweep; a reload waits for it, a
                // shutdown does not.
                loop {
                    let now = Instant::now();
                    if next <= now || stop.is_cancelled() {
                        break;
                    }
                    match reload.recv_timeout(next - now) {
                        Ok(c) => reloaded.push(c),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::{BackendError, Found};

    struct Fake;

    impl sensor::Backend for Fake {
        fn sweep(&mut self, ids: &[String]) -> Vec<Sample> {
            ids.iter()
                .map(|id| Sample {
                    id: id.clone(),
                    read: Ok(20.0),
                })
                .collect()
        }

        fn scan(&mut self) -> Result<Vec<Found>, BackendError> {
            Ok(Vec::new())
        }
    }

    fn config(dir: &std::path::Path, poll_ms: u64) -> Config {
        std::fs::write(dir.join("ca.crt"), "x").expect("write");
        let src = format!(
            "gateway_id = \"gw1\"\n[mqtt]\nhost = \"localhost\"\nca_file = \"ca.crt\"\n[sensors]\nbackend = \"sim\"\npoll_interval_ms = {poll_ms}\n[[sensor]]\nid = \"a\"\ncritical_above = 40.0\n"
        );
        Config::parse(&src, &dir.join("t.toml")).expect("valid")
    }

    #[test]
    fn the_sensor_thread_stops_at_once_on_shutdown_even_mid_sleep() {
        let dir = tempfile::tempdir().expect("tmp");
        // An hour between sweeps: only the shutdown can end the sleep.
        let cfg = config(dir.path(), 3_600_000);
        let (tx, mut rx) = mpsc::channel(4);
        let (ctl, ctl_rx) = std::sync::mpsc::channel();
        let stop = CancellationToken::new();
        let beat = Arc::new(Heartbeat::new("sensor loop", Instant::now()));
        let t = spawn(&cfg, Box::new(Fake), tx, stop.clone(), beat, ctl_rx).expect("thread");
        let first = rx.blocking_recv().expect("the first sweep");
        assert_eq!(first.samples.len(), 1);
        stop.cancel();
        drop(ctl);
        let started = Instant::now();
        t.join().expect("joined");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not after its sleep"
        );
        assert!(rx.blocking_recv().is_none(), "no sweep after the shutdown");
    }

    #[test]
    fn a_reload_reaches_the_next_sweep() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = config(dir.path(), 50);
        let (tx, mut rx) = mpsc::channel(4);
        let (ctl, ctl_rx) = std::sync::mpsc::channel();
        let stop = CancellationToken::new();
        let beat = Arc::new(Heartbeat::new("sensor loop", Instant::now()));
        let t = spawn(&cfg, Box::new(Fake), tx, stop.clone(), beat, ctl_rx).expect("thread");
        assert_eq!(rx.blocking_recv().expect("sweep").samples[0].id, "a");
        let mut two = cfg.clone();
        two.sensor.push(cfg.sensors.defaults.sensor("b"));
        ctl.send(two).expect("send");
        // Sweeps already under way may still list one sensor.
        let ids = loop {
            let s = rx.blocking_recv().expect("sweep").samples;
            if s.len() == 2 {
                break s.into_iter().map(|s| s.id).collect::<Vec<_>>();
            }
        };
        assert_eq!(ids, vec!["a", "b"]);
        stop.cancel();
        drop(rx);
        t.join().expect("joined");
    }
}
