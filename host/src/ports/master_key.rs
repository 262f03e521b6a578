//! The master key as the core sees it: whether the stored secrets open with the key in use
//! ([`KeyCheck`], for `/readyz`), and where a rotated key is kept so that a restart finds it
//! ([`KeyKeeper`]).

use crate::domain::MasterKey;

/// Whether the key in use opens the stored credentials and webhook secrets. Carries key
/// fingerprints (a hash prefix, safe to show) and names, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// Every stored secret carries this key's fingerprint and a sample opens with it (also
    /// when nothing is stored).
    Ok,
    /// A stored secret was sealed with another key: the one with `fingerprint`.
    SealedWithOther {
        current: String,
        fingerprint: String,
    },
    /// The credential `name` carries this key's fingerprint but does not open: its row was
    /// altered.
    Undecryptable { name: String },
}

impl KeyCheck {
    /// `None` when ready, else why not, in words an operator can act on.
    pub fn problem(&self) -> Option<String> {
        match self {
            Self::Ok => None,
            Self::SealedWithOther {
                current,
                fingerprint,
            } => Some(format!(
                "the master key (fingerprint {current}) cannot decrypt the stored credentials: \
                 they are sealed with the key whose fingerprint is {fingerprint}; start with \
                 that key (RDEV_MASTER_KEY or <data-dir>/master.key)"
            )),
            Self::Undecryptable { name } => Some(format!(
                "credential {name:?} carries this master key's fingerprint but does not \
                 decrypt (the row was altered); store it again"
            )),
        }
    }
}

/// Why the key could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum KeyKeeperError {
    /// The key comes from the environment, which a process cannot change for its next
    /// start: the operator supplies the new key and sets it there.
    #[error(
        "the master key comes from RDEV_MASTER_KEY: send the new key, and set \
         RDEV_MASTER_KEY to it before the next start"
    )]
    FromEnvironment,
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the master key lives between starts. Rotation stages the new key before the
/// database commits it and installs it after, so a crash between the two leaves both keys
/// on disk and the next start picks the one the database holds.
pub trait KeyKeeper: Send + Sync {
    /// True when the keeper can store a key (a key file); false for `RDEV_MASTER_KEY`.
    fn persists(&self) -> bool;
    /// Writes `next` durably beside the current key, before the database switches to it.
    fn stage(&self, next: &MasterKey) -> Result<(), KeyKeeperError>;
    /// Makes the staged key the current one, after the database committed it.
    fn install(&self) -> Result<(), KeyKeeperError>;
    /// Drops the staged key after the database refused the rotation.
    fn abandon(&self);
}
