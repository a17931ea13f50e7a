//! The optional local alarm output (`[alarm] gpio_pin = N`): a buzzer or
//! LED on a GPIO pin, on while any CRITICAL alert is unacknowledged.
//!
//! [`Unacknowledged`] is the pure core: it follows the CRITICAL alerts
//! raised and the answers received and says whether the alarm is on.
//! [`Alarm`] drives an [`AlarmPin`] from it, touching the pin only when
//! the state changes; on a Pi the pin is an rppal `OutputPin`, in tests a
//! fake.

use crate::mqtt::payload::Alert;

pub use crate::core::alarm::{alarm_on, Unacknowledged};

#[derive(Debug, thiserror::Error)]
#[error("alarm output on GPIO {pin}: {message}")]
pub struct AlarmError {
    pub pin: u8,
    pub message: String,
}

/// An output that can be switched on and off.
pub trait AlarmPin: Send {
    fn set(&mut self, on: bool) -> Result<(), AlarmError>;
}

/// The alarm: the unacknowledged CRITICALs and the pin they drive.
pub struct Alarm {
    state: Unacknowledged,
    pin: Box<dyn AlarmPin>,
    /// What the pin was last set to (`None`: never set).
    driven: Option<bool>,
}

impl Alarm {
    /// Starts with the alarm off (and the pin set so).
    pub fn new(pin: Box<dyn AlarmPin>) -> Self {
        let mut a = Self {
            state: Unacknowledged::default(),
            pin,
            driven: None,
        };
        a.set(false);
        a
    }

    pub fn raised(&mut self, alert: &Alert) {
        self.state.raised(alert);
        self.set(self.state.alarm_on());
    }

    pub fn answered(&mut self, id: &str) {
        self.state.answered(id);
        self.set(self.state.alarm_on());
    }

    pub fn is_on(&self) -> bool {
        self.state.alarm_on()
    }

    /// Drives the pin to `on` (the daemon: as the gateway core decided,
    /// after each alert raised and each answer), touching it only when that
    /// changes what it was last set to; a failure is logged and tried again
    /// at the next call.
    pub fn set(&mut self, on: bool) {
        if self.driven == Some(on) {
            return;
        }
        match self.pin.set(on) {
            Ok(()) => {
                log::info!(
                    "local alarm {}",
                    if on {
                        "ON: a CRITICAL alert is unacknowledged"
                    } else {
                        "off: every CRITICAL alert was acknowledged"
                    }
                );
                self.driven = Some(on);
            }
            Err(e) => {
                log::error!("{e}");
                self.driven = None;
            }
        }
    }
}

/// The alarm configured in `[alarm]`, if any. A pin that cannot be opened
/// is logged and the daemon runs without it: alerts matter more.
pub fn from_config(alarm: Option<&crate::config::AlarmConfig>) -> Option<Alarm> {
    let pin = alarm?.gpio_pin;
    match gpio_pin(pin) {
        Ok(p) => {
            log::info!("local alarm output on GPIO {pin}");
            Some(Alarm::new(p))
        }
        Err(e) => {
            log::error!("{e}; running without the local alarm");
            None
        }
    }
}

/// The Pi's GPIO pin `pin` as the alarm output (BCM numbering), driven low
/// (off) at once.
#[cfg(target_os = "linux")]
pub fn gpio_pin(pin: u8) -> Result<Box<dyn AlarmPin>, AlarmError> {
    struct Pin {
        pin: rppal::gpio::OutputPin,
    }
    impl AlarmPin for Pin {
        fn set(&mut self, on: bool) -> Result<(), AlarmError> {
            if on {
                self.pin.set_high();
            } else {
                self.pin.set_low();
            }
            Ok(())
        }
    }
    let err = |e: rppal::gpio::Error| AlarmError {
        pin,
        message: e.to_string(),
    };
    let out = rppal::gpio::Gpio::new()
        .and_then(|g| g.get(pin))
        .map_err(err)?
        .into_output_low();
    Ok(Box::new(Pin { pin: out }))
}

