//! The `kdns` command line (the contract in shared/DESIGN.md): `serve`, `query`, `export-zone`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use kdns_proto::v1;

use crate::cluster;
use crate::engine::wasm::EMBEDDED_MODULE;
use crate::engine::{Engine, NativeEngine, WasmEngine, WasmLimits};
use crate::metrics::Metrics;
use crate::server::{self, Cidr, DnsConfig, Handler};
use crate::source::kube::{self as kube_source, KubeOptions};
use crate::source::watch::{self, ManifestSource};

#[derive(Parser, Debug)]
#[command(name = "kdns", version, about = "Kubernetes cluster DNS: exact, fast, small; from the API or from manifest files")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines on stderr look: text for people, json (one object per line) for log
    /// pipelines. KDNS_LOG sets the level (info, debug, kdns_host=debug,...).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Answer cluster DNS over UDP and TCP.
    Serve(Box<ServeArgs>),
    /// Answer one question offline from manifest files and print it like dig
    /// (NAME [TYPE], -x ADDR, +short, +noall +answer, ...).
    #[command(after_help = "Examples:\n  kdns query --manifests deploy/examples db.data.svc.cluster.local SRV\n  kdns query --manifests deploy/examples catalog.shop.svc.cluster.local +short\n  kdns query --manifests deploy/examples -x 10.244.1.7\n  kdns query --manifests deploy/examples cart.shop.svc.cluster.local AAAA +noall +answer")]
    Query(QueryArgs),
    /// Print the records as an RFC 1035 zone file.
    ExportZone(ExportArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PodsMode {
    Disabled,
    Insecure,
    Verified,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    Native,
    Wasm,
}

/// Settings of the DNS engine, shared by every command. Flags override `--config`.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// A CoreDNS Corefile (or just its `kubernetes` block): the kubernetes block's settings,
    /// `forward .`, `cache`, `health`'s lameduck, the prometheus/health/ready address and the
    /// server port are taken from it; other plugins are ignored with a log line each. Flags
    /// given override the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Zone to serve (repeatable); the first is the primary zone [default: cluster.local].
    #[arg(long = "zone", value_name = "ZONE")]
    pub zones: Vec<String>,
    /// TTL of the records, 0-3600 seconds [default: 5].
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u32>,
    /// Answers for <dashed-ip>.<namespace>.pod.<zone> names [default: disabled].
    #[arg(long, value_enum)]
    pub pods: Option<PodsMode>,
    /// Name endpoints without a hostname after their pod.
    #[arg(long)]
    pub endpoint_pod_names: bool,
    /// The Service whose name is the NS target and whose ClusterIPs are its glue
    /// [default: kube-system/kube-dns].
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub ns_service: Option<String>,
    /// A UDP answer too large for the client keeps as many whole records as fit; `fill` sets TC
    /// only when an answer or authority record was left out (RFC 2181 9), `coredns` also when
    /// an additional one was, as CoreDNS does.
    #[arg(long, value_name = "fill|coredns", value_parser = ["fill", "coredns"], default_value = "fill")]
    pub truncation: String,
    /// Answer NSID (RFC 5001) with this identity, so an operator can tell which replica
    /// answered (`dig +nsid`); without a value, $POD_NAME or else the host name.
    #[arg(long, value_name = "ID", num_args = 0..=1, default_missing_value = "")]
    pub nsid: Option<String>,
}

/// The engine config and the host settings that came with it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: v1::Config,
    /// Zones whose NXDOMAIN answers may go on to an upstream (`fallthrough`).
    pub fallthrough: Option<Vec<String>>,
    /// The Corefile's `kubeconfig PATH [CONTEXT]`.
    pub kubeconfig: Option<(PathBuf, Option<String>)>,
    /// What the rest of the Corefile sets for `serve` (forward, cache, lameduck, addresses).
    pub serve: crate::corefile::Serve,
    /// The Corefile's ignored plugins, one line each, and what was mapped (logged at start).
    pub notes: Vec<crate::corefile::Note>,
    pub mapped: Vec<String>,
}

