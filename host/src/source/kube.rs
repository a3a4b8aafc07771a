//! The Kubernetes API as a live source: kube-runtime watchers on Services, EndpointSlices,
//! Namespaces (and Pods for `pods verified`), trimmed at the edge, turned into deltas that
//! touch only what changed.
//!
//! The watcher lists in pages, resumes from the last resourceVersion with bookmarks, relists
//! on 410 Gone and backs off while the API server is away; the engine keeps answering from
//! the last state all that time. A relist is reconciled against the state object by object
//! (unchanged objects cost nothing; objects not listed again are removed at the end), so the
//! cluster is never held twice.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use kdns_proto::v1;

use crate::cluster::live::{Collection, LiveState, Object};
use crate::cluster::objects::{self, ObjectKey, PodObject, ServiceObject, SliceObject};
use crate::cluster::FieldError;
use crate::engine::Engine;
use crate::metrics::Metrics;

/// Where the API server is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct KubeOptions {
    /// `--kubeconfig` (or the Corefile's `kubeconfig`), with an optional context; without it:
    /// KUBECONFIG, then ~/.kube/config, then the in-cluster service account.
    pub kubeconfig: Option<(PathBuf, Option<String>)>,
    /// Watch Pods too (needed by `pods verified`).
    pub pods: bool,
    /// `--snapshot-file`: written after changes, read at start.
    pub snapshot_file: Option<PathBuf>,
}

/// Most services in one delta, so one apply holds the engine's write lock only briefly even
/// when a relist finds many changes.
const MAX_SERVICES_PER_DELTA: usize = 512;
/// Objects per page of a list.
const PAGE_SIZE: u32 = 250;
/// Most events taken off the queue before the changes are applied.
const MAX_BATCH: usize = 4096;
/// Quiet time before the snapshot file is rewritten after a change.
const PERSIST_DELAY: Duration = Duration::from_secs(2);

/// A client from the options: an explicit kubeconfig, else `Config::infer` (KUBECONFIG,
/// ~/.kube/config, in-cluster).
pub async fn client(opts: &KubeOptions) -> anyhow::Result<Client> {
    let config = match &opts.kubeconfig {
        Some((path, context)) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            let options = kube::config::KubeConfigOptions { context: context.clone(), ..Default::default() };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context("no Kubernetes API to watch: no --kubeconfig, no KUBECONFIG, no ~/.kube/config and not in a pod (to serve manifest files use --manifests)")?,
    };
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).with_context(|| format!("cannot make a client for {server}"))?;
    tracing::info!(%server, "watching the Kubernetes API");
    Ok(client)
}

/// What a watcher task tells the state owner.
enum Update {
    /// A (re)list of `Collection` begins.
    ListStarted(Collection),
    /// An object listed (`listed`) or changed.
    Upsert { object: Object, listed: bool },
    /// An object listed or changed that DNS cannot use: the last good version is kept.
    Invalid { collection: Collection, key: ObjectKey, error: FieldError, listed: bool },
    Delete(Collection, ObjectKey),
    /// The (re)list of `Collection` is complete.
    ListDone(Collection),
    /// The watch failed; the watcher retries with backoff.
    Failed(Collection, String),
}

/// Starts the watchers and the task that applies their events to `engine`. Once every
/// collection has been listed and the engine holds the result, `ready` is set and the returned
/// channel says `true`.
pub fn start(client: Client, opts: KubeOptions, engine: Arc<dyn Engine>, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::mpsc::channel(MAX_BATCH);
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let mut collections = vec![Collection::Services, Collection::EndpointSlices, Collection::Namespaces];
    spawn_watch::<Service>(client.clone(), Collection::Services, tx.clone(), |svc| ServiceObject::try_from(svc).map(|s| Some(Object::Service(s))));
    spawn_watch::<EndpointSlice>(client.clone(), Collection::EndpointSlices, tx.clone(), |s| SliceObject::from_k8s(s).map(|s| s.map(Object::Slice)));
    spawn_watch::<Namespace>(client.clone(), Collection::Namespaces, tx.clone(), |ns| {
        objects::namespace_name(ns).map(|name| Some(Object::Namespace(ObjectKey { namespace: String::new(), name })))
    });
    if opts.pods {
        collections.push(Collection::Pods);
        spawn_watch::<Pod>(client, Collection::Pods, tx, |pod| PodObject::try_from(pod).map(|p| Some(Object::Pod(p))));
    }
    let applier = Applier {
        live: LiveState::new(opts.pods),
        listing: HashMap::new(),
        never_listed: collections.into_iter().collect(),
        engine,
        metrics,
        ready,
        synced: false,
        synced_tx,
        serial: 0,
        snapshot_file: opts.snapshot_file,
        persist_at: None,
    };
    tokio::spawn(applier.run(rx));
    synced_rx
}

