//! `kdns serve --kubeconfig`: the real binary watching a real HTTP server that speaks the
//! Kubernetes list/watch protocol (tests/src/apiserver.rs), asked over UDP with dig.
//! Initial sync, changes to services, slices and namespaces, the API server killed and
//! restarted with changes made meanwhile, 410 Gone, a watch stream cut mid-event, SERVFAIL
//! before the first sync, the snapshot file, and every conformance vector served from the API.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kdns_tests::apiserver::{ApiServer, parse_manifests};
use kdns_tests::cases::run_case_with_dig;
use kdns_tests::server::{Kdns, TempDir, dig, free_port, http_get, metric};
use kdns_tests::vectors::{self, Observed};
use serde_json::json;

const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-abcde
  namespace: shop
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: pg, port: 5432, protocol: TCP}]
endpoints:
- addresses: [10.244.0.10]
  hostname: db-0
  conditions: {ready: true}
";

fn start_kdns(dir: &TempDir, api: &ApiServer, extra: &[&str]) -> Kdns {
    let kubeconfig = dir.path("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let mut args = vec!["--kubeconfig".to_string(), kubeconfig.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Kdns::start(&args)
}

/// (rcode, answer lines) of `name TYPE` over UDP.
fn ask(server: SocketAddr, name: &str, rtype: &str) -> (String, Vec<String>) {
    let out = dig(server, name, rtype, &["+noedns"]);
    let seen = Observed::from_dig(&out).unwrap_or_else(|e| panic!("dig output unreadable ({e}):\n{out}"));
    (seen.rcode, seen.answer)
}

/// Asks until the answer is what `want` accepts, for at most `within`; returns how long it took.
fn until(server: SocketAddr, name: &str, rtype: &str, within: Duration, want: impl Fn(&str, &[String]) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let (rcode, answer) = ask(server, name, rtype);
        if want(&rcode, &answer) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{name} {rtype}: still {rcode} {answer:?} after {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn service(ns: &str, name: &str, ip: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
           "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}})
}

fn db_slice(addresses: &[&str]) -> serde_json::Value {
    let endpoints: Vec<_> = addresses.iter().enumerate().map(|(i, a)| json!({"addresses": [a], "hostname": format!("db-{i}"), "conditions": {"ready": true}})).collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "db-abcde", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
           "addressType": "IPv4", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}], "endpoints": endpoints})
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn initial_sync_then_adds_changes_and_deletes_show_up_in_answers() {
    let dir = TempDir::new("kube-sync");
    let api = ApiServer::start(CLUSTER);
    let kdns = start_kdns(&dir, &api, &["--http-listen", "127.0.0.1:0"]);
    assert!(kdns.logs().iter().any(|l| l.contains("synced with the API server")), "{:?}", kdns.logs());
    assert_eq!(ask(kdns.udp, "web.shop.svc.cluster.local.", "A").1, ["web.shop.svc.cluster.local. 5 A 10.96.0.20"]);
    assert_eq!(ask(kdns.udp, "db-0.db.shop.svc.cluster.local.", "A").1, ["db-0.db.shop.svc.cluster.local. 5 A 10.244.0.10"]);
    let (code, body) = http_get(kdns.http.unwrap(), "/ready");
    assert_eq!((code, body.as_str()), (200, "OK"));
    // kube-runtime lists in pages with a limit, then watches with bookmarks from the list's version.
    let requests = api.requests();
    assert!(requests.iter().any(|r| r.starts_with("/api/v1/services?") && r.contains("limit=250")), "{requests:?}");
    assert!(requests.iter().any(|r| r.starts_with("/api/v1/services?") && r.contains("watch=true") && r.contains("allowWatchBookmarks=true")), "{requests:?}");
    assert!(!requests.iter().any(|r| r.starts_with("/api/v1/pods")), "pods are watched only for `pods verified`: {requests:?}");
    // Only GET list and watch on the collections deploy/rbac.yaml grants (the server answers
    // anything else with 404 or 405, which would show up as a failed sync).
    let granted = ["/api/v1/services?", "/api/v1/namespaces?", "/apis/discovery.k8s.io/v1/endpointslices?"];
    assert!(requests.iter().all(|r| granted.iter().any(|g| r.starts_with(g))), "{requests:?}");
    let rbac = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rbac.yaml")).unwrap();
    assert_eq!(rbac.matches("verbs: [list, watch]").count(), 2, "deploy/rbac.yaml grants exactly list and watch:\n{rbac}");

    // Add a service.
    api.apply(service("shop", "cart", "10.96.0.30"));
    until(kdns.udp, "cart.shop.svc.cluster.local.", "A", WAIT, |rc, a| rc == "NOERROR" && a == ["cart.shop.svc.cluster.local. 5 A 10.96.0.30"]);
    // Change a service's IP.
    api.apply(service("shop", "web", "10.96.0.21"));
    until(kdns.udp, "web.shop.svc.cluster.local.", "A", WAIT, |_, a| a == ["web.shop.svc.cluster.local. 5 A 10.96.0.21"]);
    // A slice gains an endpoint.
    api.apply(db_slice(&["10.244.0.10", "10.244.0.11"]));
    until(kdns.udp, "db.shop.svc.cluster.local.", "A", WAIT, |_, a| a.len() == 2);
    assert_eq!(ask(kdns.udp, "db-1.db.shop.svc.cluster.local.", "A").1, ["db-1.db.shop.svc.cluster.local. 5 A 10.244.0.11"]);
    // A slice removed: the headless service has no endpoints left, so its name has no records
    // (NXDOMAIN, as CoreDNS answers for an empty headless service).
    assert!(api.delete("EndpointSlice", "shop", "db-abcde"));
    until(kdns.udp, "db-1.db.shop.svc.cluster.local.", "A", WAIT, |rc, _| rc == "NXDOMAIN");
    assert_eq!(ask(kdns.udp, "db.shop.svc.cluster.local.", "A").0, "NXDOMAIN");
    // A service deleted.
    assert!(api.delete("Service", "shop", "cart"));
    until(kdns.udp, "cart.shop.svc.cluster.local.", "A", WAIT, |rc, _| rc == "NXDOMAIN");
    // A namespace of its own: the namespace name answers NODATA while it exists, NXDOMAIN after.
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "empty"}}));
    until(kdns.udp, "empty.svc.cluster.local.", "A", WAIT, |rc, _| rc == "NOERROR");
    assert!(api.delete("Namespace", "", "empty"));
    until(kdns.udp, "empty.svc.cluster.local.", "A", WAIT, |rc, _| rc == "NXDOMAIN");

    let (_, text) = http_get(kdns.http.unwrap(), "/metrics");
    assert_eq!(metric(&text, "kdns_services", &[]), Some(2.0), "{text}");
    assert_eq!(metric(&text, "kdns_apply_errors_total", &[]), Some(0.0), "{text}");
}

