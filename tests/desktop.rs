//! Desktop notifications against a stand-in freedesktop notification
//! service on a private session bus (a real `dbus-daemon`): one
//! notification per alert, urgency critical (and no timeout) for CRITICAL.

mod common;

use common::*;
use std::collections::HashMap;
use std::process::Command;
use std::sync::mpsc;
use zbus::zvariant::{OwnedVariant, Variant};

#[derive(Debug)]
struct Shown {
    summary: String,
    urgency: Option<u8>,
    expire_timeout: i32,
}

struct FakeNotifications {
    tx: mpsc::Sender<Shown>,
    next: u32,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl FakeNotifications {
    #[expect(
        clippy::too_many_arguments,
        reason = "the D-Bus method has eight arguments"
    )]
    fn notify(
        &mut self,
        _app_name: &str,
        _replaces_id: u32,
        _app_icon: &str,
        summary: &str,
        _body: &str,
        _actions: Vec<String>,
        hints: HashMap<String, OwnedVariant>,
        expire_timeout: i32,
    ) -> u32 {
        let urgency = hints.get("urgency").and_then(|v| match &**v {
            Variant::U8(b) => Some(*b),
            _ => None,
        });
        let _ = self.tx.send(Shown {
            summary: summary.to_string(),
            urgency,
            expire_timeout,
        });
        self.next += 1;
        self.next
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        ("fake".into(), "thermalert".into(), "1".into(), "1.2".into())
    }

    fn close_notification(&self, _id: u32) {}
}

#[test]
fn alerts_become_desktop_notifications_with_critical_urgency() {
    let t = tempfile::tempdir().expect("tempdir");
    let address = format!("unix:path={}", t.path().join("bus").display());
    let mut bus = Command::new("dbus-daemon");
    bus.args(["--session", "--nofork", "--print-address=1", "--address"])
        .arg(&address);
    let bus = Proc::spawn("dbus-daemon", bus);
    bus.out.wait("bus address", |l| l.starts_with("unix:"));

    // The stand-in service, on its own runtime thread.
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let addr = address.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let conn = zbus::connection::Builder::address(addr.as_str())
                .name("org.freedesktop.Notifications")
                .serve_at(
                    "/org/freedesktop/Notifications",
                    FakeNotifications { tx, next: 0 },
                )
                .build()
                .await
                .expect("connect to the private bus");
            let _ = ready_tx.send(());
            std::future::pending::<()>().await;
            drop(conn);
        });
    });
    ready_rx
        .recv_timeout(WAIT)
        .expect("notification service up");

    let broker = Broker::start(&t.path().join("b"));
    let n = notifier_env(
        &broker,
        "desk",
        &[],
        &[("DBUS_SESSION_BUS_ADDRESS", address.as_str())],
    );
    let sensors = freezer(CRIT, "[[0.0, 45.0]]") + &cellar(HOT, "[[0.0, 35.0]]");
    let _d = daemon(&GwConfig::with_sensors(&broker, "gw1", sensors).write(t.path()));

    let mut shown: Vec<Shown> = (0..2)
        .map(|_| rx.recv_timeout(WAIT).expect("a desktop notification"))
        .collect();
    shown.sort_by(|a, b| a.summary.cmp(&b.summary));
    assert_eq!(shown[0].summary, "CRITICAL freezer on gw1", "{shown:?}");
    assert_eq!(shown[0].urgency, Some(2), "critical urgency: {shown:?}");
    assert_eq!(shown[0].expire_timeout, 0, "stays until dismissed");
    assert_eq!(shown[1].summary, "WARNING cellar on gw1", "{shown:?}");
    assert_eq!(shown[1].urgency, Some(1), "normal urgency: {shown:?}");
    assert_eq!(
        n.err
            .count(|l| l.contains("desktop notifications unavailable")),
        0
    );
    drop(bus);
}
