//! A Kubernetes API server for tests: a real HTTP/1.1 server on 127.0.0.1 that speaks the
//! list/watch protocol the way kube-apiserver does for Services, EndpointSlices, Namespaces
//! and Pods: JSON lists with `resourceVersion` and `limit`/`continue` paging, chunked watch
//! streams of ADDED/MODIFIED/DELETED events resumed from a resourceVersion, periodic BOOKMARK
//! events, watch-list streams (`sendInitialEvents`, as client-go asks), and `ERROR` 410 Gone
//! for a resourceVersion older than the compacted history.
//!
//! The test drives it: change objects, compact the history, stop it (every connection dropped
//! at once) and start it again on the same port, or cut the next watch event in half.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

/// The collections served, with their paths and kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Namespaces,
    Services,
    EndpointSlices,
    Pods,
}

impl Resource {
    const ALL: [Resource; 4] = [Resource::Namespaces, Resource::Services, Resource::EndpointSlices, Resource::Pods];

    fn path(self) -> &'static str {
        match self {
            Resource::Namespaces => "/api/v1/namespaces",
            Resource::Services => "/api/v1/services",
            Resource::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            Resource::Pods => "/api/v1/pods",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Resource::Namespaces => "Namespace",
            Resource::Services => "Service",
            Resource::EndpointSlices => "EndpointSlice",
            Resource::Pods => "Pod",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Resource::EndpointSlices => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    fn of_kind(kind: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.kind() == kind)
    }

    fn namespaced(self) -> bool {
        self != Resource::Namespaces
    }
}

type Key = (Resource, String, String);

#[derive(Clone)]
struct Change {
    rv: u64,
    resource: Resource,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// Every change after `compacted`, oldest first.
    history: Vec<Change>,
    compacted: u64,
    uid: u64,
}

struct Inner {
    state: Mutex<State>,
    live: tokio::sync::broadcast::Sender<Change>,
    /// The next watch event goes out half-written, then the connection is dropped.
    cut_next: AtomicBool,
    /// Every request's path and query, in order.
    requests: Mutex<Vec<String>>,
    bookmark_every: Duration,
}

