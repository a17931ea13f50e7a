//! Checks and look-ups that touch the filesystem or the environment: the
//! files the configuration names are readable, the password (a systemd
//! credential or `password_file`), the state directory
//! (`$STATE_DIRECTORY`). Kept apart from [`super::validate`], which is pure.

use std::path::{Path, PathBuf};

use super::locate::KeyPath;
use super::secret::{read_secret, SecretError};
use super::validate::Problem;
use super::{Config, DEFAULT_STATE_DIR, PASSWORD_CREDENTIAL};

/// Every file the configuration names that cannot be read. The password
/// file is not needed (so not checked) when systemd passes credentials.
pub fn preflight(cfg: &Config) -> Vec<Problem> {
    let m = &cfg.mqtt;
    let mk = |k: &'static str| KeyPath::keys(&["mqtt", k]);
    let mut files = vec![(mk("ca_file"), &m.ca_file)];
    if let (Some(c), Some(k)) = (&m.client_cert, &m.client_key) {
        files.push((mk("client_cert"), c));
        files.push((mk("client_key"), k));
    }
    if let Some(p) = &m.password_file {
        if credentials_dir().is_none() {
            files.push((mk("password_file"), p));
        }
    }
    files
        .into_iter()
        .filter_map(|(key, p)| readable(p).err().map(|e| Problem::new(key, e)))
        .collect()
}

fn readable(p: &Path) -> Result<(), String> {
    std::fs::File::open(p)
        .map(|_| ())
        .map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// systemd's `$CREDENTIALS_DIRECTORY`, when set.
fn credentials_dir() -> Option<std::ffi::OsString> {
    std::env::var_os("CREDENTIALS_DIRECTORY")
}

impl Config {
    /// The state directory: `state_dir`, else systemd's `$STATE_DIRECTORY`
    /// (its first entry), else [`DEFAULT_STATE_DIR`].
    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        std::env::var_os("STATE_DIRECTORY")
            .and_then(|v| {
                v.to_str()
                    .and_then(|s| s.split(':').next())
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    /// The MQTT password: the systemd credential `mqtt-password` when
    /// `$CREDENTIALS_DIRECTORY` is set, else `password_file`. A trailing
    /// newline is not part of the password.
    pub fn password(&self) -> Result<Option<String>, SecretError> {
        if let Some(dir) = credentials_dir() {
            let p = Path::new(&dir).join(PASSWORD_CREDENTIAL);
            if p.exists() {
                return read_secret(&p).map(Some);
            }
        }
        match &self.mqtt.password_file {
            Some(p) => read_secret(p).map(Some),
            None => Ok(None),
        }
    }
}
