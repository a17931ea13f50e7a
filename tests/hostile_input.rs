//! Hostile and broken input (issue 16 §5): property tests over every
//! parser that takes bytes from outside the process — alert, answer,
//! status and reading payloads, topics, the w1 sysfs files (parsers and the
//! backend on a stand-in tree), the daemon's configuration, the
//! notifier's settings file and its seen-alerts log. (The notifier's session store is tested next
//! to its private framing, in `src/mqtt/store.rs`; the outbox's records
//! are being rewritten and get theirs with the new codec.)
//!
//! Properties: no panic; a clear error (an `Err` whose message says
//! something, never a panic); bounded output (what is decoded is never
//! larger than what was read); and a round trip wherever an encoder exists.
//!
//! CI runs proptest's default 256 cases per property; a long run sets
//! `PROPTEST_CASES` (scripts/fuzz-long.sh).

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use thermalert::config::{locate, Config, ConfigError};
use thermalert::core::alert::{AlertLevel, Level};
use thermalert::mqtt::payload::{self, Ack, Alert, PayloadError, Reading, Status, MAX_PAYLOAD};
use thermalert::mqtt::topics::{self, Parsed, Topics};
use thermalert::notifier::seen;
use thermalert::sensor::w1_sysfs::{
    millis_to_celsius, parse_bulk_state, parse_temperature, parse_w1_slave,
    parse_w1_slave_scratchpad, BulkState, ParseError, W1SysfsBackend,
};
use thermalert::sensor::Backend;

// ------------------------------------------------------------- payloads

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

/// A temperature as the sensors give them: whole millidegrees in the
/// DS18B20's range (JSON numbers of that kind read back exactly).
fn celsius() -> impl Strategy<Value = f64> {
    (-55_000i32..=125_000).prop_map(|m| f64::from(m) / 1000.0)
}

fn alert_level() -> impl Strategy<Value = AlertLevel> {
    prop_oneof![
        Just(AlertLevel::Warning),
        Just(AlertLevel::Critical),
        Just(AlertLevel::Resolved),
        Just(AlertLevel::Fault),
        Just(AlertLevel::Test),
    ]
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![
        Just(Level::Normal),
        Just(Level::Warning),
        Just(Level::Critical),
        Just(Level::Fault),
    ]
}

prop_compose! {
    fn alert()(
        strings in proptest::collection::vec(text(), 6),
        level in alert_level(),
        celsius in proptest::option::of(celsius()),
        threshold in proptest::option::of(celsius()),
        previous in proptest::option::of(level()),
        escalation in any::<u32>(),
        clock_synced in any::<bool>(),
    ) -> Alert {
        Alert {
            id: strings[0].clone(),
            gateway: strings[1].clone(),
            sensor: strings[2].clone(),
            name: strings[3].clone(),
            level,
            celsius,
            threshold,
            previous,
            ts: strings[4].clone(),
            message: strings[5].clone(),
            escalation,
            clock_synced,
        }
    }
}

/// The bytes of every string field: what a decode produced from the input.
fn alert_text_len(a: &Alert) -> usize {
    [&a.id, &a.gateway, &a.sensor, &a.name, &a.ts, &a.message]
        .iter()
        .map(|s| s.len())
        .sum()
}

/// An error of `decode` must say what is wrong, with the JSON position.
fn clear_payload_error(e: &PayloadError) -> Result<(), TestCaseError> {
    let msg = e.to_string();
    prop_assert!(!msg.is_empty());
    if let PayloadError::Json(_) = e {
        prop_assert!(msg.contains("line "), "no position: {}", msg);
    }
    Ok(())
}

