//! The token service of the OCI token flow, for a real `docker-registry` configured with
//! `auth: token`: `GET /token?service=…&scope=…` checks HTTP Basic credentials and answers
//! `{"token": <JWT>}` granting the scopes asked for, signed RS256 by a key whose self-signed
//! certificate the registry trusts (`rootcertbundle`) and carried in the JWT's `x5c`, as
//! the distribution registry verifies it. Keys, certificate and signatures come from the
//! real `openssl` CLI. Only the token service is written here; the registry is the real one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;

use crate::doubles::thread_server::ThreadServer;

/// The `issuer` the registry is configured to trust.
pub const ISSUER: &str = "rdev-test-token-issuer";
/// The `service` (JWT audience) the registry names in its challenges.
pub const SERVICE: &str = "rdev-test-registry";

struct Inner {
    username: String,
    password: String,
    key: PathBuf,
    /// base64 (standard) of the certificate's DER, the JWT's `x5c`.
    cert_der: String,
    /// Tokens handed out.
    issued: AtomicUsize,
    /// Requests refused for missing or wrong credentials.
    refused: AtomicUsize,
}

/// A running token service; stops when dropped.
pub struct TokenService {
    server: ThreadServer,
    inner: Arc<Inner>,
    /// The PEM certificate for the registry's `rootcertbundle`.
    pub cert: PathBuf,
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    service: Option<String>,
}

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or_default()).expect("write");
    drop(input);
    let output = child.wait_with_output().expect("openssl ends");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenService {
    /// Generates a key and certificate in `dir` and serves tokens for `username`/`password`.
    pub fn start(dir: &Path, username: &str, password: &str) -> std::io::Result<Self> {
        let key = dir.join("token.key");
        let cert = dir.join("token.pem");
        let (key_arg, cert_arg) = (key.to_str().expect("utf-8"), cert.to_str().expect("utf-8"));
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                key_arg,
                "-out",
                cert_arg,
                "-days",
                "2",
                "-subj",
                "/CN=rdev-test-token",
            ],
            None,
        );
        let der = openssl(&["x509", "-in", cert_arg, "-outform", "DER"], None);
        let inner = Arc::new(Inner {
            username: username.to_owned(),
            password: password.to_owned(),
            key,
            cert_der: base64::engine::general_purpose::STANDARD.encode(der),
            issued: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/token", axum::routing::get(token))
            .with_state(inner.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let server = ThreadServer::start("registry-token", app, runtime)?;
        Ok(Self {
            server,
            inner,
            cert,
        })
    }

    /// The realm the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }

    /// How many tokens were handed out.
    pub fn issued(&self) -> usize {
        self.inner.issued.load(Ordering::SeqCst)
    }

    /// How many requests were refused for their credentials.
    pub fn refused(&self) -> usize {
        self.inner.refused.load(Ordering::SeqCst)
    }
}

async fn token(
    State(inner): State<Arc<Inner>>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let expected = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", inner.username, inner.password));
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    if given != Some(expected.as_str()) {
        inner.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "credentials required").into_response();
    }
    let access: Vec<serde_json::Value> = query
        .scope
        .iter()
        .filter_map(|scope| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({
                "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let now = chrono::Utc::now().timestamp();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [inner.cert_der]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": inner.username,
        "aud": query.service.as_deref().unwrap_or(SERVICE),
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": uuid::Uuid::now_v7().to_string(), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let key = inner.key.to_str().expect("utf-8").to_owned();
    let input = signing_input.clone();
    let signature = tokio::task::spawn_blocking(move || {
        openssl(&["dgst", "-sha256", "-sign", &key], Some(input.as_bytes()))
    })
    .await
    .expect("signing");
    inner.issued.fetch_add(1, Ordering::SeqCst);
    let jwt = format!("{signing_input}.{}", b64url(&signature));
    axum::Json(serde_json::json!({"token": jwt})).into_response()
}
