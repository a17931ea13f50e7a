//! Logging: to the systemd journal when stderr is connected to it (native
//! protocol, structured fields), else to stderr, one line per event. The
//! level comes from `THERMALERT_LOG` (`error`, `warn`, `info`, `debug`,
//! `trace`; default `info`).
//!
//! Every alert is one record with the fields `ALERT_ID`, `SENSOR_ID`,
//! `SENSOR_NAME`, `LEVEL`, `CELSIUS`, `THRESHOLD`, `GATEWAY` and its own
//! priority: CRITICAL is `crit` (2), FAULT `err` (3), WARNING `warning` (4),
//! RESOLVED `notice` (5). Other lines map error/warn/info/debug/trace to
//! 3/4/6/7/7, so `journalctl -p crit` shows only CRITICAL alerts and
//! `journalctl -p notice` every alert, warning and error but no chatter.
//!
//! The journal entry is built by a pure function ([`journal_entry`]); the
//! sink is a datagram socket, `/run/systemd/journal/socket` unless
//! `THERMALERT_JOURNAL_SOCKET` names a stand-in (the tests do).

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::core::alert::AlertLevel;
use crate::mqtt::payload::Alert;

/// Where journald listens for native-protocol entries.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Names a stand-in journal socket (tests).
pub const JOURNAL_SOCKET_ENV: &str = "THERMALERT_JOURNAL_SOCKET";

/// The log target of alert records.
pub const ALERT_TARGET: &str = "thermalert::core::alert";

/// The syslog identifier (`journalctl -t thermalertd`).
const IDENTIFIER: &str = "thermalertd";

/// syslog priorities (`journalctl -p`).
pub mod priority {
    pub const CRIT: u8 = 2;
    pub const ERR: u8 = 3;
    pub const WARNING: u8 = 4;
    pub const NOTICE: u8 = 5;
    pub const INFO: u8 = 6;
    pub const DEBUG: u8 = 7;
}

/// The priority of an alert of `level`.
pub fn alert_priority(level: AlertLevel) -> u8 {
    match level {
        AlertLevel::Critical => priority::CRIT,
        AlertLevel::Fault => priority::ERR,
        AlertLevel::Warning => priority::WARNING,
        AlertLevel::Resolved => priority::NOTICE,
        AlertLevel::Test => priority::INFO,
    }
}

/// The priority of an ordinary log line.
pub fn level_priority(level: Level) -> u8 {
    match level {
        Level::Error => priority::ERR,
        Level::Warn => priority::WARNING,
        Level::Info => priority::INFO,
        Level::Debug | Level::Trace => priority::DEBUG,
    }
}

/// The `log` level an alert is recorded at (for `THERMALERT_LOG` filtering
/// and the stderr line).
pub fn alert_level(level: AlertLevel) -> Level {
    match level {
        AlertLevel::Critical | AlertLevel::Fault => Level::Error,
        AlertLevel::Warning => Level::Warn,
        AlertLevel::Resolved | AlertLevel::Test => Level::Info,
    }
}

/// The structured fields of an alert, in journal field names. `CELSIUS`
/// and `THRESHOLD` are absent when the alert has none (a FAULT).
pub fn alert_fields(a: &Alert) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("ALERT_ID", a.id.clone()),
        ("SENSOR_ID", a.sensor.clone()),
        ("SENSOR_NAME", a.name.clone()),
        ("LEVEL", a.level.as_str().to_string()),
    ];
    if let Some(c) = a.celsius {
        f.push(("CELSIUS", format!("{c:.2}")));
    }
    if let Some(t) = a.threshold {
        f.push(("THRESHOLD", format!("{t:.2}")));
    }
    f.push(("GATEWAY", a.gateway.clone()));
    f
}

/// The one-line text of an alert (MESSAGE, and the stderr line).
pub fn alert_line(a: &Alert) -> String {
    format!(
        "ALERT {} {} ({}) celsius={} threshold={} id={}: {}",
        a.level,
        a.name,
        a.sensor,
        a.celsius.map_or("null".into(), |c| format!("{c:.2}")),
        a.threshold.map_or("null".into(), |t| format!("{t:.2}")),
        a.id,
        a.message
    )
}

