//! The notifier's memory of the alerts it has shown, so that each alert is
//! shown once, across the notifier's own restarts too: a gateway that
//! crashed re-sends what it could not confirm (same alert id, a new
//! PUBLISH), and the broker delivers it to a notifier that may have been
//! restarted in between.
//!
//! An alert is shown again only when its `escalation` counter is higher than
//! the one shown (nobody answered in time, so the gateway escalated it).
//!
//! The last `cap` ids are kept in memory and in `seen-alerts.log` in the
//! state directory, one `<escalation> <id>` line per shown alert, appended
//! (a torn last line is skipped when read) and rewritten through a
//! temporary file once it holds twice `cap` lines. Ids that are not plain
//! (UUID-like) text stay in memory only. Lines are appended by `flush` (and
//! on drop), one write for all the ids recorded since: the notifier calls
//! it once per batch of messages, before answering or acknowledging them.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "seen-alerts.log";
const MAX_ID: usize = 128;

pub struct Seen {
    shown: HashMap<String, u32>,
    order: VecDeque<String>,
    cap: usize,
    file: Option<(PathBuf, File)>,
    lines: usize,
    /// Lines recorded but not yet appended to the file.
    pending: String,
}

fn storable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Parses one line of the log; `None` for anything malformed.
pub fn parse_line(l: &str) -> Option<(u32, &str)> {
    let (esc, id) = l.split_once(' ')?;
    let esc = esc.parse().ok()?;
    storable(id).then_some((esc, id))
}

impl Seen {
    /// Remembers the last `cap` ids, in memory only.
    pub fn new(cap: usize) -> Self {
        Self {
            shown: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
            file: None,
            lines: 0,
            pending: String::new(),
        }
    }

