//! Checks and look-ups that touch the filesystem or the environment: the
//! files the configuration names are readable, the password (a systemd
//! credential or `password_file`), the state directory
//! (`$STATE_DIRECTORY`). Kept apart from [`super::validate`], which is pure.

use std::path::{Path, PathBuf};

use super::locate::KeyPath;
use super::secret::{read_secret, SecretError};
use super::validate::Problem;
use super::{Config, DEFAULT_STATE_DIR, PASSWORD_CREDENTIAL};

/// Every file the configuration names that cannot be read, a password
/// file others may read, and a state directory that is not one. The
/// password file is not needed (so not checked) when systemd passes
/// credentials.
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
    let mut out: Vec<Problem> = files
        .into_iter()
        .filter_map(|(key, p)| readable(p).err().map(|e| Problem::new(key, e)))
        .collect();
    if let Some(p) = &m.password_file {
        if credentials_dir().is_none() {
            if let Some(e) = private(p) {
                out.push(Problem::new(mk("password_file"), e));
            }
        }
    }
    if let Some(e) = state_dir_problem(&cfg.state_dir()) {
        out.push(Problem::new(KeyPath::keys(&["state_dir"]), e));
    }
    out
}

/// Why `dir` cannot be the state directory: it (or a parent) exists and
/// is not a directory. A missing one is created at start.
fn state_dir_problem(dir: &Path) -> Option<String> {
    match std::fs::metadata(dir) {
        Ok(md) if !md.is_dir() => Some(format!(
            "{} exists and is not a directory: the outbox cannot be kept there; \
             remove it or point state_dir at a directory",
            dir.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Some(format!(
            "{}: a parent of it is not a directory ({e})",
            dir.display()
        )),
        _ => None,
    }
}

/// Why the secret at `p` is not private enough; `None` when it is (or
/// cannot be read: [`readable`] says so). Nobody but its owner may read
/// it, except the group of a file owned by root (`root:<group>`, mode
/// 0640: how a service account is given a secret); nobody but its owner
/// may write it. As PostgreSQL's rule for its key file.
fn private(p: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(p).ok()?;
    let mode = md.mode() & 0o7777;
    let group_may_read = md.uid() == 0;
    let mut who = Vec::new();
    if mode & 0o040 != 0 && !group_may_read {
        who.push("readable by its group");
    }
    if mode & 0o020 != 0 {
        who.push("writable by its group");
    }
    if mode & 0o004 != 0 {
        who.push("readable by others");
    }
    if mode & 0o002 != 0 {
        who.push("writable by others");
    }
    if who.is_empty() {
        return None;
    }
    Some(format!(
        "{} is {} (mode {mode:04o}): chmod 600 {} \
         (a file owned by root may be 0640, to share it with a service's group)",
        p.display(),
        who.join(", "),
        p.display()
    ))
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
