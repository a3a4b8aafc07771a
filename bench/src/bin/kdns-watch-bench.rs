//! Event-to-answer latency and memory of `kdns serve` watching a Kubernetes API server.
//!
//! Serves a generated cluster from the list/watch test API server (kdns-tests), starts the
//! release `kdns` against it, then: changes services and EndpointSlices one at a time and asks
//! over UDP until the answer shows the change (latency p50/p99), reads the resident memory
//! steady, and forces a relist (API server restarted with its history compacted, so resuming
//! gets 410 Gone) while tracking peak memory (VmHWM after resetting it).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use kdns_bench::{Kind, Shape, kind_of, namespace, service_name};
use kdns_tests::apiserver::ApiServer;
use kdns_tests::server::{Kdns, TempDir};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    #[arg(long, default_value_t = 100_000)]
    endpoints: usize,
    #[arg(long, default_value_t = 100)]
    namespaces: usize,
    /// Changes to time.
    #[arg(long, default_value_t = 400)]
    changes: usize,
    /// Extra `kdns serve` arguments (e.g. --engine wasm).
    #[arg(last = true)]
    kdns_args: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if std::env::var_os("KDNS_BIN").is_none() {
        let exe = std::env::current_exe()?;
        // SAFETY: set before any other thread exists.
        unsafe { std::env::set_var("KDNS_BIN", exe.with_file_name("kdns")) };
    }
    let shape = Shape { services: args.services, endpoints: args.endpoints, namespaces: args.namespaces };
    eprintln!("generating {} services / {} endpoints …", shape.services, shape.endpoints);
    let yaml: String = kdns_bench::manifests(&shape).into_iter().map(|(_, text)| text + "\n---\n").collect();
    let api = ApiServer::start(&yaml);
    drop(yaml);
    let dir = TempDir::new("watch-bench");
    let kubeconfig = dir.path("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let mut kdns_args = vec!["--kubeconfig".to_string(), kubeconfig.display().to_string(), "--sync-timeout".into(), "300".into()];
    kdns_args.extend(args.kdns_args.iter().cloned());
    eprintln!("starting kdns against the API server at {} …", api.addr);
    let started = Instant::now();
    let kdns = Kdns::start(&kdns_args);
    let sync_line = kdns.wait_for_log("synced with the API server", Duration::from_secs(1)).context("kdns did not sync")?;
    let start_s = started.elapsed().as_secs_f64();
    let pid = kdns.pid();
    std::thread::sleep(Duration::from_secs(2));
    let steady = rss_kib(pid, "VmRSS")?;
    // Resident memory is the process's own (anonymous) plus the binary's pages it touched.
    let (anon, file) = (rss_kib(pid, "RssAnon")?, rss_kib(pid, "RssFile")?);

    // Event-to-answer latency.
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut latencies = Vec::with_capacity(args.changes);
    let candidates: Vec<usize> = (0..shape.services).filter(|i| matches!(kind_of(*i), Kind::ClusterIp | Kind::Headless)).collect();
    for n in 0..args.changes {
        let i = candidates[(n * 7919) % candidates.len()];
        let (ns, name) = (namespace(&shape, i), service_name(i));
        let new_ip = format!("10.{}.{}.{}", 200 + (n >> 16) % 50, (n >> 8) & 0xff, n & 0xff);
        let object = match kind_of(i) {
            Kind::ClusterIp => json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": new_ip, "selector": {"app": name}, "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}),
            _ => json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{name}-abcde"), "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [new_ip], "hostname": "moved", "conditions": {"ready": true}}]}),
        };
        let qname = format!("{name}.{ns}.svc.cluster.local.");
        let t0 = Instant::now();
        api.apply(object);
        loop {
            if answer_has(&socket, kdns.udp, &qname, n as u16, |a| a == new_ip) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("change {n} ({qname} → {new_ip}) not visible after 10 s");
            }
        }
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1].as_secs_f64() * 1e3;
    let after_changes = rss_kib(pid, "VmRSS")?;

    // Relist: reset the peak, make resuming impossible, bring the API server back.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("reset VmHWM")?;
    let before_relist = rss_kib(pid, "VmRSS")?;
    api.stop();
    // A change every watcher has missed, then compaction: none of them can resume.
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "relist-marker"}}));
    api.compact();
    let relist_started = Instant::now();
    api.restart();
    let relisted = |k: &Kdns| ["services", "endpointslices", "namespaces"].iter().all(|c| k.logs().iter().any(|l| l.contains("relisted") && l.contains(&format!("collection=\"{c}\""))));
    while !relisted(&kdns) {
        if relist_started.elapsed() > Duration::from_secs(120) {
            bail!("no relist after 120 s:\n{}", kdns.logs().join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let relist_s = relist_started.elapsed().as_secs_f64();
    let peak = rss_kib(pid, "VmHWM")?;
    std::thread::sleep(Duration::from_secs(1));
    let after_relist = rss_kib(pid, "VmRSS")?;
    let still = answer_has(&socket, kdns.udp, &format!("{}.{}.svc.cluster.local.", service_name(0), namespace(&shape, 0)), 1, |_| true);

    let mb = |kib: u64| kib as f64 / 1024.0;
    println!("kdns watching the API: {} services, {} endpoints, {} namespaces; extra args {:?}", shape.services, shape.endpoints, shape.namespaces, args.kdns_args);
    println!("start to first sync: {start_s:.2} s  ({})", sync_line.split("synced with the API server").nth(1).unwrap_or_default().trim());
    println!("event-to-answer over {} changes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", latencies.len(), pct(0.50), pct(0.99), pct(1.0));
    println!("RSS steady {:.1} MB ({:.1} MB anonymous, {:.1} MB file-backed), after the changes {:.1} MB", mb(steady), mb(anon), mb(file), mb(after_changes));
    println!("relist (410 Gone): {relist_s:.2} s; RSS before {:.1} MB, peak {:.1} MB ({:.2}x), after {:.1} MB; still answering: {still}", mb(before_relist), mb(peak), peak as f64 / before_relist as f64, mb(after_relist));
    Ok(())
}

fn rss_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim_start_matches(':').trim().strip_suffix(" kB")?.trim().parse().ok())
        .with_context(|| format!("{field} not in /proc/{pid}/status"))
}

/// Whether an A query for `qname` returns an address that `want` accepts.
fn answer_has(socket: &UdpSocket, server: SocketAddr, qname: &str, id: u16, want: impl Fn(&str) -> bool) -> bool {
    let query = kdns_bench::message(id, qname, "A");
    if socket.send_to(&query, server).is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    let Ok((n, _)) = socket.recv_from(&mut buf) else { return false };
    let Ok(response) = Message::from_vec(&buf[..n]) else { return false };
    response.answers.iter().any(|r| matches!(&r.data, RData::A(a) if want(&a.0.to_string())))
}
