//! The outbox's disk log: the append-only file in the state directory,
//! its compaction, and the `fdatasync` jobs the daemon runs off the
//! runtime. [`Disk`] is what the daemon's shell holds: the log plus the
//! "is the disk failing" state that keeps its error lines to one per
//! outage.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{decode_all, encode, renumber_if_exhausted, replay, Item, Record};
use super::OutboxError;

/// The log's file name inside the state directory.
pub const FILE_NAME: &str = "outbox.log";

/// The log is compacted once it is this large and twice its live size.
pub(super) const COMPACT_MIN: u64 = 16 * 1024;

/// The append-only log in the state directory.
pub struct DiskLog {
    path: PathBuf,
    file: File,
    /// Size of the file.
    bytes: u64,
    /// Encoded size of each live add record.
    live: HashMap<u64, u64>,
    live_bytes: u64,
    max_bytes: u64,
    /// A clone of `file` for syncs on another thread.
    sync_handle: Option<Arc<File>>,
}

/// What was found in the log at start.
pub struct Loaded {
    pub log: DiskLog,
    /// Pending entries: (seq, wall-clock ms when added, item), in order.
    pub pending: Vec<(u64, u64, Item)>,
    pub skipped_bytes: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What was read from the log in `dir`, before it is rewritten.
struct Read {
    path: PathBuf,
    pending: Vec<(u64, u64, Item)>,
    skipped: usize,
}

/// Reads the log in `dir` (creating `dir`); an unreadable log is moved
/// aside.
fn read_log(dir: &Path) -> Result<Read, OutboxError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(FILE_NAME);
    let buf = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            // Unreadable: keep it aside for a person, start afresh.
            let aside = path.with_extension("log.unreadable");
            log::error!(
                "outbox {}: cannot read ({e}); moving it to {} and starting empty",
                path.display(),
                aside.display()
            );
            std::fs::rename(&path, &aside).map_err(io(&path))?;
            Vec::new()
        }
    };
    let d = decode_all(&buf);
    let mut pending: Vec<(u64, u64, Item)> = replay(d.records)
        .into_iter()
        .map(|(seq, (at, item))| (seq, at, item))
        .collect();
    if renumber_if_exhausted(&mut pending) {
        log::warn!(
            "outbox {}: sequence numbers near their limit; renumbered the {} pending entr(y/ies) from 0",
            path.display(),
            pending.len()
        );
    }
    Ok(Read {
        path,
        pending,
        skipped: d.skipped,
    })
}