#[test]
fn api_server_killed_answers_continue_and_changes_made_meanwhile_arrive_after_restart() {
    let dir = TempDir::new("kube-restart");
    let api = ApiServer::start(CLUSTER);
    let kdns = start_kdns(&dir, &api, &[]);
    api.stop();
    // Answers keep coming from the last state while the API server is away.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ask(kdns.udp, "web.shop.svc.cluster.local.", "A").1, ["web.shop.svc.cluster.local. 5 A 10.96.0.20"]);
    api.apply(service("shop", "late", "10.96.0.40"));
    assert!(api.delete("Service", "shop", "web"));
    api.restart();
    // The watcher resumes from its last resourceVersion and gets both changes.
    until(kdns.udp, "late.shop.svc.cluster.local.", "A", Duration::from_secs(40), |rc, _| rc == "NOERROR");
    until(kdns.udp, "web.shop.svc.cluster.local.", "A", WAIT, |rc, _| rc == "NXDOMAIN");
    assert_eq!(ask(kdns.udp, "db-0.db.shop.svc.cluster.local.", "A").1, ["db-0.db.shop.svc.cluster.local. 5 A 10.244.0.10"]);
    assert!(kdns.logs().iter().any(|l| l.contains("watch failed")), "the outage was noticed: {:?}", kdns.logs());
}

