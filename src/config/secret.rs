//! Secrets kept in files (the MQTT password): read whole, without the
//! trailing newline an editor or `echo` leaves.

use std::path::{Path, PathBuf};

/// A secret file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{}", path.display())]
pub struct SecretError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The content of `path` without trailing `\n` / `\r`.
pub fn read_secret(path: &Path) -> Result<String, SecretError> {
    let s = std::fs::read_to_string(path).map_err(|source| SecretError {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(trim_secret(&s).to_string())
}

/// A secret without the line ending(s) after it.
pub fn trim_secret(s: &str) -> &str {
    s.trim_end_matches(['\n', '\r'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_are_not_part_of_a_secret_but_spaces_are() {
        assert_eq!(trim_secret("pw\n"), "pw");
        assert_eq!(trim_secret("pw\r\n\n"), "pw");
        assert_eq!(trim_secret(" pw "), " pw ");
    }

    #[test]
    fn an_unreadable_secret_names_its_file() {
        let e = read_secret(Path::new("/nonexistent/gw1.pass")).expect_err("missing");
        assert_eq!(e.to_string(), "/nonexistent/gw1.pass");
        assert_eq!(e.source.kind(), std::io::ErrorKind::NotFound);
    }
}
