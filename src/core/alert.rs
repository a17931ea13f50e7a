//! The alert engine: a pure state machine per sensor. It takes a reading
//! (or a failed read) and returns the alerts to send: one on each change of
//! level, never one per poll. Hysteresis keeps a temperature hovering at a
//! threshold from flapping; failed reads become FAULT only after
//! `fault_after` in a row, and never WARNING or CRITICAL.

use serde::{Deserialize, Serialize};

/// The DS18B20's measuring range (datasheet: -55 to +125 C). A value outside
/// it is a broken read, not a temperature.
pub const RANGE_C: (f64, f64) = (-55.0, 125.0);

/// The value a DS18B20 holds in its scratchpad after power-on, before its
/// first conversion (datasheet: 0x0550 = +85.0 C).
pub const POWER_ON_RESET_C: f64 = 85.0;

/// A reading of exactly 85.0 C counts as real only if the previous good
/// reading was within this many degrees of it.
pub const PLAUSIBLE_JUMP_C: f64 = 10.0;

/// A sensor's state as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Normal,
    Warning,
    Critical,
    Fault,
}

/// The level carried by an alert message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AlertLevel {
    Warning,
    Critical,
    Resolved,
    Fault,
    /// A fire drill (`thermalertd drill`): travels like a real alert and
    /// must be answered, but asks nobody to act.
    Test,
}

impl AlertLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertLevel::Warning => "WARNING",
            AlertLevel::Critical => "CRITICAL",
            AlertLevel::Resolved => "RESOLVED",
            AlertLevel::Fault => "FAULT",
            AlertLevel::Test => "TEST",
        }
    }
}

impl std::fmt::Display for AlertLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which side of the comfortable band a temperature is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Above,
    Below,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    pub warning_above: Option<f64>,
    pub critical_above: Option<f64>,
    pub warning_below: Option<f64>,
    pub critical_below: Option<f64>,
    pub hysteresis: f64,
}

