//! Paths written in a configuration file are relative to that file's
//! folder; the daemon's configuration and the notifier's settings file
//! resolve them with the same rule.

use std::path::{Path, PathBuf};

/// The folder relative paths in `config_file` are resolved against: its
/// parent, or `.` for a bare file name.
pub fn config_dir(config_file: &Path) -> &Path {
    config_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Makes each relative path in `paths` relative to `config_file`'s folder.
pub fn resolve_relative<'a>(
    config_file: &Path,
    paths: impl IntoIterator<Item = Option<&'a mut PathBuf>>,
) {
    let base = config_dir(config_file);
    for p in paths.into_iter().flatten() {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_follow_the_config_file_and_absolute_ones_stay() {
        let mut rel = PathBuf::from("certs/ca.crt");
        let mut abs = PathBuf::from("/etc/ca.crt");
        resolve_relative(
            Path::new("/etc/thermalert/t.toml"),
            [Some(&mut rel), None, Some(&mut abs)],
        );
        assert_eq!(rel, Path::new("/etc/thermalert/certs/ca.crt"));
        assert_eq!(abs, Path::new("/etc/ca.crt"));
        let mut bare = PathBuf::from("ca.crt");
        resolve_relative(Path::new("t.toml"), [Some(&mut bare)]);
        assert_eq!(bare, Path::new("./ca.crt"));
    }
}
