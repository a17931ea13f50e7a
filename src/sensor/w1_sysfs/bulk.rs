//! The bulk conversion: the bus masters, the plan of a sweep, the 8-byte
//! trigger and its confirmation from `therm_bulk_read`, the per-sensor
//! fallback, and the once-only report of the mode in use.

use super::*;

impl W1SysfsBackend {
    /// The bus masters under the root, with the devices each lists.
    pub(super) fn masters(&self) -> Vec<Master> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut v: Vec<Master> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                name.starts_with("w1_bus_master")
                    .then_some((name, e.path()))
            })
            .filter(|(_, p)| p.is_dir())
            .map(|(name, dir)| {
                let f = dir.join("therm_bulk_read");
                let bulk_file = f.metadata().ok().filter(|m| !m.is_dir()).map(|_| f.clone());
                let mut slaves: Vec<String> = std::fs::read_dir(&dir)
                    .map(|rd| {
                        rd.flatten()
                            .filter_map(|e| e.file_name().to_str().map(str::to_string))
                            .filter(|n| ThermFamily::of_id(n).is_some())
                            .collect()
                    })
                    .unwrap_or_default();
                slaves.sort();
                Master {
                    name,
                    bulk_file,
                    slaves,
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A sensor's conversion time: the kernel's `conv_time` (it includes a
    /// user's override), else from `resolution`, else 750 ms.
    pub(super) fn conversion_time(&mut self, id: &str, family: Option<ThermFamily>) -> Duration {
        let from_file = self
            .read_small(id, "conv_time")
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        if let Some(c) = from_file {
            self.conv.insert(id.to_string(), c);
            return c;
        }
        if let Some(&c) = self.conv.get(id) {
            return c;
        }
        let c = if family.is_none_or(|f| f.resolution) {
            kernel_conversion_time(
                self.read_small(id, "resolution")
                    .and_then(|r| r.parse::<u8>().ok()),
            )
        } else {
            DEFAULT_CONVERSION
        };
        if self.device_dir(id).is_ok() {
            self.conv.insert(id.to_string(), c);
        }
        c
    }

    pub(super) fn plan(&mut self, ids: &[String], masters: &[Master]) -> Vec<Planned> {
        ids.iter()
            .map(|id| {
                let family = ThermFamily::of_id(id);
                let master = masters
                    .iter()
                    .position(|m| m.slaves.iter().any(|s| s == id))
                    .or_else(|| (masters.len() == 1).then_some(0));
                Planned {
                    id: id.clone(),
                    family,
                    master,
                    conv: self.conversion_time(id, family),
                    bulk: false,
                }
            })
            .collect()
    }

    pub(super) fn bulk_state(file: &Path) -> Result<BulkState, String> {
        std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|s| parse_bulk_state(&s).map_err(|e| e.to_string()))
    }

    /// Triggers a bulk conversion on `m` and confirms from the read-back
    /// that the kernel started it.
    pub(super) fn trigger(&self, m: &Master) -> Result<PathBuf, PerSensorReason> {
        let Some(file) = &m.bulk_file else {
            return Err(PerSensorReason::NoBulkRead(m.name.clone()));
        };
        let before = Self::bulk_state(file);
        if let Err(e) = write_attr(file, BULK_TRIGGER) {
            return Err(PerSensorReason::WriteFailed(format!(
                "{}: {e}{}",
                file.display(),
                permission_hint(&e)
            )));
        }
        match Self::bulk_state(file) {
            Ok(BulkState::Converting | BulkState::Ready) => {
                if before == Ok(BulkState::Ready) {
                    log::debug!(
                        "{}: said 1 before the trigger too (another reader?)",
                        file.display()
                    );
                }
                Ok(file.clone())
            }
            Ok(BulkState::Idle) => Err(PerSensorReason::NotStarted(format!(
                "{} read 0 after the trigger",
                file.display()
            ))),
            Err(e) => Err(PerSensorReason::NotStarted(format!(
                "{} after the trigger: {e}",
                file.display()
            ))),
        }
    }

    /// Starts the bulk conversions the planned sensors can use, waits for
    /// them, and marks the sensors whose master confirmed one.
    pub(super) fn convert(
        &mut self,
        plan: &mut [Planned],
        masters: &[Master],
    ) -> (Conversion, Vec<usize>, Duration) {
        if !self.bulk_read {
            return (
                Conversion::PerSensor(PerSensorReason::Disabled),
                Vec::new(),
                Duration::ZERO,
            );
        }
        let wanted: BTreeSet<usize> = plan
            .iter()
            .filter(|p| p.family.is_some_and(|f| f.bulk_read))
            .filter_map(|p| p.master)
            .collect();
        if wanted.is_empty() {
            let reason = if plan.iter().any(|p| p.family.is_some_and(|f| f.bulk_read)) {
                PerSensorReason::NoBulkRead(format!("{} (no bus master)", self.root.display()))
            } else {
                PerSensorReason::NoBulkFamily
            };
            return (Conversion::PerSensor(reason), Vec::new(), Duration::ZERO);
        }
        let started = Instant::now();
        let mut confirmed = Vec::new();
        let mut files = Vec::new();
        let mut failure = None;
        for &m in &wanted {
            match self.trigger(&masters[m]) {
                Ok(f) => {
                    confirmed.push(m);
                    files.push(f);
                }
                Err(r) => {
                    failure.get_or_insert(r);
                }
            }
        }
        for p in plan.iter_mut() {
            p.bulk = p.family.is_some_and(|f| f.bulk_read)
                && p.master.is_some_and(|m| confirmed.contains(&m));
        }
        // The kernel waits for the slowest sensor with bulk read on each
        // bus, configured or not.
        let mut slowest = plan
            .iter()
            .filter(|p| p.bulk)
            .map(|p| p.conv)
            .max()
            .unwrap_or_default();
        for &m in &confirmed {
            for s in &masters[m].slaves {
                let family = ThermFamily::of_id(s);
                if family.is_some_and(|f| f.bulk_read) && !plan.iter().any(|p| &p.id == s) {
                    slowest = slowest.max(self.conversion_time(s, family));
                }
            }
        }
        if !files.is_empty() {
            Self::wait_conversion(&files, started + slowest + BULK_MARGIN);
        }
        let conversion = match failure {
            None => Conversion::Bulk,
            Some(r) => Conversion::PerSensor(r),
        };
        (conversion, confirmed, slowest)
    }

    /// Waits, bounded, until no `therm_bulk_read` says `-1`.
    pub(super) fn wait_conversion(files: &[PathBuf], until: Instant) {
        loop {
            // Anything but a clear 0 or 1 counts as still converting.
            let busy = files
                .iter()
                .any(|f| !matches!(Self::bulk_state(f), Ok(BulkState::Idle | BulkState::Ready)));
            if !busy {
                return;
            }
            let now = Instant::now();
            if now >= until {
                log::warn!("bulk conversion still pending at its time bound: reading anyway");
                return;
            }
            std::thread::sleep(BULK_POLL.min(until - now));
        }
    }

    /// Reads the devices of confirmed masters that the sweep did not read,
    /// so the kernel has no bulk result left pending (`therm_bulk_read`
    /// back to 0) and the next trigger can be confirmed.
    pub(super) fn drain(&self, masters: &[Master], confirmed: &[usize], ids: &[String]) {
        for &m in confirmed {
            let master = &masters[m];
            let Some(file) = &master.bulk_file else {
                continue;
            };
            if Self::bulk_state(file) != Ok(BulkState::Ready) {
                continue;
            }
            for s in &master.slaves {
                if ids.contains(s) || !ThermFamily::of_id(s).is_some_and(|f| f.bulk_read) {
                    continue;
                }
                log::debug!("{s}: not configured; reading it to clear its bulk result");
                let _ = self.read_device_file(s, "w1_slave");
            }
        }
    }

    /// Logs, once per change, how the sweeps convert and what it costs.
    pub(super) fn report(
        &mut self,
        conversion: &Conversion,
        plan: &[Planned],
        timing: SweepTiming,
    ) {
        if plan.is_empty() {
            return;
        }
        for p in plan {
            if let Some(f) = p.family.filter(|f| !f.bulk_read) {
                if self.bulk_read && self.told_solo.insert(p.id.clone()) {
                    log::info!(
                        "{} ({}): the kernel has no bulk read for this family: it converts on its own when read, {} ms per sweep",
                        p.id,
                        f.name,
                        ms(p.conv)
                    );
                }
            }
        }
        if self.conversion() == Some(conversion) {
            return;
        }
        let secs = timing.expected.as_secs_f64();
        match conversion {
            Conversion::Bulk => {
                let k = plan.iter().filter(|p| p.bulk).count();
                let conv = plan
                    .iter()
                    .filter(|p| p.bulk)
                    .map(|p| p.conv)
                    .max()
                    .unwrap_or_default();
                log::info!(
                    "w1: bulk conversion confirmed by therm_bulk_read: {k} of {} sensor(s) in one conversion ({} ms); about {secs:.1} s per sweep",
                    plan.len(),
                    ms(conv)
                );
            }
            Conversion::PerSensor(reason) => {
                let could: Vec<(Duration, bool)> = plan
                    .iter()
                    .map(|p| (p.conv, p.family.is_some_and(|f| f.bulk_read)))
                    .collect();
                let bulk_secs = sweep_timing(&could).expected.as_secs_f64();
                let line = format!(
                    "w1: converting per sensor ({reason}): each sensor converts when read, about {secs:.1} s per sweep for {} sensor(s) (one bulk conversion: about {bulk_secs:.1} s)",
                    plan.len()
                );
                if *reason == PerSensorReason::Disabled {
                    log::info!("{line}");
                } else {
                    log::warn!("{line}");
                }
            }
        }
    }
}