impl EngineArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let corefile = match &self.config {
            Some(file) => {
                let text = std::fs::read_to_string(file).with_context(|| format!("--config {}", file.display()))?;
                crate::corefile::parse(&text, file)?
            }
            None => crate::corefile::Corefile::default(),
        };
        let crate::corefile::Corefile { kubernetes: block, serve, notes, mapped } = corefile;
        let ns_service = self.ns_service.clone().unwrap_or_else(|| "kube-system/kube-dns".into());
        let (namespace, name) = ns_service
            .split_once('/')
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
            .with_context(|| format!("--ns-service {ns_service:?}: expected NAMESPACE/NAME"))?;
        let ttl = self.ttl.or(block.ttl);
        if let Some(ttl) = ttl
            && ttl > kdns_core::config::MAX_TTL {
                bail!("--ttl {ttl}: must be between 0 and {}", kdns_core::config::MAX_TTL);
            }
        let pods = match (self.pods, block.pods.as_deref()) {
            (Some(p), _) => p,
            (None, Some("insecure")) => PodsMode::Insecure,
            (None, Some("verified")) => PodsMode::Verified,
            (None, _) => PodsMode::Disabled,
        };
        let config = v1::Config {
            zones: if self.zones.is_empty() { block.zones } else { self.zones.clone() },
            reverse_zones: block.reverse_zones,
            ttl,
            pod_mode: match pods {
                PodsMode::Disabled => v1::PodMode::Disabled,
                PodsMode::Insecure => v1::PodMode::Insecure,
                PodsMode::Verified => v1::PodMode::Verified,
            } as i32,
            endpoint_pod_names: self.endpoint_pod_names || block.endpoint_pod_names,
            no_endpoints: block.noendpoints,
            ignore_empty_service: block.ignore_empty_service,
            ns_service: Some(v1::ServiceKey { namespace: namespace.into(), name: name.into() }),
            namespaces: block.namespaces,
            truncation: match self.truncation.as_str() {
                "coredns" => v1::Truncation::Coredns,
                _ => v1::Truncation::Fill,
            } as i32,
            nsid: self.nsid.as_deref().map(nsid_identity),
        };
        // Reject bad zones here, with the flag's name, rather than deep in an engine.
        kdns_core::Resolver::new(config.clone()).map_err(|e| anyhow::anyhow!("--zone: {e}"))?;
        Ok(Settings { config, fallthrough: block.fallthrough, kubeconfig: block.kubeconfig, serve, notes, mapped })
    }

    pub fn config(&self) -> anyhow::Result<v1::Config> {
        Ok(self.settings()?.config)
    }
}

/// The `--nsid` identity: the value given, else the pod's name, else the host name.
fn nsid_identity(given: &str) -> String {
    if !given.is_empty() {
        return given.to_string();
    }
    std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "kdns".into())
}