/// Logs an alert: one record, with its priority and fields.
pub fn alert(a: &Alert) {
    let level = alert_level(a.level);
    if level > log::max_level() {
        return;
    }
    let prio = alert_priority(a.level).to_string();
    let mut kv: Vec<(&str, &str)> = vec![("PRIORITY", prio.as_str())];
    let fields = alert_fields(a);
    kv.extend(fields.iter().map(|(k, v)| (*k, v.as_str())));
    let kv: &[(&str, &str)] = &kv;
    let line = alert_line(a);
    log::logger().log(
        &Record::builder()
            .level(level)
            .target(ALERT_TARGET)
            .args(format_args!("{line}"))
            .key_values(&kv)
            .module_path_static(Some(module_path!()))
            .build(),
    );
}

/// Appends one field in the native journal protocol: `NAME=value\n`, or
/// for values with a newline `NAME\n` + 64-bit little-endian length +
/// value + `\n`.
fn put_field(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    buf.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// A valid journal field name from a structured-field key: upper case,
/// `[A-Z0-9_]`, starting with a letter, at most 64 bytes.
pub fn field_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            let c = c.to_ascii_uppercase();
            if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_uppercase()) {
        s.insert_str(0, "F_");
    }
    s.truncate(64);
    s
}

/// One native-protocol journal entry: PRIORITY, MESSAGE, SYSLOG_IDENTIFIER,
/// SYSLOG_PID, then `fields` (names made valid by [`field_name`]).
pub fn journal_entry(priority: u8, message: &str, pid: u32, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256 + message.len());
    put_field(&mut buf, "PRIORITY", priority.to_string().as_bytes());
    put_field(&mut buf, "MESSAGE", message.as_bytes());
    put_field(&mut buf, "SYSLOG_IDENTIFIER", IDENTIFIER.as_bytes());
    put_field(&mut buf, "SYSLOG_PID", pid.to_string().as_bytes());
    for (k, v) in fields {
        put_field(&mut buf, &field_name(k), v.as_bytes());
    }
    buf
}

/// Collects a record's structured fields as strings.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.push((key.as_str().to_string(), value.to_string()));
        Ok(())
    }
}

/// The journal entry for a log record: a `PRIORITY` field in the record
/// overrides the level's priority.
pub fn record_entry(r: &Record<'_>, pid: u32) -> Vec<u8> {
    let mut fields = Fields::default();
    let _ = r.key_values().visit(&mut fields);
    let mut prio = level_priority(r.level());
    let mut rest: Vec<(&str, &str)> = Vec::with_capacity(fields.0.len());
    for (k, v) in &fields.0 {
        if k.eq_ignore_ascii_case("PRIORITY") {
            if let Ok(p) = v.parse::<u8>() {
                if p <= priority::DEBUG {
                    prio = p;
                }
            }
        } else {
            rest.push((k, v));
        }
    }
    journal_entry(prio, &r.args().to_string(), pid, &rest)
}

/// Whether `journal_stream` (the value of `JOURNAL_STREAM`, `DEV:INODE`)
/// names the file `(dev, ino)`.
pub fn journal_stream_matches(journal_stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// Whether stderr is the journal's stream (`JOURNAL_STREAM` names the
/// device and inode of file descriptor 2), as systemd sets it up for
/// `StandardError=journal`.
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(js) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some(js) = js.to_str() else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => journal_stream_matches(js, m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// Sends native-protocol entries to journald.
struct JournalLogger {
    socket: UnixDatagram,
    path: PathBuf,
    level: LevelFilter,
    pid: u32,
}

impl JournalLogger {
    fn connect(path: &Path, level: LevelFilter) -> std::io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        // An empty datagram, which journald ignores, proves it listens.
        socket.send_to(&[], path)?;
        Ok(Self {
            socket,
            path: path.to_path_buf(),
            level,
            pid: std::process::id(),
        })
    }
}

impl Log for JournalLogger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        wanted(m, self.level)
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let entry = record_entry(r, self.pid);
        if self.socket.send_to(&entry, &self.path).is_err() {
            // The journal is gone or the entry too big: say it on stderr,
            // which journald records too when it is back.
            let _ = writeln!(
                std::io::stderr().lock(),
                "<{}>{}",
                level_priority(r.level()),
                r.args()
            );
        }
    }

    fn flush(&self) {}
}

