//! Certificate expiry warnings for the daemon and the notifier: at start
//! and daily, every certificate in the CA file and the client certificate
//! is checked, and one expiring within [`WARN_WITHIN`] (or expired) is
//! reported. The daemon also raises a FAULT alert for it, so that the
//! operators hear about it before the gateway goes silent.
//!
//! Only the validity's `notAfter` is needed, so instead of an X.509
//! library this reads the few DER fields in front of it (Certificate ->
//! tbsCertificate -> [version], serial, signature, issuer, validity).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::core::alert::{AlertLevel, Level};
use crate::mqtt::payload::Alert;
use crate::sys::timefmt;

/// Warn when a certificate expires sooner than this.
pub const WARN_WITHIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often the check runs after the first one.
pub const CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The sensor level of the daemon's certificate alerts:
/// `<prefix>/<gateway>/alerts/certificates`.
pub const ALERT_SENSOR: &str = "certificates";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    #[error("truncated DER")]
    Truncated,
    #[error("unexpected DER tag {0:#04x}")]
    Tag(u8),
    #[error("DER length too large")]
    Length,
    #[error("malformed time {0:?}")]
    Time(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: cannot read certificates: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: certificate #{index}: {source}")]
    Der {
        path: PathBuf,
        index: usize,
        #[source]
        source: DerError,
    },
}

/// Splits one TLV off `b`: (tag, contents, rest). Single-byte tags only,
/// which is all a certificate uses up to its validity.
fn tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8]), DerError> {
    let (&tag, b) = b.split_first().ok_or(DerError::Truncated)?;
    let (&first, mut b) = b.split_first().ok_or(DerError::Truncated)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(DerError::Length);
        }
        if b.len() < n {
            return Err(DerError::Truncated);
        }
        let (lb, rest) = b.split_at(n);
        b = rest;
        lb.iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x))
    };
    if b.len() < len {
        return Err(DerError::Truncated);
    }
    let (content, rest) = b.split_at(len);
    Ok((tag, content, rest))
}

fn expect(b: &[u8], want: u8) -> Result<(&[u8], &[u8]), DerError> {
    let (tag, c, rest) = tlv(b)?;
    if tag != want {
        return Err(DerError::Tag(tag));
    }
    Ok((c, rest))
}

const SEQUENCE: u8 = 0x30;