proptest! {
    #[test]
    fn payloads_round_trip(a in alert(), ack in (text(), text(), text(), text()), r in (celsius(), text())) {
        prop_assert_eq!(payload::decode::<Alert>(&payload::encode(&a)).expect("alert"), a);
        let ack = Ack { alert_id: ack.0, status: ack.1, by: ack.2, ts: ack.3 };
        prop_assert_eq!(payload::decode::<Ack>(&payload::encode(&ack)).expect("ack"), ack);
        let reading = Reading { celsius: r.0, ts: r.1 };
        prop_assert_eq!(payload::decode::<Reading>(&payload::encode(&reading)).expect("reading"), reading);
    }

    #[test]
    fn statuses_round_trip(
        state in text(),
        reason in proptest::option::of(text()),
        gateway in proptest::option::of(text()),
        sensors in proptest::option::of(any::<usize>()),
        poll in proptest::option::of(any::<u64>()),
        expiry in proptest::option::of(any::<u32>()),
        clock_synced in any::<bool>(),
    ) {
        let s = Status {
            state,
            reason,
            gateway,
            ts: None,
            version: Some(env!("CARGO_PKG_VERSION").into()),
            sensors,
            poll_interval_ms: poll,
            expiry_secs: expiry,
            clock_synced,
        };
        prop_assert_eq!(payload::decode::<Status>(&payload::encode(&s)).expect("status"), s);
    }

    /// Any bytes: a value no larger than the input, or a clear error.
    #[test]
    fn any_bytes_decode_to_a_bounded_value_or_a_clear_error(
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        match payload::decode::<Alert>(&bytes) {
            Ok(a) => prop_assert!(alert_text_len(&a) <= bytes.len()),
            Err(e) => clear_payload_error(&e)?,
        }
        if let Err(e) = payload::decode::<Ack>(&bytes) {
            clear_payload_error(&e)?;
        }
        if let Err(e) = payload::decode::<Status>(&bytes) {
            clear_payload_error(&e)?;
        }
        if let Err(e) = payload::decode::<Reading>(&bytes) {
            clear_payload_error(&e)?;
        }
    }

    /// A real alert, truncated, with bytes flipped and junk inserted: the
    /// shapes a broken or hostile publisher sends.
    #[test]
    fn mangled_alerts_decode_or_fail_clearly(
        a in alert(),
        cut in any::<proptest::sample::Index>(),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..6),
        junk in proptest::collection::vec(any::<u8>(), 0..16),
        at in any::<proptest::sample::Index>(),
    ) {
        let mut b = payload::encode(&a);
        for (i, v) in flips {
            let i = i.index(b.len());
            b[i] = v;
        }
        let at = at.index(b.len() + 1);
        b.splice(at..at, junk);
        b.truncate(cut.index(b.len() + 1));
        match payload::decode::<Alert>(&b) {
            Ok(d) => prop_assert!(alert_text_len(&d) <= b.len()),
            Err(e) => clear_payload_error(&e)?,
        }
    }

    /// Valid JSON of the wrong shape or with absurd values.
    #[test]
    fn wrong_json_values_are_errors(v in json_value(3)) {
        let b = serde_json::to_vec(&v).expect("json");
        prop_assume!(b.len() <= MAX_PAYLOAD);
        if let Err(e) = payload::decode::<Alert>(&b) {
            clear_payload_error(&e)?;
        }
        if let Err(e) = payload::decode::<Ack>(&b) {
            clear_payload_error(&e)?;
        }
    }
}

