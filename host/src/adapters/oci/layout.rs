//! How a plugin is laid out as an OCI artifact: the wasm-pkg (`wkg`) layout, an OCI image
//! manifest whose config is `application/vnd.wasm.config.v0+json` and whose first layer is
//! the component (`application/wasm`), plus one rdev layer holding the plugin's manifest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::ContentDigest;
use crate::ports::{ArtifactError, PluginArtifact};

/// The OCI image manifest media type, which registries accept for artifacts.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config of a WebAssembly component artifact (CNCF wasm OCI artifact layout).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// A component layer.
pub const WASM_MEDIA_TYPE: &str = "application/wasm";
/// The layer holding the plugin's `<name>.toml`.
pub const PLUGIN_MANIFEST_MEDIA_TYPE: &str = "application/vnd.rdev.plugin.manifest.v1+toml";

/// A blob as an OCI manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    fn of(media_type: &str, bytes: &[u8]) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: ContentDigest::of(bytes).to_string(),
            size: bytes.len() as u64,
            annotations: None,
        }
    }
}

/// The fields of an OCI image manifest this layout uses.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// The wasm config blob: what `wkg` writes, without the creation time so that publishing
/// the same plugin twice gives the same digest.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig<'a> {
    architecture: &'static str,
    os: &'static str,
    layer_digests: [&'a str; 1],
}

/// An artifact ready to upload: its blobs (config first) and the manifest naming them.
pub struct Encoded {
    pub blobs: Vec<(Descriptor, Vec<u8>)>,
    pub manifest: Vec<u8>,
}

/// Lays `artifact` out for upload.
pub fn encode(artifact: &PluginArtifact) -> Result<Encoded, serde_json::Error> {
    let wasm = Descriptor::of(WASM_MEDIA_TYPE, &artifact.component);
    let toml = Descriptor::of(PLUGIN_MANIFEST_MEDIA_TYPE, &artifact.manifest);
    let config = serde_json::to_vec(&WasmConfig {
        architecture: "wasm",
        os: "wasip2",
        layer_digests: [&wasm.digest],
    })?;
    let config_descriptor = Descriptor::of(CONFIG_MEDIA_TYPE, &config);
    let manifest = serde_json::to_vec(&ImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        config: config_descriptor.clone(),
        layers: vec![wasm.clone(), toml.clone()],
    })?;
    Ok(Encoded {
        blobs: vec![
            (config_descriptor, config),
            (wasm, artifact.component.clone()),
            (toml, artifact.manifest.clone()),
        ],
        manifest,
    })
}

/// The component and plugin-manifest layers that a pulled manifest names.
pub fn plugin_layers(
    manifest: &[u8],
    reference: &str,
) -> Result<(Descriptor, Descriptor), ArtifactError> {
    let layout = |reason: String| ArtifactError::Layout {
        reference: reference.to_owned(),
        reason,
    };
    let parsed: ImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| layout(format!("its manifest is not an OCI image manifest: {e}")))?;
    if parsed.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(layout(format!(
            "config media type {:?}, expected {CONFIG_MEDIA_TYPE:?}",
            parsed.config.media_type
        )));
    }
    let single = |media_type: &str| {
        let mut found = parsed.layers.iter().filter(|l| l.media_type == media_type);
        match (found.next(), found.next()) {
            (Some(layer), None) => Ok(layer.clone()),
            (None, _) => Err(layout(format!("no {media_type:?} layer"))),
            (Some(_), Some(_)) => Err(layout(format!("more than one {media_type:?} layer"))),
        }
    };
    let wasm = single(WASM_MEDIA_TYPE)?;
    let toml = single(PLUGIN_MANIFEST_MEDIA_TYPE).map_err(|_| {
        layout(format!(
            "no {PLUGIN_MANIFEST_MEDIA_TYPE:?} layer: publish it with `rdev plugins publish`, which adds the plugin's manifest"
        ))
    })?;
    Ok((wasm, toml))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_plugin_reads_back_as_its_two_layers() {
        let artifact = PluginArtifact {
            component: b"\0asm component".to_vec(),
            manifest: b"name = \"echo\"".to_vec(),
        };
        let encoded = encode(&artifact).expect("encodes");
        assert_eq!(encoded.blobs.len(), 3);
        assert_eq!(encoded.blobs[0].0.media_type, CONFIG_MEDIA_TYPE);
        let (wasm, toml) = plugin_layers(&encoded.manifest, "r").expect("layout");
        assert_eq!(
            wasm.digest,
            ContentDigest::of(&artifact.component).to_string()
        );
        assert_eq!(toml.size, artifact.manifest.len() as u64);
        // Deterministic: the same plugin always has the same manifest digest.
        assert_eq!(
            encode(&artifact).expect("encodes").manifest,
            encoded.manifest
        );
    }

    #[test]
    fn a_plain_wasm_artifact_is_refused_with_advice() {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": "sha256:00", "size": 2},
            "layers": [{"mediaType": WASM_MEDIA_TYPE, "digest": "sha256:11", "size": 3}],
        });
        let error = plugin_layers(manifest.to_string().as_bytes(), "r").expect_err("refused");
        assert!(
            error.to_string().contains("rdev plugins publish"),
            "{error}"
        );
    }
}
