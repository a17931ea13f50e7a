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
//! Group commit: a push only writes the record; the daemon then runs one
//! [`SyncJob`] (one `fdatasync` for every record written since the last
//! one, e.g. all the alerts of one sweep) on a blocking thread, so the MQTT
//! link never waits for the disk. An entry is handed to the client
//! ([`Queue::pop`]) only once its record is on disk.
//!
//! Three parts: [`record`] (the codec, pure), [`disk`] (the log file: [`Disk`]),
//! [`queue`] (the order and the durability of the entries, pure, taking
//! `now`). The gateway core ([`crate::core::gateway`]) owns the queue and
//! asks for disk work with actions that the daemon's shell carries out on
//! the [`Disk`]; [`Outbox`] joins the two halves directly, for callers that
//! do everything on one thread (tests, tools).
//!
//! Readings never come here; only alerts, which are rare (SD-card wear).
//! When the log cannot be written (disk full, read-only, over
//! `outbox_max_bytes`), entries stay in memory only and one line says so.

pub mod disk;
pub mod queue;
pub mod record;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

pub use disk::{Disk, DiskLog, Loaded, Opened, SyncJob, FILE_NAME};
pub use queue::{Entry, Queue, SyncNews, SYNC_STALL};
pub use record::{
    crc32, decode_all, encode, renumber_if_exhausted, replay, unix_ms, waited_before, Decoded,
    Item, Record, MAX_RECORD, SEQ_LIMIT,
};

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
    #[error("cannot encode a record: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("record too large ({0} bytes)")]
    TooLarge(usize),
}

/// The queue and its disk joined, driven on the caller's thread: what
/// the gateway core and the daemon's shell do between them with actions,
/// done directly.
pub struct Outbox {
    queue: Queue,
    disk: Option<Disk>,
}

impl Outbox {
    /// An outbox that never touches the disk.
    pub fn memory() -> Self {
        Self {
            queue: Queue::new(false),
            disk: None,
        }
    }

    /// Opens the log in `dir`: entries left by a previous run are queued
    /// first, their waiting time so far taken from the wall clock. Never
    /// fails: without a usable log, the outbox works in memory (logged).
    pub fn open(dir: &Path, max_bytes: u64) -> Self {
        let o = Disk::open(dir, max_bytes);
        let queue = match &o.disk {
            Some(_) => Queue::loaded(o.pending, Instant::now(), unix_ms(SystemTime::now())),
            None => Queue::loaded_in_memory(o.pending, Instant::now(), unix_ms(SystemTime::now())),
        };
        Self {
            queue,
            disk: o.disk,
        }
    }

    pub fn path(&self) -> Option<PathBuf> {
        self.disk.as_ref().map(|d| d.path().to_path_buf())
    }

    /// Adds `item` at the end: written to the log, and in memory.
    pub fn push(&mut self, item: Item) {
        let record = self.disk.is_some().then(|| item.clone());
        let seq = self.queue.push(item, Instant::now());
        if let (Some(d), Some(item)) = (&mut self.disk, record) {
            if !d.store(seq, unix_ms(SystemTime::now()), &item) {
                self.queue.store_failed(seq);
            }
        }
    }

    /// The sync to run now, if records wait for one and none is running.
    pub fn sync_job(&mut self) -> Option<SyncJob> {
        let upto = self.queue.sync_due(Instant::now())?;
        let disk = self.disk.as_mut()?;
        match disk.sync_job(upto) {
            Ok(job) => Some(job),
            Err(e) => {
                self.synced(upto, Err(e));
                None
            }
        }
    }

    /// A sync job finished: its entries may be handed out (also when it
    /// failed: delivering an alert comes before storing it).
    pub fn synced(&mut self, upto: u64, result: Result<(), OutboxError>) {
        if self.queue.synced(upto) == SyncNews::Unstalled {
            log::warn!("outbox: the disk answered the hung fdatasync; waiting for it again");
        }
        if let Some(d) = &mut self.disk {
            d.sync_result(&result);
        }
    }

