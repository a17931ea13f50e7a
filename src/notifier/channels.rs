//! The notifier's channels beyond its terminal: desktop notifications
//! (freedesktop notifications over D-Bus) and `--exec CMD` hooks. Both run
//! off the MQTT loop, in their own tasks.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::core::alert::AlertLevel;
use crate::mqtt::payload::{self, Alert};

/// How many hooks may run at once; further alerts wait for a slot.
pub const MAX_CONCURRENT_HOOKS: usize = 4;

/// The environment a hook gets, besides the alert as JSON on stdin.
pub fn hook_env(a: &Alert) -> Vec<(&'static str, String)> {
    vec![
        ("THERMALERT_ID", a.id.clone()),
        ("THERMALERT_LEVEL", a.level.as_str().to_string()),
        ("THERMALERT_GATEWAY", a.gateway.clone()),
        ("THERMALERT_SENSOR", a.sensor.clone()),
        ("THERMALERT_NAME", a.name.clone()),
        (
            "THERMALERT_CELSIUS",
            a.celsius.map_or_else(String::new, |c| format!("{c:.2}")),
        ),
        ("THERMALERT_MESSAGE", a.message.clone()),
    ]
}

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// Exit status 0: the answer says `delivered`.
    Delivered,
    /// Anything else: the answer says `failed`, so the gateway escalates.
    Failed(String),
}

impl HookOutcome {
    pub fn status(&self) -> &'static str {
        match self {
            HookOutcome::Delivered => "delivered",
            HookOutcome::Failed(_) => "failed",
        }
    }
}

/// `--exec CMD`: runs `sh -c CMD` per alert.
#[derive(Debug, Clone)]
pub struct ExecHook {
    pub command: String,
    pub timeout: Duration,
    slots: Arc<Semaphore>,
}

impl ExecHook {
    pub fn new(command: String, timeout: Duration) -> Self {
        Self {
            command,
            timeout,
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_HOOKS)),
        }
    }

    /// Runs the hook for `a` and waits for it (at most `timeout` once it
    /// started). On timeout its whole process group is killed.
    pub async fn run(&self, a: &Alert) -> HookOutcome {
        let Ok(_slot) = self.slots.acquire().await else {
            return HookOutcome::Failed("hook slots closed".into());
        };
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(&self.command)
            .envs(hook_env(a))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return HookOutcome::Failed(format!("cannot start sh: {e}")),
        };
        let pid = child.id();
        if let Some(mut stdin) = child.stdin.take() {
            let mut body = payload::encode(a);
            body.push(b'\n');
            // A hook that does not read its stdin is fine.
            let _ = stdin.write_all(&body).await;
        }
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => {
                for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
                    let text = String::from_utf8_lossy(bytes);
                    let text = text.trim();
                    if !text.is_empty() {
                        log::info!(
                            "hook for alert {} {what}: {}",
                            a.id,
                            text.chars().take(1000).collect::<String>()
                        );
                    }
                }
                if out.status.success() {
                    HookOutcome::Delivered
                } else {
                    HookOutcome::Failed(format!("exited with {}", out.status))
                }
            }
            Ok(Err(e)) => HookOutcome::Failed(format!("cannot wait for the hook: {e}")),
            Err(_) => {
                if let Some(pid) = pid {
                    // Also its children (a mailer, curl): the whole group.
                    let _ = tokio::process::Command::new("kill")
                        .args(["-KILL", "--", &format!("-{pid}")])
                        .stderr(Stdio::null())
                        .status()
                        .await;
                }
                HookOutcome::Failed(format!("timed out after {:?}", self.timeout))
            }
        }
    }
}

/// Desktop notifications sent at once; in a flood the alerts beyond them
/// are left out and counted in the next notification.
pub const MAX_DESKTOP_IN_FLIGHT: usize = 8;

/// After a failure, how long WARNING and RESOLVED alerts are not offered
/// to the desktop (each attempt opens a D-Bus connection; without a session
/// bus, every alert of a flood would pay for a failed one). CRITICAL, FAULT
/// and TEST alerts are always tried.
pub const DESKTOP_RETRY: Duration = Duration::from_secs(10);

/// Freedesktop desktop notifications. When no notification service can be
/// reached, says so once, tries again after [`DESKTOP_RETRY`], and carries
/// on (the terminal still shows alerts).
#[derive(Debug, Clone, Default)]
pub struct Desktop {
    state: Arc<DesktopState>,
}

#[derive(Debug, Default)]
struct DesktopState {
    warned: AtomicBool,
    in_flight: AtomicUsize,
    /// Alerts left out since the last notification (too many at once).
    left_out: AtomicUsize,
    /// While the service is unreachable: not before this instant.
    retry_at: Mutex<Option<Instant>>,
}

