//! Manifest files as a live source: read at start, re-read on every change, applied without a
//! restart. A change that does not parse or validate is reported and the last good snapshot
//! keeps serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::hash::Hasher;
use std::time::{Duration, Instant, SystemTime};

use kdns_proto::v1;
use notify::{RecursiveMode, Watcher};

use super::manifest::{self, ManifestError};
use crate::cluster::{self, BuildOptions};
use crate::engine::Engine;
use crate::metrics::Metrics;

/// Quiet time after a file event before re-reading, so an editor's burst of writes is one reload.
const DEBOUNCE: Duration = Duration::from_millis(40);

/// Reads a manifest set into snapshots with increasing SOA serials.
pub struct ManifestSource {
    paths: Vec<PathBuf>,
    opts: BuildOptions,
    last_serial: u32,
}

impl ManifestSource {
    pub fn new(paths: Vec<PathBuf>, derive_endpoints: bool, include_pods: bool) -> Self {
        ManifestSource { paths, opts: BuildOptions { derive_endpoints, include_pods, serial: 0 }, last_serial: 0 }
    }

    /// Reads every file now. The serial is the time in seconds, kept strictly increasing.
    pub fn read(&mut self) -> Result<v1::Snapshot, ManifestError> {
        let (state, _files) = manifest::load(&self.paths)?;
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0);
        self.last_serial = now.max(self.last_serial.wrapping_add(1));
        Ok(state.snapshot(BuildOptions { serial: self.last_serial, ..self.opts }))
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

/// A few bytes per service that tell whether, and where, two snapshots differ, so the watcher
/// need not keep a second copy of the cluster to describe a reload.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Digest {
    services: BTreeMap<(String, String), u64>,
    namespaces: u64,
    pods: u64,
}

fn hash_of(m: &impl prost::Message) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(&m.encode_to_vec());
    h.finish()
}

impl Digest {
    pub fn of(s: &v1::Snapshot) -> Digest {
        let services = s.services.iter().map(|svc| ((svc.namespace.clone(), svc.name.clone()), hash_of(svc))).collect();
        let namespaces = hash_of(&v1::Snapshot { namespaces: s.namespaces.clone(), ..Default::default() });
        let pods = hash_of(&v1::Snapshot { pods: s.pods.clone(), ..Default::default() });
        Digest { services, namespaces, pods }
    }

    /// What changed from `self` to `new`, for the log line; `None` when nothing DNS sees did.
    pub fn describe_change(&self, new: &Digest) -> Option<String> {
        if self == new {
            return None;
        }
        let (before, after) = (&self.services, &new.services);
        let added = after.keys().filter(|k| !before.contains_key(*k)).count();
        let removed = before.keys().filter(|k| !after.contains_key(*k)).count();
        let changed = after.iter().filter(|(k, h)| before.get(*k).is_some_and(|b| b != *h)).count();
        let pods = if self.pods != new.pods { ", pods changed" } else { "" };
        let namespaces = if self.namespaces != new.namespaces { ", namespaces changed" } else { "" };
        Some(format!("services: {added} added, {removed} removed, {changed} changed{pods}{namespaces}"))
    }
}

/// Calls `on_change` (after a short quiet time) whenever one of `paths` changes: a file, or
/// anything under a directory. Runs until the process ends; an error means the watch could not
/// be set up.
pub async fn watch_paths<F, Fut>(paths: Vec<PathBuf>, mut on_change: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Events carry absolute paths; compare like with like.
    let paths: Vec<PathBuf> = paths.into_iter().map(|p| std::path::absolute(&p).unwrap_or(p)).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(event.paths);
            }
    })?;
    for path in &paths {
        if path.is_dir() {
            watcher.watch(path, RecursiveMode::Recursive)?;
        } else {
            // Watch the directory: editors and deploy tools replace files by renaming over them.
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
    }
    let relevant = |changed: &Path| paths.iter().any(|p| if p.is_dir() { changed.starts_with(p) } else { same_file(changed, p) });
    while let Some(changed) = rx.recv().await {
        if !changed.iter().any(|p| relevant(p)) {
            continue;
        }
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        on_change().await;
    }
    drop(watcher);
    Ok(())
}

/// Watches the source's files and loads each good new snapshot into `engine`; `current` is the
/// digest of the snapshot the engine holds.
pub async fn watch(source: ManifestSource, engine: Arc<dyn Engine>, current: Digest, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let paths = source.paths().to_vec();
    let state = Arc::new(tokio::sync::Mutex::new((source, current)));
    watch_paths(paths, move || {
        let (state, engine, metrics) = (state.clone(), engine.clone(), metrics.clone());
        async move {
            let mut guard = state.lock().await;
            let (source, current) = &mut *guard;
            reload(source, engine.as_ref(), current, &metrics);
        }
    })
    .await
}

/// Re-reads the manifests and, if they changed and are good, loads them.
fn reload(source: &mut ManifestSource, engine: &dyn Engine, current: &mut Digest, metrics: &Metrics) {
    let started = Instant::now();
    let next = match source.read() {
        Ok(s) => s,
        Err(e) => {
            metrics.reload_errors.inc();
            tracing::error!(error = %e, "manifest change rejected; still serving the last good snapshot");
            return;
        }
    };
    let digest = Digest::of(&next);
    // None: a touch, or an edit that changes nothing DNS sees.
    let Some(change) = current.describe_change(&digest) else { return };
    let (serial, counts) = (next.serial, cluster::counts(&next));
    match engine.load(next) {
        Ok(()) => {
            tracing::info!(serial, took_ms = %format!("{:.1}", started.elapsed().as_secs_f64() * 1e3), %counts, "reloaded manifests: {change}");
            *current = digest;
            metrics.loaded(serial, counts);
            crate::release_freed_memory();
        }
        Err(e) => {
            metrics.apply_errors.inc();
            tracing::error!(error = %format!("{e:#}"), "snapshot rejected by the engine; still serving the last good one")
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).ok().or_else(|| {
        // A file just removed cannot be canonicalized; compare its directory and name.
        let dir = std::fs::canonicalize(p.parent()?).ok()?;
        Some(dir.join(p.file_name()?))
    });
    match (canon(a), canon(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}
