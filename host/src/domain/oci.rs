//! OCI references and content digests, as plugins are published and installed: which
//! registry, repository, tag and (when pinned) digest an operator named.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// Why a reference or a digest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error(
        "{0:?} names no registry: write it as <registry>/<repository>[:<tag>][@sha256:<hex>], e.g. ghcr.io/acme/echo:1.0.0"
    )]
    NoRegistry(String),
    #[error("{reference:?}: invalid repository {repository:?} (lowercase letters, digits, `._-/`)")]
    Repository {
        reference: String,
        repository: String,
    },
    #[error("{reference:?}: invalid tag {tag:?} (letters, digits, `._-`, at most 128)")]
    Tag { reference: String, tag: String },
    #[error("{0:?} is not a digest: only sha256:<64 lowercase hex digits> is accepted")]
    Digest(String),
}

/// A content digest, `sha256:<64 lowercase hex>`: the only algorithm accepted, so a
/// registry cannot downgrade verification.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentDigest(String);

impl ContentDigest {
    /// Validates a digest string.
    pub fn parse(value: &str) -> Result<Self, ReferenceError> {
        let hex = value
            .strip_prefix("sha256:")
            .ok_or_else(|| ReferenceError::Digest(value.to_owned()))?;
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(ReferenceError::Digest(value.to_owned()))
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part, without `sha256:`.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `<registry>/<repository>[:<tag>][@sha256:<hex>]`. The registry must be explicit (no
/// implied Docker Hub): a plugin's source is always visible in the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciReference {
    /// Host and optional port, e.g. `ghcr.io` or `127.0.0.1:5000`.
    pub registry: String,
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest is given.
    pub tag: Option<String>,
    /// When pinned, the manifest must have exactly this digest.
    pub digest: Option<ContentDigest>,
}

impl OciReference {
    pub fn parse(value: &str) -> Result<Self, ReferenceError> {
        let (name_tag, digest) = match value.split_once('@') {
            Some((rest, digest)) => (rest, Some(ContentDigest::parse(digest)?)),
            None => (value, None),
        };
        let (registry, path) = name_tag
            .split_once('/')
            .filter(|(host, _)| is_registry_host(host))
            .ok_or_else(|| ReferenceError::NoRegistry(value.to_owned()))?;
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) => (repository, Some(tag.to_owned())),
            None => (path, None),
        };
        if !is_repository(repository) {
            return Err(ReferenceError::Repository {
                reference: value.to_owned(),
                repository: repository.to_owned(),
            });
        }
        if let Some(tag) = tag.as_deref().filter(|t| !is_tag(t)) {
            return Err(ReferenceError::Tag {
                reference: value.to_owned(),
                tag: tag.to_owned(),
            });
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            _ => tag,
        };
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.as_str(),
            (None, Some(tag)) => tag,
            (None, None) => "latest",
        }
    }

    /// The same artifact pinned to `digest`, for lock files.
    pub fn pinned(&self, digest: &ContentDigest) -> Self {
        Self {
            digest: Some(digest.clone()),
            ..self.clone()
        }
    }

    /// Whether the registry is this machine, where plain HTTP is allowed by default.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => &self.registry,
        };
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// A registry host has a dot or a port, or is `localhost` (as Docker decides it).
fn is_registry_host(host: &str) -> bool {
    !host.is_empty()
        && (host.contains('.') || host.contains(':') || host == "localhost")
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

fn is_repository(repository: &str) -> bool {
    !repository.is_empty()
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && part
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
        })
}

fn is_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_name_registry_repository_tag_and_digest() {
        let plain = OciReference::parse("127.0.0.1:5000/rdev/echo:1.0.0").expect("valid");
        assert_eq!(plain.registry, "127.0.0.1:5000");
        assert_eq!(plain.repository, "rdev/echo");
        assert_eq!(plain.tag.as_deref(), Some("1.0.0"));
        assert!(plain.is_loopback());
        assert_eq!(plain.to_string(), "127.0.0.1:5000/rdev/echo:1.0.0");

        let pinned = OciReference::parse(&format!("ghcr.io/acme/echo@sha256:{HEX}")).expect("ok");
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.manifest_reference(), format!("sha256:{HEX}"));
        assert!(!pinned.is_loopback());

        let latest = OciReference::parse("localhost/echo").expect("valid");
        assert_eq!(latest.tag.as_deref(), Some("latest"));
        let digest = ContentDigest::parse(&format!("sha256:{HEX}")).expect("digest");
        assert_eq!(
            latest.pinned(&digest).to_string(),
            format!("localhost/echo:latest@sha256:{HEX}")
        );
    }

    #[test]
    fn malformed_references_and_digests_are_refused() {
        assert!(matches!(
            OciReference::parse("acme/echo:1"),
            Err(ReferenceError::NoRegistry(_))
        ));
        assert!(matches!(
            OciReference::parse("ghcr.io/Acme/echo"),
            Err(ReferenceError::Repository { .. })
        ));
        assert!(matches!(
            OciReference::parse("ghcr.io/acme/echo:-bad"),
            Err(ReferenceError::Tag { .. })
        ));
        for digest in [
            "sha256:abc",
            "sha512:00",
            &format!("sha256:{}", HEX.to_uppercase()),
        ] {
            assert!(ContentDigest::parse(digest).is_err(), "{digest}");
        }
        assert_eq!(ContentDigest::of(b"").hex().len(), 64);
    }
}