impl DiskLog {
    /// Opens (creating) the log in `dir`, reads what it can, and compacts it.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Loaded, OutboxError> {
        let read = read_log(dir)?;
        DiskLog::compacted(read, max_bytes).map_err(|(e, _)| e)
    }

    /// Rewrites what [`read_log`] found as the new log; on failure, the
    /// error and the pending entries read (to deliver from memory).
    fn compacted(read: Read, max_bytes: u64) -> Result<Loaded, (OutboxError, Read)> {
        let (file, bytes, live) = match write_compacted(&read.path, &read.pending) {
            Ok(c) => c,
            Err(e) => return Err((e, read)),
        };
        let live_bytes = live.values().sum();
        Ok(Loaded {
            log: DiskLog {
                path: read.path,
                file,
                bytes,
                live,
                live_bytes,
                max_bytes,
                sync_handle: None,
            },
            pending: read.pending,
            skipped_bytes: read.skipped,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an add record (not yet fsynced: see [`DiskLog::sync_handle`]);
    /// refuses past the bound.
    pub fn add(&mut self, seq: u64, at_ms: u64, item: &Item) -> Result<(), OutboxError> {
        let rec = encode(&Record::Add {
            seq,
            at_ms,
            item: item.clone(),
        })?;
        let n = rec.len() as u64;
        if self.live_bytes + n > self.max_bytes {
            return Err(OutboxError::Full {
                live: self.live_bytes,
                max: self.max_bytes,
            });
        }
        self.append(&rec)?;
        self.live.insert(seq, n);
        self.live_bytes += n;
        Ok(())
    }

    /// Marks `seq` done (not fsynced: losing it only means a re-send, which
    /// the notifier de-duplicates); compacts when the log has grown.
    pub fn done(&mut self, seq: u64) -> Result<(), OutboxError> {
        let Some(n) = self.live.remove(&seq) else {
            return Ok(());
        };
        self.live_bytes -= n;
        self.append(&encode(&Record::Done { seq })?)?;
        if self.bytes > COMPACT_MIN && self.bytes > 2 * self.live_bytes {
            self.compact()?;
        }
        Ok(())
    }

    /// A handle on the log file for an `fdatasync` on another thread; it
    /// covers every record written so far (a compaction in between makes
    /// them durable by itself: it fsyncs the file that replaces this one).
    pub fn sync_handle(&mut self) -> Result<Arc<File>, OutboxError> {
        if let Some(h) = &self.sync_handle {
            return Ok(h.clone());
        }
        let h = Arc::new(self.file.try_clone().map_err(io(&self.path))?);
        self.sync_handle = Some(h.clone());
        Ok(h)
    }

    fn append(&mut self, rec: &[u8]) -> Result<(), OutboxError> {
        if let Err(e) = self.file.write_all(rec) {
            // A short write may have left a torn record: put the file back
            // to its last good length so the next record starts clean.
            let _ = self.file.set_len(self.bytes);
            return Err(io(&self.path)(e));
        }
        self.bytes += rec.len() as u64;
        Ok(())
    }

    /// Rewrites the log with the live records only.
    fn compact(&mut self) -> Result<(), OutboxError> {
        let pending = read_pending(&self.path)?;
        let (file, bytes, live) = write_compacted(&self.path, &pending)?;
        self.file = file;
        self.sync_handle = None;
        self.bytes = bytes;
        self.live_bytes = live.values().sum();
        self.live = live;
        Ok(())
    }
}

fn read_pending(path: &Path) -> Result<Vec<(u64, u64, Item)>, OutboxError> {
    let buf = std::fs::read(path).map_err(io(path))?;
    Ok(replay(decode_all(&buf).records)
        .into_iter()
        .map(|(s, (a, i))| (s, a, i))
        .collect())
}

type Compacted = (File, u64, HashMap<u64, u64>);

fn write_compacted(path: &Path, pending: &[(u64, u64, Item)]) -> Result<Compacted, OutboxError> {
    let mut buf = Vec::new();
    let mut live = HashMap::new();
    for (seq, at_ms, item) in pending {
        let rec = encode(&Record::Add {
            seq: *seq,
            at_ms: *at_ms,
            item: item.clone(),
        })?;
        live.insert(*seq, rec.len() as u64);
        buf.extend_from_slice(&rec);
    }
    let tmp = path.with_extension("log.tmp");
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(&buf)?;
        f.sync_all()
    });
    if let Err(e) = written {
        // Full or read-only: leave no empty or partial temporary file.
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io(path))?;
    Ok((file, buf.len() as u64, live))
}

/// One `fdatasync` of the log, covering the records up to `upto`; run it
/// off the async runtime ([`SyncJob::run`]) and report the result to the
/// queue (and to [`Disk::sync_result`]).
pub struct SyncJob {
    file: Arc<File>,
    path: PathBuf,
    pub upto: u64,
}

impl SyncJob {
    pub fn run(&self) -> Result<(), OutboxError> {
        self.file.sync_data().map_err(io(&self.path))
    }
}

/// The disk half of the outbox, as the daemon's shell holds it: the log,
/// and whether the last write failed (to log state changes only).
pub struct Disk {
    log: DiskLog,
    failing: bool,
}

/// What [`Disk::open`] found: the disk (when usable) and the entries a
/// previous run left, `(seq, wall-clock ms when added, item)` in order.
/// Entries read from a log that could not be rewritten come without a
/// disk: deliver them from memory ([`super::Queue::loaded_in_memory`]).
pub struct Opened {
    pub disk: Option<Disk>,
    pub pending: Vec<(u64, u64, Item)>,
}

