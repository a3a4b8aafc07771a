//! Manifest files as a live source: read at start, re-read on every change, applied without a
//! restart. A change that does not parse or validate is reported and the last good snapshot
//! keeps serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kdns_proto::v1;
use notify::{RecursiveMode, Watcher};

use super::manifest::{self, ManifestError};
use crate::cluster::{self, BuildOptions};
use crate::engine::Engine;

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

/// What a reload changed, for the log line.
pub fn describe_change(old: &v1::Snapshot, new: &v1::Snapshot) -> String {
    let key = |s: &v1::Service| (s.namespace.clone(), s.name.clone());
    let before: BTreeMap<_, _> = old.services.iter().map(|s| (key(s), s)).collect();
    let after: BTreeMap<_, _> = new.services.iter().map(|s| (key(s), s)).collect();
    let added = after.keys().filter(|k| !before.contains_key(*k)).count();
    let removed = before.keys().filter(|k| !after.contains_key(*k)).count();
    let changed = after.iter().filter(|(k, s)| before.get(*k).is_some_and(|b| b != *s)).count();
    let pods = if old.pods != new.pods { ", pods changed" } else { "" };
    let namespaces = if old.namespaces != new.namespaces { ", namespaces changed" } else { "" };
    format!("services: {added} added, {removed} removed, {changed} changed{pods}{namespaces}")
}

/// Calls `on_change` (after a short quiet time) whenever one of `paths` changes: a file, or
/// anything under a directory. Runs until the process ends; an error means the watch could not
/// be set up.
pub async fn watch_paths<F, Fut>(paths: Vec<PathBuf>, mut on_change: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !matches!(event.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(event.paths);
            }
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

/// Watches the source's files and loads each good new snapshot into `engine`.
pub async fn watch(source: ManifestSource, engine: Arc<dyn Engine>, current: v1::Snapshot) -> anyhow::Result<()> {
    let paths = source.paths().to_vec();
    let state = Arc::new(tokio::sync::Mutex::new((source, current)));
    watch_paths(paths, move || {
        let (state, engine) = (state.clone(), engine.clone());
        async move {
            let mut guard = state.lock().await;
            let (source, current) = &mut *guard;
            reload(source, engine.as_ref(), current);
        }
    })
    .await
}

/// Re-reads the manifests and, if they changed and are good, loads them.
fn reload(source: &mut ManifestSource, engine: &dyn Engine, current: &mut v1::Snapshot) {
    let started = Instant::now();
    let next = match source.read() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "manifest change rejected; still serving the last good snapshot");
            return;
        }
    };
    if next.services == current.services && next.namespaces == current.namespaces && next.pods == current.pods {
        return; // a touch, or an edit that changes nothing DNS sees
    }
    let change = describe_change(current, &next);
    match engine.load(next.clone()) {
        Ok(()) => {
            tracing::info!(serial = next.serial, took_ms = %format!("{:.1}", started.elapsed().as_secs_f64() * 1e3), counts = %cluster::counts(&next), "reloaded manifests: {change}");
            *current = next;
        }
        Err(e) => tracing::error!(error = %format!("{e:#}"), "snapshot rejected by the engine; still serving the last good one"),
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
