//! In-process micro-benchmarks of the pure cores (criterion): the alert
//! engine, DS18B20 scratchpad decoding, and the MQTT payloads and topics.
//! Run with `cargo bench --bench micro` (scripts/bench.sh runs it too).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use thermalert::core::alert::{AlertLevel, Level, SensorAlarm, Thresholds};
use thermalert::mqtt::payload::{self, Ack, Alert};
use thermalert::mqtt::topics;
use thermalert::onewire::{build_scratchpad, decode_scratchpad, encode_temperature, Resolution};

fn thresholds() -> Thresholds {
    Thresholds {
        warning_above: Some(30.0),
        critical_above: Some(40.0),
        warning_below: Some(-20.0),
        critical_below: Some(-25.0),
        hysteresis: 0.5,
    }
}

fn alert() -> Alert {
    Alert {
        id: "0b6f4f5e-2f0e-4b5e-9a55-0c1c3e0f6a11".into(),
        gateway: "gw1".into(),
        sensor: "28-000000000001".into(),
        name: "freezer".into(),
        level: AlertLevel::Critical,
        celsius: Some(45.0),
        threshold: Some(40.0),
        previous: Some(Level::Warning),
        ts: "2026-11-23T20:05:31.486Z".into(),
        message: "freezer is CRITICAL at 45.00 C (above 40.00 C)".into(),
        escalation: 0,
        clock_synced: true,
    }
}

fn alert_engine(c: &mut Criterion) {
    c.bench_function("alert engine: steady reading (no alert)", |b| {
        let mut a = SensorAlarm::new(thresholds(), 3);
        b.iter(|| black_box(a.observe(black_box(Ok(21.5)))));
    });
    c.bench_function("alert engine: crossing up and back (2 alerts)", |b| {
        let mut a = SensorAlarm::new(thresholds(), 3);
        b.iter(|| {
            black_box(a.observe(black_box(Ok(35.0))));
            black_box(a.observe(black_box(Ok(20.0))))
        });
    });
}

fn scratchpad(c: &mut Criterion) {
    let sp = build_scratchpad(
        encode_temperature(-18.0625),
        75,
        70,
        Resolution::Bits12,
        0x0e,
    );
    c.bench_function("DS18B20 scratchpad: CRC + decode", |b| {
        b.iter(|| black_box(decode_scratchpad(black_box(&sp))));
    });
}

fn payloads(c: &mut Criterion) {
    let a = alert();
    let bytes = payload::encode(&a);
    c.bench_function("alert payload: encode", |b| {
        b.iter(|| black_box(payload::encode(black_box(&a))));
    });
    c.bench_function("alert payload: decode", |b| {
        b.iter(|| black_box(payload::decode::<Alert>(black_box(&bytes))));
    });
    let ack = payload::encode(&Ack {
        alert_id: a.id.clone(),
        status: "delivered".into(),
        by: "thermalert-notifier-alice-laptop".into(),
        ts: a.ts.clone(),
    });
    c.bench_function("answer payload: decode", |b| {
        b.iter(|| black_box(payload::decode::<Ack>(black_box(&ack))));
    });
    c.bench_function("topic: parse an alert topic", |b| {
        b.iter(|| {
            black_box(topics::parse(
                "thermalert",
                black_box("thermalert/gw1/alerts/28-000000000001"),
            ))
        });
    });
    c.bench_function("timestamp: RFC 3339 now", |b| {
        b.iter(thermalert::sys::timefmt::now_rfc3339);
    });
}

fn config() -> Criterion {
    // Short runs: the whole benchmark suite must fit in 10 minutes on 2 cores.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! { name = benches; config = config(); targets = alert_engine, scratchpad, payloads }
criterion_main!(benches);