impl Thresholds {
    /// Checks the thresholds make sense together; on error returns the
    /// offending key and a message.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let all = [
            ("warning_above", self.warning_above),
            ("critical_above", self.critical_above),
            ("warning_below", self.warning_below),
            ("critical_below", self.critical_below),
        ];
        for (k, v) in all {
            if let Some(v) = v {
                if !v.is_finite() {
                    return Err((k, "must be a finite number".into()));
                }
            }
        }
        if !(self.hysteresis.is_finite() && self.hysteresis >= 0.0) {
            return Err(("hysteresis", "must be a number >= 0".into()));
        }
        let lt = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => a < b,
            _ => true,
        };
        if !lt(self.warning_above, self.critical_above) {
            return Err(("critical_above", "must be above warning_above".into()));
        }
        if !lt(self.critical_below, self.warning_below) {
            return Err(("critical_below", "must be below warning_below".into()));
        }
        self.check_hysteresis_gap()?;
        let highest_below = self.warning_below.or(self.critical_below);
        let lowest_above = self.warning_above.or(self.critical_above);
        if let (Some(b), Some(a)) = (highest_below, lowest_above) {
            if b + 2.0 * self.hysteresis >= a {
                return Err((
                    "warning_below",
                    format!(
                        "the lower thresholds ({b}) must be more than 2 x hysteresis below the upper ones ({a})"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Leaving CRITICAL needs the temperature back by the hysteresis. When
    /// the hysteresis is larger than the gap between the warning and the
    /// critical threshold of a side, that point lies beyond the warning
    /// threshold: the sensor stays CRITICAL where it is not even at
    /// WARNING, then drops to a WARNING "above" a threshold it is below.
    /// A hysteresis equal to the gap is fine (CRITICAL is held exactly
    /// while the temperature is past the warning threshold).
    fn check_hysteresis_gap(&self) -> Result<(), (&'static str, String)> {
        let h = self.hysteresis;
        let sides = [
            (self.warning_above, self.critical_above, "above"),
            (self.critical_below, self.warning_below, "below"),
        ];
        for (lo, hi, side) in sides {
            let (Some(lo), Some(hi)) = (lo, hi) else {
                continue;
            };
            let gap = hi - lo;
            if h > gap {
                let (w, c) = if side == "above" { (lo, hi) } else { (hi, lo) };
                return Err((
                    "hysteresis",
                    format!(
                        "{h} is larger than the gap ({gap}) between warning_{side} ({w}) and critical_{side} ({c}): \
                         a sensor would stay CRITICAL past the warning threshold, then report WARNING {side} {w} \
                         at a temperature that is not; use a hysteresis of at most {gap}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The level of `celsius`, with every threshold moved `slack` degrees
    /// towards the comfortable band (0 for rising into a level, the
    /// hysteresis for leaving one). Returns the level and the threshold
    /// that put it there.
    fn classify(&self, celsius: f64, slack: f64) -> (Level, Option<(f64, Side)>) {
        let above = |t: Option<f64>| t.filter(|t| celsius > t - slack);
        let below = |t: Option<f64>| t.filter(|t| celsius < t + slack);
        if let Some(t) = above(self.critical_above) {
            return (Level::Critical, Some((t, Side::Above)));
        }
        if let Some(t) = below(self.critical_below) {
            return (Level::Critical, Some((t, Side::Below)));
        }
        if let Some(t) = above(self.warning_above) {
            return (Level::Warning, Some((t, Side::Above)));
        }
        if let Some(t) = below(self.warning_below) {
            return (Level::Warning, Some((t, Side::Below)));
        }
        (Level::Normal, None)
    }
}

/// Why a read failed. Each of these is retried and then becomes a FAULT.
/// Defined with the sensor backends that produce it ([`crate::sensor::error`]).
pub use crate::sensor::error::ReadFault;

/// What the engine decided: an alert to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub level: AlertLevel,
    /// The new state of the sensor.
    pub state: Level,
    /// The state it left.
    pub previous: Level,
    pub celsius: Option<f64>,
    pub threshold: Option<f64>,
    pub side: Option<Side>,
    /// For FAULT: what went wrong.
    pub fault: Option<ReadFault>,
}

/// One sensor's alert state machine.
#[derive(Debug, Clone)]
pub struct SensorAlarm {
    thresholds: Thresholds,
    fault_after: u32,
    level: Level,
    /// The threshold and side that put the sensor in its current level.
    cause: Option<(f64, Side)>,
    /// The level before a FAULT, to know what to resolve.
    failures: u32,
    last_good: Option<f64>,
}

impl SensorAlarm {
    pub fn new(thresholds: Thresholds, fault_after: u32) -> Self {
        Self {
            thresholds,
            fault_after: fault_after.max(1),
            level: Level::Normal,
            cause: None,
            failures: 0,
            last_good: None,
        }
    }

    pub fn level(&self) -> Level {
        self.level
    }

    pub fn last_good(&self) -> Option<f64> {
        self.last_good
    }

    /// New thresholds (a configuration reload) without losing the state.
    pub fn set_thresholds(&mut self, thresholds: Thresholds, fault_after: u32) {
        self.thresholds = thresholds;
        self.fault_after = fault_after.max(1);
    }

    /// Feeds one read; returns the alerts it causes, in order (at most two:
    /// a RESOLVED for a fault that cleared, then the new level).
    pub fn observe(&mut self, read: Result<f64, ReadFault>) -> Vec<Decision> {
        let read = read.and_then(|c| self.sanity(c));
        match read {
            Err(fault) => self.fail(fault),
            Ok(c) => self.good(c),
        }
    }

    fn sanity(&self, c: f64) -> Result<f64, ReadFault> {
        if !c.is_finite() || c < RANGE_C.0 || c > RANGE_C.1 {
            return Err(ReadFault::OutOfRange(c));
        }
        if c == POWER_ON_RESET_C {
            let plausible = self
                .last_good
                .is_some_and(|p| (p - c).abs() <= PLAUSIBLE_JUMP_C);
            if !plausible {
                return Err(ReadFault::PowerOnReset);
            }
        }
        Ok(c)
    }

    fn fail(&mut self, fault: ReadFault) -> Vec<Decision> {
        self.failures = self.failures.saturating_add(1);
        if self.level == Level::Fault || self.failures < self.fault_after {
            return Vec::new();
        }
        let previous = self.level;
        self.level = Level::Fault;
        self.cause = None;
        vec![Decision {
            level: AlertLevel::Fault,
            state: Level::Fault,
            previous,
            celsius: None,
            threshold: None,
            side: None,
            fault: Some(fault),
        }]
    }

    fn good(&mut self, c: f64) -> Vec<Decision> {
        self.failures = 0;
        self.last_good = Some(c);
        let mut out = Vec::new();
        let was = self.level;
        if was == Level::Fault {
            // The sensor reads well again: the fault is resolved, then the
            // temperature is judged afresh.
            self.level = Level::Normal;
            self.cause = None;
            out.push(Decision {
                level: AlertLevel::Resolved,
                state: Level::Normal,
                previous: Level::Fault,
                celsius: Some(c),
                threshold: None,
                side: None,
                fault: None,
            });
        }
        let (raw, raw_cause) = self.thresholds.classify(c, 0.0);
        let (new, cause) = if raw >= self.level {
            (raw, raw_cause)
        } else {
            // Leaving a level needs the temperature to be back by the hysteresis.
            let (held, held_cause) = self.thresholds.classify(c, self.thresholds.hysteresis);
            if held >= self.level {
                (self.level, self.cause)
            } else {
                (held, held_cause)
            }
        };
        if new != self.level {
            let previous = self.level;
            let left = self.cause;
            self.level = new;
            self.cause = cause;
            let (level, thr) = match new {
                Level::Critical => (AlertLevel::Critical, cause),
                Level::Warning => (AlertLevel::Warning, cause),
                Level::Normal => (AlertLevel::Resolved, left),
                Level::Fault => unreachable_fault(),
            };
            out.push(Decision {
                level,
                state: new,
                previous,
                celsius: Some(c),
                threshold: thr.map(|t| t.0),
                side: thr.map(|t| t.1),
                fault: None,
            });
        } else {
            self.cause = cause.or(self.cause);
        }
        out
    }
}

/// `classify` never returns `Fault`.
fn unreachable_fault() -> (AlertLevel, Option<(f64, Side)>) {
    (AlertLevel::Fault, None)
}

/// A sentence for humans describing a decision.
pub fn message(name: &str, d: &Decision) -> String {
    let side = |s: Option<Side>| match s {
        Some(Side::Below) => "below",
        _ => "above",
    };
    match (d.level, d.celsius, d.threshold) {
        (AlertLevel::Fault, _, _) => format!(
            "{name}: sensor fault: {}",
            d.fault
                .as_ref()
                .map_or_else(|| "cannot be read".to_string(), ToString::to_string)
        ),
        (AlertLevel::Resolved, Some(c), _) if d.previous == Level::Fault => {
            format!("{name}: sensor reads again ({c:.2} C)")
        }
        (AlertLevel::Resolved, Some(c), Some(t)) => format!(
            "{name} is back to normal at {c:.2} C (was {} {} {t:.2} C)",
            if d.previous == Level::Critical {
                "critical"
            } else {
                "warning"
            },
            side(d.side)
        ),
        (AlertLevel::Resolved, c, _) => {
            format!("{name} is back to normal ({})", fmt_c(c))
        }
        (lvl, c, Some(t)) => format!(
            "{name} is {} at {} ({} {t:.2} C)",
            if lvl == AlertLevel::Critical {
                "CRITICAL"
            } else {
                "at WARNING level"
            },
            fmt_c(c),
            side(d.side)
        ),
        (lvl, c, None) => format!("{name}: {lvl} at {}", fmt_c(c)),
    }
}

fn fmt_c(c: Option<f64>) -> String {
    c.map_or_else(|| "unknown".into(), |c| format!("{c:.2} C"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hot() -> Thresholds {
        Thresholds {
            warning_above: Some(30.0),
            critical_above: Some(40.0),
            hysteresis: 0.5,
            ..Default::default()
        }
    }

    fn cold() -> Thresholds {
        Thresholds {
            warning_above: Some(-15.0),
            critical_above: Some(-10.0),
            warning_below: Some(-25.0),
            critical_below: Some(-30.0),
            hysteresis: 1.0,
        }
    }

    fn levels(a: &mut SensorAlarm, temps: &[f64]) -> Vec<AlertLevel> {
        temps
            .iter()
            .flat_map(|t| a.observe(Ok(*t)))
            .map(|d| d.level)
            .collect()
    }

    #[test]
    fn one_alert_per_change_of_level_not_per_poll() {
        let mut a = SensorAlarm::new(hot(), 3);
        let got = levels(
            &mut a,
            &[20.0, 20.0, 35.0, 35.0, 35.0, 45.0, 45.0, 20.0, 20.0],
        );
        use AlertLevel::*;
        assert_eq!(got, vec![Warning, Critical, Resolved]);
    }

    #[test]
    fn hovering_at_a_threshold_does_not_flap() {
        let mut a = SensorAlarm::new(hot(), 3);
        let got = levels(&mut a, &[30.1, 29.9, 30.1, 29.8, 30.2, 29.6, 30.05]);
        assert_eq!(got, vec![AlertLevel::Warning]);
        // Back by more than the hysteresis: resolved.
        assert_eq!(levels(&mut a, &[29.4]), vec![AlertLevel::Resolved]);
    }

    #[test]
    fn critical_drops_to_warning_only_past_the_hysteresis() {
        let mut a = SensorAlarm::new(hot(), 3);
        assert_eq!(levels(&mut a, &[41.0]), vec![AlertLevel::Critical]);
        assert!(levels(&mut a, &[39.8]).is_empty());
        let d = a.observe(Ok(39.4));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].level, AlertLevel::Warning);
        assert_eq!(d[0].threshold, Some(30.0));
    }

    #[test]
    fn cold_chain_alarms_on_low_temperatures() {
        let mut a = SensorAlarm::new(cold(), 3);
        let d = a.observe(Ok(-31.0));
        assert_eq!(d[0].level, AlertLevel::Critical);
        assert_eq!(d[0].threshold, Some(-30.0));
        assert_eq!(d[0].side, Some(Side::Below));
        assert!(message("freezer", &d[0]).contains("below -30.00"));
        assert!(levels(&mut a, &[-29.5]).is_empty());
        assert_eq!(levels(&mut a, &[-28.9]), vec![AlertLevel::Warning]);
        assert_eq!(levels(&mut a, &[-18.0]), vec![AlertLevel::Resolved]);
    }

    #[test]
    fn failed_reads_become_one_fault_after_retries_then_resolved() {
        let mut a = SensorAlarm::new(hot(), 3);
        assert!(levels(&mut a, &[20.0]).is_empty());
        assert!(a.observe(Err(ReadFault::Crc)).is_empty());
        assert!(a.observe(Err(ReadFault::Crc)).is_empty());
        let d = a.observe(Err(ReadFault::Missing));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].level, AlertLevel::Fault);
        assert_eq!(d[0].celsius, None);
        assert!(a.observe(Err(ReadFault::Missing)).is_empty());
        assert_eq!(levels(&mut a, &[21.0]), vec![AlertLevel::Resolved]);
    }

    #[test]
    fn a_fault_that_clears_into_critical_reports_both() {
        let mut a = SensorAlarm::new(hot(), 1);
        assert_eq!(
            a.observe(Err(ReadFault::Missing))[0].level,
            AlertLevel::Fault
        );
        assert_eq!(
            levels(&mut a, &[45.0]),
            vec![AlertLevel::Resolved, AlertLevel::Critical]
        );
    }

    #[test]
    fn power_on_85_without_history_is_a_fault_not_a_critical() {
        let mut a = SensorAlarm::new(hot(), 1);
        let d = a.observe(Ok(85.0));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].level, AlertLevel::Fault);
        assert_eq!(d[0].fault, Some(ReadFault::PowerOnReset));
        // After a jump from 20 C it is still a fault...
        let mut b = SensorAlarm::new(hot(), 1);
        assert!(levels(&mut b, &[20.0]).is_empty());
        assert_eq!(b.observe(Ok(85.0))[0].level, AlertLevel::Fault);
        // ...but a sensor that warmed up to it really is at 85 C.
        let mut c = SensorAlarm::new(hot(), 1);
        assert_eq!(levels(&mut c, &[80.0, 85.0]), vec![AlertLevel::Critical]);
    }

    #[test]
    fn out_of_range_values_are_faults() {
        let mut a = SensorAlarm::new(hot(), 1);
        assert_eq!(a.observe(Ok(127.94))[0].level, AlertLevel::Fault);
        let mut b = SensorAlarm::new(hot(), 1);
        assert_eq!(b.observe(Ok(f64::NAN))[0].level, AlertLevel::Fault);
    }

    #[test]
    fn threshold_checks() {
        let mut t = hot();
        t.critical_above = Some(25.0);
        assert_eq!(t.check().map_err(|e| e.0), Err("critical_above"));
        assert!(cold().check().is_ok());
        let mut n = hot();
        n.hysteresis = -1.0;
        assert_eq!(n.check().map_err(|e| e.0), Err("hysteresis"));
    }

    /// What the hysteresis rule of [`Thresholds::check`] prevents: a
    /// hysteresis (20) larger than the warning-critical gap (10) holds
    /// CRITICAL at 25 C, under the 30 C warning threshold, then reports a
    /// WARNING "above 30.00 C" at 15 C.
    #[test]
    fn a_hysteresis_wider_than_the_warning_critical_gap_gives_wrong_levels() {
        let wide = Thresholds {
            hysteresis: 20.0,
            ..hot()
        };
        let mut a = SensorAlarm::new(wide, 3);
        assert_eq!(levels(&mut a, &[45.0]), vec![AlertLevel::Critical]);
        assert!(levels(&mut a, &[25.0]).is_empty());
        assert_eq!(a.level(), Level::Critical, "CRITICAL held at 25 C");
        let d = a.observe(Ok(15.0));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].level, AlertLevel::Warning);
        assert!(
            message("freezer", &d[0]).contains("at 15.00 C (above 30.00 C)"),
            "{}",
            message("freezer", &d[0])
        );
        // The check refuses it, and on the cold side too.
        assert_eq!(wide.check().map_err(|e| e.0), Err("hysteresis"));
        let mut cold_wide = cold();
        cold_wide.hysteresis = 5.5;
        cold_wide.warning_above = Some(20.0);
        cold_wide.critical_above = None;
        assert_eq!(cold_wide.check().map_err(|e| e.0), Err("hysteresis"));
        // A hysteresis equal to the gap is accepted.
        let equal = Thresholds {
            hysteresis: 10.0,
            warning_above: Some(30.0),
            critical_above: Some(40.0),
            ..Default::default()
        };
        assert_eq!(equal.check(), Ok(()));
    }

    proptest::proptest! {
        /// With thresholds the check accepts (on a 1/16 C grid, the
        /// DS18B20's step, so the arithmetic is exact), a sensor is never
        /// CRITICAL at a temperature that has not crossed a warning
        /// threshold, and never reports WARNING or CRITICAL on the wrong
        /// side of the threshold it names by more than the hysteresis.
        #[test]
        fn accepted_thresholds_never_hold_critical_short_of_warning(
            w in -400i32..400,
            (gap, h) in proptest::strategy::Strategy::prop_flat_map(1i32..200, |gap| (proptest::strategy::Just(gap), 0..=gap)),
            wider in 1i32..200,
            below in proptest::bool::ANY,
            reads in proptest::collection::vec(-880i32..1999, 1..120),
        ) {
            let sixteenths = |n: i32| f64::from(n) / 16.0;
            let thresholds = |h: f64| {
                let (w, gap) = (sixteenths(w), sixteenths(gap));
                if below {
                    Thresholds { warning_below: Some(w), critical_below: Some(w - gap), hysteresis: h, ..Default::default() }
                } else {
                    Thresholds { warning_above: Some(w), critical_above: Some(w + gap), hysteresis: h, ..Default::default() }
                }
            };
            // Exactly the hysteresis wider than the gap is refused.
            proptest::prop_assert_eq!(thresholds(sixteenths(gap + wider)).check().map_err(|e| e.0), Err("hysteresis"));
            let (w, h) = (sixteenths(w), sixteenths(h));
            let t = thresholds(h);
            proptest::prop_assert_eq!(t.check(), Ok(()));
            let mut a = SensorAlarm::new(t, 1);
            for r in reads {
                let c = f64::from(r) / 16.0;
                for d in a.observe(Ok(c)) {
                    if let (Some(thr), Some(side)) = (d.threshold, d.side) {
                        if d.level != AlertLevel::Resolved {
                            let past = match side {
                                Side::Above => c > thr - h,
                                Side::Below => c < thr + h,
                            };
                            proptest::prop_assert!(past, "{:?} at {}", d, c);
                        }
                    }
                }
                if a.level() == Level::Critical {
                    let past_warning = if below { c < w } else { c > w };
                    proptest::prop_assert!(past_warning, "CRITICAL held at {} (warning {})", c, w);
                }
            }
        }

        /// Whatever the readings, the engine never alerts twice in a row
        /// with the same level, and never raises WARNING/CRITICAL from a fault.
        #[test]
        fn never_repeats_a_level(reads in proptest::collection::vec(proptest::option::of(-60.0f64..130.0), 0..200)) {
            let mut a = SensorAlarm::new(cold(), 2);
            let mut last: Option<AlertLevel> = None;
            for r in reads {
                let input = r.ok_or(ReadFault::Crc);
                for d in a.observe(input) {
                    proptest::prop_assert_ne!(Some(d.level), last);
                    if d.level == AlertLevel::Warning || d.level == AlertLevel::Critical {
                        proptest::prop_assert!(d.celsius.is_some());
                    }
                    last = Some(d.level);
                }
            }
        }
    }
}
