//! Prometheus metrics. Names and labels are CoreDNS's under a prefix of our own by default
//! (`coredns_dns_requests_total` is `kdns_dns_requests_total`); with `--metrics-prefix coredns`
//! they are CoreDNS's exactly, so its dashboards and alerts (the coredns-mixin that
//! kube-prometheus ships) work unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::engine::Engine;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub server: String,
    pub zone: String,
    /// CoreDNS's `view` (the view plugin's name); kdns has no views, so always empty.
    pub view: &'static str,
    pub proto: &'static str,
    pub family: &'static str,
    #[prometheus(flatten)]
    pub kind: TypeLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub server: String,
    pub zone: String,
    pub view: &'static str,
    pub rcode: String,
    /// What wrote the response, as CoreDNS names its plugins: `kubernetes`, `forward`, or
    /// empty when no zone matched.
    pub plugin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub server: String,
    pub zone: String,
    pub view: &'static str,
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SizeLabels {
    pub server: String,
    pub zone: String,
    pub view: &'static str,
    pub proto: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub revision: &'static str,
    /// CoreDNS reports its Go version; kdns is not Go.
    pub goversion: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub server: String,
    pub zone: String,
    pub view: &'static str,
    pub name: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabels {
    pub engine: &'static str,
}

/// Everything kdns counts.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub responses: Family<ResponseLabels, Counter>,
    pub duration: Family<DurationLabels, Histogram>,
    pub request_size: Family<SizeLabels, Histogram>,
    pub response_size: Family<SizeLabels, Histogram>,
    pub snapshot_generation: Gauge,
    snapshot_loaded_at: AtomicU64,
    pub snapshot_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub services: Gauge,
    pub endpoints: Gauge,
    pub pods: Gauge,
    pub namespaces: Gauge,
    pub reload_errors: Counter,
    pub apply_errors: Counter,
    pub watch_restarts: Counter,
    pub wasm_traps: Family<EngineLabels, Gauge>,
    pub wasm_rebuilds: Family<EngineLabels, Gauge>,
    /// Handed to the upstreams, which count into them.
    pub forward: crate::upstream::Counters,
    pub build_info: Family<BuildLabels, Gauge>,
    /// Panics caught by the hook `serve` installs (a task that panics is restarted or fails
    /// its query; this says it happened).
    pub panics: Counter,
    /// 1 for each (server, zone, plugin) that serves: what CoreDNS's dashboard counts.
    pub plugin_enabled: Family<PluginLabels, Gauge>,
}

/// CoreDNS's time buckets (plugin.TimeBuckets): 0.25 ms doubling to 8.192 s, so that the usual
/// "slower than 4 s" alerts can fire.
pub fn time_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

