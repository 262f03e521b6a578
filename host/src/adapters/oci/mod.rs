//! The small subset of the OCI distribution API that publishing and installing plugins needs,
//! over reqwest: GET manifests and blobs, HEAD blobs, monolithic blob upload (POST + PUT)
//! and PUT manifests. (The `oci-client` crate would bring a second reqwest major version.)
//! Registries on this machine are reached over plain HTTP; every other one over HTTPS unless
//! the operator passes `--insecure`. A registry that answers `401` gets credentials (HTTP
//! Basic) or a token from its token service ([`auth`]); anonymous otherwise.

mod auth;
pub mod credential_helper;
pub mod docker_config;
mod layout;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::{Method, StatusCode, header};

use crate::domain::{ContentDigest, OciReference};
use crate::ports::{ArtifactError, ArtifactRegistry, PluginArtifact, Pulled, RegistryCredentials};

use auth::Session;
pub use layout::{
    CONFIG_MEDIA_TYPE, Descriptor, MANIFEST_MEDIA_TYPE, PLUGIN_MANIFEST_MEDIA_TYPE, WASM_MEDIA_TYPE,
};
use layout::{encode, plugin_layers};

/// Largest manifest read: an OCI manifest of three layers is a few hundred bytes.
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Largest blob read; the biggest real components (componentize-js) are about 12 MiB.
const MAX_BLOB_BYTES: u64 = 512 * 1024 * 1024;

/// An OCI registry client.
#[derive(Clone)]
pub struct OciClient {
    http: reqwest::Client,
    /// Plain HTTP to every registry, not only loopback ones.
    insecure: bool,
}

impl OciClient {
    /// A client; `insecure` allows plain HTTP to registries (and token services) that are
    /// not on this machine.
    pub fn new(insecure: bool) -> Result<Self, ArtifactError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("rdev/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .map_err(|e| ArtifactError::Registry {
                registry: String::new(),
                message: format!("building the HTTP client: {e}"),
            })?;
        Ok(Self { http, insecure })
    }

    /// `<scheme>://<registry>/v2/<repository>`.
    fn base(&self, reference: &OciReference) -> String {
        let scheme = if self.insecure || reference.is_loopback() {
            "http"
        } else {
            "https"
        };
        format!(
            "{scheme}://{}/v2/{}",
            reference.registry, reference.repository
        )
    }

    fn session<'a>(
        &'a self,
        reference: &'a OciReference,
        credentials: Option<&'a RegistryCredentials>,
    ) -> Session<'a> {
        Session::new(&self.http, reference, credentials, self.insecure)
    }

    /// Reads at most `limit` bytes of a successful response.
    async fn body(
        session: &Session<'_>,
        response: reqwest::Response,
        limit: u64,
        doing: &str,
    ) -> Result<Vec<u8>, ArtifactError> {
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(session.error(format!("{doing}: larger than {limit} bytes")));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| session.error(format!("{doing}: {e}")))?;
        if bytes.len() as u64 > limit {
            return Err(session.error(format!("{doing}: larger than {limit} bytes")));
        }
        Ok(bytes.to_vec())
    }

    /// The manifest's bytes and their digest, checked against the pinned digest and the
    /// registry's `Docker-Content-Digest`.
    async fn manifest(
        &self,
        session: &Session<'_>,
    ) -> Result<(Vec<u8>, ContentDigest), ArtifactError> {
        let reference = session.reference;
        let url = format!(
            "{}/manifests/{}",
            self.base(reference),
            reference.manifest_reference()
        );
        let doing = "fetching the manifest";
        let build = || {
            self.http
                .get(&url)
                .header(header::ACCEPT, MANIFEST_MEDIA_TYPE)
        };
        let response = session.send(build, doing).await?;
        let response = success(session, response, doing)?;
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| ContentDigest::parse(v).ok());
        let bytes = Self::body(session, response, MAX_MANIFEST_BYTES, "the manifest").await?;
        let actual = ContentDigest::of(&bytes);
        for expected in [reference.digest.as_ref(), announced.as_ref()]
            .into_iter()
            .flatten()
        {
            check_digest(&format!("the manifest of {reference}"), expected, &actual)?;
        }
        Ok((bytes, actual))
    }

    /// One blob, verified against its descriptor's digest and size.
    async fn blob(
        &self,
        session: &Session<'_>,
        layer: &Descriptor,
    ) -> Result<Vec<u8>, ArtifactError> {
        let reference = session.reference;
        let expected = ContentDigest::parse(&layer.digest).map_err(|e| ArtifactError::Layout {
            reference: reference.to_string(),
            reason: e.to_string(),
        })?;
        if layer.size > MAX_BLOB_BYTES {
            return Err(session.error(format!(
                "layer {expected} is larger than {MAX_BLOB_BYTES} bytes"
            )));
        }
        let url = format!("{}/blobs/{expected}", self.base(reference));
        let doing = format!("fetching layer {expected}");
        let response = session.send(|| self.http.get(&url), &doing).await?;
        let response = success(session, response, &doing)?;
        let bytes = Self::body(session, response, layer.size, &doing).await?;
        let what = format!("layer {} ({})", layer.media_type, reference);
        check_digest(&what, &expected, &ContentDigest::of(&bytes))?;
        Ok(bytes)
    }

    /// Uploads one blob unless the registry has it already (monolithic upload).
    async fn upload(
        &self,
        session: &Session<'_>,
        descriptor: &Descriptor,
        bytes: Bytes,
    ) -> Result<(), ArtifactError> {
        let base = self.base(session.reference);
        let digest = &descriptor.digest;
        let head = format!("{base}/blobs/{digest}");
        let present = session
            .send(|| self.http.head(&head), "checking a blob")
            .await?;
        if present.status() == StatusCode::OK {
            return Ok(());
        }
        let start = format!("{base}/blobs/uploads/");
        let doing = "starting an upload";
        let started = session.send(|| self.http.post(&start), doing).await?;
        let started = success(session, started, doing)?;
        let location = started
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| session.error("an upload without a Location".into()))?;
        let mut url = started
            .url()
            .join(location)
            .map_err(|e| session.error(format!("upload location: {e}")))?;
        url.query_pairs_mut().append_pair("digest", digest);
        let put = || {
            self.http
                .request(Method::PUT, url.clone())
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes.clone())
        };
        let doing = format!("uploading blob {digest}");
        let done = session.send(put, &doing).await?;
        success(session, done, &doing).map(|_| ())
    }
}

