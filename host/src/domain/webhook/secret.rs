//! Webhook signing secrets: generated, parsed, the Standard Webhooks signature, and sealed
//! under the master key for storage.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::WebhookError;
use crate::domain::credential::{MasterKey, NONCE_LEN, SealError, SealOwner};

/// Prefix of a webhook signing secret, as Standard Webhooks libraries expect it.
pub const SECRET_PREFIX: &str = "whsec_";

/// Random bytes in a generated secret (the spec asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// A webhook signing secret. Its `Debug` never shows the value, so it cannot leak into
/// logs by accident; only [`WebhookSecret::expose`] returns it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// `whsec_` + base64 of `bytes` (the caller supplies fresh randomness).
    pub fn from_random(bytes: &[u8; SECRET_BYTES]) -> Self {
        Self(format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// A stored secret; refused unless it decodes to a usable key.
    pub fn parse(value: impl Into<String>) -> Result<Self, WebhookError> {
        let secret = Self(value.into());
        match secret.key() {
            Some(key) if key.len() >= 24 => Ok(secret),
            _ => Err(WebhookError::InvalidSecret),
        }
    }

    /// The full `whsec_…` text, shown once at creation and stored for signing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The HMAC key: the base64-decoded part after `whsec_`.
    fn key(&self) -> Option<Vec<u8>> {
        let encoded = self.0.strip_prefix(SECRET_PREFIX).unwrap_or(&self.0);
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
    }

    /// The `webhook-signature` header value for one attempt:
    /// `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = self.key().unwrap_or_default();
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
            // HMAC accepts keys of any length; this branch cannot be taken.
            return String::new();
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }
}

/// The owner of a webhook's sealed signing secret: the webhook's id. Its associated data is
/// `webhook-secret:<id>` (a credential name never holds `:` or `-`), so a sealed secret opens
/// only in its own row, never in another webhook's nor as a credential.
#[derive(Debug, Clone, Copy)]
pub struct SecretOfWebhook<'a>(pub &'a str);

impl SealOwner for SecretOfWebhook<'_> {
    fn associated_data(&self) -> Vec<u8> {
        format!("webhook-secret:{}", self.0).into_bytes()
    }

    fn undecryptable(&self) -> SealError {
        SealError::UndecryptableWebhookSecret(self.0.to_owned())
    }
}

/// A signing secret as stored: `nonce || ciphertext` under the master key. Only the store
/// that holds the key opens it, right before the dispatcher signs; `Debug` shows its length.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedWebhookSecret(pub Vec<u8>);

impl std::fmt::Debug for SealedWebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedWebhookSecret({} bytes)", self.0.len())
    }
}

impl SealedWebhookSecret {
    /// Seals the text of a secret for webhook `webhook_id` (also a stored plaintext secret
    /// being converted, which is sealed as it is).
    pub fn seal(key: &MasterKey, webhook_id: &str, secret: &str, nonce: [u8; NONCE_LEN]) -> Self {
        Self(key.seal(&SecretOfWebhook(webhook_id), secret, nonce))
    }

    /// The secret, if this was sealed with `key` for `webhook_id`; a typed error naming the
    /// webhook otherwise (wrong key, altered bytes or bytes from another row).
    pub fn open(&self, key: &MasterKey, webhook_id: &str) -> Result<WebhookSecret, SealError> {
        let owner = SecretOfWebhook(webhook_id);
        let text = key.open(&owner, &self.0)?;
        WebhookSecret::parse(text).map_err(|_| owner.undecryptable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credential::{CredentialName, KEY_LEN};

    #[test]
    fn sealed_secrets_open_only_for_their_webhook_and_key() {
        let key = MasterKey::from_bytes([5; KEY_LEN]);
        let secret = WebhookSecret::from_random(&[7; SECRET_BYTES]);
        let sealed = SealedWebhookSecret::seal(&key, "wh-1", secret.expose(), [2; NONCE_LEN]);
        let plain = secret.expose().as_bytes();
        assert!(!sealed.0.windows(plain.len()).any(|w| w == plain));
        assert_eq!(sealed.open(&key, "wh-1"), Ok(secret.clone()));
        assert_eq!(
            sealed.open(&key, "wh-2"),
            Err(SealError::UndecryptableWebhookSecret("wh-2".into()))
        );
        let other_key = MasterKey::from_bytes([6; KEY_LEN]);
        assert!(sealed.open(&other_key, "wh-1").is_err());
        // Never opens as a credential, even one named like the webhook.
        let name = CredentialName::parse("wh_1").expect("valid");
        assert!(key.open(&name, &sealed.0).is_err());
        assert!(!format!("{sealed:?}").contains(secret.expose()));
    }

    #[test]
    fn signatures_match_the_standard_webhooks_test_vector() {
        // Published with the Standard Webhooks reference libraries.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn generated_secrets_carry_enough_key_and_never_print() {
        let secret = WebhookSecret::from_random(&[7; SECRET_BYTES]);
        assert!(secret.expose().starts_with(SECRET_PREFIX));
        assert!(WebhookSecret::parse(secret.expose()).is_ok());
        assert_eq!(format!("{secret:?}"), "WebhookSecret(***)");
        assert_eq!(
            WebhookSecret::parse("whsec_c2hvcnQ="),
            Err(WebhookError::InvalidSecret)
        );
    }
}
