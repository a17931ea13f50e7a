//! The simulated backend: each sensor follows a script of temperature steps
//! and injected faults over time, for CI and demos.

use std::collections::HashMap;
use std::time::Instant;

use super::ReadFault;
use super::{Backend, BackendError, Found, Sample};
use crate::config::{SensorConfig, SimConfig, SimFaultKind};
use crate::core::alert::POWER_ON_RESET_C;

/// The temperature a sensor without a script reads.
pub const DEFAULT_C: f64 = 20.0;

/// A pure script: what a simulated sensor reads at time `t` seconds.
pub fn value_at(script: &SimConfig, t: f64) -> Result<f64, ReadFault> {
    let t = match script.loop_secs {
        Some(l) if l > 0.0 => t.rem_euclid(l),
        _ => t,
    };
    let fault = script
        .faults
        .iter()
        .filter(|f| f.from <= t && t < f.until)
        .find_map(|f| match f.kind {
            SimFaultKind::Missing => Some(Err(ReadFault::Missing)),
            SimFaultKind::Crc => Some(Err(ReadFault::Crc)),
            SimFaultKind::PowerOnReset => Some(Ok(POWER_ON_RESET_C)),
            // A stall delays the sweep (see `stall_at`); the read is normal.
            SimFaultKind::Stall => None,
        });
    if let Some(r) = fault {
        return r;
    }
    Ok(script
        .steps
        .iter()
        .take_while(|s| s[0] <= t)
        .last()
        .map_or_else(
            || script.steps.first().map_or(DEFAULT_C, |s| s[1]),
            |s| s[1],
        ))
}

/// A pure script: how many seconds a sweep starting at `t` blocks (a
/// `stall` fault covering `t`), if any.
pub fn stall_at(script: &SimConfig, t: f64) -> Option<f64> {
    let local = match script.loop_secs {
        Some(l) if l > 0.0 => t.rem_euclid(l),
        _ => t,
    };
    script
        .faults
        .iter()
        .filter(|f| f.kind == SimFaultKind::Stall && f.from <= local && local < f.until)
        .map(|f| f.until - local)
        .reduce(f64::max)
}

fn scripts(sensors: &[SensorConfig]) -> HashMap<String, SimConfig> {
    sensors
        .iter()
        .map(|s| (s.id.clone(), s.sim.clone().unwrap_or_default()))
        .collect()
}

pub struct SimBackend {
    start: Instant,
    scripts: HashMap<String, SimConfig>,
}

impl SimBackend {
    /// The scripts of `sensors` (`[sensor.sim]`), starting now.
    pub fn from_config(sensors: &[SensorConfig]) -> Self {
        Self {
            start: Instant::now(),
            scripts: scripts(sensors),
        }
    }

    fn read(&self, id: &str, t: f64) -> Result<f64, ReadFault> {
        match self.scripts.get(id) {
            Some(s) => value_at(s, t),
            None => Err(ReadFault::Missing),
        }
    }
}

impl Backend for SimBackend {
    fn sweep(&mut self, ids: &[String]) -> Vec<Sample> {
        let t = self.start.elapsed().as_secs_f64();
        let stall = ids
            .iter()
            .filter_map(|id| self.scripts.get(id).and_then(|s| stall_at(s, t)))
            .reduce(f64::max);
        let t = match stall {
            Some(secs) if secs.is_finite() && secs > 0.0 => {
                log::debug!("sim: sweep stalls for {secs:.1}s");
                std::thread::sleep(std::time::Duration::from_secs_f64(secs));
                self.start.elapsed().as_secs_f64()
            }
            _ => t,
        };
        ids.iter()
            .map(|id| Sample {
                id: id.clone(),
                read: self.read(id, t),
            })
            .collect()
    }

    fn reconfigure(&mut self, sensors: &[SensorConfig]) {
        // Scripts keep their clock: a reload does not restart them.
        self.scripts = scripts(sensors);
    }

    fn scan(&mut self) -> Result<Vec<Found>, BackendError> {
        let t = self.start.elapsed().as_secs_f64();
        let mut ids: Vec<&String> = self.scripts.keys().collect();
        ids.sort();
        Ok(ids
            .into_iter()
            .map(|id| Found {
                id: id.clone(),
                family: crate::onewire::ThermFamily::of_id(id).map(|f| f.name),
                celsius: self.read(id, t),
                resolution_bits: Some(12),
                parasite: Some(false),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimFault;

    fn script() -> SimConfig {
        SimConfig {
            steps: vec![[0.0, 20.0], [3.0, 35.0], [6.0, 45.0], [12.0, 20.0]],
            loop_secs: None,
            faults: vec![SimFault {
                from: 20.0,
                until: 25.0,
                kind: SimFaultKind::Crc,
            }],
        }
    }

    #[test]
    fn steps_hold_until_the_next_one() {
        let s = script();
        assert_eq!(value_at(&s, 0.0), Ok(20.0));
        assert_eq!(value_at(&s, 2.99), Ok(20.0));
        assert_eq!(value_at(&s, 3.0), Ok(35.0));
        assert_eq!(value_at(&s, 7.0), Ok(45.0));
        assert_eq!(value_at(&s, 100.0), Ok(20.0));
        assert_eq!(value_at(&s, 21.0), Err(ReadFault::Crc));
    }

    #[test]
    fn loops_wrap_time() {
        let mut s = script();
        s.loop_secs = Some(10.0);
        assert_eq!(value_at(&s, 13.5), Ok(35.0));
    }

    #[test]
    fn a_stall_blocks_until_its_end_and_reads_normally() {
        let mut s = script();
        s.faults.push(SimFault {
            from: 4.0,
            until: 9.0,
            kind: SimFaultKind::Stall,
        });
        assert_eq!(stall_at(&s, 3.9), None);
        assert_eq!(stall_at(&s, 4.0), Some(5.0));
        assert_eq!(stall_at(&s, 8.5), Some(0.5));
        assert_eq!(stall_at(&s, 9.0), None);
        assert_eq!(value_at(&s, 5.0), Ok(35.0), "a stall is not a read fault");
        s.loop_secs = Some(10.0);
        assert_eq!(stall_at(&s, 14.0), Some(5.0));
    }

    #[test]
    fn no_script_reads_the_default() {
        assert_eq!(value_at(&SimConfig::default(), 5.0), Ok(DEFAULT_C));
    }
}