/// The notification's title line.
pub fn summary(a: &Alert) -> String {
    match a.level {
        AlertLevel::Test => format!("TEST (fire drill) from {}", a.gateway),
        _ => format!("{} {} on {}", a.level, a.name, a.gateway),
    }
}

impl Desktop {
    /// Shows `a` in a task of its own; never blocks the caller. During the
    /// back-off after a failure only CRITICAL, FAULT and TEST alerts are
    /// tried; the others are counted, like those over the in-flight cap,
    /// and the next notification (or a summary once the desktop is free
    /// again) says how many were left out.
    pub fn show(&self, a: &Alert) {
        let st = &self.state;
        let backing_off = st
            .retry_at
            .lock()
            .is_ok_and(|r| r.is_some_and(|t| Instant::now() < t));
        let in_flight = st.in_flight.fetch_add(1, Ordering::AcqRel);
        if !offer_to_desktop(a.level, backing_off, in_flight) {
            st.in_flight.fetch_sub(1, Ordering::AcqRel);
            st.left_out.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let body = match st.left_out.swap(0, Ordering::Relaxed) {
            0 => a.message.clone(),
            n => format!("{}\n{}", a.message, left_out_line(n)),
        };
        spawn_notification(
            self.state.clone(),
            summary(a),
            body,
            a.level == AlertLevel::Critical,
        );
    }
}

/// Whether an alert goes to the desktop now (else it is counted as left
/// out): never past the in-flight cap; during the back-off after a failure,
/// only the alerts that must reach a person (CRITICAL, FAULT, TEST).
fn offer_to_desktop(level: AlertLevel, backing_off: bool, in_flight: usize) -> bool {
    let urgent = matches!(
        level,
        AlertLevel::Critical | AlertLevel::Fault | AlertLevel::Test
    );
    in_flight < MAX_DESKTOP_IN_FLIGHT && (urgent || !backing_off)
}

fn left_out_line(n: usize) -> String {
    format!("(and {n} more alert(s) not shown here; see the terminal)")
}

/// Sends one notification (`in_flight` already counts it); when it is the
/// last one out and alerts were left out meanwhile, a summary follows.
fn spawn_notification(st: Arc<DesktopState>, summary: String, body: String, critical: bool) {
    tokio::spawn(async move {
        let res = tokio::time::timeout(
            Duration::from_secs(5),
            show_notification(summary, body, critical),
        )
        .await;
        let still_out = st.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
        let err = match res {
            Ok(Ok(())) => {
                if let Ok(mut retry_at) = st.retry_at.lock() {
                    *retry_at = None;
                }
                if still_out == 0 {
                    let n = st.left_out.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        st.in_flight.fetch_add(1, Ordering::AcqRel);
                        spawn_notification(
                            st.clone(),
                            "thermalert".into(),
                            left_out_line(n),
                            false,
                        );
                    }
                }
                return;
            }
            Ok(Err(e)) => e,
            Err(_) => "no answer from the notification service in 5 s".into(),
        };
        if let Ok(mut retry_at) = st.retry_at.lock() {
            *retry_at = Some(Instant::now() + DESKTOP_RETRY);
        }
        if !st.warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "desktop notifications unavailable ({err}); alerts are still printed here (--no-desktop turns this off)"
            );
        } else {
            log::debug!("desktop notification failed: {err}");
        }
    });
}

#[cfg(target_os = "linux")]
async fn show_notification(summary: String, body: String, critical: bool) -> Result<(), String> {
    use notify_rust::{Notification, Timeout, Urgency};
    let mut n = Notification::new();
    n.appname("thermalert")
        .summary(&summary)
        .body(&body)
        .urgency(if critical {
            Urgency::Critical
        } else {
            Urgency::Normal
        });
    if critical {
        // Stays until dismissed.
        n.timeout(Timeout::Never);
    }
    n.show_async().await.map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(not(target_os = "linux"))]
async fn show_notification(_summary: String, _body: String, _critical: bool) -> Result<(), String> {
    Err("desktop notifications are only built on Linux".into())
}

