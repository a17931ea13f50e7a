//! The outbox's record codec: pure, no I/O.
//!
//! ```text
//! magic 0xA1 0x7E | body length: u32 LE | CRC-32 (IEEE) of body: u32 LE | body (JSON)
//! ```
//!
//! A body is either `{"op":"add",..}` or `{"op":"done","seq":N}`; see the
//! [module docs](super) for what they mean. [`decode_all`] never panics and
//! resynchronises on the next magic with a valid CRC after damage.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::OutboxError;
use crate::mqtt::payload::Alert;

pub(super) const MAGIC: [u8; 2] = [0xA1, 0x7E];
pub(super) const HEADER: usize = 10;
/// No record is larger: an alert is a few hundred bytes.
pub const MAX_RECORD: usize = 64 * 1024;

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

/// CRC-32 (IEEE 802.3, as zlib and PNG: CRC-32/ISO-HDLC), by crc32fast.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// One record, framed.
pub fn encode(r: &Record) -> Result<Vec<u8>, OutboxError> {
    let body = serde_json::to_vec(r).map_err(OutboxError::Encode)?;
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

/// Sequence numbers read from a log at or past this leave too little room
/// to number new entries after them: no daemon counts this far (alerts
/// are rare), so such a record was forged or damaged with a valid CRC. The
/// pending entries are then renumbered on load.
pub const SEQ_LIMIT: u64 = 1 << 62;

/// Renumbers `pending` (in sequence order) 0, 1, 2... when its largest
/// number is at or past [`SEQ_LIMIT`], keeping the order and every entry;
/// true when it did. No arithmetic on a number read from disk may
/// overflow (issue 16: `seq + 1` at `u64::MAX` crashed every start).
pub fn renumber_if_exhausted(pending: &mut [(u64, u64, Item)]) -> bool {
    if pending.iter().all(|(seq, _, _)| *seq < SEQ_LIMIT) {
        return false;
    }
    for (n, (seq, _, _)) in (0u64..).zip(pending.iter_mut()) {
        *seq = n;
    }
    true
}

/// How long an entry from a previous run had waited, by the wall clock.
/// An alert stamped while the clock was not synchronised (a Pi without RTC
/// before NTP) has no meaningful age: the clock may have jumped years
/// since. It counts as fresh (its payload says `clock_synced: false`)
/// rather than being dropped as expired.
pub fn waited_before(item: &Item, at_ms: u64, now_ms: u64) -> Duration {
    match item {
        Item::Alert { alert } if !alert.clock_synced => Duration::ZERO,
        _ => Duration::from_millis(now_ms.saturating_sub(at_ms)),
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
