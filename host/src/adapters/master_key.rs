//! The master key that seals credentials and webhook secrets: from `RDEV_MASTER_KEY`, or a
//! key file created on first start (the embedded default).

use std::path::Path;

use super::store::ConnectError;
use crate::domain::MasterKey;

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

/// A fresh 24-byte nonce from the thread's CSPRNG.
pub(crate) fn nonce() -> [u8; 24] {
    let mut nonce = [0u8; 24];
    rand::fill(&mut nonce);
    nonce
}