/// The notifier's options for its channels, filter and watchers
/// (command line only).
#[derive(Debug, Clone, clap::Args)]
pub struct ChannelArgs {
    /// Run CMD with `sh -c` for each new alert: the alert as JSON on stdin
    /// and in THERMALERT_* environment variables; exit status 0 answers
    /// `delivered`, anything else (or the timeout) `failed`.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Seconds a --exec hook may run before it is killed and counts as failed [default: 30].
    #[arg(long, value_name = "SECS")]
    pub exec_timeout: Option<u64>,
    /// Handle only some alerts: gateway=NAME, sensor=ID_OR_NAME, level>=LEVEL
    /// (repeatable; same key: any of them, different keys: all).
    #[arg(long = "filter", value_name = "COND")]
    pub filter: Vec<String>,
    /// No desktop notifications.
    #[arg(long)]
    pub no_desktop: bool,
    /// Alarm when the broker connection is down for longer than this [default: 60].
    #[arg(long, value_name = "SECS")]
    pub broker_grace_secs: Option<u64>,
    /// Alarm when an online gateway sends no reading for this many of its poll intervals [default: 5].
    #[arg(long, value_name = "N")]
    pub stale_intervals: Option<u32>,
    /// ... or for this long, when the gateway does not announce its poll interval [default: 120].
    #[arg(long, value_name = "SECS")]
    pub stale_after_secs: Option<u64>,
    /// Share the alerts with the other notifiers of this group (MQTT v5
    /// shared subscription `$share/NAME/<prefix>/+/alerts/+`): each alert
    /// goes to one of them. Status and readings are still seen by all.
    #[arg(long, value_name = "NAME")]
    pub share_group: Option<String>,
}

/// The same options from the notifier's TOML file (keys as the long flags,
/// `_` for `-`); a flag given on the command line wins over its key.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelFile {
    pub exec: Option<String>,
    pub exec_timeout: Option<u64>,
    /// Used only when no --filter is given.
    pub filter: Option<Vec<String>>,
    pub no_desktop: Option<bool>,
    pub broker_grace_secs: Option<u64>,
    pub stale_intervals: Option<u32>,
    pub stale_after_secs: Option<u64>,
    pub share_group: Option<String>,
}

/// The resolved channels.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    pub exec: Option<ExecHook>,
    pub desktop: Option<Desktop>,
    pub filter: crate::notifier::filter::Filter,
    pub watch: crate::notifier::watch::WatchConfig,
    pub share_group: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("--filter {0}")]
    Filter(#[from] crate::notifier::filter::FilterError),
    #[error("--share-group {0:?}: use letters, digits, '-' and '_'")]
    ShareGroup(String),
}

impl Channels {
    /// The subscription filter for alerts: shared when in a group.
    pub fn alerts_filter(&self, prefix: &str) -> String {
        let all = crate::mqtt::topics::all_alerts(prefix);
        match &self.share_group {
            Some(g) => format!("$share/{g}/{all}"),
            None => all,
        }
    }
}

impl ChannelArgs {
    /// The channels from the flags, falling back to `file` key by key, then
    /// to the defaults.
    pub fn resolve(&self, file: &ChannelFile) -> Result<Channels, ChannelError> {
        let share_group = self.share_group.clone().or(file.share_group.clone());
        if let Some(g) = &share_group {
            if !crate::config::is_topic_word(g) {
                return Err(ChannelError::ShareGroup(g.clone()));
            }
        }
        let filter = if self.filter.is_empty() {
            file.filter.as_deref().unwrap_or_default()
        } else {
            &self.filter[..]
        };
        let exec_timeout = self.exec_timeout.or(file.exec_timeout).unwrap_or(30);
        Ok(Channels {
            share_group,
            exec: self
                .exec
                .clone()
                .or(file.exec.clone())
                .map(|c| ExecHook::new(c, Duration::from_secs(exec_timeout.max(1)))),
            desktop: (!(self.no_desktop || file.no_desktop.unwrap_or(false)))
                .then(Desktop::default),
            filter: crate::notifier::filter::Filter::parse(filter)?,
            watch: crate::notifier::watch::WatchConfig {
                stale_intervals: self
                    .stale_intervals
                    .or(file.stale_intervals)
                    .unwrap_or(5)
                    .max(1),
                stale_after: Duration::from_secs(
                    self.stale_after_secs
                        .or(file.stale_after_secs)
                        .unwrap_or(120)
                        .max(1),
                ),
                broker_grace: Duration::from_secs(
                    self.broker_grace_secs
                        .or(file.broker_grace_secs)
                        .unwrap_or(60),
                ),
            },
        })
    }
}