/// The `notAfter` of a DER certificate.
pub fn not_after(der: &[u8]) -> Result<SystemTime, DerError> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    // [0] EXPLICIT version, optional.
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    rest = expect(rest, 0x02)?.1; // serialNumber
    rest = expect(rest, SEQUENCE)?.1; // signature
    rest = expect(rest, SEQUENCE)?.1; // issuer
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (_, _, after) = tlv(validity)?; // notBefore
    let (tag, t, _) = tlv(after)?;
    parse_time(tag, t)
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn parse_time(tag: u8, t: &[u8]) -> Result<SystemTime, DerError> {
    let bad = || DerError::Time(String::from_utf8_lossy(t).into_owned());
    let s = std::str::from_utf8(t).map_err(|_| bad())?;
    let digits = s.strip_suffix('Z').ok_or_else(bad)?;
    if !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, DerError> {
        digits.get(r).and_then(|x| x.parse().ok()).ok_or_else(bad)
    };
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy = num(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (0x18, 14) => (num(0..4)?, 4),
        (0x17 | 0x18, _) => return Err(bad()),
        (other, _) => return Err(DerError::Tag(other)),
    };
    let month = num(rest..rest + 2)?;
    let day = num(rest + 2..rest + 4)?;
    let (h, m, sec) = (
        num(rest + 4..rest + 6)?,
        num(rest + 6..rest + 8)?,
        num(rest + 8..rest + 10)?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return Err(bad());
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec;
    if secs >= 0 {
        u64::try_from(secs)
            .ok()
            .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
            .ok_or_else(bad)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .ok_or_else(bad)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A certificate that expires soon (or did).
#[derive(Debug, Clone, PartialEq)]
pub struct Expiring {
    /// `CA` or `client certificate`.
    pub what: &'static str,
    pub path: PathBuf,
    /// Its position in the file (several CAs may be listed).
    pub index: usize,
    pub not_after: SystemTime,
    /// Whole days left; negative once expired.
    pub days_left: i64,
}

impl Expiring {
    pub fn message(&self) -> String {
        let when = timefmt::rfc3339(self.not_after);
        if self.days_left < 0 {
            format!(
                "the {} #{} in {} EXPIRED on {when}",
                self.what,
                self.index + 1,
                self.path.display()
            )
        } else {
            format!(
                "the {} #{} in {} expires in {} day(s), on {when}: renew it (see the README on rotating certificates)",
                self.what,
                self.index + 1,
                self.path.display(),
                self.days_left
            )
        }
    }
}

/// Checks every certificate in `files` against `now`.
pub fn check(
    files: &[(&'static str, &Path)],
    now: SystemTime,
    within: Duration,
) -> Result<Vec<Expiring>, CertError> {
    let mut out = Vec::new();
    for (what, path) in files {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| CertError::Read {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        for (index, c) in certs.iter().enumerate() {
            let na = not_after(c.as_ref()).map_err(|source| CertError::Der {
                path: path.to_path_buf(),
                index,
                source,
            })?;
            let left = match na.duration_since(now) {
                Ok(d) => i64::try_from(d.as_secs() / 86_400).unwrap_or(i64::MAX),
                Err(e) => -1 - i64::try_from(e.duration().as_secs() / 86_400).unwrap_or(0),
            };
            if na <= now + within {
                out.push(Expiring {
                    what,
                    path: path.to_path_buf(),
                    index,
                    not_after: na,
                    days_left: left,
                });
            }
        }
    }
    Ok(out)
}

/// Logs every expiring certificate; returns them.
pub fn check_and_log(files: &[(&'static str, &Path)]) -> Vec<Expiring> {
    match check(files, SystemTime::now(), WARN_WITHIN) {
        Ok(list) => {
            for e in &list {
                log::warn!("certificate: {}", e.message());
            }
            list
        }
        Err(e) => {
            log::warn!("cannot check certificate expiry: {e}");
            Vec::new()
        }
    }
}

/// The daemon's FAULT alert for an expiring certificate.
pub fn alert(gateway: &str, e: &Expiring) -> Alert {
    Alert {
        id: uuid::Uuid::new_v4().to_string(),
        gateway: gateway.to_string(),
        sensor: ALERT_SENSOR.into(),
        name: "TLS certificates".into(),
        level: AlertLevel::Fault,
        celsius: None,
        threshold: None,
        previous: Some(Level::Normal),
        ts: timefmt::now_rfc3339(),
        message: format!("gateway {gateway}: {}", e.message()),
        escalation: 0,
        clock_synced: crate::sys::clock::synced_now(),
    }
}

/// Checks the certificates at once and then every day, logging each
/// expiring one and handing `on_expiring` the list (the daemon turns it
/// into FAULT alerts). Runs until the task is dropped.
pub async fn watch_daily(files: Vec<(&'static str, PathBuf)>, on_expiring: impl Fn(Vec<Expiring>)) {
    let mut every = tokio::time::interval(CHECK_EVERY);
    loop {
        every.tick().await;
        let refs: Vec<(&'static str, &Path)> =
            files.iter().map(|(w, p)| (*w, p.as_path())).collect();
        let list = check_and_log(&refs);
        if !list.is_empty() {
            on_expiring(list);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 23), 20_780);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn times_parse_in_both_forms() {
        let t = |tag, s: &str| parse_time(tag, s.as_bytes());
        let day = |d: u64| UNIX_EPOCH + Duration::from_secs(d * 86_400);
        assert_eq!(t(0x17, "700101000000Z"), Ok(day(0)));
        assert_eq!(
            t(0x17, "491231235959Z"),
            Ok(day(days_from_civil(2050, 1, 1) as u64) - Duration::from_secs(1))
        );
        assert_eq!(t(0x18, "20000301000000Z"), Ok(day(11_017)));
        assert!(t(0x17, "2000030100000Z").is_err());
        assert!(t(0x18, "20001301000000Z").is_err());
        assert!(t(0x17, "70010100000+Z").is_err());
        assert!(matches!(t(0x02, "700101000000Z"), Err(DerError::Tag(0x02))));
    }

    fn make_cert(dir: &Path, days: &str) -> PathBuf {
        let st = std::process::Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/make-certs.sh"))
            .args(["--out"])
            .arg(dir)
            .args(["--days", days, "--ca-days", "40", "localhost"])
            .output()
            .expect("make-certs.sh");
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        dir.join("server.crt")
    }

    #[test]
    fn real_certificates_are_read_and_judged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = make_cert(dir.path(), "10");
        let ca = dir.path().join("ca.crt");
        let now = SystemTime::now();
        let list = check(
            &[("CA", &ca), ("client certificate", &server)],
            now,
            WARN_WITHIN,
        )
        .expect("check");
        assert_eq!(
            list.len(),
            1,
            "the 40-day CA is fine, the 10-day one is not: {list:?}"
        );
        assert_eq!(list[0].what, "client certificate");
        assert!((9..=10).contains(&list[0].days_left), "{list:?}");
        assert!(list[0].message().contains("expires in"));
        // Fifty days on, both have expired.
        let later = now + Duration::from_secs(50 * 86_400);
        let list = check(
            &[("CA", &ca), ("client certificate", &server)],
            later,
            WARN_WITHIN,
        )
        .expect("check");
        assert_eq!(list.len(), 2);
        assert!(list
            .iter()
            .all(|e| e.days_left < 0 && e.message().contains("EXPIRED")));
    }

    proptest::proptest! {
        #[test]
        fn der_parsing_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = not_after(&bytes);
        }

    }
}