fn include_pods(config: &v1::Config) -> bool {
    config.pod_mode == v1::PodMode::Verified as i32
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Manifest files or directories (.yaml, .yml, .json); watched for changes. Without it
    /// kdns watches the Kubernetes API.
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub manifests: Vec<PathBuf>,
    /// Kubeconfig for the API server [default: KUBECONFIG, then ~/.kube/config, then the
    /// in-cluster service account].
    #[arg(long, value_name = "FILE", conflicts_with = "manifests")]
    pub kubeconfig: Option<PathBuf>,
    /// How long to wait at start for the first full list from the API server before serving
    /// anyway (cluster names get SERVFAIL until it arrives), in seconds [default: the
    /// Corefile's `startup_timeout`, else 5].
    #[arg(long, value_name = "SECONDS")]
    pub sync_timeout: Option<f64>,
    /// Keep the cluster view in this file (rewritten after changes) and answer from it at start
    /// until the API server has been listed, so a restart while the API is down still answers.
    #[arg(long, value_name = "PATH", conflicts_with = "manifests")]
    pub snapshot_file: Option<PathBuf>,
    /// Take the cluster view from another kdns's snapshot stream (its --grpc-listen address)
    /// instead of the API server: a replica of a fan-out tier, holding no API watch.
    #[arg(long, value_name = "ADDR:PORT", conflicts_with_all = ["manifests", "kubeconfig", "snapshot_file"])]
    pub snapshot_from: Option<String>,
    /// Who may watch this kdns's snapshot stream (the whole cluster view, like a zone
    /// transfer): source addresses or CIDRs [default: loopback only].
    #[arg(long, num_args = 1.., value_name = "CIDR")]
    pub snapshot_allow: Vec<Cidr>,
    /// A file holding a token: with --grpc-listen, watchers of the snapshot stream must send
    /// it (`authorization: Bearer TOKEN`); with --snapshot-from, it is sent.
    #[arg(long, value_name = "FILE")]
    pub snapshot_token_file: Option<PathBuf>,
    /// Address for DNS over UDP and TCP (repeatable). `[::]:PORT` serves IPv4 and IPv6 on
    /// one socket per transport; given with `0.0.0.0:PORT` too, each takes its own family
    /// [default: the Corefile's server port (on its `bind` addresses), else 0.0.0.0:53].
    #[arg(long, value_name = "ADDR:PORT", action = clap::ArgAction::Append)]
    pub listen: Vec<SocketAddr>,
    /// On SIGTERM, keep answering this long with /ready saying 503 (CoreDNS health's
    /// lameduck), so the Service stops sending queries before kdns stops answering them. A
    /// second SIGTERM, or SIGINT, exits at once [default: the Corefile's `health { lameduck }`,
    /// else 5].
    #[arg(long, value_name = "SECONDS")]
    pub lameduck: Option<f64>,
    /// Which engine answers: the core linked in, or the same core as WebAssembly (wasmtime).
    #[arg(long, value_enum, default_value = "native")]
    pub engine: EngineKind,
    /// Another kdns ABI v1 wasm module instead of the embedded one (implies --engine wasm).
    #[arg(long, value_name = "FILE")]
    pub plugin: Option<PathBuf>,
    /// Run the wasm module without time limits (250 ms per query, 60 s per load): compiled
    /// without interruption checks it answers about a sixth faster, but a module that loops
    /// holds its thread, as the native engine would. For the embedded module, not for untrusted
    /// --plugin files.
    #[arg(long)]
    pub wasm_no_timeouts: bool,
    #[command(flatten)]
    pub engine_args: EngineArgs,
    /// Largest UDP response, whatever the client's EDNS buffer (512-65535).
    #[arg(long, value_name = "BYTES", default_value_t = 1232, value_parser = clap::value_parser!(u16).range(512..))]
    pub max_udp_size: u16,
    /// UDP sockets and tasks; 0 = one per core.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub udp_workers: usize,
    /// Close a TCP connection idle for this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub tcp_idle_timeout: u64,
    /// Most TCP connections open at once (lowered to what the open-file limit allows). A full
    /// server closes its longest-idle connection for a new one.
    #[arg(long, value_name = "N", default_value_t = 8192)]
    pub tcp_max_connections: usize,
    /// Most TCP connections open at once from one client address; more are closed at once
    /// (0 = no limit but --tcp-max-connections).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub tcp_max_connections_per_client: usize,
    /// Address for gRPC: CoreDNS's DnsService (the stock `grpc` plugin forwards to it) and the
    /// kdns.v1 snapshot stream (the kdns plugin inside CoreDNS watches it).
    #[arg(long, value_name = "ADDR:PORT")]
    pub grpc_listen: Option<SocketAddr>,
    /// Address for /health, /ready and /metrics (Prometheus) [default: the Corefile's
    /// `prometheus` address, else its `health` or `ready` one, else off].
    #[arg(long, value_name = "ADDR:PORT")]
    pub http_listen: Option<SocketAddr>,
    /// What metric names start with: `kdns_dns_requests_total`..., or with `coredns`
    /// CoreDNS's exact names, so its dashboards and alerts work unchanged.
    #[arg(long, value_name = "PREFIX", default_value = "kdns", value_parser = metrics_prefix)]
    pub metrics_prefix: String,
    /// Clients (address or CIDR) allowed to transfer the zones over TCP (AXFR; IXFR gets a full
    /// transfer). Everyone else is refused.
    #[arg(long, num_args = 1.., value_name = "CIDR")]
    pub transfer_to: Vec<Cidr>,
    /// Resolvers (IP, IP:PORT, or a resolv.conf path) for names outside the served zones,
    /// ExternalName targets outside them, and `fallthrough` zones [default: the Corefile's
    /// `forward .`]. Without either those names are REFUSED and an ExternalName answer is the
    /// CNAME alone.
    #[arg(long, num_args = 1.., value_name = "ADDR")]
    pub upstream: Vec<String>,
    /// Most queries waiting on upstreams at once; more are answered REFUSED at once (CoreDNS
    /// forward's max_concurrent), so a dead upstream cannot exhaust memory [default: the
    /// Corefile's `max_concurrent`, else 1000].
    #[arg(long, value_name = "N", value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..), |n| n as usize))]
    pub upstream_max_concurrent: Option<usize>,
    /// Longest time an upstream answer is cached (CoreDNS `cache TTL`; negative answers by
    /// their SOA, every answer at least 5 s); 0 turns the cache off [default: the Corefile's
    /// `cache TTL`, else 30].
    #[arg(long, value_name = "SECONDS")]
    pub upstream_cache_ttl: Option<u32>,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// Manifest files or directories; the question may follow them: PATH... NAME [TYPE].
    #[arg(long, num_args = 1.., value_name = "PATH", required = true)]
    pub manifests: Vec<PathBuf>,
    /// The name, its type [default: A, or PTR with -x] and dig's display options: +short (the
    /// answers' data only), +noall, +[no]answer, +[no]question, +[no]authority,
    /// +[no]additional, +[no]comments, +[no]cmd, +[no]stats, +[no]recurse (+tcp is accepted).
    #[arg(value_name = "NAME [TYPE] [+OPTION]")]
    pub rest: Vec<String>,
    /// Reverse lookup, as dig's -x: the PTR name of this IPv4 or IPv6 address.
    #[arg(short = 'x', value_name = "ADDR")]
    pub reverse: Option<std::net::IpAddr>,
    /// The type, as dig's -t.
    #[arg(short = 't', value_name = "TYPE")]
    pub rtype: Option<String>,
    #[command(flatten)]
    pub engine_args: EngineArgs,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(long, num_args = 1.., value_name = "PATH", required = true)]
    pub manifests: Vec<PathBuf>,
    /// Which served zone to print: the primary zone by default, or e.g. in-addr.arpa.
    #[arg(long, value_name = "ZONE")]
    pub origin: Option<String>,
    #[command(flatten)]
    pub engine_args: EngineArgs,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(serve(*args))
        }
        Command::Query(args) => query(args),
        Command::ExportZone(args) => export_zone(args),
    }
}

