//! The outbox's queue: pure, no I/O, no clock (every call that needs the
//! time takes `now`). It orders the entries, numbers them, and knows which
//! are on disk: an entry whose record was written waits for an `fdatasync`
//! that covers it before it may be handed to the MQTT client. The disk
//! itself ([`super::Disk`]) is driven by whoever holds the queue: the
//! gateway core asks for it with actions, [`super::Outbox`] calls it
//! directly.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::record::{renumber_if_exhausted, waited_before, Item};

/// A sync that has not returned after this long is taken as hung (a
/// failing SD card can block `fdatasync` for minutes): alerts go out
/// without waiting for it, and one line says so.
pub const SYNC_STALL: Duration = Duration::from_secs(3);

/// An entry waiting for PUBCOMP.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub item: Item,
    /// When it entered the outbox in this process (or was loaded).
    pub since: Instant,
    /// Time it had already waited before this process loaded it.
    pub waited_before: Duration,
    /// Its record was written to the log (so a done record is due when
    /// it is finished).
    pub persisted: bool,
    /// Its record is on disk (fsynced), or it never will be (memory only):
    /// it may be handed to the client.
    durable: bool,
}

impl Entry {
    /// How long it has waited at `now` since it entered the outbox, across
    /// restarts.
    pub fn waited(&self, now: Instant) -> Duration {
        self.waited_before + now.saturating_duration_since(self.since)
    }
}

/// The in-memory queue of the outbox.
#[derive(Debug, Default)]
pub struct Queue {
    queue: VecDeque<Entry>,
    handed: HashMap<u64, Entry>,
    next_seq: u64,
    /// Whether records are written to a disk log at all.
    has_disk: bool,
    /// Records written but not yet covered by a sync.
    unsynced: BTreeSet<u64>,
    /// A sync job is running, since this instant.
    syncing: Option<Instant>,
    /// The running sync took longer than [`SYNC_STALL`]: entries are
    /// handed out without waiting for it.
    stalled: bool,
}

/// What the queue says after a change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncNews {
    Nothing,
    /// The sync that was taken as hung returned at last.
    Unstalled,
}

impl Queue {
    /// An empty queue; `has_disk` says whether pushed entries are written
    /// to a log (and so wait for a sync) or kept in memory only.
    pub fn new(has_disk: bool) -> Self {
        Self {
            has_disk,
            ..Self::default()
        }
    }

    /// A queue starting with the entries a previous run left in the log,
    /// `(seq, wall-clock ms when added, item)`; their waiting time so far
    /// comes from the wall clock (`now_ms`), see [`waited_before`].
    /// Numbers too large to count on from are renumbered in order (see
    /// [`renumber_if_exhausted`]; [`super::DiskLog::open`] has done so
    /// already, and rewritten the log with the new numbers).
    pub fn loaded(pending: Vec<(u64, u64, Item)>, now: Instant, now_ms: u64) -> Self {
        Self::with_pending(true, pending, now, now_ms)
    }

    /// As [`Queue::loaded`], for entries read from a log that could not be
    /// rewritten (a read-only or full disk): they are delivered from
    /// memory, and new entries are kept in memory only.
    pub fn loaded_in_memory(pending: Vec<(u64, u64, Item)>, now: Instant, now_ms: u64) -> Self {
        Self::with_pending(false, pending, now, now_ms)
    }

    fn with_pending(
        has_disk: bool,
        mut pending: Vec<(u64, u64, Item)>,
        now: Instant,
        now_ms: u64,
    ) -> Self {
        let mut q = Self::new(has_disk);
        pending.sort_by_key(|(seq, _, _)| *seq);
        renumber_if_exhausted(&mut pending);
        for (seq, at_ms, item) in pending {
            q.next_seq = q.next_seq.max(seq.saturating_add(1));
            q.queue.push_back(Entry {
                waited_before: waited_before(&item, at_ms, now_ms),
                seq,
                item,
                since: now,
                persisted: has_disk,
                durable: true,
            });
        }
        q
    }

    pub fn has_disk(&self) -> bool {
        self.has_disk
    }

    /// Adds `item` at the end and returns its sequence number; with a
    /// disk, its record is to be written now ([`Queue::store_failed`] when
    /// that fails), and it is handed out once a sync covered it.
    pub fn push(&mut self, item: Item, now: Instant) -> u64 {
        let seq = self.next_seq;
        // Below SEQ_LIMIT after any load: never saturates in practice.
        self.next_seq = self.next_seq.saturating_add(1);
        let persisted = self.has_disk;
        if persisted {
            self.unsynced.insert(seq);
        }
        self.queue.push_back(Entry {
            seq,
            item,
            since: now,
            waited_before: Duration::ZERO,
            persisted,
            // While a sync hangs, new entries do not wait for the disk.
            durable: !persisted || self.stalled,
        });
        seq
    }

    /// The record of `seq` could not be written: it is kept in memory only
    /// (and may be handed out at once).
    pub fn store_failed(&mut self, seq: u64) {
        self.unsynced.remove(&seq);
        if let Some(e) = self.queue.iter_mut().find(|e| e.seq == seq) {
            e.persisted = false;
            e.durable = true;
        }
    }

    /// When records wait for a sync and none is running: the highest
    /// sequence number the sync to start now covers (the sync is then
    /// running, since `now`).
    pub fn sync_due(&mut self, now: Instant) -> Option<u64> {
        if self.syncing.is_some() {
            return None;
        }
        let upto = *self.unsynced.last()?;
        self.unsynced.clear();
        self.syncing = Some(now);
        Some(upto)
    }

    /// The sync job covering `upto` returned (successfully or not: when it
    /// failed, the entries are handed out all the same, kept in memory
    /// only: delivering an alert comes before storing it).
    pub fn synced(&mut self, upto: u64) -> SyncNews {
        self.syncing = None;
        let news = if self.stalled {
            self.stalled = false;
            SyncNews::Unstalled
        } else {
            SyncNews::Nothing
        };
        self.mark_durable(upto);
        news
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
    /// `now`: every entry may be handed out without waiting for it. Returns
    /// how long it has hung when it has just been found hung.
    pub fn check_stall(&mut self, now: Instant) -> Option<Duration> {
        let since = self.syncing?;
        let hung = now.saturating_duration_since(since);
        if self.stalled || hung < SYNC_STALL {
            return None;
        }
        self.stalled = true;
        self.mark_durable(self.last_written());
        Some(hung)
    }

    /// A sync on the caller's thread is due (at shutdown), whether or not
    /// a sync job is running; not while one hangs. Returns what it covers;
    /// report with [`Queue::synced_now`].
    pub fn sync_now_due(&mut self) -> Option<u64> {
        if self.stalled || self.queue.iter().all(|e| e.durable) {
            return None;
        }
        self.unsynced.clear();
        Some(self.last_written())
    }

    /// The sync asked by [`Queue::sync_now_due`] returned.
    pub fn synced_now(&mut self, upto: u64) {
        self.mark_durable(upto);
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

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn in_flight(&self) -> usize {
        self.handed.len()
    }
}