impl Disk {
    /// Opens the log in `dir` (`state_dir`), bounded by `max_bytes`
    /// (`outbox_max_bytes`). Never fails: without a usable log the outbox
    /// works in memory (logged).
    pub fn open(dir: &Path, max_bytes: u64) -> Opened {
        let read = match read_log(dir) {
            Ok(r) => r,
            Err(e) => {
                log::error!(
                    "outbox in {}: {e}; alerts are kept in memory only (not crash-safe)",
                    dir.display()
                );
                return Opened {
                    disk: None,
                    pending: Vec::new(),
                };
            }
        };
        match DiskLog::compacted(read, max_bytes) {
            Ok(l) => {
                if l.skipped_bytes > 0 {
                    log::error!(
                        "outbox {}: {} damaged byte(s) skipped; kept the {} readable pending entries",
                        l.log.path().display(),
                        l.skipped_bytes,
                        l.pending.len()
                    );
                }
                if !l.pending.is_empty() {
                    log::warn!(
                        "outbox {}: {} entr(y/ies) from a previous run to deliver",
                        l.log.path().display(),
                        l.pending.len()
                    );
                }
                Opened {
                    disk: Some(Disk {
                        log: l.log,
                        failing: false,
                    }),
                    pending: l.pending,
                }
            }
            Err((e, read)) => {
                // The entries read are delivered all the same (from
                // memory); the log keeps them for a restart until then.
                log::error!(
                    "outbox {}: cannot rewrite it: {e}; delivering its {} pending entr(y/ies) from memory, and alerts are kept in memory only (not crash-safe) while the disk refuses writes",
                    read.path.display(),
                    read.pending.len()
                );
                Opened {
                    disk: None,
                    pending: read.pending,
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.log.path()
    }

    /// Writes an add record (not yet fsynced); false when it could not be
    /// written: the entry is then kept in memory only (logged).
    pub fn store(&mut self, seq: u64, at_ms: u64, item: &Item) -> bool {
        match self.log.add(seq, at_ms, item) {
            Ok(()) => true,
            Err(e) => {
                // "Writable again" is said by the next sync that succeeds.
                if !self.failing {
                    log::error!(
                        "outbox {}: cannot store {}: {e}; keeping it in memory only",
                        self.log.path().display(),
                        item.describe()
                    );
                    self.failing = true;
                } else {
                    log::warn!("{} kept in memory only", item.describe());
                }
                false
            }
        }
    }

    /// Marks `seq` done; `what` names it in the warning when that fails.
    pub fn done(&mut self, seq: u64, what: &str) {
        if let Err(err) = self.log.done(seq) {
            log::warn!(
                "outbox {}: cannot mark {what} done: {err}",
                self.log.path().display()
            );
        }
    }

    /// The `fdatasync` covering every record written so far (`upto`); an
    /// error when not even a handle on the file can be had (report it as
    /// the sync's result).
    pub fn sync_job(&mut self, upto: u64) -> Result<SyncJob, OutboxError> {
        let file = self.log.sync_handle()?;
        Ok(SyncJob {
            file,
            path: self.log.path().to_path_buf(),
            upto,
        })
    }

    /// Syncs on this thread (at shutdown, and in tests).
    pub fn sync_now(&mut self) -> Result<(), OutboxError> {
        let path = self.log.path().to_path_buf();
        self.log
            .sync_handle()
            .and_then(|f| f.sync_data().map_err(io(&path)))
    }

    /// A sync's result, for the log lines: the first failure and the
    /// recovery are said once.
    pub fn sync_result(&mut self, result: &Result<(), OutboxError>) {
        match result {
            Ok(()) => {
                if self.failing {
                    log::info!("outbox {}: writable again", self.log.path().display());
                    self.failing = false;
                }
            }
            Err(e) => {
                if !self.failing {
                    log::error!("outbox: cannot sync the log: {e}; its newest entries are kept in memory only");
                    self.failing = true;
                }
            }
        }
    }
}