fn read_manifests(paths: &[PathBuf], config: &v1::Config) -> anyhow::Result<(ManifestSource, v1::Snapshot)> {
    let mut source = ManifestSource::new(paths.to_vec(), true, include_pods(config));
    let snapshot = source.read()?;
    Ok((source, snapshot))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.engine_args.settings()?;
    let ServeFlags { listen, sync_timeout, lameduck, http_listen, upstream, max_concurrent, cache_ttl } = serve_flags(&args, &settings);
    let upstreams = match (&settings.serve.forward_at, args.upstream.is_empty()) {
        (Some(at), true) => crate::upstream::resolve_args(&upstream).with_context(|| format!("{at}: forward"))?,
        _ => crate::upstream::resolve_args(&upstream)?,
    };
    let config = settings.config.clone();
    let zone_labels = server::handler::zone_labels(&config);
    if !(sync_timeout.is_finite() && sync_timeout >= 0.0) {
        bail!("--sync-timeout {sync_timeout}: expected a number of seconds");
    }
    if !(lameduck.is_finite() && (0.0..=3600.0).contains(&lameduck)) {
        bail!("--lameduck {lameduck}: expected 0 to 3600 seconds");
    }
    let started = Instant::now();
    let mut plugin_engine = None;
    let limits = WasmLimits { timeouts: !args.wasm_no_timeouts, ..WasmLimits::default() };
    if args.wasm_no_timeouts && args.engine == EngineKind::Native && args.plugin.is_none() {
        bail!("--wasm-no-timeouts applies to the wasm engine; add --engine wasm");
    }
    let engine: Arc<dyn Engine> = match (args.engine, &args.plugin) {
        (EngineKind::Native, None) => Arc::new(NativeEngine::new(config.clone())?),
        (_, Some(file)) => {
            let module = std::fs::read(file).with_context(|| format!("--plugin {}", file.display()))?;
            let wasm = Arc::new(WasmEngine::new(&module, config.clone(), limits).with_context(|| format!("--plugin {}", file.display()))?);
            plugin_engine = Some((file.clone(), wasm.clone()));
            wasm
        }
        (EngineKind::Wasm, None) => Arc::new(WasmEngine::new(EMBEDDED_MODULE, config.clone(), limits)?),
    };
    // With gRPC on, every view the engine takes is also streamed to remote engines.
    let feed = args.grpc_listen.map(|_| crate::engine::feed::Feed::new(&config));
    let engine: Arc<dyn Engine> = match &feed {
        Some(feed) => Arc::new(crate::engine::feed::Fed { inner: engine, feed: feed.clone() }),
        None => engine,
    };
    let metrics = Arc::new(Metrics::with_prefix(&args.metrics_prefix));
    count_panics(&metrics);
    // Whether the engine holds a cluster view; until then cluster names get SERVFAIL.
    let ready = Arc::new(AtomicBool::new(false));
    // Set on SIGTERM: /ready says 503 while queries are still answered.
    let draining = Arc::new(AtomicBool::new(false));
    let snapshot_token = match &args.snapshot_token_file {
        Some(file) => {
            let token = std::fs::read_to_string(file).with_context(|| format!("--snapshot-token-file {}", file.display()))?.trim().to_string();
            if token.is_empty() {
                bail!("--snapshot-token-file {}: the file is empty", file.display());
            }
            Some(token)
        }
        None => None,
    };
    let source = if let Some(from) = &args.snapshot_from {
        let opts = crate::source::stream::StreamOptions { addr: from.clone(), token: snapshot_token.clone(), config: config.clone() };
        let mut synced = crate::source::stream::start(opts, engine.clone(), metrics.clone(), ready.clone());
        let timeout = Duration::from_secs_f64(sync_timeout);
        if tokio::time::timeout(timeout, synced.wait_for(|s| *s)).await.is_err() {
            tracing::warn!(timeout_s = sync_timeout, from = %from, "no view from the snapshot stream yet; serving anyway, cluster names get SERVFAIL until it arrives");
        }
        Source::Stream
    } else if args.manifests.is_empty() {
        let opts = KubeOptions {
            kubeconfig: args.kubeconfig.clone().map(|p| (p, None)).or(settings.kubeconfig.clone()),
            pods: include_pods(&config),
            snapshot_file: args.snapshot_file.clone(),
        };
        if let Some(path) = &opts.snapshot_file {
            warm_start(path, engine.as_ref(), &metrics, &ready);
        }
        let client = kube_source::client(&opts).await?;
        let mut synced = kube_source::start(client, opts, engine.clone(), metrics.clone(), ready.clone());
        let timeout = Duration::from_secs_f64(sync_timeout);
        if tokio::time::timeout(timeout, synced.wait_for(|s| *s)).await.is_err() {
            let serving = if ready.load(Ordering::Relaxed) { "answering from the snapshot file" } else { "cluster names get SERVFAIL" };
            tracing::warn!(timeout_s = sync_timeout, "no full list from the API server yet; serving anyway, {serving} until it arrives");
        }
        Source::Kube
    } else {
        let (source, snapshot) = read_manifests(&args.manifests, &config)?;
        let digest = watch::Digest::of(&snapshot);
        metrics.loaded(snapshot.serial, cluster::counts(&snapshot));
        engine.load(snapshot)?;
        ready.store(true, Ordering::Relaxed);
        Source::Manifests(source, digest)
    };
    let load_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3);
    let dns = DnsConfig {
        listen: listen.clone(),
        max_udp: args.max_udp_size,
        udp_workers: args.udp_workers,
        tcp_idle_timeout: Duration::from_secs(args.tcp_idle_timeout.max(1)),
        tcp_max_connections: args.tcp_max_connections,
        tcp_max_connections_per_client: args.tcp_max_connections_per_client,
    };
    crate::release_freed_memory();
    let limits = crate::upstream::Limits { max_concurrent, cache_ttl, ..Default::default() };
    let server_label = format!("dns://{}", listen[0]);
    let upstreams = (!upstreams.is_empty()).then(|| Arc::new(crate::upstream::Upstreams::new(upstreams, limits, metrics.forward.clone(), server_label.clone())));
    for addr in &listen {
        let enabled = |zone: &str, name| metrics.plugin_enabled.get_or_create(&crate::metrics::PluginLabels { server: format!("dns://{addr}"), zone: zone.into(), view: "", name }).set(1);
        for zone in &zone_labels {
            enabled(zone, "kubernetes");
        }
        if upstreams.is_some() {
            enabled(".", "forward");
            if cache_ttl > 0 {
                enabled(".", "cache");
            }
        }
    }
    let handler = Arc::new(Handler {
        engine: engine.clone(),
        metrics: http_listen.map(|_| metrics.clone()),
        server: server_label,
        zones: zone_labels,
        transfer_to: args.transfer_to.clone(),
        upstreams: upstreams.clone(),
        fallthrough: settings.fallthrough.clone().map(|zones| zones.iter().map(|z| format!("{}.", z.trim_end_matches('.'))).collect()),
        ready: ready.clone(),
    });
    let handler_for = |addr: SocketAddr| Arc::new(Handler { server: format!("dns://{addr}"), ..(*handler).clone() });
    let bound = server::start(handler_for, &dns).await?;
    if let Some(upstreams) = upstreams {
        // Sent once the sockets are up, so that a looping upstream's copy reaches kdns.
        tokio::spawn(async move { upstreams.probe_for_loop().await });
    }
    let grpc = match args.grpc_listen {
        Some(addr) => {
            let loopback = ["127.0.0.0/8".parse().expect("a CIDR"), "::1".parse().expect("a CIDR")];
            let allow = if args.snapshot_allow.is_empty() { loopback.to_vec() } else { args.snapshot_allow.clone() };
            let access = server::grpc::StreamAccess { allow, token: snapshot_token.clone() };
            server::grpc::start(addr, handler, feed, access).await?.to_string()
        }
        None => "off".into(),
    };
    let http = match http_listen {
        Some(addr) => {
            let ops = crate::http::Ops { metrics: metrics.clone(), engine: engine.clone(), ready: ready.clone(), draining: draining.clone() };
            Some(crate::http::start(addr, ops).await?)
        }
        None => None,
    };
    let http = http.map(|a| a.to_string()).unwrap_or_else(|| "off".into());
    let counts = metrics.counts();
    let also: Vec<String> = bound[1..].iter().map(|b| b.udp.to_string()).collect();
    let also = if also.is_empty() { String::new() } else { format!(" also={}", also.join(",")) };
    let (udp, tcp) = (bound[0].udp, bound[0].tcp);
    tracing::info!(%udp, %tcp, %grpc, %http, engine = engine.kind(), %load_ms, %counts, "kdns serving{also}");
    if let Some((file, wasm)) = plugin_engine {
        tokio::spawn(watch_plugin(file, wasm));
    }
    let reload = Reload { args: args.engine_args.clone(), running: std::sync::Mutex::new(settings), engine: engine.clone() };
    let mut signals = Signals::new()?;
    let stop = match source {
        Source::Manifests(source, digest) => {
            let watcher = tokio::spawn(watch::watch(source, engine, digest, metrics));
            tokio::select! {
                r = watcher => match r {
                    Ok(Err(e)) => return Err(e.context("cannot watch the manifest files")),
                    _ => bail!("manifest watcher stopped"),
                },
                stop = signals.until_stop(&reload) => stop,
            }
        }
        Source::Kube | Source::Stream => signals.until_stop(&reload).await,
    };
    if stop == Stop::Drain && lameduck > 0.0 {
        draining.store(true, Ordering::Relaxed);
        tracing::info!(lameduck_s = lameduck, "SIGTERM: lameduck, still answering while /ready says 503; exiting after it (again SIGTERM or SIGINT to exit now)");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(lameduck)) => {}
            _ = signals.until_stop(&reload) => tracing::info!("second signal: not waiting for the lameduck period"),
        }
    }
    tracing::info!("shutting down");
    Ok(())
}