/// Watches one collection forever, trimming each object as it arrives.
fn spawn_watch<K>(client: Client, collection: Collection, tx: tokio::sync::mpsc::Sender<Update>, trim: fn(&K) -> Result<Option<Object>, FieldError>)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let api: Api<K> = Api::all(client);
        let mut events = watcher(api).boxed();
        while let Some(event) = events.next().await {
            let update = match event {
                Ok(Event::Init) => Update::ListStarted(collection),
                Ok(Event::InitApply(obj)) => converted(collection, &obj, trim, true),
                Ok(Event::InitDone) => Update::ListDone(collection),
                Ok(Event::Apply(obj)) => converted(collection, &obj, trim, false),
                Ok(Event::Delete(obj)) => Update::Delete(collection, key_of(collection, &obj)),
                Err(e) => Update::Failed(collection, e.to_string()),
            };
            if tx.send(update).await.is_err() {
                return;
            }
        }
    });
}

fn watcher<K>(api: Api<K>) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    // Paged lists, bookmarks, client-go's backoff. Pages of 250 objects rather than client-go's
    // 500: a page of EndpointSlices is the largest transient allocation of a relist, and the
    // three collections relist at once (measured at 100k endpoints: peak 1.24x steady with 500).
    watcher::watcher(api, watcher::Config::default().page_size(PAGE_SIZE)).default_backoff()
}

fn key_of<K: Resource>(collection: Collection, obj: &K) -> ObjectKey {
    let namespace = if collection == Collection::Namespaces { String::new() } else { obj.namespace().unwrap_or_else(|| "default".into()) };
    ObjectKey { namespace, name: obj.name_any() }
}

fn converted<K: Resource>(collection: Collection, obj: &K, trim: fn(&K) -> Result<Option<Object>, FieldError>, listed: bool) -> Update {
    match trim(obj) {
        Ok(Some(object)) => Update::Upsert { object, listed },
        // Not something DNS uses (an FQDN slice, a slice without a service): as if deleted.
        Ok(None) => Update::Delete(collection, key_of(collection, obj)),
        Err(error) => Update::Invalid { collection, key: key_of(collection, obj), error, listed },
    }
}

fn object_key(object: &Object) -> (Collection, ObjectKey) {
    match object {
        Object::Service(s) => (Collection::Services, s.key.clone()),
        Object::Slice(s) => (Collection::EndpointSlices, s.key.clone()),
        Object::Namespace(k) => (Collection::Namespaces, k.clone()),
        Object::Pod(p) => (Collection::Pods, p.key.clone()),
    }
}

/// Owns the trimmed cluster state and is the only writer to the engine.
struct Applier {
    live: LiveState,
    /// Collections being (re)listed, with the keys listed so far.
    listing: HashMap<Collection, HashSet<ObjectKey>>,
    /// Collections not yet listed once; the first full view is loaded when this empties.
    never_listed: HashSet<Collection>,
    engine: Arc<dyn Engine>,
    metrics: Arc<Metrics>,
    /// Set once the engine holds a view (shared with /ready and the DNS handler).
    ready: Arc<AtomicBool>,
    /// Whether the engine holds the API's view (a warm start from the snapshot file is not).
    synced: bool,
    synced_tx: tokio::sync::watch::Sender<bool>,
    serial: u32,
    snapshot_file: Option<PathBuf>,
    persist_at: Option<tokio::time::Instant>,
}

impl Applier {
    async fn run(mut self, mut rx: tokio::sync::mpsc::Receiver<Update>) {
        let mut started = Instant::now();
        loop {
            let persist = async {
                match self.persist_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let first = tokio::select! {
                u = rx.recv() => match u {
                    Some(u) => u,
                    None => return,
                },
                _ = persist => {
                    self.persist();
                    continue;
                }
            };
            // Take what else is queued, then apply it all at once.
            self.take(first);
            for _ in 1..MAX_BATCH {
                match rx.try_recv() {
                    Ok(u) => self.take(u),
                    Err(_) => break,
                }
            }
            if !self.never_listed.is_empty() {
                continue;
            }
            if !self.synced {
                self.first_load(started);
                started = Instant::now();
            } else if self.listing.is_empty() && self.live.has_changes() {
                // During a relist, changes wait for its end: a half-listed collection is not a state
                // the cluster was ever in.
                self.apply_changes();
            }
        }
    }

    fn take(&mut self, update: Update) {
        match update {
            Update::ListStarted(c) => {
                if !self.never_listed.contains(&c) {
                    tracing::info!(collection = c.as_str(), "relisting");
                    self.metrics.watch_restarts.inc();
                }
                self.listing.insert(c, HashSet::new());
            }
            Update::Upsert { object, listed } => {
                if listed {
                    let (c, key) = object_key(&object);
                    if let Some(seen) = self.listing.get_mut(&c) {
                        seen.insert(key);
                    }
                }
                self.live.upsert(object);
            }
            Update::Invalid { collection, key, error, listed } => {
                self.metrics.apply_errors.inc();
                tracing::warn!(collection = collection.as_str(), object = %key, %error, "object ignored; its last good version (if any) is kept");
                if listed && let Some(seen) = self.listing.get_mut(&collection) {
                    seen.insert(key);
                }
            }
            Update::Delete(c, key) => self.live.remove(c, &key),
            Update::ListDone(c) => {
                let seen = self.listing.remove(&c).unwrap_or_default();
                let gone: Vec<ObjectKey> = self.live.keys(c).into_iter().filter(|k| !seen.contains(k)).collect();
                for key in &gone {
                    self.live.remove(c, key);
                }
                if self.never_listed.remove(&c) {
                    tracing::info!(collection = c.as_str(), objects = seen.len(), "listed");
                } else {
                    // The pages of the list are garbage now; give the memory back.
                    crate::release_freed_memory();
                    tracing::info!(collection = c.as_str(), objects = seen.len(), removed = gone.len(), "relisted");
                }
            }
            Update::Failed(c, error) => {
                self.metrics.watch_restarts.inc();
                tracing::warn!(collection = c.as_str(), %error, "watch failed; retrying with backoff, answers keep coming from the last state");
            }
        }
    }

    fn next_serial(&mut self) -> u32 {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0);
        self.serial = now.max(self.serial.wrapping_add(1));
        self.serial
    }

