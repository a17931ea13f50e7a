//! RFC 3339 timestamps in UTC.

use std::time::SystemTime;

/// The current wall-clock time as RFC 3339 UTC with millisecond precision,
/// e.g. `2026-11-23T20:01:02.345Z`.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// Formats `t` as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
