//! The daemon's outbox: alerts waiting for the broker's PUBCOMP, in order,
//! kept in memory and mirrored to a small append-only log in the state
//! directory so that a restarted daemon (crash, SIGKILL, power cut) still
//! delivers them.
//!
//! The log is a sequence of framed records:
//!
//! ```text
//! magic 0xA1 0x7E | body length: u32 LE | CRC-32 (IEEE) of body: u32 LE | body (JSON)
//! ```
//!
//! A body is either `{"op":"add",..}` (an alert or a retained clear, written
//! and fsynced *before* it is handed to the MQTT client) or
//! `{"op":"done","seq":N}` (appended after PUBCOMP, or when the alert's
//! expiry passed). Replay keeps every `add` without a `done`, in sequence
//! order. A torn tail or a damaged record fails its CRC and is skipped; the
//! reader resynchronises on the next magic with a valid CRC, so one bad
//! sector costs the records in it, not the whole outbox. The log is
//! compacted (live records written to a temporary file, fsynced, renamed
//! over the log, folder fsynced) when it is opened and whenever it has grown
//! to twice its live size.
//!
//! Group commit: [`Outbox::push`] only writes the record; the daemon then
//! takes a [`SyncJob`] (one `fdatasync` for every record written since the
//! last one, e.g. all the alerts of one sweep) and runs it on a blocking
//! thread, so the MQTT link never waits for the disk. An entry is handed to
//! the client ([`Outbox::pop`]) only once its record is on disk.
//!
//! Readings never come here; only alerts, which are rare (SD-card wear).
//! When the log cannot be written (disk full, read-only, over
//! `outbox_max_bytes`), entries stay in memory only and one line says so.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::mqtt::payload::Alert;

/// The log's file name inside the state directory.
pub const FILE_NAME: &str = "outbox.log";

const MAGIC: [u8; 2] = [0xA1, 0x7E];
const HEADER: usize = 10;
/// No record is larger: an alert is a few hundred bytes.
pub const MAX_RECORD: usize = 64 * 1024;
/// The log is compacted once it is this large and twice its live size.
const COMPACT_MIN: u64 = 16 * 1024;

/// Something to publish at QoS 2, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Item {
    Alert {
        alert: Alert,
    },
    /// A sensor's retained CRITICAL published again (same alert, fresh
    /// expiry) so that the retained state outlives the message expiry.
    RefreshRetained {
        alert: Alert,
    },
    /// An empty retained message that clears a sensor's retained CRITICAL.
    ClearRetained {
        sensor: String,
    },
}

impl Item {
    /// A short description for log lines.
    pub fn describe(&self) -> String {
        match self {
            Item::Alert { alert } => format!(
                "alert {} ({} {}, escalation {})",
                alert.id, alert.level, alert.name, alert.escalation
            ),
            Item::ClearRetained { sensor } => format!("retained CRITICAL clear for {sensor}"),
            Item::RefreshRetained { alert } => {
                format!("retained CRITICAL refresh of {} ({})", alert.id, alert.name)
            }
        }
    }
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Record {
    Add {
        seq: u64,
        /// Wall-clock time it entered the outbox, ms since the Unix epoch.
        at_ms: u64,
        item: Item,
    },
    Done {
        seq: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("outbox full: {live} of {max} bytes in use")]
    Full { live: u64, max: u64 },
    #[error("record too large ({0} bytes)")]
    TooLarge(usize),
}

// ---- framing: the pure core ---------------------------------------------

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}
static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE 802.3, as zlib and PNG).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