    /// The engine gets the API's view for the first time: emptied, then filled by deltas
    /// (nothing is held twice; while it fills, cluster names still get SERVFAIL or the
    /// snapshot file's answers).
    fn first_load(&mut self, started: Instant) {
        let serial = self.next_serial();
        if let Err(e) = self.engine.load(v1::Snapshot { serial, ..Default::default() }) {
            self.metrics.apply_errors.inc();
            tracing::error!(error = %format!("{e:#}"), "the engine rejected an empty view");
            return;
        }
        self.live.mark_all_changed();
        let failed = self.apply_pending(serial);
        let counts = self.live.counts();
        self.metrics.loaded(serial, counts);
        self.synced = true;
        self.ready.store(true, Ordering::Relaxed);
        self.synced_tx.send_replace(true);
        crate::release_freed_memory();
        let heap_mb = crate::heap_in_use().map(|b| format!("{:.1}", b as f64 / 1e6)).unwrap_or_default();
        tracing::info!(serial, %counts, failed, %heap_mb, took_ms = %format!("{:.1}", started.elapsed().as_secs_f64() * 1e3), "synced with the API server");
        self.schedule_persist();
    }

    fn apply_changes(&mut self) {
        let started = Instant::now();
        let serial = self.next_serial();
        let failed = self.apply_pending(serial);
        self.metrics.loaded(serial, self.live.counts());
        tracing::debug!(serial, failed, took_us = started.elapsed().as_micros() as u64, "applied changes");
        self.schedule_persist();
    }

    /// Applies the pending changes part by part; how many parts the engine rejected.
    fn apply_pending(&mut self, serial: u32) -> usize {
        let mut failed = 0;
        while let Some(delta) = self.live.next_delta(serial, MAX_SERVICES_PER_DELTA) {
            if let Err(e) = self.engine.apply(delta) {
                self.metrics.apply_errors.inc();
                tracing::error!(error = %format!("{e:#}"), "the engine rejected a change; the rest still applies");
                failed += 1;
            }
        }
        failed
    }

    fn schedule_persist(&mut self) {
        if self.snapshot_file.is_some() && self.persist_at.is_none() {
            self.persist_at = Some(tokio::time::Instant::now() + PERSIST_DELAY);
        }
    }

    fn persist(&mut self) {
        self.persist_at = None;
        let Some(path) = &self.snapshot_file else { return };
        if !self.listing.is_empty() {
            // Mid-relist the state is a mix of old and new; write it once the relist is done.
            self.schedule_persist();
            return;
        }
        let snapshot = self.live.snapshot(self.serial);
        match write_snapshot_file(path, &snapshot) {
            Ok(bytes) => tracing::debug!(path = %path.display(), bytes, "snapshot file written"),
            Err(e) => tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "cannot write the snapshot file"),
        }
        drop(snapshot);
        crate::release_freed_memory();
    }
}

/// First bytes of a snapshot file, so a stray file is not mistaken for one.
const SNAPSHOT_MAGIC: &[u8] = b"kdns-snapshot-v1\n";

/// Writes `snapshot` to `path` atomically (a temporary file renamed over it). Returns its size.
pub fn write_snapshot_file(path: &std::path::Path, snapshot: &v1::Snapshot) -> anyhow::Result<usize> {
    use prost::Message as _;
    let mut bytes = Vec::with_capacity(SNAPSHOT_MAGIC.len() + snapshot.encoded_len());
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    snapshot.encode(&mut bytes)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    Ok(bytes.len())
}

/// Reads a snapshot written by [`write_snapshot_file`]; `Ok(None)` if there is no such file.
pub fn read_snapshot_file(path: &std::path::Path) -> anyhow::Result<Option<v1::Snapshot>> {
    use prost::Message as _;
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let body = bytes.strip_prefix(SNAPSHOT_MAGIC).with_context(|| format!("{} is not a kdns snapshot file", path.display()))?;
    let snapshot = v1::Snapshot::decode(body).with_context(|| format!("{} is damaged", path.display()))?;
    Ok(Some(snapshot))
}