/// A Prometheus metric name prefix: letters, digits and underscores, not starting with a digit.
fn metrics_prefix(s: &str) -> Result<String, String> {
    let valid = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid { Ok(s.to_string()) } else { Err(format!("{s:?} is not a metric name prefix (letters, digits, _)")) }
}

/// Counts panics in the metrics (the default hook still prints them).
fn count_panics(metrics: &Metrics) {
    let (panics, previous) = (metrics.panics.clone(), std::panic::take_hook());
    std::panic::set_hook(Box::new(move |info| {
        panics.inc();
        previous(info);
    }));
}

/// The `serve` flags that a Corefile can set: each flag given wins, else the file's value, else
/// the flag's default.
struct ServeFlags {
    listen: Vec<SocketAddr>,
    sync_timeout: f64,
    lameduck: f64,
    http_listen: Option<SocketAddr>,
    upstream: Vec<String>,
    max_concurrent: usize,
    cache_ttl: u32,
}

/// [`ServeFlags`] from the command line and the `--config` file; logs, once, the file's ignored
/// plugins, what was taken from it, and which flags overrode it.
fn serve_flags(args: &ServeArgs, settings: &Settings) -> ServeFlags {
    let file = &settings.serve;
    let config = args.engine_args.config.as_ref().map(|f| f.display().to_string()).unwrap_or_default();
    for note in &settings.notes {
        if note.warn {
            tracing::warn!("{note}");
        } else {
            tracing::info!("{note}");
        }
    }
    let mut overridden = Vec::new();
    for (flag, given, in_file) in [
        ("--listen", !args.listen.is_empty(), !file.listen.is_empty()),
        ("--sync-timeout", args.sync_timeout.is_some(), file.sync_timeout.is_some()),
        ("--lameduck", args.lameduck.is_some(), file.lameduck.is_some()),
        ("--http-listen", args.http_listen.is_some(), file.http_listen.is_some()),
        ("--upstream", !args.upstream.is_empty(), !file.upstreams.is_empty()),
        ("--upstream-max-concurrent", args.upstream_max_concurrent.is_some(), file.max_concurrent.is_some()),
        ("--upstream-cache-ttl", args.upstream_cache_ttl.is_some(), file.cache_ttl.is_some()),
    ] {
        if given && in_file {
            overridden.push(flag);
        }
    }
    if !settings.mapped.is_empty() {
        let overridden = if overridden.is_empty() { String::new() } else { format!("; given on the command line instead: {}", overridden.join(", ")) };
        tracing::info!(%config, "from the Corefile: {}{overridden}", settings.mapped.join("; "));
    }
    let listen = if !args.listen.is_empty() {
        args.listen.clone()
    } else if !file.listen.is_empty() {
        file.listen.clone()
    } else {
        vec![SocketAddr::from(([0, 0, 0, 0], 53))]
    };
    ServeFlags {
        listen,
        sync_timeout: args.sync_timeout.or(file.sync_timeout).unwrap_or(5.0),
        lameduck: args.lameduck.or(file.lameduck).unwrap_or(5.0),
        http_listen: args.http_listen.or(file.http_listen),
        upstream: if args.upstream.is_empty() { file.upstreams.clone() } else { args.upstream.clone() },
        max_concurrent: args.upstream_max_concurrent.or(file.max_concurrent).unwrap_or(crate::upstream::DEFAULT_MAX_CONCURRENT),
        cache_ttl: args.upstream_cache_ttl.or(file.cache_ttl).unwrap_or(crate::upstream::DEFAULT_CACHE_TTL),
    }
}

