//! systemd integration: `sd_notify(3)` messages and the watchdog's
//! bookkeeping.
//!
//! - `READY=1` once the configuration is loaded and the sensors are set up
//!   (a broker that is down shows in `STATUS=`, it does not fail the boot);
//!   `RELOADING=1` ... `READY=1` around a SIGHUP reload; `STOPPING=1` on
//!   SIGTERM before the offline status is published.
//! - `STATUS=` a line a person reads in `systemctl status`: connected or
//!   not, how many sensors, the last alert, a stalled loop. Sent only when
//!   it changes.
//! - `WATCHDOG=1` at half of `WATCHDOG_USEC`, from the daemon's main loop,
//!   and only while every [`Heartbeat`] (the sensor thread, the MQTT
//!   connection driver) is on time: each loop promises when it will report
//!   next, and a loop that misses its promise stops the pings.
//!
//! Outside systemd (no `NOTIFY_SOCKET`) nothing is sent, no status text is
//! built and no watchdog timer runs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::config::Config;
use crate::core::alert::AlertLevel;
use crate::mqtt::payload::Alert;

/// How late a loop may report past its own estimate before it counts as
/// stalled (scheduling, a loaded SD card, a busy CPU).
pub const SLACK: Duration = Duration::from_secs(2);

/// A loop's promise to report again by a given instant.
#[derive(Debug)]
pub struct Heartbeat {
    name: &'static str,
    due: Mutex<Instant>,
}

impl Heartbeat {
    /// A heartbeat first due at `due`.
    pub fn new(name: &'static str, due: Instant) -> Self {
        Self {
            name,
            due: Mutex::new(due),
        }
    }

    /// The loop made progress and will report again by `due` (plus [`SLACK`]).
    pub fn due_by(&self, due: Instant) {
        *self.due.lock().unwrap_or_else(|p| p.into_inner()) = due + SLACK;
    }