    /// Loads and keeps appending to the log in `dir`; without a usable
    /// log, works in memory (logged).
    pub fn open(dir: &Path, cap: usize) -> Self {
        let mut s = Self::new(cap);
        let path = dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                // A last line without its newline is a torn write: skipped.
                for l in text.split_inclusive('\n') {
                    let Some(l) = l.strip_suffix('\n') else {
                        log::warn!("{}: skipping a torn last line", path.display());
                        continue;
                    };
                    match parse_line(l) {
                        Some((esc, id)) => s.remember(id, esc),
                        None => log::warn!("{}: skipping a damaged line", path.display()),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::error!("{}: cannot read ({e}); starting empty", path.display()),
        }
        match s.rewrite(dir, &path) {
            Ok(f) => s.file = Some((path, f)),
            Err(e) => log::error!(
                "{}: {e}; alerts shown are remembered in memory only",
                path.display()
            ),
        }
        s
    }

    fn rewrite(&mut self, dir: &Path, path: &Path) -> std::io::Result<File> {
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension("log.tmp");
        let mut body = String::new();
        for id in &self.order {
            if let Some(e) = self.shown.get(id) {
                body.push_str(&format!("{e} {id}\n"));
            }
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(body.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        self.lines = self.order.len();
        OpenOptions::new().append(true).open(path)
    }

    fn remember(&mut self, id: &str, escalation: u32) {
        match self.shown.get_mut(id) {
            Some(e) => *e = (*e).max(escalation),
            None => {
                self.shown.insert(id.to_string(), escalation);
                self.order.push_back(id.to_string());
                while self.order.len() > self.cap {
                    if let Some(old) = self.order.pop_front() {
                        self.shown.remove(&old);
                    }
                }
            }
        }
    }

    /// Whether an alert with `id` and `escalation` should be shown: never
    /// seen, or escalated beyond what was shown.
    pub fn is_new(&self, id: &str, escalation: u32) -> bool {
        self.shown.get(id).is_none_or(|e| escalation > *e)
    }

    /// Records that it was shown (after showing it: a crash in between
    /// shows it twice rather than never); on disk at the next `flush`.
    pub fn record(&mut self, id: &str, escalation: u32) {
        self.remember(id, escalation);
        if !storable(id) || self.file.is_none() {
            return;
        }
        self.pending.push_str(&escalation.to_string());
        self.pending.push(' ');
        self.pending.push_str(id);
        self.pending.push('\n');
    }

    /// Appends the lines recorded since the last flush, in one write.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let body = std::mem::take(&mut self.pending);
        let Some((path, f)) = &mut self.file else {
            return;
        };
        if let Err(e) = f.write_all(body.as_bytes()) {
            log::error!("{}: {e}; remembering in memory only", path.display());
            self.file = None;
            return;
        }
        self.lines += body.matches('\n').count();
        if self.lines > 2 * self.cap {
            let path = path.clone();
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            match self.rewrite(&dir, &path) {
                Ok(f) => self.file = Some((path, f)),
                Err(e) => {
                    log::error!("{}: {e}; remembering in memory only", path.display());
                    self.file = None;
                }
            }
        }
    }

    /// True the first time `id` is offered (and records it).
    pub fn first(&mut self, id: &str) -> bool {
        let new = self.is_new(id, 0) && !self.shown.contains_key(id);
        if new {
            self.record(id, 0);
        }
        new
    }
}

// No flush on drop: ids reach the disk only through `flush`, which the
// notifier calls once their lines are shown. A notifier stopping because
// it could not show them must not record them as shown.

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seen_reports_each_id_once_and_forgets_the_oldest() {
        let mut s = Seen::new(2);
        assert!(s.first("a"));
        assert!(!s.first("a"));
        assert!(s.first("b"));
        assert!(s.first("c"));
        assert!(s.first("a"), "oldest forgotten past the capacity");
        assert!(!s.first("c"));
    }

    #[test]
    fn a_higher_escalation_is_shown_again_a_lower_one_not() {
        let mut s = Seen::new(10);
        assert!(s.is_new("a", 0));
        s.record("a", 0);
        assert!(!s.is_new("a", 0));
        assert!(s.is_new("a", 1));
        s.record("a", 1);
        assert!(!s.is_new("a", 0), "a late original after its escalation");
        assert!(!s.is_new("a", 1));
    }

    #[test]
    fn remembered_across_a_restart_bounded_and_torn_lines_skipped() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut s = Seen::open(t.path(), 3);
        for i in 0..10 {
            s.record(&format!("id-{i}"), 0);
        }
        s.record("id-9", 2);
        s.record("not storable\nid", 0);
        s.flush();
        drop(s);
        let p = t.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&p).expect("open");
        f.write_all(b"1 id-torn-li").expect("write"); // no newline: torn
        drop(f);
        let s = Seen::open(t.path(), 3);
        assert!(!s.is_new("id-9", 2));
        assert!(s.is_new("id-9", 3));
        assert!(!s.is_new("id-8", 0));
        assert!(s.is_new("id-0", 0), "forgotten past the bound");
        assert!(s.is_new("id-torn-li", 0), "a torn line is not a record");
        let lines = std::fs::read_to_string(&p).expect("read").lines().count();
        assert!(lines <= 3 + 1, "log compacted on open: {lines} lines");
    }

    #[test]
    fn recorded_ids_reach_the_file_at_flush_in_one_append() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join(FILE_NAME);
        let mut s = Seen::open(t.path(), 100);
        s.record("id-1", 0);
        s.record("id-2", 1);
        assert!(!s.is_new("id-2", 1), "known in memory at once");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "");
        s.flush();
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            "0 id-1\n1 id-2\n"
        );
        s.flush();
        s.record("id-3", 0);
        drop(s);
        let s = Seen::open(t.path(), 100);
        assert!(
            s.is_new("id-3", 0),
            "not flushed on drop: recorded but never confirmed shown"
        );
    }

    proptest! {
        #[test]
        fn parse_line_never_panics(l in "\\PC{0,200}") {
            let _ = parse_line(&l);
        }

        #[test]
        fn storable_lines_round_trip(esc in 0u32..1000, id in "[A-Za-z0-9._:-]{1,128}") {
            let l = format!("{esc} {id}");
            prop_assert_eq!(parse_line(&l), Some((esc, id.as_str())));
        }
    }
}