    /// See [`Queue::check_stall`]; true when entries became ready.
    pub fn check_stall(&mut self, now: Instant) -> bool {
        let Some(hung) = self.queue.check_stall(now) else {
            return false;
        };
        log::error!(
            "outbox: fdatasync has not returned for {} s (a failing disk?); publishing alerts without waiting for it",
            hung.as_secs()
        );
        true
    }

    /// Syncs now, on this thread, whether or not a sync job is running;
    /// not while one hangs.
    pub fn sync_now(&mut self) {
        let Some(upto) = self.queue.sync_now_due() else {
            return;
        };
        if let Some(d) = &mut self.disk {
            let r = d.sync_now();
            d.sync_result(&r);
        }
        self.queue.synced_now(upto);
    }

    pub fn pop(&mut self) -> Option<Entry> {
        self.queue.pop()
    }

    pub fn handed(&mut self, e: Entry) {
        self.queue.handed(e);
    }

    pub fn take_handed(&mut self, seq: u64) -> Option<Entry> {
        self.queue.take_handed(seq)
    }

    pub fn requeue(&mut self, e: Entry) {
        self.queue.requeue(e);
    }

    /// The entry is finished (PUBCOMP, or expired): forget it, on disk too.
    pub fn finish(&mut self, e: &Entry) {
        if let (true, Some(d)) = (e.persisted, &mut self.disk) {
            d.done(e.seq, &e.item.describe());
        }
    }

    pub fn queued(&self) -> usize {
        self.queue.queued()
    }

    pub fn in_flight(&self) -> usize {
        self.queue.in_flight()
    }
}

#[cfg(test)]
mod tests {
    use super::disk::COMPACT_MIN;
    use super::record::HEADER;
    use super::*;
    use crate::core::alert::AlertLevel;
    use crate::mqtt::payload::Alert;
    use proptest::prelude::*;
    use std::path::Path;
    use std::time::Duration;

