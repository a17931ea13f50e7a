//! Logging to stderr, one line per event. The level comes from
//! `THERMALERT_LOG` (`error`, `warn`, `info`, `debug`, `trace`; default
//! `info`). Under systemd, journald records stderr with its own timestamps.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    level: LevelFilter,
    timestamps: bool,
}

impl Log for StderrLogger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= self.level && m.target().starts_with("thermalert")
            || m.level() <= Level::Warn && m.level() <= self.level
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut e = std::io::stderr().lock();
        let _ = if self.timestamps {
            writeln!(
                e,
                "{} {:<5} {}",
                crate::timefmt::now_rfc3339(),
                r.level(),
                r.args()
            )
        } else {
            writeln!(e, "{:<5} {}", r.level(), r.args())
        };
    }

    fn flush(&self) {}
}

/// Installs the logger; call once, first thing in `main`.
pub fn init() {
    let level = match std::env::var("THERMALERT_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        "off" => LevelFilter::Off,
        _ => LevelFilter::Info,
    };
    // journald stamps each line itself.
    let timestamps = std::env::var_os("JOURNAL_STREAM").is_none();
    if log::set_boxed_logger(Box::new(StderrLogger { level, timestamps })).is_ok() {
        log::set_max_level(level);
    }
}