fn json_value(depth: u32) -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,20}".prop_map(Value::String),
        prop_oneof![
            Just("WARNING"),
            Just("CRITICAL"),
            Just("RESOLVED"),
            Just("FAULT"),
            Just("TEST"),
            Just("NORMAL"),
            Just("critical")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(depth, 48, 8, |inner| {
        let keys = prop_oneof![
            Just("id".to_string()),
            Just("gateway".to_string()),
            Just("sensor".to_string()),
            Just("name".to_string()),
            Just("level".to_string()),
            Just("celsius".to_string()),
            Just("threshold".to_string()),
            Just("previous".to_string()),
            Just("ts".to_string()),
            Just("message".to_string()),
            Just("escalation".to_string()),
            Just("clock_synced".to_string()),
            Just("alert_id".to_string()),
            Just("status".to_string()),
            Just("by".to_string()),
            "\\PC{0,8}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(keys, inner, 0..14)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Nesting as deep as the size limit allows is refused by the JSON
/// parser's recursion limit, not by overflowing the stack.
#[test]
fn deeply_nested_payloads_are_an_error_not_a_stack_overflow() {
    for open in ["[", "{\"a\":"] {
        let depth = MAX_PAYLOAD / open.len();
        let b = open.repeat(depth).into_bytes();
        assert!(b.len() <= MAX_PAYLOAD);
        let e = payload::decode::<Alert>(&b).expect_err("not an alert");
        assert!(e.to_string().contains("line 1"), "{e}");
        // Even into a type that takes any nesting.
        let e = payload::decode::<serde_json::Value>(&b).expect_err("too deep");
        assert!(e.to_string().contains("recursion limit"), "{e}");
    }
    let e = payload::decode::<Alert>(&vec![b'['; MAX_PAYLOAD + 1]).expect_err("too big");
    assert!(matches!(e, PayloadError::TooLarge(n) if n == MAX_PAYLOAD + 1));
}

// ---------------------------------------------------------------- topics

fn topic_word() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

fn topic_prefix() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,8}(/[a-z0-9_$-]{1,8}){0,3}"
}

/// Whether `part` is a slice of `whole` (not a copy: parsing allocates
/// nothing per level it returns).
fn within(part: &str, whole: &str) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

proptest! {
    #[test]
    fn topics_round_trip(prefix in topic_prefix(), gw in topic_word(), sensor in topic_word()) {
        let t = Topics::new(&prefix, &gw);
        let (status, alert, reading, acks) = (t.status(), t.alert(&sensor), t.reading(&sensor), t.acks());
        prop_assert_eq!(topics::parse(&prefix, &status), Parsed::Status { gateway: &gw });
        prop_assert_eq!(topics::parse(&prefix, &alert), Parsed::Alert { gateway: &gw, sensor: &sensor });
        prop_assert_eq!(topics::parse(&prefix, &reading), Parsed::Reading { gateway: &gw, sensor: &sensor });
        prop_assert_eq!(topics::parse(&prefix, &acks), Parsed::Acks { gateway: &gw });
        // Another prefix never claims them.
        let other = format!("{prefix}x");
        prop_assert_eq!(topics::parse(&other, &alert), Parsed::Other);
    }

    /// Any topic under any prefix: no panic, and what is returned is a
    /// single level of the topic itself.
    #[test]
    fn any_topic_parses_to_levels_of_itself(
        prefix in prop_oneof!["\\PC{0,12}", "[a/+#$]{0,6}"],
        topic in prop_oneof!["\\PC{0,200}", "[a/+#$]{0,40}", "[a/]{0,2000}"],
    ) {
        let levels: Vec<&str> = match topics::parse(&prefix, &topic) {
            Parsed::Status { gateway } | Parsed::Acks { gateway } => vec![gateway],
            Parsed::Alert { gateway, sensor } | Parsed::Reading { gateway, sensor } => {
                vec![gateway, sensor]
            }
            Parsed::Other => vec![],
        };
        for l in levels {
            prop_assert!(within(l, &topic) && !l.contains('/'), "{:?} in {:?}", l, topic);
        }
    }
}

// ------------------------------------------------------------ w1 sysfs

/// `w1_slave` as the kernel's w1_therm writes it.
fn w1_slave(verdict: &str, millis: impl std::fmt::Display) -> String {
    format!(
        "72 01 4b 46 7f ff 0e 10 57 : crc=57 {verdict}\n72 01 4b 46 7f ff 0e 10 57 t={millis}\n"
    )
}

/// A parse error says what it is, and quotes a bounded part of the input.
fn clear_w1_error(e: &ParseError) -> Result<(), TestCaseError> {
    prop_assert!(!e.to_string().is_empty());
    if let ParseError::Malformed(quoted) = e {
        prop_assert!(
            quoted.chars().count() <= 83,
            "{} chars quoted",
            quoted.chars().count()
        );
    }
    Ok(())
}

fn w1_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,300}",
        "[0-9a-f :=\\-\\n]{0,120}",
        "([0-9a-f]{2} ){9}: crc=[0-9a-f]{2} (YES|NO|yes)\n([0-9a-f]{2} ){9}t=-?[0-9]{0,12}\n?",
        (any::<i64>(), "[ \\t\\r\\n]{0,3}").prop_map(|(n, ws)| format!("{n}{ws}")),
    ]
}

