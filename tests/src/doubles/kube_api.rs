//! A loopback Kubernetes API server for testing the Kubernetes executor with the real kube-rs
//! client.
//!
//! It speaks the wire protocol for what the executor uses: pods (get, list filtered by a
//! `labelSelector`, create, delete), PersistentVolumeClaims and NetworkPolicies (create, get,
//! delete), the exec WebSocket upgrade
//! (`/api/v1/namespaces/{ns}/pods/{pod}/exec?command=…&stdin=…`) negotiating
//! `v5.channel.k8s.io` with a `v4.channel.k8s.io` fallback — channel byte 0 stdin, 1 stdout,
//! 2 stderr, 3 the `metav1.Status` JSON on exit, 4 resize (ignored), 255 close (v5) — and
//! port-forward (`/portforward?ports=P`, a data and an error channel per port, each starting
//! with the port as two little-endian bytes) to `127.0.0.1:P`.
//!
//! It also serves legacy discovery (`/api`, `/apis`, the resource lists) for the kinds rdev
//! and its deployment manifests use, so `kubectl --dry-run=client` can run against it; any
//! other path is a `NotFound` status.
//!
//! Exec runs the requested command as a local process in the pod's own directory (a
//! temporary directory per pod), like a container's filesystem would hold it, with only
//! `PATH` and `HOSTNAME` in its environment. The server binds 127.0.0.1 on an ephemeral port,
//! runs on its own thread and stops — killing the processes it started — when the
//! [`FakeKubeApi`] is dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::thread_server::ThreadServer;

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const CLOSE: u8 = 255;

/// A pod as the double knows it.
#[derive(Debug, Clone)]
pub struct FakePod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `Running`, `Pending`, …
    pub phase: String,
    /// The `Ready` condition.
    pub ready: bool,
    /// The pod's "filesystem": exec runs here.
    pub dir: PathBuf,
    /// Unique per pod, as a real API server's are: every test's pods share this machine's
    /// processes, and the executor scopes its process tags by pod uid.
    pub uid: String,
}

/// One exec the double received, for assertions about what went over the wire.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    pub pod: String,
    /// The full request URI, as an API server's audit log would record it.
    pub uri: String,
    pub command: Vec<String>,
    /// The negotiated subprotocol.
    pub protocol: String,
}

#[derive(Default)]
struct Inner {
    pods: Vec<FakePod>,
    /// Created objects as posted (pods by name, PVCs by name), for assertions.
    created_pods: BTreeMap<String, Value>,
    pvcs: BTreeMap<String, Value>,
    network_policies: BTreeMap<String, Value>,
    /// Whether created pods start Running and Ready (otherwise Pending).
    start_pending: bool,
    root: PathBuf,
    execs: Vec<ExecRecord>,
    v4_only: bool,
    /// The next port-forward closes its WebSocket after forwarding this many bytes from
    /// the pod, as a connection dropped by a restarting API server or a proxy would.
    drop_next_forward_after: Option<usize>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running double; stops on drop.
pub struct FakeKubeApi {
    server: ThreadServer,
    shared: Shared,
    root: tempfile::TempDir,
}

impl FakeKubeApi {
    /// Binds 127.0.0.1 on an ephemeral port and serves on a thread of its own.
    pub fn start() -> std::io::Result<Self> {
        let root = tempfile::tempdir()?;
        let shared = Shared::default();
        shared.lock().root = root.path().canonicalize()?;
        let (pvcs, pvc) = Stored::Pvc.routes();
        let (policies, policy) = Stored::NetworkPolicy.routes();
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{ns}/pods",
                get(list_pods).post(create_pod),
            )
            .route(
                "/api/v1/namespaces/{ns}/pods/{pod}",
                get(get_pod).delete(delete_pod),
            )
            .route("/api/v1/namespaces/{ns}/persistentvolumeclaims", pvcs)
            .route("/api/v1/namespaces/{ns}/persistentvolumeclaims/{pvc}", pvc)
            .route(
                "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
                policies,
            )
            .route(
                "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}",
                policy,
            )
            .route("/api/v1/namespaces/{ns}/pods/{pod}/exec", get(exec))
            .route(
                "/api/v1/namespaces/{ns}/pods/{pod}/portforward",
                get(portforward),
            )
            .route("/api", get(|| async { axum::Json(core_versions()) }))
            .route("/apis", get(|| async { axum::Json(group_list()) }))
            .route("/api/{version}", get(resource_list))
            .route("/apis/{group}/{version}", get(group_resource_list))
            .fallback(|uri: axum::http::Uri| async move {
                status_error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("the server could not find the requested resource ({uri})"),
                )
            })
            .with_state(shared.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let server = ThreadServer::start("fake-kube-api", app, runtime)?;
        Ok(Self {
            server,
            shared,
            root,
        })
    }