/// No GPIO off Linux.
#[cfg(not(target_os = "linux"))]
pub fn gpio_pin(pin: u8) -> Result<Box<dyn AlarmPin>, AlarmError> {
    Err(AlarmError {
        pin,
        message: "GPIO needs Linux".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::alert::AlertLevel;
    use std::sync::{Arc, Mutex};

    fn alert(id: &str, level: AlertLevel) -> Alert {
        Alert::sample(id, level)
    }

    #[test]
    fn the_pure_rule() {
        let none: [&str; 0] = [];
        assert!(!alarm_on(none, &|_| false));
        assert!(alarm_on(["a"], &|_| false));
        assert!(!alarm_on(["a"], &|_| true));
        assert!(alarm_on(["a", "b"], &|id| id == "a"));
        assert!(!alarm_on(["a", "b"], &|id| id == "a" || id == "b"));
    }

    #[test]
    fn on_while_any_critical_is_unacknowledged() {
        let mut u = Unacknowledged::default();
        assert!(!u.alarm_on());
        u.raised(&alert("w", AlertLevel::Warning));
        u.raised(&alert("f", AlertLevel::Fault));
        assert!(!u.alarm_on(), "only CRITICALs sound the alarm");
        u.raised(&alert("c1", AlertLevel::Critical));
        u.raised(&alert("c2", AlertLevel::Critical));
        assert!(u.alarm_on());
        u.answered("c1");
        assert!(u.alarm_on(), "c2 still unanswered");
        // The sensor recovering is not an acknowledgement.
        u.raised(&alert("r", AlertLevel::Resolved));
        assert!(u.alarm_on());
        u.answered("c2");
        assert!(!u.alarm_on());
        // Answering an unknown id is harmless.
        u.answered("nope");
        assert!(!u.alarm_on());
    }

    #[test]
    fn an_answer_before_the_alert_is_known_does_not_count_later() {
        // Answers name alerts already raised; an early stray answer must not
        // pre-acknowledge a future CRITICAL with another id.
        let mut u = Unacknowledged::default();
        u.answered("c1");
        u.raised(&alert("c2", AlertLevel::Critical));
        assert!(u.alarm_on());
    }

    #[derive(Clone, Default)]
    struct FakePin {
        writes: Arc<Mutex<Vec<bool>>>,
        fail: Arc<Mutex<bool>>,
    }

    impl AlarmPin for FakePin {
        fn set(&mut self, on: bool) -> Result<(), AlarmError> {
            if *self.fail.lock().expect("lock") {
                return Err(AlarmError {
                    pin: 17,
                    message: "busy".into(),
                });
            }
            self.writes.lock().expect("lock").push(on);
            Ok(())
        }
    }

    #[test]
    fn the_pin_follows_the_state_and_is_written_only_on_changes() {
        let pin = FakePin::default();
        let mut a = Alarm::new(Box::new(pin.clone()));
        a.raised(&alert("c1", AlertLevel::Critical));
        a.raised(&alert("c2", AlertLevel::Critical));
        a.raised(&alert("c1", AlertLevel::Critical)); // escalation
        a.answered("c1");
        assert!(a.is_on());
        a.answered("c2");
        assert!(!a.is_on());
        assert_eq!(*pin.writes.lock().expect("lock"), vec![false, true, false]);
    }

    #[test]
    fn a_failed_write_is_tried_again_at_the_next_change() {
        let pin = FakePin::default();
        let mut a = Alarm::new(Box::new(pin.clone()));
        *pin.fail.lock().expect("lock") = true;
        a.raised(&alert("c1", AlertLevel::Critical));
        *pin.fail.lock().expect("lock") = false;
        a.raised(&alert("c2", AlertLevel::Critical));
        assert_eq!(*pin.writes.lock().expect("lock"), vec![false, true]);
    }
}