/// How the process was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM: the orchestrator's stop, served through the lameduck period first.
    Drain,
    /// SIGINT (Ctrl-C): at once.
    Now,
}

struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
    #[cfg(unix)]
    usr1: tokio::signal::unix::Signal,
    #[cfg(unix)]
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    /// Taking SIGHUP, SIGUSR1 and SIGUSR2 here also keeps their default action (ending the
    /// process without a word) from taking cluster DNS down.
    fn new() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
                hup: signal(SignalKind::hangup()).context("SIGHUP handler")?,
                usr1: signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?,
                usr2: signal(SignalKind::user_defined2()).context("SIGUSR2 handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Serves SIGHUP (reload `--config`) and ignores SIGUSR1/2 until SIGTERM or SIGINT.
    async fn until_stop(&mut self, reload: &Reload) -> Stop {
        #[cfg(unix)]
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Stop::Now,
                _ = self.term.recv() => return Stop::Drain,
                _ = self.hup.recv() => reload.run(),
                _ = self.usr1.recv() => tracing::info!("SIGUSR1 ignored (SIGHUP reloads --config, SIGTERM stops)"),
                _ = self.usr2.recv() => tracing::info!("SIGUSR2 ignored (SIGHUP reloads --config, SIGTERM stops)"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (reload, tokio::signal::ctrl_c().await);
            Stop::Now
        }
    }
}