#[test]
fn gone_410_makes_a_relist_and_the_state_equals_the_servers() {
    let dir = TempDir::new("kube-410");
    let api = ApiServer::start(CLUSTER);
    let kdns = start_kdns(&dir, &api, &["--http-listen", "127.0.0.1:0"]);
    api.stop();
    // Changes while away, then the history they are in is compacted: resuming gets 410 Gone.
    api.apply(service("shop", "new", "10.96.0.50"));
    assert!(api.delete("Service", "shop", "web"));
    api.apply(db_slice(&["10.244.0.99"]));
    api.compact();
    api.restart();
    until(kdns.udp, "new.shop.svc.cluster.local.", "A", Duration::from_secs(40), |rc, _| rc == "NOERROR");
    until(kdns.udp, "web.shop.svc.cluster.local.", "A", WAIT, |rc, _| rc == "NXDOMAIN");
    until(kdns.udp, "db-0.db.shop.svc.cluster.local.", "A", WAIT, |_, a| a == ["db-0.db.shop.svc.cluster.local. 5 A 10.244.0.99"]);
    assert!(kdns.wait_for_log("relisted", WAIT).is_some(), "{:?}", kdns.logs());
    let (_, text) = http_get(kdns.http.unwrap(), "/metrics");
    assert!(metric(&text, "kdns_watch_restarts_total", &[]).unwrap_or(0.0) >= 1.0, "{text}");
    assert_eq!(metric(&text, "kdns_services", &[]), Some(2.0), "{text}");
}

#[test]
fn a_watch_stream_cut_mid_event_loses_nothing() {
    let dir = TempDir::new("kube-cut");
    let api = ApiServer::start(CLUSTER);
    let kdns = start_kdns(&dir, &api, &[]);
    api.cut_next_event();
    api.apply(service("shop", "cut", "10.96.0.60"));
    until(kdns.udp, "cut.shop.svc.cluster.local.", "A", Duration::from_secs(40), |rc, a| rc == "NOERROR" && a.len() == 1);
    // And the watch goes on after the cut.
    api.apply(service("shop", "after", "10.96.0.61"));
    until(kdns.udp, "after.shop.svc.cluster.local.", "A", WAIT, |rc, _| rc == "NOERROR");
}

#[test]
fn before_the_first_sync_cluster_names_get_servfail_then_answers_once_the_api_is_up() {
    let dir = TempDir::new("kube-late");
    let port = free_port();
    let kubeconfig = dir.path("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\nusers: [{{name: t, user: {{}}}}]\ncontexts: [{{name: t, context: {{cluster: t, user: t}}}}]\ncurrent-context: t\n"),
    )
    .unwrap();
    let args: Vec<String> = ["--kubeconfig", &kubeconfig.display().to_string(), "--sync-timeout", "0.5", "--http-listen", "127.0.0.1:0"].iter().map(|s| s.to_string()).collect();
    let started = Instant::now();
    let kdns = Kdns::start(&args);
    assert!(started.elapsed() < Duration::from_secs(10), "serving did not wait past the sync timeout");
    assert!(kdns.logs().iter().any(|l| l.contains("no full list from the API server yet")), "{:?}", kdns.logs());
    assert_eq!(ask(kdns.udp, "web.shop.svc.cluster.local.", "A").0, "SERVFAIL");
    assert_eq!(http_get(kdns.http.unwrap(), "/ready").0, 503);
    // Names outside the zones are not the cluster's to fail.
    assert_eq!(ask(kdns.udp, "example.com.", "A").0, "REFUSED");
    let _api = ApiServer::start_on(port, CLUSTER);
    until(kdns.udp, "web.shop.svc.cluster.local.", "A", Duration::from_secs(40), |rc, _| rc == "NOERROR");
    assert_eq!(http_get(kdns.http.unwrap(), "/ready").0, 200);
}

#[test]
fn the_snapshot_file_answers_after_a_restart_while_the_api_is_down() {
    let dir = TempDir::new("kube-snapshot");
    let snapshot = dir.path("view.snap");
    let snapshot_arg = snapshot.display().to_string();
    let api = ApiServer::start(CLUSTER);
    let kdns = start_kdns(&dir, &api, &["--snapshot-file", &snapshot_arg]);
    api.apply(service("shop", "cart", "10.96.0.30"));
    until(kdns.udp, "cart.shop.svc.cluster.local.", "A", WAIT, |rc, _| rc == "NOERROR");
    // Written a moment after the last change.
    let deadline = Instant::now() + WAIT;
    while !snapshot.exists() {
        assert!(Instant::now() < deadline, "no snapshot file written");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(2500));
    drop(kdns);
    api.stop();
    let kdns = start_kdns(&dir, &api, &["--snapshot-file", &snapshot_arg, "--sync-timeout", "0.3", "--http-listen", "127.0.0.1:0"]);
    assert!(kdns.logs().iter().any(|l| l.contains("answering from the snapshot file")), "{:?}", kdns.logs());
    assert_eq!(ask(kdns.udp, "cart.shop.svc.cluster.local.", "A").1, ["cart.shop.svc.cluster.local. 5 A 10.96.0.30"]);
    assert_eq!(ask(kdns.udp, "db-0.db.shop.svc.cluster.local.", "A").1, ["db-0.db.shop.svc.cluster.local. 5 A 10.244.0.10"]);
    assert_eq!(http_get(kdns.http.unwrap(), "/ready").0, 200);
    // Once the API server is back its view replaces the file's.
    assert!(api.delete("Service", "shop", "cart"));
    api.restart();
    until(kdns.udp, "cart.shop.svc.cluster.local.", "A", Duration::from_secs(40), |rc, _| rc == "NXDOMAIN");
    // A damaged file is reported and ignored: a cold start, not a crash.
    drop(kdns);
    std::fs::write(&snapshot, b"not a snapshot").unwrap();
    let kdns = start_kdns(&dir, &api, &["--snapshot-file", &snapshot_arg]);
    assert!(kdns.logs().iter().any(|l| l.contains("snapshot file unusable")), "{:?}", kdns.logs());
    assert_eq!(ask(kdns.udp, "web.shop.svc.cluster.local.", "A").0, "NOERROR");
}

