//! Every timing derived from `mqtt.alert_expiry_secs`, in one place.

use std::time::Duration;

/// The gateway's housekeeping rhythm, from the alerts' message expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How often [`super::Gateway::tick`] runs: often enough to refresh a
    /// retained CRITICAL well within its expiry (a quarter of it, between
    /// 250 ms and 1 s).
    pub tick: Duration,
    /// A retained CRITICAL is published again after half its lifetime, so
    /// that it outlives its message expiry while the sensor stays critical.
    pub refresh: Duration,
    /// How long a published alert waits for answers (twice its expiry);
    /// then it is forgotten, with a warning when nobody answered.
    pub keep: Duration,
    /// The alerts' message expiry itself, in seconds.
    pub expiry_secs: u32,
}

impl Timings {
    pub fn from_alert_expiry(secs: u32) -> Self {
        let expiry = Duration::from_secs(u64::from(secs));
        let tick_ms = (u64::from(secs) * 1000 / 4).clamp(250, 5000);
        Self {
            tick: Duration::from_millis(tick_ms.min(1000)),
            refresh: expiry / 2,
            keep: expiry * 2,
            expiry_secs: secs,
        }
    }

    /// The message expiry left to an alert that waited `waited` (across
    /// restarts) in the outbox; `None` once it is spent: the alert is
    /// dropped instead of published.
    pub fn expiry_left(&self, waited: Duration) -> Option<u32> {
        let left = u64::from(self.expiry_secs).saturating_sub(waited.as_secs());
        (left > 0).then(|| u32::try_from(left).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_a_quarter_of_the_expiry_between_250_ms_and_1_s() {
        let t = Timings::from_alert_expiry(300);
        assert_eq!(t.tick, Duration::from_secs(1));
        assert_eq!(t.refresh, Duration::from_secs(150));
        assert_eq!(t.keep, Duration::from_secs(600));
        assert_eq!(
            Timings::from_alert_expiry(2).tick,
            Duration::from_millis(500)
        );
        assert_eq!(
            Timings::from_alert_expiry(1).tick,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn an_alert_keeps_what_is_left_of_its_expiry_in_whole_seconds() {
        let t = Timings::from_alert_expiry(60);
        assert_eq!(t.expiry_left(Duration::ZERO), Some(60));
        assert_eq!(t.expiry_left(Duration::from_millis(59_999)), Some(1));
        assert_eq!(t.expiry_left(Duration::from_secs(60)), None);
    }
}