/// The server, running on its own tokio runtime (tests are synchronous).
pub struct ApiServer {
    inner: Arc<Inner>,
    runtime: tokio::runtime::Runtime,
    pub addr: SocketAddr,
    serving: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ApiServer {
    /// Starts on a free port with the objects of `manifests` (YAML, multi-document or List).
    pub fn start(manifests: &str) -> ApiServer {
        ApiServer::start_on(0, manifests)
    }

    pub fn start_on(port: u16, manifests: &str) -> ApiServer {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let inner = Arc::new(Inner {
            state: Mutex::new(State { rv: 100, ..State::default() }),
            live: tokio::sync::broadcast::channel(65536).0,
            cut_next: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            bookmark_every: Duration::from_millis(500),
        });
        let server = ApiServer { inner, runtime, addr: SocketAddr::from(([127, 0, 0, 1], port)), serving: Mutex::new(None) };
        for object in parse_manifests(manifests) {
            server.apply(object);
        }
        let mut server = server;
        server.addr = server.listen(port);
        server
    }

    fn listen(&self, port: u16) -> SocketAddr {
        let listener = self.runtime.block_on(async {
            // Rebinding the same port right after a stop: the old sockets may linger a moment.
            for _ in 0..100 {
                match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    Ok(l) => return l,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            panic!("cannot bind 127.0.0.1:{port}");
        });
        let addr = listener.local_addr().unwrap();
        let inner = self.inner.clone();
        let task = self.runtime.spawn(async move {
            // Connections live in this set: aborting the task drops every one of them.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let inner = inner.clone();
                        connections.spawn(async move {
                            let service = hyper::service::service_fn(move |req| handle(inner.clone(), req));
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                        });
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        *self.serving.lock().unwrap() = Some(task);
        addr
    }

    /// Drops the listener and every open connection, as a crashed API server would.
    pub fn stop(&self) {
        if let Some(task) = self.serving.lock().unwrap().take() {
            task.abort();
            let _ = self.runtime.block_on(task);
        }
    }

    /// Serves again on the same port, with the same objects and history.
    pub fn restart(&self) {
        self.stop();
        self.listen(self.addr.port());
    }

    /// Creates or replaces an object (ADDED or MODIFIED).
    pub fn apply(&self, mut object: Value) {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let resource = Resource::of_kind(&kind).unwrap_or_else(|| panic!("the test API server does not serve kind {kind:?}"));
        let key = key_of(resource, &object);
        let mut state = self.inner.state.lock().unwrap();
        state.rv += 1;
        let rv = state.rv;
        let existed = state.objects.get(&key).cloned();
        object["apiVersion"] = json!(resource.api_version());
        let meta = object["metadata"].as_object_mut().expect("metadata");
        if resource.namespaced() && !meta.contains_key("namespace") {
            meta.insert("namespace".into(), json!("default"));
        }
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        let uid = match existed.as_ref().and_then(|e| e["metadata"]["uid"].as_str().map(String::from)) {
            Some(uid) => uid,
            None => {
                state.uid += 1;
                format!("00000000-0000-4000-8000-{:012}", state.uid)
            }
        };
        meta.insert("uid".into(), json!(uid));
        meta.entry("creationTimestamp").or_insert(json!("2026-01-01T00:00:00Z"));
        state.objects.insert(key, object.clone());
        let change = Change { rv, resource, kind: if existed.is_some() { "MODIFIED" } else { "ADDED" }, object };
        state.history.push(change.clone());
        let _ = self.inner.live.send(change);
    }

    /// Deletes an object (DELETED); false if there was none.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let resource = Resource::of_kind(kind).expect("kind");
        let namespace = if resource.namespaced() { namespace } else { "" };
        let mut state = self.inner.state.lock().unwrap();
        let Some(mut object) = state.objects.remove(&(resource, namespace.to_string(), name.to_string())) else { return false };
        state.rv += 1;
        let rv = state.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let change = Change { rv, resource, kind: "DELETED", object };
        state.history.push(change.clone());
        let _ = self.inner.live.send(change);
        true
    }

    /// Forgets the history: a watch from an older resourceVersion now gets 410 Gone.
    pub fn compact(&self) {
        let mut state = self.inner.state.lock().unwrap();
        state.compacted = state.rv;
        state.history.clear();
    }

    /// The next watch event is written half-way, then its connection is dropped.
    pub fn cut_next_event(&self) {
        self.inner.cut_next.store(true, Ordering::SeqCst);
    }

    pub fn resource_version(&self) -> u64 {
        self.inner.state.lock().unwrap().rv
    }

    /// Requests seen so far (path and query).
    pub fn requests(&self) -> Vec<String> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// A kubeconfig that points at this server (plain HTTP, no credentials).
    pub fn write_kubeconfig(&self, path: &Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: \"http://{}\"}}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test}}\ncurrent-context: test\n",
            self.addr
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The objects of a YAML manifest set (`kind: List` flattened).
pub fn parse_manifests(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).expect("manifest YAML");
        if value.is_null() {
            continue;
        }
        if value["kind"] == "List" {
            out.extend(value["items"].as_array().cloned().unwrap_or_default());
        } else {
            out.push(value);
        }
    }
    out
}

fn key_of(resource: Resource, object: &Value) -> Key {
    let meta = &object["metadata"];
    let namespace = if resource.namespaced() { meta["namespace"].as_str().unwrap_or("default").to_string() } else { String::new() };
    (resource, namespace, meta["name"].as_str().expect("metadata.name").to_string())
}

type Body = BoxBody<Bytes, std::io::Error>;

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let body = Full::new(Bytes::from(value.to_string())).map_err(|never: Infallible| match never {}).boxed();
    Response::builder().status(status).header("content-type", "application/json").body(body).unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

async fn handle(inner: Arc<Inner>, req: Request<hyper::body::Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = req.uri().query().map(url_decode_pairs).unwrap_or_default();
    inner.requests.lock().unwrap().push(req.uri().to_string());
    let Some(resource) = Resource::ALL.into_iter().find(|r| r.path() == path) else {
        return Ok(json_response(StatusCode::NOT_FOUND, &status(404, "NotFound", &format!("the server could not find the requested resource {path}"))));
    };
    if req.method() != hyper::Method::GET {
        return Ok(json_response(StatusCode::METHOD_NOT_ALLOWED, &status(405, "MethodNotAllowed", "read-only test server")));
    }
    if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
        Ok(watch(inner, resource, &query))
    } else {
        Ok(list(&inner, resource, &query))
    }
}

fn list(inner: &Inner, resource: Resource, query: &BTreeMap<String, String>) -> Response<Body> {
    let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    let state = inner.state.lock().unwrap();
    // A continue token is the list's resourceVersion and the last key sent.
    let (rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let Some((rv, rest)) = token.split_once('|') else {
                return json_response(StatusCode::BAD_REQUEST, &status(400, "BadRequest", "bad continue token"));
            };
            let (ns, name) = rest.split_once('/').unwrap_or(("", rest));
            (rv.parse::<u64>().unwrap_or(0), Some((resource, ns.to_string(), name.to_string())))
        }
        None => (state.rv, None),
    };
    let mut items: Vec<Value> = Vec::new();
    let mut last = None;
    let range = state.objects.range((resource, String::new(), String::new())..).filter(|(k, _)| k.0 == resource).filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a));
    let mut more = false;
    for (key, object) in range {
        if items.len() == limit {
            more = true;
            break;
        }
        let mut object = object.clone();
        // Items of a list carry no kind or apiVersion, as from kube-apiserver.
        if let Some(map) = object.as_object_mut() {
            map.remove("kind");
            map.remove("apiVersion");
        }
        items.push(object);
        last = Some(key.clone());
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if more && let Some((_, ns, name)) = last {
        metadata["continue"] = json!(format!("{rv}|{ns}/{name}"));
    }
    let list = json!({"kind": format!("{}List", resource.kind()), "apiVersion": resource.api_version(), "metadata": metadata, "items": items});
    json_response(StatusCode::OK, &list)
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn watch(inner: Arc<Inner>, resource: Resource, query: &BTreeMap<String, String>) -> Response<Body> {
    let from: Option<u64> = query.get("resourceVersion").and_then(|rv| rv.parse().ok()).filter(|rv| *rv > 0);
    let timeout = query.get("timeoutSeconds").and_then(|t| t.parse().ok()).map(Duration::from_secs).unwrap_or(Duration::from_secs(1800));
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    // Watch-list (client-go's WatchListClient): the current objects as ADDED, then a bookmark
    // marking the end of the initial events, then changes.
    let initial_events = query.get("sendInitialEvents").is_some_and(|b| b == "true");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
    // Subscribe before reading the history, so nothing falls between the two.
    let mut live = inner.live.subscribe();
    let (backlog, gone, mut sent_rv) = {
        let state = inner.state.lock().unwrap();
        match from {
            _ if initial_events => (
                state.objects.iter().filter(|(k, _)| k.0 == resource).map(|(_, o)| Change { rv: state.rv, resource, kind: "ADDED", object: o.clone() }).collect(),
                None,
                state.rv,
            ),
            Some(rv) if rv < state.compacted => (Vec::new(), Some(status(410, "Expired", &format!("too old resource version: {rv} ({})", state.compacted))), rv),
            Some(rv) => (state.history.iter().filter(|c| c.resource == resource && c.rv > rv).cloned().collect::<Vec<_>>(), None, rv),
            // No resourceVersion: the current objects as ADDED, then what follows.
            None => (
                state.objects.iter().filter(|(k, _)| k.0 == resource).map(|(_, o)| Change { rv: state.rv, resource, kind: "ADDED", object: o.clone() }).collect(),
                None,
                state.rv,
            ),
        }
    };
    tokio::spawn(async move {
        let send = |tx: &tokio::sync::mpsc::Sender<_>, change: &Change| {
            let mut object = change.object.clone();
            object["kind"] = json!(change.resource.kind());
            object["apiVersion"] = json!(change.resource.api_version());
            let line = event_line(change.kind, &object);
            let tx = tx.clone();
            let cut = inner.cut_next.swap(false, Ordering::SeqCst);
            async move {
                if cut {
                    let half = line.slice(..line.len() / 2);
                    let _ = tx.send(Ok(Frame::data(half))).await;
                    // An error from the body makes hyper drop the connection mid-chunk.
                    let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                    return false;
                }
                tx.send(Ok(Frame::data(line))).await.is_ok()
            }
        };
        if let Some(status) = gone {
            let _ = tx.send(Ok(Frame::data(event_line("ERROR", &status)))).await;
            return;
        }
        for change in &backlog {
            if !send(&tx, change).await {
                return;
            }
            sent_rv = sent_rv.max(change.rv);
        }
        if initial_events {
            let mark = json!({"kind": resource.kind(), "apiVersion": resource.api_version(),
                "metadata": {"resourceVersion": sent_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
            if tx.send(Ok(Frame::data(event_line("BOOKMARK", &mark)))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ticker = tokio::time::interval(inner.bookmark_every);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = ticker.tick(), if bookmarks => {
                    let rv = inner.state.lock().unwrap().rv;
                    let mark = json!({"kind": resource.kind(), "apiVersion": resource.api_version(), "metadata": {"resourceVersion": rv.to_string()}});
                    if tx.send(Ok(Frame::data(event_line("BOOKMARK", &mark)))).await.is_err() {
                        return;
                    }
                    sent_rv = sent_rv.max(rv);
                }
                change = live.recv() => match change {
                    Ok(change) if change.resource == resource && change.rv > sent_rv => {
                        if !send(&tx, &change).await {
                            return;
                        }
                        sent_rv = change.rv;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        let _ = tx.send(Err(std::io::Error::other("watch fell behind"))).await;
                        return;
                    }
                },
            }
        }
    });
    let body = StreamBody::new(tokio_stream_from(rx)).boxed();
    Response::builder().status(StatusCode::OK).header("content-type", "application/json").header("transfer-encoding", "chunked").body(body).unwrap()
}

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn url_decode_pairs(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