#[test]
fn paged_lists_of_many_objects_are_complete() {
    // More services than one page (250) holds, so the list takes several pages.
    let dir = TempDir::new("kube-pages");
    let api = ApiServer::start("");
    for i in 0..1234 {
        api.apply(service("bulk", &format!("s{i}"), &format!("10.97.{}.{}", i / 250, i % 250 + 1)));
    }
    let kdns = start_kdns(&dir, &api, &["--http-listen", "127.0.0.1:0"]);
    let (_, text) = http_get(kdns.http.unwrap(), "/metrics");
    assert_eq!(metric(&text, "kdns_services", &[]), Some(1234.0));
    assert!(api.requests().iter().any(|r| r.starts_with("/api/v1/services?") && r.contains("continue=")), "{:?}", api.requests());
    assert_eq!(ask(kdns.udp, "s1233.bulk.svc.cluster.local.", "A").1, ["s1233.bulk.svc.cluster.local. 5 A 10.97.4.234"]);
}

#[test]
fn every_conformance_vector_served_from_the_api() {
    every_conformance_vector_served_from_the_api_by("native");
}

#[test]
fn every_conformance_vector_served_from_the_api_by_the_wasm_engine() {
    every_conformance_vector_served_from_the_api_by("wasm");
}

fn every_conformance_vector_served_from_the_api_by(engine: &str) {
    let dir = TempDir::new(&format!("kube-vectors-{engine}"));
    let mut failures = Vec::new();
    let (mut asked, mut vectors_run) = (0, 0);
    for v in vectors::load_all() {
        let objects = parse_manifests(&v.cluster);
        // Endpoints derived from Pods are a manifest-mode feature: in a cluster the EndpointSlice
        // controller writes the slices, and the API serves them.
        let has_slices = objects.iter().any(|o| o["kind"] == "EndpointSlice");
        let has_pods = objects.iter().any(|o| o["kind"] == "Pod");
        let selector_services = objects.iter().filter(|o| o["kind"] == "Service" && o["spec"]["selector"].is_object()).count();
        if has_pods && selector_services > 0 && !has_slices {
            println!("{}: skipped (its endpoints are derived from Pods; only manifest mode does that)", v.name());
            continue;
        }
        let api = ApiServer::start(&v.cluster);
        let kubeconfig = dir.path("kubeconfig");
        api.write_kubeconfig(&kubeconfig);
        let mut args = v.flags();
        args.extend(["--kubeconfig".into(), kubeconfig.display().to_string(), "--engine".into(), engine.into()]);
        let server = Kdns::start(&args);
        vectors_run += 1;
        for (i, case) in v.cases.iter().enumerate() {
            let (_, rtype) = case.name_and_type();
            if matches!(rtype.to_string().as_str(), "AXFR" | "IXFR") {
                continue;
            }
            let tcp = case.is_tcp();
            asked += 1;
            if let Err(e) = run_case_with_dig(server.udp, server.tcp, case, tcp) {
                failures.push(format!("{} #{i} `{}`: {e}", v.name(), case.query));
            }
        }
    }
    assert!(vectors_run >= 8, "only {vectors_run} vectors ran");
    assert!(failures.is_empty(), "{} of {asked} failed:\n{}", failures.len(), failures.join("\n"));
    println!("{asked} vector cases from {vectors_run} vectors passed with the cluster served by the API ({engine} engine)");
}
