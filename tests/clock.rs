//! A gateway whose clock is not synchronised says so: with
//! systemd-timesyncd's directory present but no `synchronized` flag in it,
//! alerts and the online status carry `"clock_synced": false`; once the
//! flag appears, new ones do not (absent means true).

mod common;

use common::*;

#[test]
fn alerts_and_status_say_whether_the_clock_is_synchronised() {
    let t = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&t.path().join("b"));
    let obs = broker.observe(&["thermalert/gw1/#"]);
    let timesync = t.path().join("run/systemd/timesync");
    std::fs::create_dir_all(&timesync).expect("mkdir");
    let mut cfg = GwConfig::new(&broker, "gw1");
    cfg.mqtt_extra = "publish_readings = false\n".into();
    cfg.sensors = freezer(HOT, "[[0.0, 20.0], [0.3, 45.0]]");
    let conf = cfg.write(t.path());
    let env = [("THERMALERT_TIMESYNC_DIR", timesync.to_str().expect("utf-8"))];
    let d = daemon_env(&conf, &env);
    d.err.wait_contains("the clock is not synchronised");
    let alert = obs
        .out
        .wait("the alert", |l| l.contains("\"level\":\"CRITICAL\""));
    let alert = json(&parse_seen(&alert).expect("observer line").payload);
    assert_eq!(alert["clock_synced"], false, "{alert}");
    let status = obs
        .out
        .wait("online", |l| l.contains("\"state\":\"online\""));
    assert!(status.contains("\"clock_synced\":false"), "{status}");
    drop(d);

    // timesyncd has synchronised the clock: the next run's payloads no
    // longer carry the field.
    std::fs::write(timesync.join("synchronized"), b"").expect("touch");
    cfg.sensors = freezer(HOT, "[[0.0, 20.0], [0.3, 35.0]]");
    let d = daemon_env(&cfg.write(t.path()), &env);
    let alert = obs
        .out
        .wait("the second alert", |l| l.contains("\"level\":\"WARNING\""));
    assert!(!alert.contains("clock_synced"), "{alert}");
    let online = obs.out.wait_n("online again", 2, WAIT, |l| {
        l.contains("\"state\":\"online\"")
    });
    assert!(!online[1].contains("clock_synced"), "{}", online[1]);
    assert_eq!(d.err.count(|l| l.contains("not synchronised")), 0);
}