    /// The API server URL, e.g. for a kube-rs `Config`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Adds a pod and creates its directory; returns the directory.
    pub fn add_pod(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        phase: &str,
        ready: bool,
    ) -> std::io::Result<PathBuf> {
        let dir = self.root.path().join(namespace).join(name);
        std::fs::create_dir_all(&dir)?;
        let dir = dir.canonicalize()?;
        self.shared.lock().pods.push(FakePod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            phase: phase.to_owned(),
            ready,
            dir: dir.clone(),
            uid: uuid::Uuid::now_v7().to_string(),
        });
        Ok(dir)
    }

    /// Changes a pod's phase and readiness, as the kubelet would report them.
    pub fn set_pod_status(&self, namespace: &str, name: &str, phase: &str, ready: bool) {
        let mut inner = self.shared.lock();
        for pod in &mut inner.pods {
            if pod.namespace == namespace && pod.name == name {
                pod.phase = phase.to_owned();
                pod.ready = ready;
            }
        }
    }

    /// Refuses `v5.channel.k8s.io`, as an API server older than 1.30 does.
    pub fn set_v4_only(&self, v4_only: bool) {
        self.shared.lock().v4_only = v4_only;
    }

    /// Created pods start `Pending` and not Ready until [`Self::set_pod_status`].
    pub fn set_start_pending(&self, pending: bool) {
        self.shared.lock().start_pending = pending;
    }

    /// Makes the next port-forward close its WebSocket after `bytes` bytes from the pod's port;
    /// later ones are unaffected.
    pub fn drop_next_port_forward_after(&self, bytes: usize) {
        self.shared.lock().drop_next_forward_after = Some(bytes);
    }

    /// The pod as it was created through the API, if it still exists.
    pub fn created_pod(&self, name: &str) -> Option<Value> {
        self.shared.lock().created_pods.get(name).cloned()
    }

    /// The PersistentVolumeClaim as created, if it still exists.
    pub fn pvc(&self, name: &str) -> Option<Value> {
        self.shared.lock().pvcs.get(name).cloned()
    }

    /// The NetworkPolicy as created, if it still exists.
    pub fn network_policy(&self, name: &str) -> Option<Value> {
        self.shared.lock().network_policies.get(name).cloned()
    }

    /// Stores a NetworkPolicy as if someone else had created it (conflict tests).
    pub fn add_network_policy(&self, name: &str) {
        self.shared.lock().network_policies.insert(
            name.to_owned(),
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": name}, "spec": {"podSelector": {}}}),
        );
    }

    /// Names of the pods that exist now.
    pub fn pod_names(&self) -> Vec<String> {
        self.shared
            .lock()
            .pods
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    /// Every exec received so far, oldest first.
    pub fn execs(&self) -> Vec<ExecRecord> {
        self.shared.lock().execs.clone()
    }

    /// The pods' directories live under here.
    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

/// A discoverable resource: plural name, kind, namespaced.
type Resource = (&'static str, &'static str, bool);

/// The kinds the double's legacy discovery lists, per group version: what rdev creates and
/// what `examples/deploy/` declares, so `kubectl` can map manifests to resources against it.
const DISCOVERY: &[(&str, &[Resource])] = &[
    (
        "v1",
        &[
            ("pods", "Pod", true),
            ("persistentvolumeclaims", "PersistentVolumeClaim", true),
            ("services", "Service", true),
            ("serviceaccounts", "ServiceAccount", true),
            ("secrets", "Secret", true),
            ("configmaps", "ConfigMap", true),
            ("namespaces", "Namespace", false),
        ],
    ),
    ("apps/v1", &[("deployments", "Deployment", true)]),
    (
        "networking.k8s.io/v1",
        &[("networkpolicies", "NetworkPolicy", true)],
    ),
    (
        "rbac.authorization.k8s.io/v1",
        &[
            ("roles", "Role", true),
            ("rolebindings", "RoleBinding", true),
        ],
    ),
];

/// `GET /api`: plain JSON, so clients asking for aggregated discovery fall back to the
/// legacy documents.
fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

/// `GET /apis`.
fn group_list() -> Value {
    let groups: Vec<Value> = DISCOVERY
        .iter()
        .filter_map(|(group_version, _)| group_version.split_once('/'))
        .map(|(group, version)| {
            let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
            json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resources_of(group_version: &str) -> Response {
    let Some((_, kinds)) = DISCOVERY.iter().find(|(gv, _)| *gv == group_version) else {
        return status_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("group version {group_version} is not served"),
        );
    };
    let resources: Vec<Value> = kinds
        .iter()
        .map(|(name, kind, namespaced)| {
            json!({
                "name": name,
                "singularName": kind.to_lowercase(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["create", "delete", "get", "list"],
            })
        })
        .collect();
    axum::Json(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
    .into_response()
}

async fn resource_list(UrlPath(version): UrlPath<String>) -> Response {
    resources_of(&version)
}

async fn group_resource_list(UrlPath((group, version)): UrlPath<(String, String)>) -> Response {
    resources_of(&format!("{group}/{version}"))
}

/// A `metav1.Status` failure, the API server's error body.
fn status_error(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

fn pod_json(pod: &FakePod) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "uid": pod.uid,
            "resourceVersion": "1",
            "labels": pod.labels,
        },
        "spec": {"containers": [{"name": "workspace", "image": "rdev-double"}]},
        "status": {
            "phase": pod.phase,
            "conditions": [{"type": "Ready", "status": if pod.ready { "True" } else { "False" }}],
        },
    })
}

/// Splits a query string into decoded pairs, keeping repeated keys (`command=a&command=b`).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `labelSelector` matching: `k=v`, `k==v`, `k!=v`, `k` and `!k`, comma-separated.
fn selector_matches(selector: &str, labels: &BTreeMap<String, String>) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                labels.get(k.trim()).map(String::as_str) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                labels.get(k.trim()).map(String::as_str) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                !labels.contains_key(k.trim())
            } else {
                labels.contains_key(term)
            }
        })
}