/// SIGHUP: `--config` read again and its settings applied to the engine, the cluster view kept.
/// What only a restart can change (zones, pod mode, fallthrough, kubeconfig) is refused with
/// the running settings kept, never half applied.
struct Reload {
    args: EngineArgs,
    running: std::sync::Mutex<Settings>,
    engine: Arc<dyn Engine>,
}

impl Reload {
    fn run(&self) {
        let Some(file) = &self.args.config else {
            tracing::info!("SIGHUP: no --config to reload");
            return;
        };
        let next = match self.args.settings() {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(config = %file.display(), error = %format!("{e:#}"), "SIGHUP: config not reloaded; the running settings stay");
                return;
            }
        };
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let (old, new) = (&running.config, &next.config);
        let mut fixed = Vec::new();
        if old.zones != new.zones || old.reverse_zones != new.reverse_zones {
            fixed.push("zones");
        }
        if old.pod_mode != new.pod_mode {
            fixed.push("pods");
        }
        if running.fallthrough != next.fallthrough {
            fixed.push("fallthrough");
        }
        if running.kubeconfig != next.kubeconfig {
            fixed.push("kubeconfig");
        }
        fixed.extend(running.serve.changed(&next.serve));
        if !fixed.is_empty() {
            tracing::error!(config = %file.display(), changed = %fixed.join(","), "SIGHUP: config not reloaded: these take a restart; the running settings stay");
            return;
        }
        if old == new {
            tracing::info!(config = %file.display(), "SIGHUP: config unchanged");
            return;
        }
        match self.engine.configure(new.clone()) {
            Ok(()) => {
                tracing::info!(config = %file.display(), ttl = new.ttl.unwrap_or(kdns_core::config::DEFAULT_TTL), "SIGHUP: config reloaded");
                *running = next;
            }
            Err(e) => tracing::error!(config = %file.display(), error = %format!("{e:#}"), "SIGHUP: the engine rejected the config; the running settings stay"),
        }
    }
}

enum Source {
    /// Another kdns's snapshot stream (`--snapshot-from`).
    Stream,
    Manifests(ManifestSource, watch::Digest),
    Kube,
}

/// Loads the `--snapshot-file` if there is one; a missing or damaged file means a cold start.
fn warm_start(path: &std::path::Path, engine: &dyn Engine, metrics: &Metrics, ready: &AtomicBool) {
    match kube_source::read_snapshot_file(path) {
        Ok(Some(snapshot)) => {
            let (serial, counts) = (snapshot.serial, cluster::counts(&snapshot));
            match engine.load(snapshot) {
                Ok(()) => {
                    metrics.loaded(serial, counts);
                    ready.store(true, Ordering::Relaxed);
                    tracing::info!(path = %path.display(), serial, %counts, "answering from the snapshot file until the API server is listed");
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "snapshot file rejected; starting cold"),
            }
        }
        Ok(None) => tracing::info!(path = %path.display(), "no snapshot file yet; it is written once the API server is listed"),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "snapshot file unusable; starting cold"),
    }
}

/// Swaps a changed `--plugin` file in; a module that does not load is reported and the old one
/// keeps serving.
async fn watch_plugin(file: PathBuf, engine: Arc<WasmEngine>) {
    let watched = vec![file.clone()];
    let result = watch::watch_paths(watched, move || {
        let (file, engine) = (file.clone(), engine.clone());
        async move {
            let started = Instant::now();
            let swapped = std::fs::read(&file).map_err(anyhow::Error::from).and_then(|bytes| engine.replace_module(&bytes));
            match swapped {
                Ok(()) => tracing::info!(plugin = %file.display(), took_ms = %format!("{:.1}", started.elapsed().as_secs_f64() * 1e3), "swapped in the changed wasm module"),
                Err(e) => tracing::error!(plugin = %file.display(), error = %format!("{e:#}"), "changed wasm module rejected; the previous one keeps serving"),
            }
        }
    })
    .await;
    if let Err(e) = result {
        tracing::error!(error = %format!("{e:#}"), "cannot watch the --plugin file; changes to it will not be picked up");
    }
}