/// An alert standing for a watcher's event, shown and notified like a
/// CRITICAL (or RESOLVED when it ends). Its id starts with `watch-`.
pub fn watch_alert(e: &crate::notifier::watch::Event) -> Alert {
    let alarm = e.is_alarm();
    let gateway = e.gateway().unwrap_or("-").to_string();
    Alert {
        id: format!("watch-{}", uuid::Uuid::new_v4()),
        name: match e.gateway() {
            Some(g) => format!("gateway {g} {}", e.subject()),
            None => "broker connection".into(),
        },
        gateway,
        sensor: e.subject().into(),
        level: if alarm {
            AlertLevel::Critical
        } else {
            AlertLevel::Resolved
        },
        celsius: None,
        threshold: None,
        previous: Some(if alarm {
            crate::core::alert::Level::Normal
        } else {
            crate::core::alert::Level::Critical
        }),
        ts: crate::sys::timefmt::now_rfc3339(),
        message: e.message(),
        escalation: 0,
        clock_synced: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urgent_alerts_reach_the_desktop_during_the_back_off() {
        use AlertLevel::*;
        for level in [Critical, Fault, Test] {
            assert!(offer_to_desktop(level, true, 0), "{level:?}");
            assert!(!offer_to_desktop(level, true, MAX_DESKTOP_IN_FLIGHT), "cap");
        }
        for level in [Warning, Resolved] {
            assert!(!offer_to_desktop(level, true, 0), "{level:?} waits");
            assert!(offer_to_desktop(level, false, 0), "{level:?}");
            assert!(!offer_to_desktop(level, false, MAX_DESKTOP_IN_FLIGHT));
        }
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            c: ChannelArgs,
        }
        let file = ChannelFile {
            exec: Some("file-hook".into()),
            exec_timeout: Some(7),
            filter: Some(vec!["level>=CRITICAL".into()]),
            no_desktop: Some(true),
            broker_grace_secs: Some(11),
            stale_intervals: Some(3),
            stale_after_secs: Some(33),
            share_group: Some("ops".into()),
        };
        let none = T::parse_from(["t"]).c;
        let c = none.resolve(&file).expect("resolve");
        assert_eq!(
            c.exec.as_ref().map(|e| e.command.as_str()),
            Some("file-hook")
        );
        assert_eq!(
            c.exec.as_ref().map(|e| e.timeout),
            Some(Duration::from_secs(7))
        );
        assert!(c.desktop.is_none());
        assert!(!c.filter.accepts(&alert(AlertLevel::Warning)));
        assert_eq!(c.watch.broker_grace, Duration::from_secs(11));
        assert_eq!(c.watch.stale_intervals, 3);
        assert_eq!(c.watch.stale_after, Duration::from_secs(33));
        assert_eq!(c.share_group.as_deref(), Some("ops"));

        let flags = T::parse_from([
            "t",
            "--exec",
            "flag-hook",
            "--exec-timeout",
            "9",
            "--filter",
            "level>=WARNING",
            "--stale-intervals",
            "4",
            "--share-group",
            "night",
        ])
        .c;
        let c = flags.resolve(&file).expect("resolve");
        assert_eq!(
            c.exec.as_ref().map(|e| e.command.as_str()),
            Some("flag-hook")
        );
        assert_eq!(
            c.exec.as_ref().map(|e| e.timeout),
            Some(Duration::from_secs(9))
        );
        assert!(c.filter.accepts(&alert(AlertLevel::Warning)));
        assert_eq!(c.watch.stale_intervals, 4);
        assert_eq!(
            c.watch.broker_grace,
            Duration::from_secs(11),
            "from the file"
        );
        assert_eq!(c.share_group.as_deref(), Some("night"));

        let c = none.resolve(&ChannelFile::default()).expect("defaults");
        assert!(c.exec.is_none() && c.desktop.is_some() && c.share_group.is_none());
        assert_eq!(c.watch.stale_intervals, 5);
        assert_eq!(c.watch.stale_after, Duration::from_secs(120));
        assert_eq!(c.watch.broker_grace, Duration::from_secs(60));
    }

    fn alert(level: AlertLevel) -> Alert {
        Alert {
            ts: "t".into(),
            message: "freezer is CRITICAL; it's 'hot'".into(),
            ..Alert::sample("id-1", level)
        }
    }

    #[test]
    fn env_carries_every_field() {
        let env = hook_env(&alert(AlertLevel::Critical));
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("THERMALERT_ID"), Some("id-1"));
        assert_eq!(get("THERMALERT_LEVEL"), Some("CRITICAL"));
        assert_eq!(get("THERMALERT_CELSIUS"), Some("45.00"));
        assert_eq!(get("THERMALERT_NAME"), Some("freezer"));
        assert_eq!(env.len(), 7);
    }

    #[tokio::test]
    async fn exit_status_decides_and_stdin_is_the_alert() {
        let a = alert(AlertLevel::Critical);
        let ok = ExecHook::new(
            "grep -q '\"id\":\"id-1\"' && test \"$THERMALERT_MESSAGE\" = \"freezer is CRITICAL; it's 'hot'\"".into(),
            Duration::from_secs(10),
        );
        assert_eq!(ok.run(&a).await, HookOutcome::Delivered);
        let bad = ExecHook::new("exit 3".into(), Duration::from_secs(10));
        let out = bad.run(&a).await;
        assert_eq!(out.status(), "failed");
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_and_failed() {
        let hook = ExecHook::new("sleep 30 & wait".into(), Duration::from_millis(200));
        let started = std::time::Instant::now();
        let out = hook.run(&alert(AlertLevel::Warning)).await;
        assert!(
            matches!(out, HookOutcome::Failed(ref m) if m.contains("timed out")),
            "{out:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
