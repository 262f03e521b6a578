//! `rdev-plugins.lock` in the plugins directory: the OCI reference and manifest digest each
//! installed plugin came from, so a deployment can reproduce its plugin set exactly.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{PluginsError, io_error, write_atomically};

/// The lock file's name inside the plugins directory.
pub const LOCK_FILE: &str = "rdev-plugins.lock";

/// One installed plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEntry {
    pub name: String,
    /// The reference as given at install (a tag may move; the digest does not).
    pub reference: String,
    /// `sha256:…` of the OCI manifest that was installed.
    pub digest: String,
    /// sha256 of the component, as commands record it in their provenance.
    pub component_sha256: String,
    /// sha256 of the plugin's manifest (`<name>.toml`); absent in locks written before it
    /// was recorded, where only the component is compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
}

/// The whole file, sorted by name.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<LockEntry>,
}

impl LockFile {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(LOCK_FILE)
    }

    /// The lock file of `dir`; empty when there is none yet.
    pub fn read(dir: &Path) -> Result<Self, PluginsError> {
        Self::read_file(&Self::path(dir))
    }

    /// A lock file anywhere (a deployment keeps a copy beside its configuration); empty
    /// when there is none.
    pub fn read_file(path: &Path) -> Result<Self, PluginsError> {
        let path = path.to_owned();
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| PluginsError::Lock {
                path,
                reason: e.message().to_owned(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(io_error("reading", &path, e)),
        }
    }

    /// Replaces the file in one rename.
    pub fn write(&self, dir: &Path) -> Result<(), PluginsError> {
        let text = toml::to_string(self).map_err(|e| PluginsError::Lock {
            path: Self::path(dir),
            reason: e.to_string(),
        })?;
        let header = "# Written by `rdev plugins install/remove`: where each plugin came from.\n";
        write_atomically(&Self::path(dir), format!("{header}{text}").as_bytes())
    }

    /// Records `entry`, replacing an earlier one of the same name.
    pub fn upsert(&mut self, entry: LockEntry) {
        self.plugins.retain(|p| p.name != entry.name);
        self.plugins.push(entry);
        self.plugins.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Drops `name`; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.plugins.len();
        self.plugins.retain(|p| p.name != name);
        self.plugins.len() != before
    }

    pub fn get(&self, name: &str) -> Option<&LockEntry> {
        self.plugins.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, digest: &str) -> LockEntry {
        LockEntry {
            name: name.into(),
            reference: format!("localhost/{name}:1"),
            digest: digest.into(),
            component_sha256: "ab".into(),
            manifest_sha256: None,
        }
    }

    #[test]
    fn entries_round_trip_sorted_and_replaced_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut lock = LockFile::read(dir.path()).expect("no file is an empty lock");
        lock.upsert(entry("zeta", "sha256:1"));
        lock.upsert(entry("alpha", "sha256:2"));
        lock.upsert(entry("zeta", "sha256:3"));
        lock.write(dir.path()).expect("write");
        let read = LockFile::read(dir.path()).expect("read");
        let names: Vec<&str> = read.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert_eq!(
            read.get("zeta").map(|p| p.digest.as_str()),
            Some("sha256:3")
        );
        let mut read = read;
        assert!(read.remove("alpha"));
        assert!(!read.remove("alpha"));
    }

    #[test]
    fn a_corrupt_lock_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(LockFile::path(dir.path()), "[[plugin]]\nname = 3\n").expect("write");
        let error = LockFile::read(dir.path()).expect_err("refused");
        assert!(error.to_string().contains(LOCK_FILE), "{error}");
    }
}