async fn list_pods(
    State(shared): State<Shared>,
    UrlPath(ns): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let selector = query_pairs(query.as_deref().unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let items: Vec<Value> = shared
        .lock()
        .pods
        .iter()
        .filter(|pod| pod.namespace == ns && selector_matches(&selector, &pod.labels))
        .map(pod_json)
        .collect();
    axum::Json(json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {"resourceVersion": "1"},
        "items": items,
    }))
    .into_response()
}

fn find_pod(shared: &Shared, ns: &str, name: &str) -> Option<FakePod> {
    shared
        .lock()
        .pods
        .iter()
        .find(|pod| pod.namespace == ns && pod.name == name)
        .cloned()
}

fn not_found(name: &str) -> Response {
    status_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("pods \"{name}\" not found"),
    )
}

async fn get_pod(
    State(shared): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    match find_pod(&shared, &ns, &name) {
        Some(pod) => axum::Json(pod_json(&pod)).into_response(),
        None => not_found(&name),
    }
}

/// The API server's refusal of a posted object without a `metadata.name`.
fn name_required() -> Response {
    status_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        "metadata.name: Required value".into(),
    )
}

fn already_exists(kind: &str, name: &str) -> Response {
    status_error(
        StatusCode::CONFLICT,
        "AlreadyExists",
        format!("{kind} \"{name}\" already exists"),
    )
}

