//! A file-backed MQTT session store for the notifier, so that a restarted
//! notifier resumes its broker session strictly: in-flight QoS 2 flows and
//! packet ids survive the restart, and it may keep answering at QoS 1.
//!
//! Each checkpoint is written to a temporary file and renamed over the old
//! one, so a crash leaves either the old or the new checkpoint, never a torn
//! one. It is not fsynced: this guards against the process dying, which is
//! what happens on a workstation; after a power loss the broker-only resume
//! fallback applies.

use std::path::{Path, PathBuf};

use std::future::Future;
use std::pin::Pin;

use rumqttc::{PersistedSession, SessionStore, SessionStoreError, SessionStoreKey};

type SessionStoreFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, SessionStoreError>> + Send + 'a>>;

#[derive(Debug, Clone)]
pub struct FileSessionStore {
    dir: PathBuf,
}

impl FileSessionStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, key: &SessionStoreKey) -> PathBuf {
        let name: String = key
            .client_id()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("session-{name}.bin"))
    }
}

fn invalid(msg: String) -> SessionStoreError {
    Box::new(std::io::Error::new(std::io::ErrorKind::InvalidData, msg))
}

fn load(path: &Path, client_id: &str) -> Result<Option<PersistedSession>, SessionStoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Box::new(e)),
    };
    match PersistedSession::decode(&bytes) {
        Ok(s) if s.client_id == client_id => Ok(Some(s)),
        Ok(s) => Err(invalid(format!(
            "{}: session of client {:?}, not {client_id:?}",
            path.display(),
            s.client_id
        ))),
        Err(e) => {
            // A corrupt checkpoint is dropped, not fatal: the broker-only
            // resume fallback takes over.
            log::warn!(
                "{}: unreadable session checkpoint ({e}); ignoring it",
                path.display()
            );
            Ok(None)
        }
    }
}

fn save(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), SessionStoreError> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

impl SessionStore for FileSessionStore {
    fn load<'a>(
        &'a self,
        key: &'a SessionStoreKey,
    ) -> SessionStoreFuture<'a, Option<PersistedSession>> {
        let path = self.path(key);
        let id = key.client_id().to_owned();
        Box::pin(async move { load(&path, &id) })
    }

    fn save<'a>(
        &'a self,
        key: &'a SessionStoreKey,
        session: &'a PersistedSession,
    ) -> SessionStoreFuture<'a, ()> {
        let path = self.path(key);
        let dir = self.dir.clone();
        let bytes = session.encode();
        Box::pin(async move {
            let bytes = bytes.map_err(|e| invalid(e.to_string()))?;
            save(&dir, &path, &bytes)
        })
    }

    fn clear<'a>(&'a self, key: &'a SessionStoreKey) -> SessionStoreFuture<'a, ()> {
        let path = self.path(key);
        Box::pin(async move {
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Box::new(e) as SessionStoreError),
            }
        })
    }
}