    pub fn due(&self) -> Instant {
        *self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The loops that are late at `now`, with how late: pure.
pub fn overdue(now: Instant, beats: &[(&'static str, Instant)]) -> Vec<(&'static str, Duration)> {
    beats
        .iter()
        .filter(|(_, due)| now > *due)
        .map(|(name, due)| (*name, now - *due))
        .collect()
}

/// What a watchdog tick should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// Every loop is on time: send `WATCHDOG=1`.
    Ping,
    /// The loops named just became late: withhold the ping and say so.
    Stalled(Vec<&'static str>),
    /// Still late: withhold the ping.
    StillStalled,
    /// Every loop is on time again: ping, and say so.
    Recovered,
}

/// The watchdog's state between ticks: pure.
#[derive(Debug, Default, Clone)]
pub struct Watchdog {
    stalled: Vec<&'static str>,
}

impl Watchdog {
    pub fn tick(&mut self, now: Instant, beats: &[(&'static str, Instant)]) -> Tick {
        let late: Vec<&'static str> = overdue(now, beats).into_iter().map(|(n, _)| n).collect();
        let was = std::mem::replace(&mut self.stalled, late);
        match (was.is_empty(), self.stalled.is_empty()) {
            (true, true) => Tick::Ping,
            (false, true) => Tick::Recovered,
            (_, false) if was == self.stalled => Tick::StillStalled,
            (_, false) => Tick::Stalled(self.stalled.clone()),
        }
    }

    pub fn stalled(&self) -> &[&'static str] {
        &self.stalled
    }
}

/// The last alert, as the status line shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LastAlert {
    pub level: AlertLevel,
    pub name: String,
    pub celsius: Option<f64>,
    pub ts: String,
}

impl From<&Alert> for LastAlert {
    fn from(a: &Alert) -> Self {
        Self {
            level: a.level,
            name: a.name.clone(),
            celsius: a.celsius,
            ts: a.ts.clone(),
        }
    }
}

/// What the status line says.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusInfo {
    pub connected: bool,
    pub broker: String,
    pub sensors: usize,
    pub last_alert: Option<LastAlert>,
    /// The sensor backend's note (a slower conversion mode, and why).
    pub note: Option<String>,
}

impl StatusInfo {
    pub fn new(cfg: &Config, connected: bool, last_alert: Option<&Alert>) -> Self {
        Self {
            connected,
            broker: format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port),
            sensors: cfg.sensor.len(),
            last_alert: last_alert.map(LastAlert::from),
            note: None,
        }
    }

    /// With the sensor backend's note.
    pub fn with_note(mut self, note: Option<String>) -> Self {
        self.note = note;
        self
    }
}

/// The `STATUS=` text: pure.
pub fn status_text(s: &StatusInfo, stalled: &[&'static str]) -> String {
    let mut out = String::new();
    if !stalled.is_empty() {
        out.push_str(&format!("STALLED: {}; ", stalled.join(", ")));
    }
    if s.connected {
        out.push_str(&format!("connected to {}", s.broker));
    } else {
        out.push_str(&format!("not connected to {} (retrying)", s.broker));
    }
    out.push_str(&format!(
        "; {} sensor{}",
        s.sensors,
        if s.sensors == 1 { "" } else { "s" }
    ));
    match &s.last_alert {
        Some(a) => {
            out.push_str(&format!("; last alert: {} {}", a.level, a.name));
            if let Some(c) = a.celsius {
                out.push_str(&format!(" {c:.2} C"));
            }
            out.push_str(&format!(" at {}", a.ts));
        }
        None => out.push_str("; no alert yet"),
    }
    if let Some(n) = &s.note {
        out.push_str("; ");
        out.push_str(n);
    }
    out
}

/// The next tick of an optional interval; never, without one (no watchdog).
pub async fn tick(iv: &mut Option<tokio::time::Interval>) {
    match iv {
        Some(iv) => {
            iv.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The link to systemd's notify socket.
#[derive(Debug)]
pub struct Notify {
    enabled: bool,
    watchdog: Option<Duration>,
    dog: Watchdog,
    info: Option<StatusInfo>,
    sent: Option<String>,
}

impl Notify {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        Self {
            enabled,
            watchdog: if enabled {
                sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
            } else {
                None
            },
            dog: Watchdog::default(),
            info: None,
            sent: None,
        }
    }

    /// Whether the service manager listens (`NOTIFY_SOCKET` is set).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How often to check the heartbeats and ping: half `WATCHDOG_USEC`.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            log::debug!("sd_notify: {e}");
        }
    }

    /// `READY=1` with the status line.
    pub fn ready(&mut self, info: impl FnOnce() -> StatusInfo) {
        if !self.enabled {
            return;
        }
        let text = status_text(self.info.insert(info()), self.dog.stalled());
        self.send(&[NotifyState::Ready, NotifyState::Status(&text)]);
        self.sent = Some(text);
    }

    /// `STATUS=`, when the line changed; `info` is built only under systemd.
    pub fn status(&mut self, info: impl FnOnce() -> StatusInfo) {
        if !self.enabled {
            return;
        }
        let info = info();
        if self.info.as_ref() == Some(&info) {
            return;
        }
        self.info = Some(info);
        self.send_status();
    }

    fn send_status(&mut self) {
        let Some(info) = &self.info else { return };
        let text = status_text(info, self.dog.stalled());
        if self.sent.as_deref() != Some(text.as_str()) {
            self.send(&[NotifyState::Status(&text)]);
            self.sent = Some(text);
        }
    }

    /// `RELOADING=1` (with the monotonic time `Type=notify-reload` wants).
    pub fn reloading(&mut self) {
        if !self.enabled {
            return;
        }
        let mut states = vec![
            NotifyState::Reloading,
            NotifyState::Status("reloading the configuration"),
        ];
        if let Ok(m) = NotifyState::monotonic_usec_now() {
            states.push(m);
        }
        self.send(&states);
        self.sent = None;
    }

    /// `STOPPING=1`.
    pub fn stopping(&mut self) {
        if !self.enabled {
            return;
        }
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: publishing the offline status"),
        ]);
    }

    /// A watchdog tick: `WATCHDOG=1` when every heartbeat is on time; a
    /// stalled loop is logged once and shown in the status line.
    pub fn watchdog(&mut self, now: Instant, beats: &[&Heartbeat]) {
        if self.watchdog.is_none() {
            return;
        }
        let dues: Vec<(&'static str, Instant)> =
            beats.iter().map(|b| (b.name(), b.due())).collect();
        match self.dog.tick(now, &dues) {
            Tick::Ping => self.send(&[NotifyState::Watchdog]),
            Tick::StillStalled => {}
            Tick::Stalled(names) => {
                for (name, late) in overdue(now, &dues) {
                    log::warn!(
                        "watchdog: the {name} has made no progress for {:.1}s past its deadline; withholding WATCHDOG=1",
                        (late + SLACK).as_secs_f64()
                    );
                }
                log::debug!("stalled: {names:?}");
                self.send_status();
            }
            Tick::Recovered => {
                log::info!("watchdog: every loop is making progress again");
                self.send_status();
                self.send(&[NotifyState::Watchdog]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdue_lists_only_late_loops() {
        let t0 = Instant::now();
        let beats = [
            ("sensor loop", t0 + Duration::from_secs(1)),
            ("MQTT loop", t0 + Duration::from_secs(5)),
        ];
        assert!(overdue(t0, &beats).is_empty());
        assert_eq!(
            overdue(t0 + Duration::from_secs(3), &beats),
            vec![("sensor loop", Duration::from_secs(2))]
        );
        assert_eq!(overdue(t0 + Duration::from_secs(6), &beats).len(), 2);
    }

    #[test]
    fn the_watchdog_withholds_pings_while_a_loop_is_late() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Watchdog::default();
        let on_time = [("sensor loop", t0 + s(10)), ("MQTT loop", t0 + s(10))];
        assert_eq!(w.tick(t0, &on_time), Tick::Ping);
        assert_eq!(w.tick(t0 + s(1), &on_time), Tick::Ping);
        assert_eq!(
            w.tick(
                t0 + s(11),
                &[("sensor loop", t0 + s(10)), ("MQTT loop", t0 + s(20))]
            ),
            Tick::Stalled(vec!["sensor loop"])
        );
        assert_eq!(w.stalled(), ["sensor loop"]);
        assert_eq!(
            w.tick(
                t0 + s(12),
                &[("sensor loop", t0 + s(10)), ("MQTT loop", t0 + s(20))]
            ),
            Tick::StillStalled
        );
        // A second loop stalling is news.
        assert_eq!(
            w.tick(
                t0 + s(21),
                &[("sensor loop", t0 + s(10)), ("MQTT loop", t0 + s(20))]
            ),
            Tick::Stalled(vec!["sensor loop", "MQTT loop"])
        );
        assert_eq!(
            w.tick(
                t0 + s(22),
                &[("sensor loop", t0 + s(30)), ("MQTT loop", t0 + s(30))]
            ),
            Tick::Recovered
        );
        assert_eq!(
            w.tick(
                t0 + s(23),
                &[("sensor loop", t0 + s(30)), ("MQTT loop", t0 + s(30))]
            ),
            Tick::Ping
        );
    }

    #[test]
    fn a_heartbeat_adds_the_slack() {
        let t0 = Instant::now();
        let h = Heartbeat::new("sensor loop", t0);
        h.due_by(t0 + Duration::from_secs(1));
        assert_eq!(h.due(), t0 + Duration::from_secs(1) + SLACK);
    }

    fn info(connected: bool, last: Option<LastAlert>) -> StatusInfo {
        StatusInfo {
            connected,
            broker: "localhost:8883".into(),
            sensors: 3,
            last_alert: last,
            note: None,
        }
    }

    #[test]
    fn the_status_line_carries_the_sensor_backends_note() {
        let i = info(true, None).with_note(Some(
            "w1: converting per sensor (sensors.w1.bulk_read = false), about 2.4 s per sweep"
                .into(),
        ));
        assert_eq!(
            status_text(&i, &[]),
            "connected to localhost:8883; 3 sensors; no alert yet; w1: converting per sensor (sensors.w1.bulk_read = false), about 2.4 s per sweep"
        );
    }

    #[test]
    fn the_status_line_reads_well() {
        assert_eq!(
            status_text(&info(false, None), &[]),
            "not connected to localhost:8883 (retrying); 3 sensors; no alert yet"
        );
        let last = LastAlert {
            level: AlertLevel::Critical,
            name: "freezer".into(),
            celsius: Some(45.0),
            ts: "2026-01-01T00:00:00Z".into(),
        };
        assert_eq!(
            status_text(&info(true, Some(last)), &[]),
            "connected to localhost:8883; 3 sensors; last alert: CRITICAL freezer 45.00 C at 2026-01-01T00:00:00Z"
        );
        let fault = LastAlert {
            level: AlertLevel::Fault,
            name: "freezer".into(),
            celsius: None,
            ts: "t".into(),
        };
        let mut one = info(true, Some(fault));
        one.sensors = 1;
        assert_eq!(
            status_text(&one, &["sensor loop"]),
            "STALLED: sensor loop; connected to localhost:8883; 1 sensor; last alert: FAULT freezer at t"
        );
    }

    #[test]
    fn outside_systemd_nothing_is_built() {
        let mut n = Notify {
            enabled: false,
            watchdog: None,
            dog: Watchdog::default(),
            info: None,
            sent: None,
        };
        n.ready(|| panic!("status built outside systemd"));
        n.status(|| panic!("status built outside systemd"));
        n.reloading();
        n.stopping();
        n.watchdog(Instant::now(), &[]);
        assert!(n.watchdog_interval().is_none());
        assert!(n.sent.is_none());
    }
}
