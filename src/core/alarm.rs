//! The local alarm's decision, pure: on while any CRITICAL alert is
//! unacknowledged. The daemon's `alarm` module drives the pin from it.

use std::collections::BTreeSet;

use crate::core::alert::AlertLevel;
use crate::mqtt::payload::Alert;

/// Whether the alarm is on, given the ids of the CRITICAL alerts raised and
/// the ids answered: on while any CRITICAL has no answer.
pub fn alarm_on<'a>(
    critical: impl IntoIterator<Item = &'a str>,
    answered: &dyn Fn(&str) -> bool,
) -> bool {
    critical.into_iter().any(|id| !answered(id))
}

/// The CRITICAL alerts not yet acknowledged by a notifier.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unacknowledged {
    ids: BTreeSet<String>,
}

impl Unacknowledged {
    /// An alert was raised (or escalated: same id, nothing changes).
    pub fn raised(&mut self, alert: &Alert) {
        if alert.level == AlertLevel::Critical {
            self.ids.insert(alert.id.clone());
        }
    }

    /// A notifier answered the alert `id` (any alert; only CRITICALs count).
    pub fn answered(&mut self, id: &str) {
        self.ids.remove(id);
    }

    /// [`alarm_on`] over what was raised and answered so far (answered
    /// ids are forgotten, so nothing here is answered).
    pub fn alarm_on(&self) -> bool {
        alarm_on(self.ids.iter().map(String::as_str), &|_| false)
    }
}
