//! The w1_therm sysfs file formats (`Documentation/ABI/testing/
//! sysfs-driver-w1_therm`, `w1_slave_show()`, `therm_bulk_read_show()`):
//! pure parsers, no I/O.

use crate::onewire::crc8;

/// What a sysfs file said, when it did not say a temperature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// An empty read: a conversion is pending, the bus failed, or (from
    /// kernel 5.10) the scratchpad failed its CRC.
    #[error("empty read (conversion pending, bus error, or a CRC failure on kernels from 5.10)")]
    Empty,
    /// `w1_slave`'s first line ended `NO` (kernels before 5.10).
    #[error("CRC check failed (crc=.. NO)")]
    CrcNo,
    #[error("unexpected content {0:?}")]
    Malformed(String),
}

fn malformed(text: &str) -> ParseError {
    let mut s: String = text.chars().take(80).collect();
    if text.chars().count() > 80 {
        s.push_str("...");
    }
    ParseError::Malformed(s)
}

/// Parses a millidegree integer, as in `temperature` and after `t=`.
fn parse_millis(s: &str, whole: &str) -> Result<i32, ParseError> {
    s.trim().parse::<i32>().map_err(|_| malformed(whole))
}

/// Parses `w1_slave`: two lines, the first ending `crc=xx YES` or `NO`, the
/// second ending `t=<millidegrees>`. Returns the millidegrees.
pub fn parse_w1_slave(text: &str) -> Result<i32, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default().trim_end();
    let verdict = first
        .rsplit_once("crc=")
        .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>())
        .ok_or_else(|| malformed(text))?;
    match verdict.as_slice() {
        [_, "YES"] => {}
        [_, "NO"] => return Err(ParseError::CrcNo),
        _ => return Err(malformed(text)),
    }
    let second = lines.next().ok_or_else(|| malformed(text))?;
    let (_, t) = second.rsplit_once("t=").ok_or_else(|| malformed(text))?;
    parse_millis(t, text)
}

/// A `w1_slave` read: the scratchpad the kernel read, and its temperature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct W1Slave {
    pub scratchpad: [u8; 9],
    pub millis: i32,
}

/// Parses `w1_slave` with the nine scratchpad bytes of its first line, as
/// `w1_slave_show()` prints them (`"%02x "` each, then `": crc=%02x %s\n"`).
/// A `YES` over bytes whose CRC fails is not the kernel's and counts as a
/// CRC failure.
pub fn parse_w1_slave_scratchpad(text: &str) -> Result<W1Slave, ParseError> {
    let millis = parse_w1_slave(text)?;
    let first = text.lines().next().unwrap_or_default();
    let (hex, _) = first.rsplit_once("crc=").ok_or_else(|| malformed(text))?;
    let hex = hex.trim_end().trim_end_matches(':');
    let mut scratchpad = [0u8; 9];
    let mut n = 0;
    for tok in hex.split_whitespace() {
        let slot = scratchpad.get_mut(n).ok_or_else(|| malformed(text))?;
        if tok.len() != 2 {
            return Err(malformed(text));
        }
        *slot = u8::from_str_radix(tok, 16).map_err(|_| malformed(text))?;
        n += 1;
    }
    if n != 9 {
        return Err(malformed(text));
    }
    if crc8(&scratchpad) != 0 {
        return Err(ParseError::CrcNo);
    }
    Ok(W1Slave { scratchpad, millis })
}

/// Parses `temperature`: one line of millidegrees, empty while a
/// conversion is pending or after an error.
pub fn parse_temperature(text: &str) -> Result<i32, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    parse_millis(text, text)
}

/// The state `therm_bulk_read` reports (`therm_bulk_read_show()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkState {
    /// `0`: no bulk conversion pending.
    Idle,
    /// `-1`: at least one sensor is still converting.
    Converting,
    /// `1`: converted, some sensors not read yet.
    Ready,
}

pub fn parse_bulk_state(text: &str) -> Result<BulkState, ParseError> {
    match text.trim() {
        "" => Err(ParseError::Empty),
        "0" => Ok(BulkState::Idle),
        "-1" => Ok(BulkState::Converting),
        "1" => Ok(BulkState::Ready),
        _ => Err(malformed(text)),
    }
}

/// Millidegrees to degrees.
pub fn millis_to_celsius(m: i32) -> f64 {
    f64::from(m) / 1000.0
}
