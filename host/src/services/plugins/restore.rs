//! Reproducing a plugin set from a lock file (`rdev plugins install --locked`): each entry is
//! pulled by the reference it was installed from and must still be exactly what the lock
//! pins (the manifest digest and the component's sha256), so a tag that moved in the
//! registry is refused instead of silently installing other code.

use crate::domain::{ContentDigest, OciReference};
use crate::ports::{ArtifactRegistry, RegistryCredentials};

use super::lock::LockEntry;
use super::{Fetched, PluginsError, fetch};

/// What to ask the registry for: the recorded reference without its digest when it has a
/// tag (so the registry says what the tag serves today), else the pinned digest.
fn resolving(recorded: &OciReference, pinned: &ContentDigest) -> OciReference {
    match recorded.tag {
        Some(_) => OciReference {
            digest: None,
            ..recorded.clone()
        },
        None => recorded.pinned(pinned),
    }
}

/// Pulls `entry`'s plugin and checks it against the lock; the [`Fetched`] carries the
/// reference as recorded, so installing it writes the same lock entry again.
pub async fn fetch_locked(
    registry: &dyn ArtifactRegistry,
    entry: &LockEntry,
    credentials: Option<&RegistryCredentials>,
) -> Result<Fetched, PluginsError> {
    let invalid = |reason: String| PluginsError::Lock {
        path: super::lock::LOCK_FILE.into(),
        reason: format!("entry {:?}: {reason}", entry.name),
    };
    let recorded = OciReference::parse(&entry.reference).map_err(|e| invalid(e.to_string()))?;
    let pinned = ContentDigest::parse(&entry.digest).map_err(|e| invalid(e.to_string()))?;
    let mut fetched = fetch(registry, &resolving(&recorded, &pinned), credentials).await?;
    let moved = |served: String| PluginsError::Moved {
        name: entry.name.clone(),
        reference: entry.reference.clone(),
        pinned: pinned.to_string(),
        served,
    };
    if fetched.pulled.digest != pinned {
        return Err(moved(fetched.pulled.digest.to_string()));
    }
    let component = fetched.component_sha256();
    if component != entry.component_sha256 {
        return Err(moved(format!("a component of sha256 {component}")));
    }
    if fetched.manifest.name.as_str() != entry.name {
        return Err(invalid(format!(
            "the artifact is the plugin {:?}",
            fetched.manifest.name.as_str()
        )));
    }
    fetched.reference = recorded;
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_tagged_entry_is_resolved_by_its_tag_and_an_untagged_one_by_its_digest() {
        let pinned = ContentDigest::parse(&format!("sha256:{HEX}")).expect("digest");
        let tagged = OciReference::parse(&format!("127.0.0.1:5000/rdev/ver:1.0.0@{pinned}"))
            .expect("reference");
        let asked = resolving(&tagged, &pinned);
        assert_eq!(asked.manifest_reference(), "1.0.0");
        let bare =
            OciReference::parse(&format!("127.0.0.1:5000/rdev/ver@{pinned}")).expect("reference");
        assert_eq!(
            resolving(&bare, &pinned).manifest_reference(),
            pinned.as_str()
        );
    }
}
