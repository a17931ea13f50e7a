//! The notifier's `--filter`: which alerts this notifier handles.
//!
//! Each `--filter` is one condition: `gateway=NAME`, `sensor=ID_OR_NAME`
//! or `level>=LEVEL` (LEVEL one of WARNING, CRITICAL, FAULT; the order is
//! WARNING < CRITICAL < FAULT). Conditions on the same key are alternatives
//! (`--filter gateway=gw1 --filter gateway=gw2`: either gateway); different
//! keys must all hold. RESOLVED passes a level filter when the level it
//! resolves (`previous`) does, so whoever saw the alarm sees it end; TEST
//! alerts (drills) ignore the level filter, so a drill still checks this
//! notifier.

use crate::core::alert::{AlertLevel, Level};
use crate::mqtt::payload::Alert;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    #[error("{0:?}: expected gateway=NAME, sensor=ID_OR_NAME or level>=LEVEL")]
    Syntax(String),
    #[error("{0:?}: unknown level; use WARNING, CRITICAL or FAULT")]
    Level(String),
}

/// The severity rank a level filter compares.
fn rank(level: Level) -> u8 {
    match level {
        Level::Normal => 0,
        Level::Warning => 1,
        Level::Critical => 2,
        Level::Fault => 3,
    }
}

/// All the `--filter` conditions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    gateways: Vec<String>,
    sensors: Vec<String>,
    min_level: Option<Level>,
}

impl Filter {
    /// Parses every `--filter` argument.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, FilterError> {
        let mut f = Filter::default();
        for a in args {
            let a = a.as_ref().trim();
            if let Some(v) = a.strip_prefix("gateway=") {
                f.gateways.push(non_empty(a, v)?);
            } else if let Some(v) = a.strip_prefix("sensor=") {
                f.sensors.push(non_empty(a, v)?);
            } else if let Some(v) = a.strip_prefix("level>=") {
                let l = match v.trim().to_ascii_uppercase().as_str() {
                    "WARNING" => Level::Warning,
                    "CRITICAL" => Level::Critical,
                    "FAULT" => Level::Fault,
                    _ => return Err(FilterError::Level(v.to_string())),
                };
                // Several level filters: the most permissive wins.
                f.min_level = Some(
                    f.min_level
                        .map_or(l, |m| if rank(l) < rank(m) { l } else { m }),
                );
            } else {
                return Err(FilterError::Syntax(a.to_string()));
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether alerts of `gateway` can pass at all.
    pub fn accepts_gateway(&self, gateway: &str) -> bool {
        self.gateways.is_empty() || self.gateways.iter().any(|g| g == gateway)
    }

    /// Whether this notifier handles `a`.
    pub fn accepts(&self, a: &Alert) -> bool {
        if !self.accepts_gateway(&a.gateway) {
            return false;
        }
        if a.level == AlertLevel::Test {
            return true;
        }
        if !self.sensors.is_empty() && !self.sensors.iter().any(|s| *s == a.sensor || *s == a.name)
        {
            return false;
        }
        let Some(min) = self.min_level else {
            return true;
        };
        let level = match a.level {
            AlertLevel::Warning => Level::Warning,
            AlertLevel::Critical => Level::Critical,
            AlertLevel::Fault => Level::Fault,
            AlertLevel::Resolved => a.previous.unwrap_or(Level::Normal),
            AlertLevel::Test => return true,
        };
        rank(level) >= rank(min)
    }
}

fn non_empty(arg: &str, v: &str) -> Result<String, FilterError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(FilterError::Syntax(arg.to_string()));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(gw: &str, sensor: &str, level: AlertLevel, previous: Option<Level>) -> Alert {
        Alert {
            gateway: gw.into(),
            sensor: sensor.into(),
            name: format!("{sensor}-name"),
            celsius: None,
            threshold: None,
            previous,
            ts: "t".into(),
            ..Alert::sample("x", level)
        }
    }

    #[test]
    fn no_filter_accepts_everything() {
        let f = Filter::parse::<&str>(&[]).expect("parse");
        assert!(f.is_empty());
        assert!(f.accepts(&alert("gw9", "s", AlertLevel::Warning, None)));
    }

    #[test]
    fn same_key_alternatives_different_keys_all() {
        let f = Filter::parse(&["gateway=gw1", "gateway=gw2", "level>=critical"]).expect("parse");
        assert!(f.accepts(&alert("gw1", "s", AlertLevel::Critical, None)));
        assert!(f.accepts(&alert("gw2", "s", AlertLevel::Fault, None)));
        assert!(!f.accepts(&alert("gw3", "s", AlertLevel::Critical, None)));
        assert!(!f.accepts(&alert("gw1", "s", AlertLevel::Warning, None)));
        // The end of an alarm it showed passes; the end of a warning not.
        assert!(f.accepts(&alert(
            "gw1",
            "s",
            AlertLevel::Resolved,
            Some(Level::Critical)
        )));
        assert!(!f.accepts(&alert(
            "gw1",
            "s",
            AlertLevel::Resolved,
            Some(Level::Warning)
        )));
        // A drill always reaches the notifiers of its gateway.
        assert!(f.accepts(&alert("gw1", "drill", AlertLevel::Test, None)));
        assert!(!f.accepts(&alert("gw3", "drill", AlertLevel::Test, None)));
    }

    #[test]
    fn sensor_by_id_or_name() {
        let f = Filter::parse(&["sensor=28-1"]).expect("parse");
        assert!(f.accepts(&alert("gw1", "28-1", AlertLevel::Warning, None)));
        let f = Filter::parse(&["sensor=28-1-name"]).expect("parse");
        assert!(f.accepts(&alert("gw1", "28-1", AlertLevel::Warning, None)));
        assert!(!f.accepts(&alert("gw1", "28-2", AlertLevel::Warning, None)));
    }

    #[test]
    fn bad_filters_are_errors() {
        assert!(matches!(
            Filter::parse(&["gw=1"]),
            Err(FilterError::Syntax(_))
        ));
        assert!(matches!(
            Filter::parse(&["gateway="]),
            Err(FilterError::Syntax(_))
        ));
        assert!(matches!(
            Filter::parse(&["level>=HOT"]),
            Err(FilterError::Level(_))
        ));
        assert!(matches!(
            Filter::parse(&["level=CRITICAL"]),
            Err(FilterError::Syntax(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = Filter::parse(&[s]);
        }
    }
}