async fn create_pod(
    State(shared): State<Shared>,
    UrlPath(ns): UrlPath<String>,
    axum::Json(mut body): axum::Json<Value>,
) -> Response {
    let Some(name) = body["metadata"]["name"].as_str().map(str::to_owned) else {
        return name_required();
    };
    if find_pod(&shared, &ns, &name).is_some() {
        return already_exists("pods", &name);
    }
    let labels: BTreeMap<String, String> =
        serde_json::from_value(body["metadata"]["labels"].clone()).unwrap_or_default();
    let root = shared.lock().root.clone();
    let dir = root.join(&ns).join(&name);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return status_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        );
    }
    // A volume mounted at a path under the double's root gets that directory, as the kubelet
    // would mount it; tests point the executor's workspace there.
    let mounts = body["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["volumeMounts"].as_array())
        .flatten()
        .filter_map(|m| m["mountPath"].as_str())
        .map(PathBuf::from)
        .filter(|path| path.starts_with(&root))
        .collect::<Vec<_>>();
    for mount in mounts {
        if let Err(e) = std::fs::create_dir_all(&mount) {
            return status_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("mounting {}: {e}", mount.display()),
            );
        }
    }
    let pending = shared.lock().start_pending;
    let pod = FakePod {
        namespace: ns.clone(),
        name: name.clone(),
        labels,
        phase: if pending { "Pending" } else { "Running" }.to_owned(),
        ready: !pending,
        dir,
        uid: uuid::Uuid::now_v7().to_string(),
    };
    body["metadata"]["namespace"] = json!(ns);
    body["metadata"]["uid"] = json!(pod.uid);
    body["metadata"]["resourceVersion"] = json!("1");
    let mut inner = shared.lock();
    inner.created_pods.insert(name.clone(), body.clone());
    inner.pods.push(pod);
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

async fn delete_pod(
    State(shared): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    let Some(pod) = find_pod(&shared, &ns, &name) else {
        return not_found(&name);
    };
    let mut inner = shared.lock();
    inner
        .pods
        .retain(|p| !(p.namespace == ns && p.name == name));
    inner.created_pods.remove(&name);
    axum::Json(pod_json(&pod)).into_response()
}

/// The objects the double keeps as posted, beside the pods it runs: each kind is created,
/// read and deleted as the API server does it, with the same errors.
#[derive(Clone, Copy)]
enum Stored {
    Pvc,
    NetworkPolicy,
}

impl Stored {
    /// The resource as the API server's messages name it.
    fn resource(self) -> &'static str {
        match self {
            Self::Pvc => "persistentvolumeclaims",
            Self::NetworkPolicy => "networkpolicies.networking.k8s.io",
        }
    }

    fn objects(self, inner: &mut Inner) -> &mut BTreeMap<String, Value> {
        match self {
            Self::Pvc => &mut inner.pvcs,
            Self::NetworkPolicy => &mut inner.network_policies,
        }
    }

    fn not_found(self, name: &str) -> Response {
        status_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} \"{name}\" not found", self.resource()),
        )
    }

    /// `POST`, `GET` and `DELETE` routes of this kind (the collection, then one object).
    fn routes(self) -> (MethodRouter<Shared>, MethodRouter<Shared>) {
        let create = axum::routing::post(
            move |State(shared): State<Shared>,
                  UrlPath(ns): UrlPath<String>,
                  axum::Json(body): axum::Json<Value>| async move {
                self.create(&shared, &ns, body)
            },
        );
        let one =
            get(
                move |State(shared): State<Shared>,
                      UrlPath((_ns, name)): UrlPath<(String, String)>| async move {
                    match self.objects(&mut shared.lock()).get(&name) {
                        Some(object) => axum::Json(object.clone()).into_response(),
                        None => self.not_found(&name),
                    }
                },
            )
            .delete(
                move |State(shared): State<Shared>,
                      UrlPath((_ns, name)): UrlPath<(String, String)>| async move {
                    match self.objects(&mut shared.lock()).remove(&name) {
                        Some(object) => axum::Json(object).into_response(),
                        None => self.not_found(&name),
                    }
                },
            );
        (create, one)
    }

    fn create(self, shared: &Shared, ns: &str, mut body: Value) -> Response {
        let Some(name) = body["metadata"]["name"].as_str().map(str::to_owned) else {
            return name_required();
        };
        let mut inner = shared.lock();
        let objects = self.objects(&mut inner);
        if objects.contains_key(&name) {
            return already_exists(self.resource(), &name);
        }
        let tag = match self {
            Self::Pvc => "pvc",
            Self::NetworkPolicy => "netpol",
        };
        body["metadata"]["namespace"] = json!(ns);
        body["metadata"]["uid"] = json!(format!("uid-{tag}-{ns}-{name}"));
        body["metadata"]["resourceVersion"] = json!("1");
        if let Self::Pvc = self {
            body["status"] = json!({"phase": "Bound"});
        }
        objects.insert(name, body.clone());
        (StatusCode::CREATED, axum::Json(body)).into_response()
    }
}

