//! The master key that seals credentials and webhook secrets: from `RDEV_MASTER_KEY`, or a
//! key file created on first start (the embedded default). [`KeyFile`] keeps a rotated key:
//! staged as `<key file>.next` before the database commits it, renamed over the key file
//! after; [`staged_key`] is how the next start finds a rotation a crash interrupted.

use std::path::{Path, PathBuf};

use super::store::ConnectError;
use crate::domain::MasterKey;
use crate::ports::{KeyKeeper, KeyKeeperError};

/// Environment variable holding the base64 master key.
pub const MASTER_KEY_ENV: &str = "RDEV_MASTER_KEY";

/// The master key from `RDEV_MASTER_KEY`, or else from `key_file`, which is created with a
/// fresh random key and mode 0600 when it does not exist (the embedded default).
pub fn load_master_key(key_file: &Path) -> Result<MasterKey, ConnectError> {
    if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
        return MasterKey::from_base64(&text).map_err(|_| ConnectError::KeyEnv);
    }
    let key_error = |reason: String| ConnectError::KeyFile {
        path: key_file.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(key_file) {
        Ok(text) => MasterKey::from_base64(&text).map_err(|e| key_error(e.to_string())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::fill(&mut bytes);
            let key = MasterKey::from_bytes(bytes);
            if let Some(parent) = key_file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| key_error(e.to_string()))?;
            }
            write_private(key_file, key.to_base64().as_bytes())
                .map_err(|e| key_error(e.to_string()))?;
            Ok(key)
        }
        Err(error) => Err(key_error(error.to_string())),
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Where a rotation stages the next key: `<key file>.next`.
pub fn staged_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

/// The key a rotation staged and a crash left behind, when the key comes from `key_file`
/// (never with `RDEV_MASTER_KEY`, which no rotation writes).
pub fn staged_key(key_file: &Path) -> Result<Option<MasterKey>, ConnectError> {
    if std::env::var_os(MASTER_KEY_ENV).is_some() {
        return Ok(None);
    }
    let path = staged_path(key_file);
    match std::fs::read_to_string(&path) {
        Ok(text) => MasterKey::from_base64(&text)
            .map(Some)
            .map_err(|e| ConnectError::KeyFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(ConnectError::KeyFile {
            path: path.display().to_string(),
            reason: error.to_string(),
        }),
    }
}

/// The master key's home between starts: the key file, or `RDEV_MASTER_KEY` (which a
/// process cannot rewrite).
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: PathBuf,
    from_env: bool,
}

impl KeyFile {
    /// The keeper of `key_file`, or of nothing when `RDEV_MASTER_KEY` is set (as
    /// [`load_master_key`] decides).
    pub fn new(key_file: &Path) -> Self {
        Self {
            path: key_file.to_owned(),
            from_env: std::env::var_os(MASTER_KEY_ENV).is_some(),
        }
    }

    fn io(&self, action: &'static str, path: &Path, source: std::io::Error) -> KeyKeeperError {
        KeyKeeperError::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }

    /// Makes a rename in the key file's directory durable.
    fn sync_dir(&self) -> Result<(), KeyKeeperError> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io("syncing the directory", dir, e))
    }
}

impl KeyKeeper for KeyFile {
    fn persists(&self) -> bool {
        !self.from_env
    }

    fn stage(&self, next: &MasterKey) -> Result<(), KeyKeeperError> {
        if self.from_env {
            return Err(KeyKeeperError::FromEnvironment);
        }
        let staged = staged_path(&self.path);
        let mut tmp = staged.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        write_private(&tmp, next.to_base64().as_bytes())
            .map_err(|e| self.io("writing the next master key to", &tmp, e))?;
        std::fs::rename(&tmp, &staged)
            .map_err(|e| self.io("staging the next master key as", &staged, e))?;
        self.sync_dir()
    }

    fn install(&self) -> Result<(), KeyKeeperError> {
        let staged = staged_path(&self.path);
        std::fs::rename(&staged, &self.path)
            .map_err(|e| self.io("installing the staged master key as", &self.path, e))?;
        self.sync_dir()
    }

    fn abandon(&self) {
        let staged = staged_path(&self.path);
        if let Err(error) = std::fs::remove_file(&staged)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %staged.display(), %error, "could not remove the staged master key");
        }
    }
}

/// A fresh 24-byte nonce from the thread's CSPRNG.
pub(crate) fn nonce() -> [u8; 24] {
    let mut nonce = [0u8; 24];
    rand::fill(&mut nonce);
    nonce
}
