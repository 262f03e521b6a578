//! Credential names and the sealing of secrets at rest (credential values, webhook signing
//! secrets). Pure computation: the caller supplies the nonce, so this module needs neither a
//! clock nor a random source.

use std::fmt;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Length of the XChaCha20-Poly1305 nonce stored in front of every sealed value.
pub const NONCE_LEN: usize = 24;
/// Length of a master key.
pub const KEY_LEN: usize = 32;

/// A credential's name, as providers reference it (`ANTHROPIC_API_KEY`). Environment-variable
/// syntax, so a name can be handed to a process as is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CredentialName(String);

impl CredentialName {
    pub const MAX_LEN: usize = 128;

    /// Checks `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes.
    pub fn parse(value: impl Into<String>) -> Result<Self, SealError> {
        let value = value.into();
        let bytes = value.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= Self::MAX_LEN
            && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if valid {
            Ok(Self(value))
        } else {
            Err(SealError::InvalidName(value))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CredentialName {
    type Error = SealError;
    fn try_from(value: String) -> Result<Self, SealError> {
        Self::parse(value)
    }
}

impl From<CredentialName> for String {
    fn from(value: CredentialName) -> String {
        value.0
    }
}

impl utoipa::PartialSchema for CredentialName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::ids::string_schema("^[A-Za-z_][A-Za-z0-9_]*$", Some(Self::MAX_LEN))
    }
}

impl utoipa::ToSchema for CredentialName {}

impl fmt::Display for CredentialName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why sealing or opening failed. Never carries a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "credential name {0:?} must match [A-Za-z_][A-Za-z0-9_]* and be at most 128 characters"
    )]
    InvalidName(String),
    #[error("the master key must be {KEY_LEN} bytes, base64-encoded")]
    InvalidKey,
    #[error("credential {0:?} cannot be decrypted with this master key (wrong key or altered row)")]
    Undecryptable(String),
    #[error(
        "the signing secret of webhook {0:?} cannot be decrypted with this master key \
         (wrong key, or a sealed secret moved from another row)"
    )]
    UndecryptableWebhookSecret(String),
}

/// What a sealed value belongs to. Its associated data is bound into the ciphertext, so a
/// value opens only for the owner it was sealed for and cannot be moved to another row.
pub trait SealOwner {
    /// The AEAD associated data. Owners of different kinds must never produce equal bytes.
    fn associated_data(&self) -> Vec<u8>;
    /// The error when a value sealed for this owner does not open: names the owner, never
    /// the value.
    fn undecryptable(&self) -> SealError;
}

impl SealOwner for CredentialName {
    /// The bare name (environment syntax, so no other owner's prefixed data can equal it).
    fn associated_data(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }

    fn undecryptable(&self) -> SealError {
        SealError::Undecryptable(self.0.clone())
    }
}

/// The operator's key that encrypts credential values at rest. `Debug` prints only its
/// fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; KEY_LEN]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint())
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses standard base64 (the format of `RDEV_MASTER_KEY` and of the key file).
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::InvalidKey)?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|_| SealError::InvalidKey)?;
        Ok(Self(bytes))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// First 16 hex digits of sha256(key): identifies which key sealed a row without
    /// revealing the key.
    pub fn fingerprint(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }

    /// HMAC-SHA256 of `message` under a key derived for `purpose` (HMAC(master, purpose)),
    /// so a MAC made for one use (audit checkpoints) can never stand in for another and the
    /// master key itself never signs anything directly.
    pub fn mac(&self, purpose: &str, message: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, KeyInit, Mac};
        let derived = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mut mac) => {
                mac.update(purpose.as_bytes());
                mac.finalize().into_bytes()
            }
            // HMAC accepts keys of any length; this branch cannot be taken.
            Err(_) => return [0; 32],
        };
        match Hmac::<Sha256>::new_from_slice(&derived) {
            Ok(mut mac) => {
                mac.update(message);
                mac.finalize().into_bytes().into()
            }
            Err(_) => [0; 32],
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }

    /// `nonce || ciphertext`, with the owner's associated data so a sealed value cannot be
    /// moved to another name or row.
    pub fn seal(&self, owner: &impl SealOwner, value: &str, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let xnonce = XNonce::from(nonce);
        let aad = owner.associated_data();
        let payload = Payload {
            msg: value.as_bytes(),
            aad: &aad,
        };
        // Encryption into a Vec only fails for messages beyond the cipher's 256 GiB limit.
        let ciphertext = self.cipher().encrypt(&xnonce, payload).unwrap_or_default();
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Reverses [`MasterKey::seal`].
    pub fn open(&self, owner: &impl SealOwner, sealed: &[u8]) -> Result<String, SealError> {
        let undecryptable = || owner.undecryptable();
        if sealed.len() < NONCE_LEN {
            return Err(undecryptable());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| undecryptable())?;
        let aad = owner.associated_data();
        let payload = Payload {
            msg: ciphertext,
            aad: &aad,
        };
        let plain = self
            .cipher()
            .decrypt(&XNonce::from(nonce), payload)
            .map_err(|_| undecryptable())?;
        String::from_utf8(plain).map_err(|_| undecryptable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_name() {
        let key = MasterKey::from_bytes([7; KEY_LEN]);
        let name = CredentialName::parse("API_KEY").expect("valid");
        let sealed = key.seal(&name, "sk-123", [1; NONCE_LEN]);
        assert!(!sealed.windows(6).any(|w| w == b"sk-123"));
        assert_eq!(key.open(&name, &sealed).as_deref(), Ok("sk-123"));
        let other = CredentialName::parse("OTHER").expect("valid");
        assert!(key.open(&other, &sealed).is_err());
        let wrong = MasterKey::from_bytes([8; KEY_LEN]);
        assert!(wrong.open(&name, &sealed).is_err());
        assert!(!format!("{key:?}").contains("0707"));
    }

    #[test]
    fn names_use_environment_syntax() {
        for good in ["A", "_x", "OPENAI_API_KEY2"] {
            assert!(CredentialName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "1A", "A-B", "a b", "ü"] {
            assert!(CredentialName::parse(bad).is_err(), "{bad}");
        }
        let key = MasterKey::from_bytes([3; KEY_LEN]);
        assert_eq!(MasterKey::from_base64(&key.to_base64()), Ok(key));
        assert_eq!(
            MasterKey::from_base64("c2hvcnQ="),
            Err(SealError::InvalidKey)
        );
    }
}