proptest! {
    #[test]
    fn w1_formats_round_trip(m in any::<i32>()) {
        prop_assert_eq!(parse_w1_slave(&w1_slave("YES", m)), Ok(m));
        prop_assert_eq!(parse_w1_slave_scratchpad(&w1_slave("YES", m)).map(|w| w.millis), Ok(m));
        prop_assert_eq!(parse_w1_slave(&w1_slave("NO", m)), Err(ParseError::CrcNo));
        prop_assert_eq!(parse_temperature(&format!("{m}\n")), Ok(m));
        prop_assert!(millis_to_celsius(m).is_finite());
        prop_assert_eq!((millis_to_celsius(m) * 1000.0).round(), f64::from(m));
    }

    #[test]
    fn any_w1_text_is_a_temperature_or_a_clear_error(text in w1_text()) {
        for r in [parse_w1_slave(&text), parse_temperature(&text)] {
            if let Err(e) = r {
                clear_w1_error(&e)?;
            }
        }
        match parse_w1_slave_scratchpad(&text) {
            Ok(w) => prop_assert_eq!(parse_w1_slave(&text), Ok(w.millis)),
            Err(e) => clear_w1_error(&e)?,
        }
        match parse_bulk_state(&text) {
            Ok(s) => prop_assert!(matches!(
                (text.trim(), s),
                ("0", BulkState::Idle) | ("-1", BulkState::Converting) | ("1", BulkState::Ready)
            )),
            Err(e) => clear_w1_error(&e)?,
        }
    }

    /// The backend on a stand-in sysfs tree whose files hold anything
    /// (bytes, not only text): each sensor is a temperature or a fault
    /// that says why; `resolution` and `ext_power` are read or left out.
    #[test]
    fn the_w1_backend_survives_any_file_content(
        files in proptest::collection::vec(
            prop_oneof![
                w1_text().prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..200),
            ],
            5,
        ),
        bulk in any::<bool>(),
    ) {
        let d = tempfile::tempdir().expect("tempdir");
        let dev = d.path().join("w1_bus_master1/28-0316a2791dff");
        std::fs::create_dir_all(&dev).expect("mkdir");
        let root = d.path().join("devices");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::os::unix::fs::symlink(&dev, root.join("28-0316a2791dff")).expect("link");
        std::os::unix::fs::symlink(d.path().join("w1_bus_master1"), root.join("w1_bus_master1")).expect("link");
        for (name, bytes) in ["w1_slave", "temperature", "resolution", "ext_power", "conv_time"].iter().zip(&files) {
            std::fs::write(dev.join(name), bytes).expect("write");
        }
        std::fs::write(d.path().join("w1_bus_master1/therm_bulk_read"), b"0\n").expect("write");
        let mut b = W1SysfsBackend::new(&root, bulk);
        let started = Instant::now();
        let found = b.scan().expect("scan");
        prop_assert_eq!(found.len(), 1);
        // A stand-in's therm_bulk_read never confirms a conversion, so
        // nothing waits for one: whatever conv_time says.
        prop_assert!(started.elapsed() < Duration::from_secs(5));
        let f = &found[0];
        match &f.celsius {
            Ok(c) => prop_assert!(c.is_finite()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        if let Some(bits) = f.resolution_bits {
            let written = std::str::from_utf8(&files[2]).ok().map(str::trim);
            prop_assert_eq!(written.and_then(|s| s.parse::<u8>().ok()), Some(bits));
        }
    }
}

// ------------------------------------------ the notifier's seen-alerts log

proptest! {
    #[test]
    fn seen_lines_round_trip(esc in any::<u32>(), id in "[A-Za-z0-9._:-]{1,128}") {
        let line = format!("{esc} {id}");
        prop_assert_eq!(seen::parse_line(&line), Some((esc, id.as_str())));
    }

    /// Any line: nothing, or an escalation and an id that is a bounded
    /// slice of the line.
    #[test]
    fn any_seen_line_is_an_entry_or_skipped(l in prop_oneof!["\\PC{0,200}", "[0-9]{0,12} [a-z:.-]{0,140}"]) {
        if let Some((_, id)) = seen::parse_line(&l) {
            prop_assert!(within(id, &l) && !id.is_empty() && id.len() <= 128);
        }
    }

    /// The log file holding anything: the notifier starts, and an id read
    /// from it is remembered.
    #[test]
    fn any_seen_log_opens(bytes in proptest::collection::vec(any::<u8>(), 0..2000), esc in 0u32..5) {
        let d = tempfile::tempdir().expect("tempdir");
        let mut b = bytes;
        b.extend_from_slice(format!("\n{esc} 0a1b2c3d-known\n").as_bytes());
        std::fs::write(d.path().join(seen::FILE_NAME), &b).expect("write");
        let s = seen::Seen::open(d.path(), 1000);
        prop_assert!(!s.is_new("0a1b2c3d-known", esc));
    }
}

// --------------------------------------------------------------- config

/// A daemon configuration with a value of any kind under each key.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| toml::Value::Float(f).to_string()),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "\\PC{0,24}".prop_map(|s| toml::Value::String(s).to_string()),
        "[a-z$#+/ ]{0,8}".prop_map(|s| toml::Value::String(s).to_string()),
        proptest::collection::vec(-100i64..100, 0..4).prop_map(|v| format!("{v:?}")),
        Just("[[0.0, 20.0], [1.0]]".to_string()),
        Just("{ from = 1.0 }".to_string()),
    ]
}

