//! The notifier's channels beyond its terminal: desktop notifications
//! (freedesktop notifications over D-Bus) and `--exec CMD` hooks. Both run
//! off the MQTT loop, in their own tasks.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::core::alert::AlertLevel;
use crate::mqtt::payload::{self, Alert};
pub use crate::notifier::core::HookOutcome;
use crate::notifier::filter::Filter;
use crate::notifier::watch::WatchConfig;
use crate::sys::shutdown::Shutdown;

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
    /// started). On timeout, or when `stop` is cancelled (the notifier's
    /// shutdown deadline), its whole process group is killed. A hook still
    /// waiting for a slot when `stop` is cancelled does not start.
    pub async fn run(&self, a: &Alert, stop: &CancellationToken) -> HookOutcome {
        let _slot = tokio::select! {
            slot = self.slots.acquire() => match slot {
                Ok(s) => s,
                Err(_) => return HookOutcome::Failed("hook slots closed".into()),
            },
            () = stop.cancelled() => {
                return HookOutcome::Failed("not started: the notifier is stopping".into())
            }
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
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let ended = {
            let finished = async { tokio::join!(child.wait(), read_all(stdout), read_all(stderr)) };
            tokio::select! {
                r = tokio::time::timeout(self.timeout, finished) => {
                    r.map_err(|_| format!("timed out after {:?}", self.timeout))
                }
                () = stop.cancelled() => {
                    Err("still running at shutdown: killed".to_string())
                }
            }
        };
        let (status, out, err) = match ended {
            Ok(done) => done,
            Err(why) => {
                // Also its children (a mailer, curl): the whole group.
                if let Some(pid) = pid
                    .and_then(|p| i32::try_from(p).ok())
                    .and_then(Pid::from_raw)
                {
                    if let Err(e) = kill_process_group(pid, Signal::KILL) {
                        log::warn!("cannot kill the hook for alert {}: {e}", a.id);
                    }
                }
                // Reaped, so that its process id is not left behind.
                let _ = child.wait().await;
                return HookOutcome::Failed(why);
            }
        };
        for (what, bytes) in [("stdout", &out), ("stderr", &err)] {
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
        match status {
            Ok(st) if st.success() => HookOutcome::Delivered,
            Ok(st) => HookOutcome::Failed(format!("exited with {st}")),
            Err(e) => HookOutcome::Failed(format!("cannot wait for the hook: {e}")),
        }
    }
}

/// Everything a hook writes on one of its pipes.
async fn read_all(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_end(&mut buf).await;
    }
    buf
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
    pub fn show(&self, a: &Alert, tasks: &Shutdown) {
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
            tasks,
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
fn spawn_notification(
    tasks: &Shutdown,
    st: Arc<DesktopState>,
    summary: String,
    body: String,
    critical: bool,
) {
    let again = tasks.clone();
    tasks.spawn(async move {
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
                            &again,
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
            Err(_) => DesktopError::NoAnswer,
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

/// Why a desktop notification did not go out.
#[derive(Debug, thiserror::Error)]
enum DesktopError {
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Service(#[from] notify_rust::error::Error),
    #[error("no answer from the notification service in 5 s")]
    NoAnswer,
    #[cfg(not(target_os = "linux"))]
    #[error("desktop notifications are only built on Linux")]
    Unsupported,
}

#[cfg(target_os = "linux")]
async fn show_notification(
    summary: String,
    body: String,
    critical: bool,
) -> Result<(), DesktopError> {
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
    n.show_async().await?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
async fn show_notification(
    _summary: String,
    _body: String,
    _critical: bool,
) -> Result<(), DesktopError> {
    Err(DesktopError::Unsupported)
}

/// The resolved channels.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    pub exec: Option<ExecHook>,
    pub desktop: Option<Desktop>,
    pub filter: Filter,
    pub watch: WatchConfig,
    pub share_group: Option<String>,
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
        assert_eq!(
            ok.run(&a, &CancellationToken::new()).await,
            HookOutcome::Delivered
        );
        let bad = ExecHook::new("exit 3".into(), Duration::from_secs(10));
        let out = bad.run(&a, &CancellationToken::new()).await;
        assert_eq!(out.status(), "failed");
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed_and_failed() {
        let hook = ExecHook::new("sleep 30 & wait".into(), Duration::from_millis(200));
        let started = std::time::Instant::now();
        let out = hook
            .run(&alert(AlertLevel::Warning), &CancellationToken::new())
            .await;
        assert!(
            matches!(out, HookOutcome::Failed(ref m) if m.contains("timed out")),
            "{out:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// Waits until `path` holds a process id (the hook wrote it).
    async fn pid_in(path: &std::path::Path) -> i32 {
        loop {
            if let Some(pid) = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether `pid` runs (a zombie left to a parent that does not reap
    /// it counts as dead).
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    }

    #[tokio::test]
    async fn at_the_shutdown_deadline_the_hook_and_its_children_are_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("child.pid");
        let hook = ExecHook::new(
            format!("sleep 30 & echo $! > {}; wait", pidfile.display()),
            Duration::from_secs(60),
        );
        let stop = CancellationToken::new();
        let a = alert(AlertLevel::Critical);
        let run = hook.run(&a, &stop);
        let cancel = async {
            let pid = pid_in(&pidfile).await;
            assert!(alive(pid), "the hook's child runs");
            stop.cancel();
            pid
        };
        let (out, child) =
            tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(run, cancel) })
                .await
                .expect("the hook ends once stopped");
        assert!(
            matches!(out, HookOutcome::Failed(ref m) if m.contains("killed")),
            "{out:?}"
        );
        // The grandchild was killed with its group.
        let gone = async {
            while alive(child) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .expect("the hook's child was killed with its process group");
    }

    #[tokio::test]
    async fn a_hook_waiting_for_a_slot_at_shutdown_does_not_start() {
        let hook = ExecHook::new("exit 0".into(), Duration::from_secs(10));
        let held = hook.slots.clone();
        let _all = held
            .acquire_many(MAX_CONCURRENT_HOOKS as u32)
            .await
            .expect("slots");
        let stop = CancellationToken::new();
        stop.cancel();
        let out = hook.run(&alert(AlertLevel::Critical), &stop).await;
        assert!(
            matches!(out, HookOutcome::Failed(ref m) if m.contains("not started")),
            "{out:?}"
        );
    }
}