    /// The hand-written table CRC-32 the log was written with before
    /// crc32fast: the records on disk carry its values.
    fn reference_crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        c ^ 0xFFFF_FFFF
    }

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
    fn a_record_written_before_crc32fast_still_decodes() {
        // Bytes as the old hand-written CRC framed them (zlib agrees).
        let mut old = vec![0xA1, 0x7E, 0x15, 0x00, 0x00, 0x00, 0x39, 0x22, 0x48, 0xCD];
        old.extend_from_slice(br#"{"op":"done","seq":7}"#);
        let d = decode_all(&old);
        assert_eq!(d.records, vec![Record::Done { seq: 7 }]);
        assert_eq!(d.skipped, 0);
        assert_eq!(encode(&Record::Done { seq: 7 }).expect("encode"), old);
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
        fn crc32fast_is_the_crc_the_log_was_written_with(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assert_eq!(crc32(&bytes), reference_crc32(&bytes));
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
    fn a_record_at_the_largest_seq_loads_is_delivered_and_new_records_follow() {
        // Issue 16: a valid record with seq u64::MAX crashed every start.
        let t = tempfile::tempdir().expect("tempdir");
        let last = Record::Add {
            seq: u64::MAX,
            at_ms: 1000,
            item: alert(&format!("id-{}", u64::MAX)),
        };
        let recs = vec![add(7), last];
        std::fs::write(t.path().join(FILE_NAME), log_of(&recs)).expect("write");
        let mut o = Outbox::open(t.path(), 1 << 20);
        let loaded: Vec<Entry> = std::iter::from_fn(|| o.pop()).collect();
        let ids: Vec<String> = loaded.iter().map(|e| e.item.describe()).collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids[0].contains("id-7") && ids[1].contains(&format!("id-{}", u64::MAX)));
        o.push(alert("new"));
        o.sync_now();
        let new = o.pop().expect("the new entry");
        assert!(
            loaded.iter().all(|e| e.seq != new.seq),
            "numbers stay unique"
        );
        // The old ones complete; the new one is still there after a reopen.
        for e in &loaded {
            o.handed(e.clone());
            let back = o.take_handed(e.seq).expect("handed");
            o.finish(&back);
        }
        drop(o);
        let mut o = Outbox::open(t.path(), 1 << 20);
        let left: Vec<String> = std::iter::from_fn(|| o.pop())
            .map(|e| e.item.describe())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].contains("new"), "{left:?}");
    }

    #[test]
    fn a_queue_loaded_at_the_largest_seq_numbers_new_entries_uniquely() {
        let now = Instant::now();
        let mut q = Queue::loaded(
            vec![(u64::MAX - 1, 0, alert("a")), (u64::MAX, 0, alert("b"))],
            now,
            0,
        );
        let s = q.push(alert("c"), now);
        let t = q.push(alert("d"), now);
        q.synced_now(s.max(t));
        let seqs: Vec<u64> = std::iter::from_fn(|| q.pop()).map(|e| e.seq).collect();
        assert_eq!(seqs.len(), 4, "{seqs:?}");
        let unique: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(unique.len(), 4, "{seqs:?}");
    }

    fn six_pending(dir: &Path) {
        let recs: Vec<Record> = (0..6).map(add).collect();
        std::fs::write(dir.join(FILE_NAME), log_of(&recs)).expect("write");
    }

    /// Every queued entry can be handed out at once (memory only), in order.
    fn delivered_ids(o: &mut Outbox) -> Vec<String> {
        std::iter::from_fn(|| o.pop())
            .map(|e| e.item.describe())
            .collect()
    }

    #[test]
    fn a_log_that_cannot_be_rewritten_is_delivered_from_memory() {
        // Issue 16: the compaction at open failed and all 6 were dropped.
        // The temporary file's name is taken by a folder: creating it fails
        // for root too.
        let t = tempfile::tempdir().expect("tempdir");
        six_pending(t.path());
        std::fs::create_dir(t.path().join("outbox.log.tmp")).expect("mkdir");
        let mut o = Outbox::open(t.path(), 1 << 20);
        assert_eq!(o.path(), None, "memory only");
        let ids = delivered_ids(&mut o);
        assert_eq!(ids.len(), 6, "{ids:?}");
        for (i, id) in ids.iter().enumerate() {
            assert!(id.contains(&format!("id-{i}")), "{ids:?}");
        }
        o.push(alert("new"));
        assert!(o.pop().is_some_and(|e| e.item.describe().contains("new")));
        // The log still holds them for the next start.
        drop(o);
        let buf = std::fs::read(t.path().join(FILE_NAME)).expect("read");
        assert_eq!(replay(decode_all(&buf).records).len(), 6);
    }

    /// A tmpfs mounted on a temporary folder (tests run as root here);
    /// `None` where mounting is not allowed.
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(options: &str) -> Option<Self> {
            let t = tempfile::tempdir().expect("tempdir");
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", options, "tmpfs"])
                .arg(t.path())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("cannot mount a tmpfs here: test skipped");
                return None;
            }
            Some(Self(t))
        }

        fn path(&self) -> &Path {
            self.0.path()
        }

        fn remount(&self, options: &str) {
            let ok = std::process::Command::new("mount")
                .args(["-o", options])
                .arg(self.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "remount {options}");
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.path())
                .status();
        }
    }

    #[test]
    fn a_read_only_state_dir_delivers_its_queued_alerts() {
        let Some(fs) = Tmpfs::mount("size=1m") else {
            return;
        };
        six_pending(fs.path());
        fs.remount("remount,ro");
        let mut o = Outbox::open(fs.path(), 1 << 20);
        assert_eq!(delivered_ids(&mut o).len(), 6);
        assert!(!fs.path().join("outbox.log.tmp").exists());
    }

    #[test]
    fn a_full_state_dir_delivers_its_queued_alerts_and_leaves_no_temp_file() {
        let Some(fs) = Tmpfs::mount("size=64k") else {
            return;
        };
        six_pending(fs.path());
        {
            use std::io::Write;
            let mut f = std::fs::File::create(fs.path().join("filler")).expect("filler");
            while f.write_all(&[0u8; 1024]).is_ok() {}
        }
        let mut o = Outbox::open(fs.path(), 1 << 20);
        assert_eq!(delivered_ids(&mut o).len(), 6);
        assert!(
            !fs.path().join("outbox.log.tmp").exists(),
            "no empty temporary file left behind"
        );
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
        let w = o.pop().expect("entry").waited(Instant::now());
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