async fn exec(
    State(shared): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    RawQuery(query): RawQuery,
    uri: axum::http::Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(pod) = find_pod(&shared, &ns, &name) else {
        return not_found(&name);
    };
    let pairs = query_pairs(query.as_deref().unwrap_or(""));
    let command: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let flag = |key: &str| pairs.iter().any(|(k, v)| k == key && v == "true");
    let (stdin, stdout, stderr) = (flag("stdin"), flag("stdout"), flag("stderr"));
    if command.is_empty() {
        return status_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least 1 command".into(),
        );
    }
    let offered: &[&'static str] = if shared.lock().v4_only {
        &[V4]
    } else {
        &[V5, V4]
    };
    let ws = ws.protocols(offered.iter().copied());
    let Some(protocol) = ws
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .map(str::to_owned)
    else {
        return status_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "no supported channel subprotocol offered".into(),
        );
    };
    shared.lock().execs.push(ExecRecord {
        pod: name.clone(),
        uri: uri.to_string(),
        command: command.clone(),
        protocol: protocol.clone(),
    });
    let streams = Streams {
        stdin,
        stdout,
        stderr,
    };
    ws.on_upgrade(move |socket| run_exec(socket, pod, command, streams))
}

#[derive(Clone, Copy)]
struct Streams {
    stdin: bool,
    stdout: bool,
    stderr: bool,
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::Binary(bytes.into())
}

/// Copies a child's pipe into channel frames until EOF.
fn pump(
    mut reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    channel: u8,
    tx: mpsc::Sender<Message>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(frame(channel, &buf[..n])).await.is_err() {
                        break;
                    }
                }
            }
        }
    })
}

async fn run_exec(socket: WebSocket, pod: FakePod, command: Vec<String>, streams: Streams) {
    let (mut sink, mut source) = socket.split();
    let mut child = tokio::process::Command::new(&command[0]);
    child
        .args(&command[1..])
        .current_dir(&pod.dir)
        .env_clear()
        .env("HOSTNAME", &pod.name)
        .stdin(if streams.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if streams.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if streams.stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true);
    if let Some(path) = std::env::var_os("PATH") {
        child.env("PATH", path);
    }
    let mut child = match child.spawn() {
        Ok(child) => child,
        Err(e) => {
            // What the kubelet reports when the runtime cannot start the command.
            let status = json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("exec: {:?}: {e}", command[0]),
                "reason": "InternalError",
            });
            let _ = sink
                .send(frame(STATUS, status.to_string().as_bytes()))
                .await;
            let _ = sink.close().await;
            return;
        }
    };

    let (tx, mut rx) = mpsc::channel::<Message>(64);
    // The empty frame per channel a real server sends first.
    for channel in [STDOUT, STDERR, STATUS] {
        let _ = tx.send(frame(channel, &[])).await;
    }
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let mut stdin_pipe = child.stdin.take();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            match message {
                Message::Binary(bytes) if bytes.first() == Some(&STDIN) => {
                    if let Some(pipe) = stdin_pipe.as_mut()
                        && pipe.write_all(&bytes[1..]).await.is_err()
                    {
                        stdin_pipe = None;
                    }
                }
                Message::Binary(bytes) if bytes[..] == [CLOSE, STDIN] => stdin_pipe = None,
                Message::Close(_) => break,
                _ => {}
            }
        }
        // The client went away (or, on v4, closed the stream to signal stdin EOF): the
        // process keeps running, as it does in a real pod, but sees EOF on stdin.
        drop(stdin_pipe);
    });

    let out = child
        .stdout
        .take()
        .map(|pipe| pump(pipe, STDOUT, tx.clone()));
    let err = child
        .stderr
        .take()
        .map(|pipe| pump(pipe, STDERR, tx.clone()));
    for pump in [out, err].into_iter().flatten() {
        let _ = pump.await;
    }
    let status = match child.wait().await {
        Ok(status) => status,
        Err(_) => return,
    };
    let code = status
        .code()
        .or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            // The container runtime reports a signalled process as 128 + signal.
            status.signal().map(|signal| 128 + signal)
        })
        .unwrap_or(1);
    let body = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
    };
    let _ = tx.send(frame(STATUS, body.to_string().as_bytes())).await;
    drop(tx);
    let _ = writer.await;
    reader.abort();
}

