//! Certificate expiry warnings for the daemon and the notifier: at start
//! and daily, every certificate in the CA file and the client certificate
//! is checked, and one expiring within [`WARN_WITHIN`] (or expired) is
//! reported. The daemon also raises a FAULT alert for it, so that the
//! operators hear about it before the gateway goes silent.
//!
//! The validity's `notAfter` is read with the RustCrypto `x509-cert`
//! crate (DER decoding of the whole certificate).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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

/// Why a certificate's DER could not be decoded.
pub type DerError = x509_cert::der::Error;

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

/// The `notAfter` of a DER certificate.
pub fn not_after(der: &[u8]) -> Result<SystemTime, DerError> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der)?;
    Ok(cert.tbs_certificate.validity.not_after.to_system_time())
}

/// The certificates a program watches: its CA file and, for mutual TLS,
/// its client certificate, labelled for the messages.
pub fn certificate_files(
    ca_file: &Path,
    client_cert: Option<&Path>,
) -> Vec<(&'static str, PathBuf)> {
    let mut files = vec![("CA", ca_file.to_path_buf())];
    files.extend(client_cert.map(|c| ("client certificate", c.to_path_buf())));
    files
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
    use std::time::UNIX_EPOCH;

    /// A DER time value: tag, length, text.
    fn time(tag: u8, s: &str) -> Result<SystemTime, DerError> {
        use x509_cert::der::Decode;
        let mut der = vec![tag, u8::try_from(s.len()).expect("short")];
        der.extend_from_slice(s.as_bytes());
        x509_cert::time::Time::from_der(&der).map(|t| t.to_system_time())
    }

    #[test]
    fn times_parse_in_both_forms() {
        let day = |d: u64| UNIX_EPOCH + Duration::from_secs(d * 86_400);
        assert_eq!(time(0x17, "700101000000Z"), Ok(day(0)));
        // 2050-01-01 is day 29_220.
        assert_eq!(
            time(0x17, "491231235959Z"),
            Ok(day(29_220) - Duration::from_secs(1))
        );
        assert_eq!(time(0x18, "20000301000000Z"), Ok(day(11_017)));
        assert_eq!(time(0x18, "20261123000000Z"), Ok(day(20_780)));
        assert!(time(0x17, "2000030100000Z").is_err());
        assert!(time(0x18, "20001301000000Z").is_err());
        assert!(time(0x17, "70010100000+Z").is_err());
        assert!(time(0x02, "700101000000Z").is_err());
    }

    #[test]
    fn the_watched_files_are_the_ca_and_the_client_certificate() {
        let ca = Path::new("/c/ca.crt");
        assert_eq!(certificate_files(ca, None), vec![("CA", ca.to_path_buf())]);
        let client = Path::new("/c/gw1.crt");
        assert_eq!(
            certificate_files(ca, Some(client)),
            vec![
                ("CA", ca.to_path_buf()),
                ("client certificate", client.to_path_buf())
            ]
        );
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
