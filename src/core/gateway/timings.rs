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
    /// The expiry itself: an alert that waited this long in the outbox is
    /// dropped instead of published.
    pub expiry: Duration,
}

impl Timings {
    pub fn from_alert_expiry(secs: u32) -> Self {
        let expiry = Duration::from_secs(u64::from(secs));
        let tick_ms = (u64::from(secs) * 1000 / 4).clamp(250, 5000);
        Self {
            tick: Duration::from_millis(tick_ms.min(1000)),
            refresh: expiry / 2,
            keep: expiry * 2,
            expiry,
        }
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
}
