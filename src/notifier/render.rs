//! How the notifier writes an alert and a gateway's status: one line for a
//! person, or one JSON object. The live notifier and the `status` command
//! share [`alert_line`], so the two cannot drift.

use std::fmt::Write;

use crate::core::alert::AlertLevel;
use crate::mqtt::payload::{Alert, Status};

/// How a live notifier saw an alert (the `status` command lists alerts
/// without these marks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// A retained message (a CRITICAL still active).
    pub retained: bool,
    /// A watcher's event, not a gateway's alert.
    pub watch: bool,
}

/// The two-character mark in front of a live alert's level.
fn mark(level: AlertLevel) -> &'static str {
    match level {
        AlertLevel::Critical => "!!",
        AlertLevel::Fault => "??",
        AlertLevel::Warning => "! ",
        AlertLevel::Resolved => "ok",
        AlertLevel::Test => "TT",
    }
}

/// One alert as a line for a person, without its newline:
/// `TS [MARK ]LEVEL GATEWAY/NAME (SENSOR) CELSIUS[TAGS]: MESSAGE`, with the
/// mark and the tags (`[retained]`, `[watch]`, an unsynchronised gateway
/// clock) only for a live notifier's line (`seen`).
pub fn alert_line(a: &Alert, seen: Option<Seen>) -> String {
    let mut out = format!("{} ", a.ts);
    if seen.is_some() {
        out.push_str(mark(a.level));
        out.push(' ');
    }
    let _ = write!(
        out,
        "{:<8} {}/{} ({}) {}",
        a.level.as_str(),
        a.gateway,
        a.name,
        a.sensor,
        a.celsius
            .map_or_else(|| "--".to_string(), |c| format!("{c:.2} C")),
    );
    if let Some(s) = seen {
        if s.retained {
            out.push_str(" [retained]");
        } else if s.watch {
            out.push_str(" [watch]");
        }
        if !a.clock_synced {
            out.push_str(" [gateway clock not synchronised]");
        }
    }
    let _ = write!(out, ": {}", a.message);
    out
}

/// One alert as a JSON object, with its `type` (`alert` or `watch`) and
/// whether it was `retained`.
pub fn alert_json(a: &Alert, seen: Seen) -> String {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "type".into(),
            if seen.watch { "watch" } else { "alert" }.into(),
        );
        o.insert("retained".into(), seen.retained.into());
    }
    v.to_string()
}

/// A gateway's status as a line for a person, without its newline; `ts`
/// when the status carries no time of its own (a Will).
pub fn status_line(gateway: &str, s: &Status, ts: impl FnOnce() -> String) -> String {
    format!(
        "{} -- gateway {gateway} is {}{}",
        s.ts.clone().unwrap_or_else(ts),
        s.state,
        s.reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    )
}

/// A gateway's status as a JSON object (`type` `status`).
pub fn status_json(gateway: &str, s: &Status, retained: bool) -> String {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("type".into(), "status".into());
        o.insert("gateway".into(), gateway.into());
        o.insert("retained".into(), retained.into());
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(level: AlertLevel) -> Alert {
        Alert {
            ts: "T".into(),
            message: "freezer is CRITICAL".into(),
            ..Alert::sample("id-1", level)
        }
    }

    const LIVE: Option<Seen> = Some(Seen {
        retained: false,
        watch: false,
    });

    #[test]
    fn a_live_alert_line_has_its_mark_and_tags() {
        let a = alert(AlertLevel::Critical);
        let head = format!(
            "T !! CRITICAL {}/{} ({}) 45.00 C",
            a.gateway, a.name, a.sensor
        );
        assert_eq!(alert_line(&a, LIVE), format!("{head}: freezer is CRITICAL"));
        let retained = Some(Seen {
            retained: true,
            watch: false,
        });
        assert_eq!(
            alert_line(&a, retained),
            format!("{head} [retained]: freezer is CRITICAL")
        );
        let watch = Some(Seen {
            retained: false,
            watch: true,
        });
        let unsynced = Alert {
            clock_synced: false,
            ..a.clone()
        };
        assert_eq!(
            alert_line(&unsynced, watch),
            format!("{head} [watch] [gateway clock not synchronised]: freezer is CRITICAL")
        );
        let w = Alert {
            celsius: None,
            ..alert(AlertLevel::Warning)
        };
        assert!(alert_line(&w, LIVE).starts_with("T !  WARNING  "), "padded");
        assert!(alert_line(&w, LIVE).contains(") --: "), "no reading");
    }

    #[test]
    fn a_listed_alert_line_has_neither_mark_nor_tags() {
        let a = Alert {
            clock_synced: false,
            ..alert(AlertLevel::Fault)
        };
        assert_eq!(
            alert_line(&a, None),
            format!(
                "T FAULT    {}/{} ({}) 45.00 C: freezer is CRITICAL",
                a.gateway, a.name, a.sensor
            )
        );
    }

    #[test]
    fn json_lines_say_their_type() {
        let a = alert(AlertLevel::Test);
        let v: serde_json::Value = serde_json::from_str(&alert_json(
            &a,
            Seen {
                retained: true,
                watch: false,
            },
        ))
        .expect("json");
        assert_eq!(
            (v["type"].as_str(), v["retained"].as_bool()),
            (Some("alert"), Some(true))
        );
        assert_eq!(v["id"], "id-1");
    }

    #[test]
    fn a_status_line_dates_a_will_by_the_time_it_was_seen() {
        let s: Status = serde_json::from_str(r#"{"state":"offline","reason":"connection lost"}"#)
            .expect("status");
        assert_eq!(
            status_line("gw1", &s, || "NOW".into()),
            "NOW -- gateway gw1 is offline (connection lost)"
        );
        let v: serde_json::Value =
            serde_json::from_str(&status_json("gw1", &s, true)).expect("json");
        assert_eq!(v["type"], "status");
        assert_eq!(v["gateway"], "gw1");
        assert_eq!(v["retained"], true);
    }
}
