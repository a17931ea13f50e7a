//! Whether the wall clock can be trusted.
//!
//! A Raspberry Pi has no real-time clock: until NTP synchronises it, the
//! clock starts at 1970 or at the time fake-hwclock saved at the last
//! shutdown. Until then alerts and status say `"clock_synced": false`, so
//! that nobody reads their `ts` as the truth.
//!
//! The judgement is a pure function of the time and of what
//! systemd-timesyncd shows in `/run/systemd/timesync/` ([`is_synced`]);
//! [`probe`] reads the latter under a directory it is given.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where systemd-timesyncd keeps its state; it creates `synchronized` in
/// it once the clock was synchronised (systemd >= 239).
pub const TIMESYNC_DIR: &str = "/run/systemd/timesync";

/// Overrides [`TIMESYNC_DIR`] (for tests).
pub const TIMESYNC_DIR_ENV: &str = "THERMALERT_TIMESYNC_DIR";

/// 2024-01-01T00:00:00Z. No build of thermalert predates it: a clock that
/// reads earlier has not been set.
pub const MIN_PLAUSIBLE_UNIX_SECS: u64 = 1_704_067_200;

/// What systemd-timesyncd says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timesync {
    /// No `/run/systemd/timesync/`: timesyncd is not in use (chrony, ntpd,
    /// or none); only the date can be judged.
    Absent,
    /// timesyncd runs but has not synchronised the clock yet.
    Unsynchronized,
    /// timesyncd has synchronised the clock since boot.
    Synchronized,
}

/// Whether the clock can be trusted at `now`: never before 2024; with
/// timesyncd, only once it has synchronised; without, a plausible date is
/// taken as set.
pub fn is_synced(now: SystemTime, timesync: Timesync) -> bool {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    secs >= MIN_PLAUSIBLE_UNIX_SECS && timesync != Timesync::Unsynchronized
}

/// Reads timesyncd's state under `dir` (normally [`TIMESYNC_DIR`]).
pub fn probe(dir: &Path) -> Timesync {
    if !dir.is_dir() {
        Timesync::Absent
    } else if dir.join("synchronized").exists() {
        Timesync::Synchronized
    } else {
        Timesync::Unsynchronized
    }
}

/// The timesyncd directory: `$THERMALERT_TIMESYNC_DIR` or [`TIMESYNC_DIR`].
pub fn timesync_dir() -> PathBuf {
    std::env::var_os(TIMESYNC_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(TIMESYNC_DIR), PathBuf::from)
}

/// Whether this machine's clock can be trusted now.
pub fn synced_now() -> bool {
    is_synced(SystemTime::now(), probe(&timesync_dir()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const NOV_2026: u64 = 1_795_000_000;

    #[test]
    fn a_clock_before_2024_is_never_synced() {
        for ts in [
            Timesync::Absent,
            Timesync::Unsynchronized,
            Timesync::Synchronized,
        ] {
            assert!(!is_synced(UNIX_EPOCH, ts), "1970 with {ts:?}");
            assert!(
                !is_synced(at(MIN_PLAUSIBLE_UNIX_SECS - 1), ts),
                "2023 with {ts:?}"
            );
        }
        assert!(!is_synced(
            UNIX_EPOCH - Duration::from_secs(1),
            Timesync::Absent
        ));
    }

    #[test]
    fn with_timesyncd_only_its_flag_counts() {
        assert!(is_synced(at(NOV_2026), Timesync::Synchronized));
        assert!(!is_synced(at(NOV_2026), Timesync::Unsynchronized));
        assert!(is_synced(
            at(MIN_PLAUSIBLE_UNIX_SECS),
            Timesync::Synchronized
        ));
    }

    #[test]
    fn without_timesyncd_a_plausible_date_is_taken_as_set() {
        assert!(is_synced(at(NOV_2026), Timesync::Absent));
    }

    #[test]
    fn probe_reads_timesyncds_directory() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("run/systemd/timesync");
        assert_eq!(probe(&dir), Timesync::Absent);
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert_eq!(probe(&dir), Timesync::Unsynchronized);
        std::fs::write(dir.join("synchronized"), b"").expect("touch");
        assert_eq!(probe(&dir), Timesync::Synchronized);
        // A file where the directory should be is not timesyncd.
        let file = t.path().join("not-a-dir");
        std::fs::write(&file, b"").expect("touch");
        assert_eq!(probe(&file), Timesync::Absent);
    }
}