fn size_buckets() -> Histogram {
    // CoreDNS's size buckets: 0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16000, 32000, 48000, 64000.
    Histogram::new([0.0, 100.0, 200.0, 300.0, 400.0, 511.0, 1023.0, 2047.0, 4095.0, 8291.0, 16e3, 32e3, 48e3, 64e3])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics under kdns's own prefix.
    pub fn new() -> Metrics {
        Self::with_prefix("kdns")
    }

    /// The metrics with names starting `PREFIX_` (`coredns` for CoreDNS's exact names).
    pub fn with_prefix(prefix: &str) -> Metrics {
        let mut registry = Registry::with_prefix(prefix);
        let requests = Family::<RequestLabels, Counter>::default();
        let responses = Family::<ResponseLabels, Counter>::default();
        let duration = Family::<DurationLabels, Histogram>::new_with_constructor(time_buckets);
        let request_size = Family::<SizeLabels, Histogram>::new_with_constructor(size_buckets);
        let response_size = Family::<SizeLabels, Histogram>::new_with_constructor(size_buckets);
        registry.register("dns_requests", "Counter of DNS requests made per zone, protocol, family and type.", requests.clone());
        registry.register("dns_responses", "Counter of response status codes.", responses.clone());
        registry.register("dns_request_duration_seconds", "Histogram of the time (in seconds) each request took.", duration.clone());
        registry.register("dns_request_size_bytes", "Size of the request in bytes.", request_size.clone());
        registry.register("dns_response_size_bytes", "Size of the returned response in bytes.", response_size.clone());
        let snapshot_generation = Gauge::default();
        let snapshot_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let (services, endpoints, pods) = (Gauge::default(), Gauge::default(), Gauge::default());
        let (reload_errors, apply_errors, watch_restarts) = (Counter::default(), Counter::default(), Counter::default());
        let (wasm_traps, wasm_rebuilds) = (Family::default(), Family::default());
        registry.register("snapshot_generation", "SOA serial of the cluster view being served.", snapshot_generation.clone());
        registry.register("snapshot_age_seconds", "Seconds since the cluster view being served was loaded.", snapshot_age.clone());
        registry.register("services", "Services in the cluster view.", services.clone());
        registry.register("endpoints", "Published endpoints in the cluster view.", endpoints.clone());
        registry.register("pods", "Pods in the cluster view.", pods.clone());
        let namespaces = Gauge::default();
        registry.register("namespaces", "Namespaces in the cluster view.", namespaces.clone());
        registry.register("reload_errors", "Manifest reloads rejected (the last good view kept serving).", reload_errors.clone());
        registry.register("apply_errors", "Snapshots or deltas an engine rejected.", apply_errors.clone());
        registry.register("watch_restarts", "Restarts of the cluster watch.", watch_restarts.clone());
        registry.register("wasm_traps", "Wasm calls that trapped or timed out (answered SERVFAIL).", wasm_traps.clone());
        registry.register("wasm_rebuilds", "Wasm instances rebuilt after a trap.", wasm_rebuilds.clone());
        let forward = crate::upstream::Counters::default();
        registry.register("forward_requests", "Queries sent to upstream resolvers (each try), per upstream.", forward.requests.clone());
        registry.register("forward_responses", "Answers from upstream resolvers, per upstream and rcode.", forward.responses.clone());
        registry.register("forward_request_duration_seconds", "Time each upstream answer took, per upstream and rcode.", forward.duration.clone());
        registry.register("forward_healthcheck_failures", "Failed tries of an upstream (kdns checks upstreams by the queries it sends them).", forward.failures.clone());
        registry.register("forward_healthcheck_broken", "Queries for which every upstream failed.", forward.broken.clone());
        registry.register("forward_max_concurrent_rejects", "Queries refused because the most queries allowed were already waiting on upstreams.", forward.rejects.clone());
        registry.register("forward_coalesced", "Queries that waited for the answer to the same question already sent upstream.", forward.coalesced.clone());
        registry.register("forward_loop_detected", "1 once a forwarding loop was detected (forwarding is then off).", forward.loop_detected.clone());
        registry.register("cache_hits", "Upstream answers served from the cache, per type (success, denial).", forward.cache_hits.clone());
        registry.register("cache_misses", "Upstream questions not in the cache.", forward.cache_misses.clone());
        registry.register("cache_requests", "Upstream questions looked up in the cache.", forward.cache_requests.clone());
        registry.register("cache_entries", "Upstream answers in the cache, per type (success, denial).", forward.cache_entries.clone());
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION"), revision: "", goversion: "" }).set(1);
        registry.register("build_info", "A metric with a constant '1' value labeled by version, revision, and goversion from which kdns was built.", build_info.clone());
        let panics = Counter::default();
        registry.register("panics", "Panics caught.", panics.clone());
        let plugin_enabled = Family::<PluginLabels, Gauge>::default();
        registry.register("plugin_enabled", "1 for each plugin (in CoreDNS's names) serving a zone of a server.", plugin_enabled.clone());
        Metrics {
            forward,
            build_info,
            panics,
            plugin_enabled,
            registry,
            requests,
            responses,
            duration,
            request_size,
            response_size,
            snapshot_generation,
            snapshot_loaded_at: AtomicU64::new(0),
            snapshot_age,
            services,
            endpoints,
            pods,
            namespaces,
            reload_errors,
            apply_errors,
            watch_restarts,
            wasm_traps,
            wasm_rebuilds,
        }
    }

    /// Records that a cluster view was loaded.
    /// The counts of the last view loaded or changed.
    pub fn counts(&self) -> crate::cluster::Counts {
        crate::cluster::Counts {
            services: self.services.get() as usize,
            endpoints: self.endpoints.get() as usize,
            pods: self.pods.get() as usize,
            namespaces: self.namespaces.get() as usize,
        }
    }

    pub fn loaded(&self, serial: u32, counts: crate::cluster::Counts) {
        self.snapshot_generation.set(i64::from(serial));
        self.services.set(counts.services as i64);
        self.endpoints.set(counts.endpoints as i64);
        self.pods.set(counts.pods as i64);
        self.namespaces.set(counts.namespaces as i64);
        self.snapshot_loaded_at.store(now_millis(), Ordering::Relaxed);
    }

    /// The text exposition, with the gauges that are computed at scrape time brought up to date.
    pub fn encode(&self, engine: &dyn Engine) -> String {
        let loaded = self.snapshot_loaded_at.load(Ordering::Relaxed);
        if loaded > 0 {
            self.snapshot_age.set(Duration::from_millis(now_millis().saturating_sub(loaded)).as_secs_f64());
        }
        if let Some((traps, rebuilds)) = engine.trap_counts() {
            let labels = EngineLabels { engine: engine.kind() };
            self.wasm_traps.get_or_create(&labels).set(traps as i64);
            self.wasm_rebuilds.get_or_create(&labels).set(rebuilds as i64);
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;