async fn portforward(
    State(shared): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    if find_pod(&shared, &ns, &name).is_none() {
        return not_found(&name);
    }
    let ports: Vec<u16> = query_pairs(query.as_deref().unwrap_or(""))
        .into_iter()
        .filter(|(k, _)| k == "ports")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect::<Vec<u16>>()
        })
        .collect();
    if ports.is_empty() {
        return status_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "at least one port is required".into(),
        );
    }
    let drop_after = shared.lock().drop_next_forward_after.take();
    let ws = ws.protocols([V4, "portforward.k8s.io"]);
    ws.on_upgrade(move |socket| run_portforward(socket, ports, drop_after))
}

/// Forwards up to `limit` bytes of `reader` on `channel`, then closes the WebSocket.
fn pump_then_drop(
    mut reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    channel: u8,
    tx: mpsc::Sender<Message>,
    limit: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut left = limit;
        while left > 0 {
            let want = left.min(buf.len());
            match reader.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    left -= n;
                    if tx.send(frame(channel, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    })
}

async fn run_portforward(socket: WebSocket, ports: Vec<u16>, drop_after: Option<usize>) {
    let (mut sink, mut source) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    // Per port: connect, then announce the port on its data and error channels.
    let mut writers: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let data = (2 * i) as u8;
        let _ = tx.send(frame(data, &port.to_le_bytes())).await;
        let _ = tx.send(frame(data + 1, &port.to_le_bytes())).await;
        match tokio::net::TcpStream::connect(("127.0.0.1", *port)).await {
            Ok(stream) => {
                let (read, write) = stream.into_split();
                match drop_after {
                    Some(limit) => drop(pump_then_drop(read, data, tx.clone(), limit)),
                    None => drop(pump(read, data, tx.clone())),
                }
                writers.push(Some(write));
            }
            Err(e) => {
                let message = format!(
                    "an error occurred forwarding {port} -> {port}: dial tcp4 127.0.0.1:{port}: {e}"
                );
                let _ = tx.send(frame(data + 1, message.as_bytes())).await;
                writers.push(None);
            }
        }
    }
    drop(tx);
    // Client frames carry the channel byte and data; odd (error) channels carry nothing.
    while let Some(Ok(message)) = source.next().await {
        let Message::Binary(bytes) = message else {
            if matches!(message, Message::Close(_)) {
                break;
            }
            continue;
        };
        let Some((&channel, payload)) = bytes.split_first() else {
            continue;
        };
        let index = usize::from(channel / 2);
        if channel % 2 == 1 || payload.is_empty() {
            continue;
        }
        let Some(Some(write)) = writers.get_mut(index) else {
            continue;
        };
        if write.write_all(payload).await.is_err() {
            writers[index] = None;
        }
    }
    drop(writers);
    let _ = writer.await;
}