#[async_trait]
impl ArtifactRegistry for OciClient {
    async fn pull(
        &self,
        reference: &OciReference,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<Pulled, ArtifactError> {
        let session = self.session(reference, credentials);
        let (manifest, digest) = self.manifest(&session).await?;
        let (wasm, toml) = plugin_layers(&manifest, &reference.to_string())?;
        let component = self.blob(&session, &wasm).await?;
        let manifest = self.blob(&session, &toml).await?;
        Ok(Pulled {
            artifact: PluginArtifact {
                component,
                manifest,
            },
            digest,
        })
    }

    async fn push(
        &self,
        reference: &OciReference,
        artifact: &PluginArtifact,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<ContentDigest, ArtifactError> {
        let session = self.session(reference, credentials);
        let encoded = encode(artifact).map_err(|e| ArtifactError::Layout {
            reference: reference.to_string(),
            reason: e.to_string(),
        })?;
        let digest = ContentDigest::of(&encoded.manifest);
        if let Some(pinned) = &reference.digest {
            check_digest(&format!("the manifest of {reference}"), pinned, &digest)?;
        }
        for (descriptor, bytes) in encoded.blobs {
            self.upload(&session, &descriptor, Bytes::from(bytes))
                .await?;
        }
        let url = format!(
            "{}/manifests/{}",
            self.base(reference),
            reference.tag.as_deref().unwrap_or(digest.as_str())
        );
        let manifest = Bytes::from(encoded.manifest);
        let put = || {
            self.http
                .put(&url)
                .header(header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
                .body(manifest.clone())
        };
        let doing = "uploading the manifest";
        let done = session.send(put, doing).await?;
        success(&session, done, doing)?;
        Ok(digest)
    }
}

/// The response when its status is a success; 404 is `NotFound`, anything else an error
/// naming the status and what was being done.
fn success(
    session: &Session<'_>,
    response: reqwest::Response,
    doing: &str,
) -> Result<reqwest::Response, ArtifactError> {
    match response.status() {
        status if status.is_success() => Ok(response),
        StatusCode::NOT_FOUND => Err(ArtifactError::NotFound(session.reference.to_string())),
        StatusCode::FORBIDDEN => Err(ArtifactError::Unauthorized {
            registry: session.reference.registry.clone(),
            message: format!("{doing}: 403 Forbidden: the credentials do not allow it"),
        }),
        status => Err(session.error(format!("{doing}: {status}"))),
    }
}

fn check_digest(
    what: &str,
    expected: &ContentDigest,
    actual: &ContentDigest,
) -> Result<(), ArtifactError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ArtifactError::DigestMismatch {
            what: what.to_owned(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        })
    }
}