/// `--manifests a.yaml dir/ NAME TYPE`: the values that are not existing paths (after the first)
/// are the question.
fn split_paths_and_question(values: &[PathBuf], rest: &[String]) -> anyhow::Result<(Vec<PathBuf>, Vec<String>)> {
    let mut paths = Vec::new();
    let mut question: Vec<String> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        if question.is_empty() && (i == 0 || v.exists()) {
            paths.push(v.clone());
        } else {
            question.push(v.to_string_lossy().into_owned());
        }
    }
    question.extend(rest.iter().cloned());
    Ok((paths, question))
}

fn query(args: QueryArgs) -> anyhow::Result<()> {
    let (paths, words) = split_paths_and_question(&args.manifests, &args.rest)?;
    // dig's `+option`s anywhere among the words; the rest is NAME [TYPE].
    let mut opts = crate::dig::Options::default();
    let mut question = Vec::new();
    for w in words {
        if w.starts_with('+') {
            opts.set(&w).map_err(|e| anyhow::anyhow!(e))?;
        } else if w.starts_with('@') {
            bail!("{w}: kdns query answers offline from --manifests; to ask a server, use dig {w}");
        } else {
            question.push(w);
        }
    }
    if let Some(ip) = args.reverse {
        let rtype = match &question[..] {
            [] => "PTR".to_string(),
            [t] if t.to_ascii_uppercase().parse::<RecordType>().is_ok() => t.clone(),
            _ => bail!("-x {ip} asks for the PTR name of {ip}; give no NAME with it (got {question:?})"),
        };
        question = vec![crate::dig::reverse_name(ip), rtype];
    }
    if let Some(t) = &args.rtype {
        if question.len() > 1 {
            bail!("-t {t} and a TYPE after the name: give one");
        }
        question.push(t.clone());
    }
    if question.is_empty() || question.len() > 2 {
        bail!("expected NAME [TYPE] (or -x ADDR) after the manifest paths, got {question:?}");
    }
    let name = Name::from_ascii(&question[0]).with_context(|| format!("{:?} is not a domain name", question[0]))?;
    let name = if name.is_fqdn() { name } else { Name::from_ascii(format!("{}.", question[0]))? };
    let rtype: RecordType = match question.get(1) {
        Some(t) => t.to_ascii_uppercase().parse().map_err(|_| anyhow::anyhow!("{t:?} is not a record type"))?,
        None => RecordType::A,
    };
    let config = args.engine_args.config()?;
    let (_, snapshot) = read_manifests(&paths, &config)?;
    let mut resolver = kdns_core::Resolver::new(config)?;
    resolver.load(snapshot)?;
    let mut m = Message::new(0, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = opts.recurse;
    m.add_query(Query::query(name.clone(), rtype));
    let bytes = resolver.resolve(&m.to_vec()?, kdns_core::STREAM).context("the engine gave no answer")?;
    let response = Message::from_vec(&bytes)?;
    print!("{}", crate::dig::render(&response, &format!("{name} {rtype}"), &opts));
    Ok(())
}

fn export_zone(args: ExportArgs) -> anyhow::Result<()> {
    let config = args.engine_args.config()?;
    let (_, snapshot) = read_manifests(&args.manifests, &config)?;
    let mut resolver = kdns_core::Resolver::new(config.clone())?;
    resolver.load(snapshot)?;
    let origin = args.origin.clone().or_else(|| config.zones.first().cloned()).unwrap_or_else(|| kdns_core::config::DEFAULT_ZONE.into());
    let mut zone = Name::from_ascii(&origin).with_context(|| format!("--origin {origin:?} is not a domain name"))?;
    zone.set_fqdn(true);
    let records = resolver.lookup().zone_records(&zone).with_context(|| format!("{zone} is not a zone kdns serves (see --zone)"))?;
    if config.pod_mode == v1::PodMode::Insecure as i32 {
        eprintln!("kdns: note: pods insecure answers any dashed IP; those names cannot be listed");
    }
    let mut out = String::new();
    out.push_str(&format!("; {zone} from kdns export-zone, serial {}, {} records\n", resolver.serial(), records.len()));
    out.push_str(&format!("$ORIGIN {zone}\n"));
    for r in &records {
        out.push_str(&crate::dig::record_line(r));
        out.push('\n');
    }
    use std::io::Write;
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(())
}