/// One record, framed.
pub fn encode(r: &Record) -> Result<Vec<u8>, OutboxError> {
    let body = serde_json::to_vec(r).map_err(|e| OutboxError::Io {
        path: PathBuf::new(),
        source: std::io::Error::other(e),
    })?;
    if body.len() > MAX_RECORD {
        return Err(OutboxError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// What [`decode_all`] found.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub records: Vec<Record>,
    /// Bytes that belonged to no valid record (torn tail, damage).
    pub skipped: usize,
}

fn record_at(buf: &[u8], at: usize) -> Option<(Record, usize)> {
    let h = buf.get(at..at + HEADER)?;
    if h[..2] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes([h[2], h[3], h[4], h[5]]) as usize;
    let crc = u32::from_le_bytes([h[6], h[7], h[8], h[9]]);
    if len > MAX_RECORD {
        return None;
    }
    let body = buf.get(at + HEADER..at + HEADER + len)?;
    if crc32(body) != crc {
        return None;
    }
    let r = serde_json::from_slice(body).ok()?;
    Some((r, HEADER + len))
}

/// Every valid record in `buf`, in order; never panics on any input.
pub fn decode_all(buf: &[u8]) -> Decoded {
    let mut d = Decoded::default();
    let mut at = 0;
    while at < buf.len() {
        match record_at(buf, at) {
            Some((r, n)) => {
                d.records.push(r);
                at += n;
            }
            None => {
                d.skipped += 1;
                at += 1;
            }
        }
    }
    d
}

/// The entries still pending after `records`: every add without a done, by
/// sequence number.
pub fn replay(records: Vec<Record>) -> BTreeMap<u64, (u64, Item)> {
    let mut live = BTreeMap::new();
    for r in records {
        match r {
            Record::Add { seq, at_ms, item } => {
                live.insert(seq, (at_ms, item));
            }
            Record::Done { seq } => {
                live.remove(&seq);
            }
        }
    }
    live
}

/// How long an entry from a previous run had waited, by the wall clock.
/// An alert stamped while the clock was not synchronised (a Pi without RTC
/// before NTP) has no meaningful age: the clock may have jumped years
/// since. It counts as fresh (its payload says `clock_synced: false`)
/// rather than being dropped as expired.
fn waited_before(item: &Item, at_ms: u64, now_ms: u64) -> Duration {
    match item {
        Item::Alert { alert } if !alert.clock_synced => Duration::ZERO,
        _ => Duration::from_millis(now_ms.saturating_sub(at_ms)),
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// ---- the log file ----------------------------------------------------------

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

impl DiskLog {
    /// Opens (creating) the log in `dir`, reads what it can, and compacts it.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Loaded, OutboxError> {
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
        let pending: Vec<(u64, u64, Item)> = replay(d.records)
            .into_iter()
            .map(|(seq, (at, item))| (seq, at, item))
            .collect();
        let (file, bytes, live) = write_compacted(&path, &pending)?;
        let live_bytes = live.values().sum();
        Ok(Loaded {
            log: DiskLog {
                path,
                file,
                bytes,
                live,
                live_bytes,
                max_bytes,
                sync_handle: None,
            },
            pending,
            skipped_bytes: d.skipped,
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
    {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&buf)
            .and_then(|()| f.sync_all())
            .map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
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

// ---- the outbox the daemon uses ------------------------------------------

/// An entry waiting for PUBCOMP.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub item: Item,
    /// When it entered the outbox in this process (or was loaded).
    pub since: Instant,
    /// Time it had already waited before this process loaded it.
    pub waited_before: Duration,
    persisted: bool,
    /// Its record is on disk (fsynced), or it never will be (memory only):
    /// it may be handed to the client.
    durable: bool,
}

impl Entry {
    /// How long it has waited since it entered the outbox, across restarts.
    pub fn waited(&self) -> Duration {
        self.waited_before + self.since.elapsed()
    }
}

/// The in-memory queue, mirrored to a [`DiskLog`] when there is one.
pub struct Outbox {
    queue: VecDeque<Entry>,
    handed: HashMap<u64, Entry>,
    next_seq: u64,
    disk: Option<DiskLog>,
    /// Whether the last disk write failed (to log state changes only).
    disk_failing: bool,
    /// The highest sequence number written but not yet fsynced.
    unsynced: Option<u64>,
    /// A sync job is running, since this instant.
    syncing: Option<Instant>,
    /// The running sync took longer than [`SYNC_STALL`]: entries are
    /// handed out without waiting for it.
    stalled: bool,
}

/// A sync that has not returned after this long is taken as hung (a
/// failing SD card can block `fdatasync` for minutes): alerts go out
/// without waiting for it, and one line says so.
pub const SYNC_STALL: Duration = Duration::from_secs(3);

/// One `fdatasync` of the log, covering the records up to `upto`; run it
/// off the async runtime ([`SyncJob::run`]) and report with
/// [`Outbox::synced`].
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

impl Outbox {
    /// An outbox that never touches the disk.
    pub fn memory() -> Self {
        Self {
            queue: VecDeque::new(),
            handed: HashMap::new(),
            next_seq: 0,
            disk: None,
            disk_failing: false,
            unsynced: None,
            syncing: None,
            stalled: false,
        }
    }

    /// Opens the log in `dir`: entries left by a previous run are queued
    /// first, their waiting time so far taken from the wall clock. Never
    /// fails: without a usable log, the outbox works in memory (logged).
    pub fn open(dir: &Path, max_bytes: u64) -> Self {
        let mut o = Self::memory();
        match DiskLog::open(dir, max_bytes) {
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
                let now_ms = unix_ms(SystemTime::now());
                let now = Instant::now();
                for (seq, at_ms, item) in l.pending {
                    o.next_seq = o.next_seq.max(seq + 1);
                    o.queue.push_back(Entry {
                        waited_before: waited_before(&item, at_ms, now_ms),
                        seq,
                        item,
                        since: now,
                        persisted: true,
                        durable: true,
                    });
                }
                o.disk = Some(l.log);
            }
            Err(e) => log::error!(
                "outbox in {}: {e}; alerts are kept in memory only (not crash-safe)",
                dir.display()
            ),
        }
        o
    }

    /// Adds `item` at the end: written to the log, and in memory. It is
    /// handed out by [`pop`](Self::pop) once a sync covered it.
    pub fn push(&mut self, item: Item) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let persisted = match &mut self.disk {
            // "Writable again" is said by the next sync that succeeds.
            Some(d) => match d.add(seq, unix_ms(SystemTime::now()), &item) {
                Ok(()) => true,
                Err(e) => {
                    if !self.disk_failing {
                        log::error!(
                            "outbox {}: cannot store {}: {e}; keeping it in memory only",
                            d.path().display(),
                            item.describe()
                        );
                        self.disk_failing = true;
                    } else {
                        log::warn!("{} kept in memory only", item.describe());
                    }
                    false
                }
            },
            None => false,
        };
        if persisted {
            self.unsynced = Some(seq);
        }
        self.queue.push_back(Entry {
            seq,
            item,
            since: Instant::now(),
            waited_before: Duration::ZERO,
            persisted,
            // While a sync hangs, new entries do not wait for the disk.
            durable: !persisted || self.stalled,
        });
    }

    /// The sync to run now, if records wait for one and none is running.
    pub fn sync_job(&mut self) -> Option<SyncJob> {
        if self.syncing.is_some() {
            return None;
        }
        let upto = self.unsynced?;
        let disk = self.disk.as_mut()?;
        match disk.sync_handle() {
            Ok(file) => {
                self.syncing = Some(Instant::now());
                self.unsynced = None;
                Some(SyncJob {
                    file,
                    path: disk.path().to_path_buf(),
                    upto,
                })
            }
            Err(e) => {
                self.mark_synced(upto, Err(e));
                None
            }
        }
    }

    /// A sync job finished: its entries may be handed out. When it failed
    /// they are handed out all the same (kept in memory only; logged):
    /// delivering an alert comes before storing it.
    pub fn synced(&mut self, upto: u64, result: Result<(), OutboxError>) {
        self.syncing = None;
        if self.stalled {
            self.stalled = false;
            log::warn!("outbox: the disk answered the hung fdatasync; waiting for it again");
        }
        self.mark_synced(upto, result);
    }

    /// The records up to `upto` are on disk (or could not be put there):
    /// their entries may be handed out.
    fn mark_synced(&mut self, upto: u64, result: Result<(), OutboxError>) {
        match result {
            Ok(()) => {
                if self.disk_failing {
                    if let Some(d) = &self.disk {
                        log::info!("outbox {}: writable again", d.path().display());
                    }
                    self.disk_failing = false;
                }
            }
            Err(e) => {
                if !self.disk_failing {
                    log::error!("outbox: cannot sync the log: {e}; its newest entries are kept in memory only");
                    self.disk_failing = true;
                }
            }
        }
        self.mark_durable(upto);
    }

    fn mark_durable(&mut self, upto: u64) {
        for e in self.queue.iter_mut().filter(|e| e.seq <= upto) {
            e.durable = true;
        }
    }

    /// Every entry numbered below `next_seq` has been written.
    fn last_written(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// When the running sync has taken longer than [`SYNC_STALL`] at
    /// `now`: hands out every entry without waiting for it (logged). True
    /// when entries became ready.
    pub fn check_stall(&mut self, now: Instant) -> bool {
        let Some(since) = self.syncing else {
            return false;
        };
        if self.stalled || now.saturating_duration_since(since) < SYNC_STALL {
            return false;
        }
        self.stalled = true;
        log::error!(
            "outbox: fdatasync has not returned for {} s (a failing disk?); publishing alerts without waiting for it",
            now.saturating_duration_since(since).as_secs()
        );
        self.mark_durable(self.last_written());
        true
    }

    /// Syncs now, on this thread (at shutdown, and in tests), whether or
    /// not a sync job is running; not while one hangs.
    pub fn sync_now(&mut self) {
        if self.stalled || self.queue.iter().all(|e| e.durable) {
            return;
        }
        let r = match self.disk.as_mut() {
            Some(d) => d
                .sync_handle()
                .and_then(|f| f.sync_data().map_err(io(d.path()))),
            None => Ok(()),
        };
        self.unsynced = None;
        self.mark_synced(self.last_written(), r);
    }

    /// The next entry to hand to the client, if any is ready (on disk).
    pub fn pop(&mut self) -> Option<Entry> {
        if !self.queue.front()?.durable {
            return None;
        }
        self.queue.pop_front()
    }

    /// Puts back an entry [`pop`](Self::pop) returned (client busy).
    pub fn unpop(&mut self, e: Entry) {
        self.queue.push_front(e);
    }

    /// The entry was handed to the client.
    pub fn handed(&mut self, e: Entry) {
        self.handed.insert(e.seq, e);
    }

    /// Takes back a handed entry when its notice arrives.
    pub fn take_handed(&mut self, seq: u64) -> Option<Entry> {
        self.handed.remove(&seq)
    }

    /// Queues a handed entry again, in sequence order (to re-publish it).
    pub fn requeue(&mut self, e: Entry) {
        let at = self.queue.partition_point(|q| q.seq < e.seq);
        self.queue.insert(at, e);
    }

    /// The entry is finished (PUBCOMP, or expired): forget it, on disk too.
    pub fn finish(&mut self, e: &Entry) {
        if !e.persisted {
            return;
        }
        if let Some(d) = &mut self.disk {
            if let Err(err) = d.done(e.seq) {
                log::warn!(
                    "outbox {}: cannot mark {} done: {err}",
                    d.path().display(),
                    e.item.describe()
                );
            }
        }
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn in_flight(&self) -> usize {
        self.handed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::alert::AlertLevel;
    use proptest::prelude::*;

    fn alert(id: &str) -> Item {
        Item::Alert {
            alert: Alert {
                message: "hot".into(),
                ..Alert::sample(id, AlertLevel::Critical)
            },
        }
    }

    fn add(seq: u64) -> Record {
        Record::Add {
            seq,
            at_ms: 1000 + seq,
            item: alert(&format!("id-{seq}")),
        }
    }

    fn log_of(records: &[Record]) -> Vec<u8> {
        records
            .iter()
            .flat_map(|r| encode(r).expect("encode"))
            .collect()
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn replay_keeps_adds_without_done_in_order() {
        let recs = vec![add(3), add(1), Record::Done { seq: 3 }, add(2)];
        let live: Vec<u64> = replay(recs).into_keys().collect();
        assert_eq!(live, vec![1, 2]);
    }

    #[test]
    fn a_damaged_record_costs_only_itself() {
        let recs = vec![add(0), add(1), add(2)];
        let mut buf = log_of(&recs);
        let first = encode(&recs[0]).expect("encode").len();
        buf[first + HEADER + 5] ^= 0xFF; // inside record 1's body
        let d = decode_all(&buf);
        assert_eq!(d.records, vec![add(0), add(2)]);
        assert!(d.skipped > 0);
    }

    proptest! {
        #[test]
        fn a_torn_tail_yields_a_prefix(n in 1usize..6, cut in 0usize..4000) {
            let recs: Vec<Record> = (0..n as u64).map(add).collect();
            let buf = log_of(&recs);
            let cut = cut % (buf.len() + 1);
            let d = decode_all(&buf[..cut]);
            prop_assert!(d.records.len() <= n);
            prop_assert_eq!(&d.records[..], &recs[..d.records.len()]);
        }

        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let d = decode_all(&bytes);
            prop_assert!(d.skipped <= bytes.len());
        }

        #[test]
        fn flipped_bytes_never_invent_records(n in 1usize..5, at in 0usize..4000, bit in 0u8..8) {
            let recs: Vec<Record> = (0..n as u64).map(add).collect();
            let mut buf = log_of(&recs);
            let at = at % buf.len();
            buf[at] ^= 1 << bit;
            let d = decode_all(&buf);
            prop_assert!(d.records.len() >= n - 1);
            for r in &d.records {
                prop_assert!(recs.contains(r));
            }
        }
    }

    #[test]
    fn pending_entries_survive_a_reopen_and_done_ones_do_not() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut o = Outbox::open(t.path(), 1 << 20);
        for i in 0..3 {
            o.push(alert(&format!("a{i}")));
        }
        o.sync_now();
        let e0 = o.pop().expect("entry");
        o.handed(e0.clone());
        let back = o.take_handed(e0.seq).expect("handed");
        o.finish(&back);
        drop(o);
        let mut o = Outbox::open(t.path(), 1 << 20);
        let ids: Vec<String> = std::iter::from_fn(|| o.pop())
            .map(|e| e.item.describe())
            .collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids[0].contains("a1") && ids[1].contains("a2"), "{ids:?}");
        // New entries continue after the old sequence numbers.
        o.push(alert("a3"));
        o.sync_now();
        assert_eq!(o.pop().map(|e| e.seq), Some(3));
    }

    #[test]
    fn entries_wait_for_one_sync_that_covers_the_whole_batch() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut o = Outbox::open(t.path(), 1 << 20);
        o.push(alert("a0"));
        o.push(alert("a1"));
        assert!(o.pop().is_none(), "not handed out before it is on disk");
        let job = o.sync_job().expect("a sync is due");
        assert_eq!(job.upto, 1, "one sync for both records");
        o.push(alert("a2"));
        assert!(o.sync_job().is_none(), "one sync at a time");
        job.run().expect("fdatasync");
        o.synced(job.upto, Ok(()));
        let ids: Vec<u64> = std::iter::from_fn(|| o.pop()).map(|e| e.seq).collect();
        assert_eq!(ids, vec![0, 1], "a2 waits for the next sync");
        let job = o.sync_job().expect("the next sync");
        assert_eq!(job.upto, 2);
        // A failed sync still hands the entry out: delivering comes first.
        o.synced(job.upto, Err(OutboxError::TooLarge(0)));
        assert_eq!(o.pop().map(|e| e.seq), Some(2));
        assert!(o.sync_job().is_none(), "nothing left to sync");
    }

    #[test]
    fn a_hung_sync_does_not_hold_alerts_back() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut o = Outbox::open(t.path(), 1 << 20);
        o.push(alert("a0"));
        let job = o.sync_job().expect("a sync is due");
        let start = Instant::now();
        assert!(!o.check_stall(start + SYNC_STALL / 2), "not yet");
        assert!(o.pop().is_none());
        assert!(o.check_stall(start + SYNC_STALL * 2), "hung");
        assert_eq!(o.pop().map(|e| e.seq), Some(0), "handed out anyway");
        o.push(alert("a1"));
        assert_eq!(o.pop().map(|e| e.seq), Some(1), "new ones do not wait");
        o.sync_now(); // must not block on the hung disk: a no-op here
                      // The disk answers at last: entries wait for their sync again.
        o.synced(job.upto, Ok(()));
        o.push(alert("a2"));
        assert!(o.pop().is_none());
        let job = o.sync_job().expect("the next sync");
        o.synced(job.upto, job.run());
        assert_eq!(o.pop().map(|e| e.seq), Some(2));
    }

    #[test]
    fn memory_only_entries_need_no_sync() {
        let mut o = Outbox::memory();
        o.push(alert("a0"));
        assert!(o.sync_job().is_none());
        assert_eq!(o.pop().map(|e| e.seq), Some(0));
    }

    #[test]
    fn a_torn_write_at_the_end_keeps_the_earlier_entries() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut o = Outbox::open(t.path(), 1 << 20);
        o.push(alert("a0"));
        o.push(alert("a1"));
        drop(o);
        let p = t.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&p).expect("read");
        let half = encode(&add(9)).expect("encode");
        bytes.extend_from_slice(&half[..half.len() / 2]);
        std::fs::write(&p, bytes).expect("write");
        let mut o = Outbox::open(t.path(), 1 << 20);
        assert_eq!(o.queued(), 2);
        assert!(o.pop().is_some_and(|e| e.item.describe().contains("a0")));
    }

    #[test]
    fn garbage_in_place_of_the_log_is_survived() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::write(t.path().join(FILE_NAME), b"\xff\xfe not a log at all").expect("write");
        let mut o = Outbox::open(t.path(), 1 << 20);
        assert_eq!(o.queued(), 0);
        o.push(alert("a0"));
        drop(o);
        assert_eq!(Outbox::open(t.path(), 1 << 20).queued(), 1);
    }

    #[test]
    fn over_the_bound_entries_stay_in_memory() {
        let t = tempfile::tempdir().expect("tempdir");
        let one = encode(&add(0)).expect("encode").len() as u64;
        let mut o = Outbox::open(t.path(), one + one / 2);
        o.push(alert("a0"));
        o.push(alert("a1"));
        assert_eq!(o.queued(), 2, "nothing is dropped");
        drop(o);
        assert_eq!(
            Outbox::open(t.path(), 1 << 20).queued(),
            1,
            "one fit on disk"
        );
    }

    #[test]
    fn an_unusable_state_dir_means_memory_only() {
        let t = tempfile::tempdir().expect("tempdir");
        let file = t.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("write");
        let mut o = Outbox::open(&file, 1 << 20);
        o.push(alert("a0"));
        assert_eq!(o.queued(), 1);
    }

    #[test]
    fn the_log_is_compacted_as_entries_complete() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut o = Outbox::open(t.path(), 1 << 20);
        for i in 0..200 {
            o.push(alert(&format!("a{i}")));
            o.sync_now();
            let e = o.pop().expect("entry");
            o.finish(&e);
        }
        let len = std::fs::metadata(t.path().join(FILE_NAME))
            .expect("meta")
            .len();
        assert!(len <= COMPACT_MIN + 1024, "log stays small: {len} bytes");
    }

    #[test]
    fn waiting_time_carries_across_a_reopen() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut o = Outbox::open(t.path(), 1 << 20);
        o.push(alert("a0"));
        drop(o);
        // Pretend it was added 100 s ago.
        let p = t.path().join(FILE_NAME);
        let d = decode_all(&std::fs::read(&p).expect("read"));
        let old = unix_ms(SystemTime::now()) - 100_000;
        let recs: Vec<Record> = d
            .records
            .into_iter()
            .map(|r| match r {
                Record::Add { seq, item, .. } => Record::Add {
                    seq,
                    at_ms: old,
                    item,
                },
                r => r,
            })
            .collect();
        std::fs::write(&p, log_of(&recs)).expect("write");
        let mut o = Outbox::open(t.path(), 1 << 20);
        let w = o.pop().expect("entry").waited();
        assert!(
            w >= Duration::from_secs(100) && w < Duration::from_secs(110),
            "{w:?}"
        );
    }

    #[test]
    fn an_alert_stamped_by_an_unsynchronised_clock_is_not_aged_by_it() {
        // Raised in "1970" before NTP, replayed after the clock jumped to
        // 2026: by the wall clock it waited 56 years and would be dropped.
        let mut item = alert("a0");
        if let Item::Alert { alert } = &mut item {
            alert.clock_synced = false;
        }
        let now_ms = unix_ms(SystemTime::now());
        assert_eq!(waited_before(&item, 5_000, now_ms), Duration::ZERO);
        assert_eq!(
            waited_before(&alert("a1"), now_ms - 7_000, now_ms),
            Duration::from_secs(7)
        );
        // A clock that went backwards does not make anything older.
        assert_eq!(
            waited_before(&alert("a1"), now_ms + 7_000, now_ms),
            Duration::ZERO
        );
    }
}