const KEYS: &[(&str, &str)] = &[
    ("", "gateway_id"),
    ("", "topic_prefix"),
    ("", "state_dir"),
    ("", "outbox_max_bytes"),
    ("", "ack_timeout_secs"),
    ("mqtt", "host"),
    ("mqtt", "port"),
    ("mqtt", "client_id"),
    ("mqtt", "keep_alive_secs"),
    ("mqtt", "receive_maximum"),
    ("mqtt", "reconnect_min_ms"),
    ("mqtt", "reconnect_max_secs"),
    ("sensors", "poll_interval_ms"),
    ("sensors", "fault_after"),
    ("sensors", "monitor_unconfigured"),
    ("sensor", "id"),
    ("sensor", "warning_above"),
    ("sensor", "critical_above"),
    ("sensor", "warning_below"),
    ("sensor", "hysteresis"),
    ("sensor", "resolution"),
    ("sensor.sim", "steps"),
    ("sensor.sim", "loop_secs"),
    ("sensor.sim", "faults"),
];

fn config_with(values: &[(usize, String)]) -> String {
    let mut sections: Vec<(&str, Vec<String>)> = vec![
        ("", vec!["gateway_id = \"gw1\"".into()]),
        (
            "mqtt",
            vec!["host = \"localhost\"".into(), "ca_file = \"ca.crt\"".into()],
        ),
        ("sensors", vec!["backend = \"sim\"".into()]),
        ("sensor", vec!["id = \"28-1\"".into()]),
        ("sensor.sim", vec![]),
    ];
    for (k, v) in values {
        let (section, key) = KEYS[*k % KEYS.len()];
        let lines = &mut sections
            .iter_mut()
            .find(|(s, _)| *s == section)
            .expect("known section")
            .1;
        lines.retain(|l| !l.starts_with(&format!("{key} =")));
        lines.push(format!("{key} = {v}"));
    }
    let mut out = String::new();
    for (section, lines) in sections {
        match section {
            "" => {}
            "sensor" => out.push_str("[[sensor]]\n"),
            s => out.push_str(&format!("[{s}]\n")),
        }
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

proptest! {
    /// Any value under any key: a configuration, or an error that names
    /// the file and a line of it (each problem on its own line).
    #[test]
    fn any_config_value_is_accepted_or_located(
        values in proptest::collection::vec((any::<usize>(), toml_value()), 1..8),
    ) {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("ca.crt"), "x").expect("write");
        let path = d.path().join("t.toml");
        let src = config_with(&values);
        let lines = src.lines().count() + 1;
        match Config::parse(&src, &path) {
            Ok(_) => {}
            Err(ConfigError::Invalid { problems, .. }) => {
                prop_assert!(!problems.is_empty());
                for p in &problems {
                    prop_assert!(p.line >= 1 && p.line <= lines, "{:?}\n{}", p, src);
                    prop_assert!(!p.message.is_empty() && !p.key.is_empty());
                }
            }
            Err(ConfigError::Syntax { line, message, .. }) => {
                prop_assert!(line >= 1 && line <= lines && !message.is_empty());
            }
            Err(e) => prop_assert!(false, "{}", e),
        }
    }

    #[test]
    fn line_and_column_of_any_offset(src in "\\PC{0,200}", offset in any::<usize>()) {
        let (line, col) = locate::line_col(&src, offset);
        prop_assert!(line >= 1 && line <= src.lines().count() + 1);
        prop_assert!(col >= 1 && col <= src.len() + 1);
    }

    /// The notifier's settings file (`--config`): settings, or an error
    /// naming the file.
    #[test]
    fn any_notifier_settings_file_is_read_or_refused(
        src in prop_oneof![
            "\\PC{0,300}",
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("host"), Just("port"), Just("ca_file"), Just("topic_prefix"),
                        Just("client_id"), Just("share_group"), Just("filter"), Just("exec"),
                        Just("exec_timeout"), Just("stale_intervals"), Just("no_desktop"),
                        Just("receive_maximum"), Just("bogus"),
                    ],
                    toml_value(),
                ),
                0..6,
            )
            .prop_map(|kv| kv.iter().map(|(k, v)| format!("{k} = {v}\n")).collect::<String>()),
        ],
    ) {
        notifier_settings(&src)?;
    }
}

/// Resolves the notifier's settings from a file holding `src`.
fn notifier_settings(src: &str) -> Result<(), TestCaseError> {
    use clap::Parser;
    let d = tempfile::tempdir().expect("tempdir");
    let path = d.path().join("notifier.toml");
    std::fs::write(&path, src).expect("write");
    let cli = thermalert::notifier::Cli::try_parse_from([
        Path::new("thermalert-notifier"),
        Path::new("--config"),
        path.as_path(),
    ])
    .expect("cli");
    if let Err(e) = thermalert::notifier::Settings::resolve(&cli) {
        prop_assert!(!e.to_string().is_empty());
    }
    Ok(())
}
