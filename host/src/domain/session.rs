//! Dashboard sessions: what a browser holds instead of an API token. The browser keeps a
//! random session secret in an `HttpOnly` cookie; the store keeps only its digest and the
//! digest of the token that signed in, so a stolen database cannot be replayed as a cookie
//! and revoking the token ends its sessions. The CSRF token is derived from the secret, so
//! it needs no storage and differs per session.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// A session as stored: the token it stands for and how long it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiSession {
    /// [`super::token_digest`] of the API token that signed in.
    pub token_digest: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A session to store at sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUiSession {
    /// [`session_digest`] of the secret the cookie carries.
    pub digest: String,
    pub token_digest: String,
    pub expires_at: DateTime<Utc>,
}

/// Hex SHA-256 of a session secret: the key a cookie is looked up by.
pub fn session_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(
        format!("rdev-ui-session:{secret}").as_bytes(),
    ))
}

/// The session's CSRF token: a digest of its secret under another label, so pages can
/// carry it in forms without revealing the cookie, and another site cannot know it.
pub fn csrf_token(secret: &str) -> String {
    hex::encode(Sha256::digest(format!("rdev-ui-csrf:{secret}").as_bytes()))
}

/// Compares a presented CSRF token with the session's in constant time.
pub fn csrf_matches(secret: &str, presented: &str) -> bool {
    let expected = csrf_token(secret);
    expected.len() == presented.len()
        && expected
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_token_is_per_session_and_reveals_nothing_of_the_cookie() {
        let token = csrf_token("secret-a");
        assert_ne!(token, csrf_token("secret-b"));
        assert_ne!(token, session_digest("secret-a"));
        assert!(!token.contains("secret-a"));
        assert!(csrf_matches("secret-a", &token));
        assert!(!csrf_matches("secret-b", &token));
        assert!(!csrf_matches("secret-a", ""));
        assert!(!csrf_matches("secret-a", &token[1..]));
    }
}
