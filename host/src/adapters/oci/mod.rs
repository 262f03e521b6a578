//! The small subset of the OCI distribution API that publishing and installing plugins needs,
//! over reqwest: GET manifests and blobs, HEAD blobs, monolithic blob upload (POST + PUT)
//! and PUT manifests. (The `oci-client` crate would bring a second reqwest major version.)
//! Registries on this machine are reached over plain HTTP; every other one over HTTPS unless
//! the operator passes `--insecure`. Anonymous access only: no credentials are sent.

mod layout;

use async_trait::async_trait;
use reqwest::{Method, StatusCode, header};

use crate::domain::{ContentDigest, OciReference};
use crate::ports::{ArtifactError, ArtifactRegistry, PluginArtifact, Pulled};

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

    async fn send(
        &self,
        reference: &OciReference,
        request: reqwest::RequestBuilder,
        doing: &str,
    ) -> Result<reqwest::Response, ArtifactError> {
        request
            .send()
            .await
            .map_err(|e| registry_error(reference, format!("{doing}: {e}")))
    }

    /// Reads at most `limit` bytes of a successful response.
    async fn body(
        reference: &OciReference,
        response: reqwest::Response,
        limit: u64,
        doing: &str,
    ) -> Result<Vec<u8>, ArtifactError> {
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(registry_error(
                reference,
                format!("{doing}: larger than {limit} bytes"),
            ));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| registry_error(reference, format!("{doing}: {e}")))?;
        if bytes.len() as u64 > limit {
            return Err(registry_error(
                reference,
                format!("{doing}: larger than {limit} bytes"),
            ));
        }
        Ok(bytes.to_vec())
    }

    /// The manifest's bytes and their digest, checked against the pinned digest and the
    /// registry's `Docker-Content-Digest`.
    async fn manifest(
        &self,
        reference: &OciReference,
    ) -> Result<(Vec<u8>, ContentDigest), ArtifactError> {
        let url = format!(
            "{}/manifests/{}",
            self.base(reference),
            reference.manifest_reference()
        );
        let request = self
            .http
            .get(url)
            .header(header::ACCEPT, MANIFEST_MEDIA_TYPE);
        let response = self
            .send(reference, request, "fetching the manifest")
            .await?;
        let response = success(reference, response, "fetching the manifest")?;
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| ContentDigest::parse(v).ok());
        let bytes = Self::body(reference, response, MAX_MANIFEST_BYTES, "the manifest").await?;
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
        reference: &OciReference,
        layer: &Descriptor,
    ) -> Result<Vec<u8>, ArtifactError> {
        let expected = ContentDigest::parse(&layer.digest).map_err(|e| ArtifactError::Layout {
            reference: reference.to_string(),
            reason: e.to_string(),
        })?;
        if layer.size > MAX_BLOB_BYTES {
            return Err(registry_error(
                reference,
                format!("layer {expected} is larger than {MAX_BLOB_BYTES} bytes"),
            ));
        }
        let url = format!("{}/blobs/{expected}", self.base(reference));
        let doing = format!("fetching layer {expected}");
        let response = self.send(reference, self.http.get(url), &doing).await?;
        let response = success(reference, response, &doing)?;
        let bytes = Self::body(reference, response, layer.size, &doing).await?;
        let what = format!("layer {} ({})", layer.media_type, reference);
        check_digest(&what, &expected, &ContentDigest::of(&bytes))?;
        Ok(bytes)
    }

    /// Uploads one blob unless the registry has it already (monolithic upload).
    async fn upload(
        &self,
        reference: &OciReference,
        descriptor: &Descriptor,
        bytes: Vec<u8>,
    ) -> Result<(), ArtifactError> {
        let base = self.base(reference);
        let digest = &descriptor.digest;
        let head = self.http.head(format!("{base}/blobs/{digest}"));
        if self
            .send(reference, head, "checking a blob")
            .await?
            .status()
            == StatusCode::OK
        {
            return Ok(());
        }
        let start = self.http.post(format!("{base}/blobs/uploads/"));
        let started = self.send(reference, start, "starting an upload").await?;
        let started = success(reference, started, "starting an upload")?;
        let location = started
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| registry_error(reference, "an upload without a Location".into()))?;
        let mut url = started
            .url()
            .join(location)
            .map_err(|e| registry_error(reference, format!("upload location: {e}")))?;
        url.query_pairs_mut().append_pair("digest", digest);
        let put = self
            .http
            .request(Method::PUT, url)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes);
        let doing = format!("uploading blob {digest}");
        let done = self.send(reference, put, &doing).await?;
        success(reference, done, &doing).map(|_| ())
    }
}

#[async_trait]
impl ArtifactRegistry for OciClient {
    async fn pull(&self, reference: &OciReference) -> Result<Pulled, ArtifactError> {
        let (manifest, digest) = self.manifest(reference).await?;
        let (wasm, toml) = plugin_layers(&manifest, &reference.to_string())?;
        let component = self.blob(reference, &wasm).await?;
        let manifest = self.blob(reference, &toml).await?;
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
    ) -> Result<ContentDigest, ArtifactError> {
        let encoded = encode(artifact).map_err(|e| ArtifactError::Layout {
            reference: reference.to_string(),
            reason: e.to_string(),
        })?;
        let digest = ContentDigest::of(&encoded.manifest);
        if let Some(pinned) = &reference.digest {
            check_digest(&format!("the manifest of {reference}"), pinned, &digest)?;
        }
        for (descriptor, bytes) in encoded.blobs {
            self.upload(reference, &descriptor, bytes).await?;
        }
        let url = format!(
            "{}/manifests/{}",
            self.base(reference),
            reference.tag.as_deref().unwrap_or(digest.as_str())
        );
        let put = self
            .http
            .put(url)
            .header(header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
            .body(encoded.manifest);
        let done = self.send(reference, put, "uploading the manifest").await?;
        success(reference, done, "uploading the manifest")?;
        Ok(digest)
    }
}

fn registry_error(reference: &OciReference, message: String) -> ArtifactError {
    ArtifactError::Registry {
        registry: reference.registry.clone(),
        message,
    }
}

/// The response when its status is a success; 404 is `NotFound`, anything else an error
/// naming the status and what was being done.
fn success(
    reference: &OciReference,
    response: reqwest::Response,
    doing: &str,
) -> Result<reqwest::Response, ArtifactError> {
    match response.status() {
        status if status.is_success() => Ok(response),
        StatusCode::NOT_FOUND => Err(ArtifactError::NotFound(reference.to_string())),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(registry_error(
            reference,
            format!(
                "{doing}: {} (authenticated registries are not supported yet)",
                response.status()
            ),
        )),
        status => Err(registry_error(reference, format!("{doing}: {status}"))),
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