/// Our own records up to `level`; other crates' only from warnings up.
fn wanted(m: &Metadata<'_>, level: LevelFilter) -> bool {
    m.level() <= level && m.target().starts_with("thermalert")
        || m.level() <= Level::Warn && m.level() <= level
}

struct StderrLogger {
    level: LevelFilter,
    timestamps: bool,
}

impl Log for StderrLogger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        wanted(m, self.level)
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
                crate::sys::timefmt::now_rfc3339(),
                r.level(),
                r.args()
            )
        } else {
            writeln!(e, "{:<5} {}", r.level(), r.args())
        };
    }

    fn flush(&self) {}
}

fn level_from_env() -> LevelFilter {
    match std::env::var("THERMALERT_LOG")
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
    }
}

/// Installs the logger; call once, first thing in `main`.
pub fn init() {
    let level = level_from_env();
    let logger: Box<dyn Log> = if stderr_is_journal() {
        let path = std::env::var_os(JOURNAL_SOCKET_ENV)
            .map_or_else(|| PathBuf::from(JOURNAL_SOCKET), PathBuf::from);
        match JournalLogger::connect(&path, level) {
            Ok(j) => Box::new(j),
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "cannot write to the journal at {}: {e}; logging to stderr",
                    path.display()
                );
                Box::new(StderrLogger {
                    level,
                    timestamps: false,
                })
            }
        }
    } else {
        Box::new(StderrLogger {
            level,
            // journald stamps each line itself.
            timestamps: std::env::var_os("JOURNAL_STREAM").is_none(),
        })
    };
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// An error and its causes on one line, `outer: cause: cause` (as
/// `anyhow`'s `{:#}` prints them).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a native-protocol entry into (name, value) pairs.
    fn parse(mut b: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let nl = b.iter().position(|&c| c == b'\n').expect("newline");
            let line = &b[..nl];
            if let Some(eq) = line.iter().position(|&c| c == b'=') {
                out.push((
                    String::from_utf8(line[..eq].to_vec()).expect("utf8"),
                    line[eq + 1..].to_vec(),
                ));
                b = &b[nl + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).expect("utf8");
                let len_bytes: [u8; 8] = b[nl + 1..nl + 9].try_into().expect("len");
                let len = u64::from_le_bytes(len_bytes) as usize;
                let start = nl + 9;
                out.push((name, b[start..start + len].to_vec()));
                assert_eq!(b[start + len], b'\n');
                b = &b[start + len + 1..];
            }
        }
        out
    }

    fn get<'a>(e: &'a [(String, Vec<u8>)], k: &str) -> Vec<&'a str> {
        e.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| std::str::from_utf8(v).expect("utf8"))
            .collect()
    }

    fn alert(level: AlertLevel, celsius: Option<f64>, threshold: Option<f64>) -> Alert {
        Alert {
            sensor: "28-000000000001".into(),
            celsius,
            threshold,
            ts: "2026-01-01T00:00:00Z".into(),
            message: "freezer is something".into(),
            ..Alert::sample("a-1", level)
        }
    }

    #[test]
    fn alert_priorities_follow_the_level() {
        assert_eq!(alert_priority(AlertLevel::Critical), 2);
        assert_eq!(alert_priority(AlertLevel::Fault), 3);
        assert_eq!(alert_priority(AlertLevel::Warning), 4);
        assert_eq!(alert_priority(AlertLevel::Resolved), 5);
        // Ordinary lines never reach crit or notice.
        for l in [
            Level::Error,
            Level::Warn,
            Level::Info,
            Level::Debug,
            Level::Trace,
        ] {
            assert!(level_priority(l) >= 3 && level_priority(l) != 5, "{l}");
        }
    }

    #[test]
    fn an_alert_record_is_one_entry_with_its_fields_and_priority() {
        for (level, prio) in [
            (AlertLevel::Critical, "2"),
            (AlertLevel::Warning, "4"),
            (AlertLevel::Resolved, "5"),
        ] {
            let a = alert(level, Some(45.0), Some(40.0));
            let prio_s = alert_priority(level).to_string();
            let mut kv: Vec<(&str, &str)> = vec![("PRIORITY", &prio_s)];
            let f = alert_fields(&a);
            kv.extend(f.iter().map(|(k, v)| (*k, v.as_str())));
            let kv: &[(&str, &str)] = &kv;
            let line = alert_line(&a);
            let e = parse(&record_entry(
                &Record::builder()
                    .level(alert_level(level))
                    .target(ALERT_TARGET)
                    .args(format_args!("{line}"))
                    .key_values(&kv)
                    .build(),
                42,
            ));
            assert_eq!(get(&e, "PRIORITY"), vec![prio], "{level}");
            assert_eq!(get(&e, "LEVEL"), vec![level.as_str()]);
            assert_eq!(get(&e, "ALERT_ID"), vec!["a-1"]);
            assert_eq!(get(&e, "SENSOR_ID"), vec!["28-000000000001"]);
            assert_eq!(get(&e, "SENSOR_NAME"), vec!["freezer"]);
            assert_eq!(get(&e, "CELSIUS"), vec!["45.00"]);
            assert_eq!(get(&e, "THRESHOLD"), vec!["40.00"]);
            assert_eq!(get(&e, "GATEWAY"), vec!["gw1"]);
            assert_eq!(get(&e, "SYSLOG_IDENTIFIER"), vec!["thermalertd"]);
            assert_eq!(get(&e, "SYSLOG_PID"), vec!["42"]);
            assert_eq!(get(&e, "MESSAGE"), vec![line.as_str()]);
        }
    }

    #[test]
    fn a_fault_has_no_temperature_fields() {
        let a = alert(AlertLevel::Fault, None, None);
        let names: Vec<&str> = alert_fields(&a).iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            ["ALERT_ID", "SENSOR_ID", "SENSOR_NAME", "LEVEL", "GATEWAY"]
        );
        assert_eq!(alert_priority(a.level), 3);
    }

    #[test]
    fn ordinary_records_use_the_level_priority() {
        let e = parse(&record_entry(
            &Record::builder()
                .level(Level::Info)
                .target("thermalert::daemon")
                .args(format_args!("connected"))
                .build(),
            1,
        ));
        assert_eq!(get(&e, "PRIORITY"), vec!["6"]);
        assert_eq!(get(&e, "MESSAGE"), vec!["connected"]);
    }

    #[test]
    fn multi_line_values_are_length_encoded() {
        let raw = journal_entry(3, "one\ntwo", 7, &[("why", "a=b")]);
        let e = parse(&raw);
        assert_eq!(get(&e, "MESSAGE"), vec!["one\ntwo"]);
        assert_eq!(get(&e, "WHY"), vec!["a=b"]);
        assert!(raw.starts_with(b"PRIORITY=3\nMESSAGE\n"));
    }

    #[test]
    fn field_names_are_made_valid() {
        assert_eq!(field_name("alert_id"), "ALERT_ID");
        assert_eq!(field_name("a.b-c"), "A_B_C");
        assert_eq!(field_name("_x"), "F__X");
        assert_eq!(field_name("1x"), "F_1X");
        assert_eq!(field_name(&"k".repeat(80)).len(), 64);
    }

    #[test]
    fn journal_stream_is_matched_by_device_and_inode() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(journal_stream_matches("8:12345\n", 8, 12345));
        assert!(!journal_stream_matches("8:12346", 8, 12345));
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        assert!(!journal_stream_matches("garbage", 8, 12345));
        assert!(!journal_stream_matches("", 0, 0));
    }
}
