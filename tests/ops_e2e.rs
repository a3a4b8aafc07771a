//! Operations features through the binary: health, readiness and metrics over HTTP, zone
//! transfers to allowed clients only.

use std::process::Command;

use kdns_tests::server::{Kdns, dig, http_get, kdns_bin, metric};
use kdns_tests::vectors::Observed;

fn examples() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples").display().to_string()
}

#[test]
fn health_ready_and_metrics_count_what_was_asked() {
    let server = Kdns::start(&["--manifests".into(), examples(), "--http-listen".into(), "127.0.0.1:0".into()]);
    let http = server.http.expect("http address in the start line");
    assert_eq!(http_get(http, "/health"), (200, "OK".into()));
    assert_eq!(http_get(http, "/ready").0, 200);
    assert_eq!(http_get(http, "/nope").0, 404);

    for _ in 0..3 {
        assert!(dig(server.udp, "catalog.shop.svc.cluster.local.", "A", &["+noedns"]).contains("status: NOERROR"));
    }
    for _ in 0..2 {
        assert!(dig(server.udp, "missing.shop.svc.cluster.local.", "A", &["+noedns"]).contains("status: NXDOMAIN"));
    }
    assert!(dig(server.tcp, "_pg._tcp.db.data.svc.cluster.local.", "SRV", &["+tcp", "+noedns"]).contains("status: NOERROR"));
    assert!(dig(server.udp, "www.example.com.", "A", &["+noedns"]).contains("status: REFUSED"));

    let (status, text) = http_get(http, "/metrics");
    assert_eq!(status, 200);
    let get = |name: &str, needles: &[&str]| metric(&text, name, needles).unwrap_or_else(|| panic!("{name} {needles:?} missing in:\n{text}"));
    assert_eq!(get("kdns_dns_requests_total", &["zone=\"cluster.local.\"", "proto=\"udp\"", "type=\"A\"", "family=\"1\""]), 5.0);
    assert_eq!(get("kdns_dns_requests_total", &["proto=\"tcp\"", "type=\"SRV\""]), 1.0);
    assert_eq!(get("kdns_dns_requests_total", &["zone=\".\""]), 1.0);
    assert_eq!(get("kdns_dns_responses_total", &["rcode=\"NXDOMAIN\""]), 2.0);
    assert_eq!(get("kdns_dns_responses_total", &["rcode=\"NOERROR\""]), 4.0);
    assert_eq!(get("kdns_dns_responses_total", &["rcode=\"REFUSED\""]), 1.0);
    assert_eq!(get("kdns_dns_request_duration_seconds_count", &["type=\"A\""]), 6.0);
    assert_eq!(get("kdns_dns_response_size_bytes_count", &["proto=\"udp\""]), 6.0);
    assert_eq!(get("kdns_services", &[]), 5.0);
    assert_eq!(get("kdns_endpoints", &[]), 5.0);
    assert!(get("kdns_snapshot_generation", &[]) > 1.0e9, "the serial is a timestamp");
    assert!(get("kdns_snapshot_age_seconds", &[]) >= 0.0);
    assert_eq!(get("kdns_reload_errors_total", &[]), 0.0);
}

#[test]
fn wasm_traps_are_exported() {
    let server = Kdns::start(&["--manifests".into(), examples(), "--engine".into(), "wasm".into(), "--http-listen".into(), "127.0.0.1:0".into()]);
    let (_, text) = http_get(server.http.unwrap(), "/metrics");
    assert_eq!(metric(&text, "kdns_wasm_traps", &["engine=\"wasm\""]), Some(0.0), "{text}");
}

#[test]
fn zone_transfer_to_allowed_clients_only() {
    let server = Kdns::start(&["--manifests".into(), examples(), "--transfer-to".into(), "127.0.0.1/32".into()]);
    let export = Command::new(kdns_bin()).args(["export-zone", "--manifests", &examples()]).output().unwrap();
    let zone_records = String::from_utf8_lossy(&export.stdout).lines().filter(|l| !l.starts_with([';', '$'])).count();

    // Allowed: SOA, every record, SOA.
    let axfr = dig(server.tcp, "cluster.local.", "AXFR", &["+nocmd", "+nostats"]);
    let lines: Vec<&str> = axfr.lines().filter(|l| !l.starts_with(';') && !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), zone_records + 1, "{axfr}");
    assert!(lines.first().unwrap().contains("SOA") && lines.last().unwrap().contains("SOA"));
    assert!(axfr.contains("db-1.db.data.svc.cluster.local."));
    let ptr = dig(server.tcp, "in-addr.arpa.", "AXFR", &["+nocmd", "+nostats"]);
    assert!(ptr.contains("PTR"), "{ptr}");

    // IXFR is answered with the full zone.
    let ixfr = dig(server.tcp, "cluster.local.", "IXFR=1", &["+nocmd", "+nostats"]);
    assert!(ixfr.contains("db-1.db.data.svc.cluster.local."), "{ixfr}");

    // Refused: another source address, and plain UDP.
    let refused = dig(server.tcp, "cluster.local.", "AXFR", &["-b", "127.0.0.2", "+nocmd"]);
    assert!(refused.contains("Transfer failed") || refused.contains("REFUSED"), "{refused}");
    assert!(!refused.contains("db-1.db.data"));
    // (dig always transfers over TCP, so ask over UDP by hand.)
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(3))).unwrap();
    sock.send_to(&kdns_tests::vectors::query_message(7, "cluster.local.", "AXFR", None), server.udp).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(Observed::from_message(&m).rcode, "REFUSED");
    assert!(m.answers.is_empty());
}

#[test]
fn zone_transfer_is_refused_without_transfer_to() {
    let server = Kdns::start(&["--manifests".into(), examples()]);
    let out = dig(server.tcp, "cluster.local.", "AXFR", &["+nocmd"]);
    assert!(out.contains("Transfer failed") || out.contains("REFUSED"), "{out}");
    let seen = Observed::from_dig(&dig(server.tcp, "cluster.local.", "SOA", &["+tcp"])).unwrap();
    assert_eq!(seen.rcode, "NOERROR");
}

const COREFILE: &str = ".:53 {
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        endpoint_pod_names
        ttl 30
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
}
";

#[test]
fn a_corefile_kubernetes_block_carries_over_and_flags_override_it() {
    let dir = kdns_tests::server::TempDir::new("corefile");
    let corefile = dir.path("Corefile");
    std::fs::write(&corefile, COREFILE).unwrap();
    let config = corefile.display().to_string();
    let server = Kdns::start(&["--manifests".into(), examples(), "--config".into(), config.clone()]);
    let a = |name: &str| Observed::from_dig(&dig(server.udp, name, "A", &["+noedns"])).unwrap();
    assert_eq!(a("catalog.shop.svc.cluster.local.").answer, ["catalog.shop.svc.cluster.local. 30 A 10.96.12.34"]);
    assert_eq!(a("catalog-5d8f9-aaaaa.catalog.shop.svc.cluster.local.").answer, ["catalog-5d8f9-aaaaa.catalog.shop.svc.cluster.local. 30 A 10.244.1.7"]);
    assert_eq!(a("10-1-2-3.shop.pod.cluster.local.").answer, ["10-1-2-3.shop.pod.cluster.local. 30 A 10.1.2.3"]);
    drop(server);

    let server = Kdns::start(&["--manifests".into(), examples(), "--config".into(), config, "--ttl".into(), "7".into(), "--pods".into(), "disabled".into()]);
    let seen = Observed::from_dig(&dig(server.udp, "catalog.shop.svc.cluster.local.", "A", &["+noedns"])).unwrap();
    assert_eq!(seen.answer, ["catalog.shop.svc.cluster.local. 7 A 10.96.12.34"]);
    let seen = Observed::from_dig(&dig(server.udp, "10-1-2-3.shop.pod.cluster.local.", "A", &["+noedns"])).unwrap();
    assert_eq!(seen.rcode, "NXDOMAIN");
}

#[test]
fn a_bad_corefile_option_is_an_error_with_its_line() {
    let dir = kdns_tests::server::TempDir::new("badcorefile");
    let corefile = dir.path("Corefile");
    std::fs::write(&corefile, COREFILE.replace("ttl 30", "ttl thirty")).unwrap();
    let out = Command::new(kdns_bin()).args(["serve", "--listen", "127.0.0.1:0", "--manifests", &examples(), "--config"]).arg(&corefile).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Corefile:6") && err.contains("thirty"), "{err}");
    std::fs::write(&corefile, COREFILE.replace("ttl 30", "upstream 10.0.0.1")).unwrap();
    let out = Command::new(kdns_bin()).args(["query", "--manifests", &examples(), "x.cluster.local", "--config"]).arg(&corefile).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Corefile:6: unknown option `upstream`"));
}

#[test]
fn upstream_forwarding_external_names_fallthrough_and_tcp_retry() {
    let dir = kdns_tests::server::TempDir::new("upstream");
    // The upstream: another DNS server on loopback, serving example.com and cluster.local.
    let mut big = String::from("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: big-1, namespace: web, labels: {kubernetes.io/service-name: big}}\naddressType: IPv4\nendpoints:\n");
    for i in 1..=100 {
        big.push_str(&format!("- {{addresses: [10.60.0.{i}], conditions: {{ready: true}}}}\n"));
    }
    std::fs::write(
        dir.path("upstream.yaml"),
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: www, namespace: web}}\nspec: {{clusterIP: 10.50.0.1}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: only-upstream, namespace: default}}\nspec: {{clusterIP: 10.50.0.2}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: big, namespace: web}}\nspec: {{clusterIP: None}}\n---\n{big}"
        ),
    )
    .unwrap();
    let upstream = Kdns::start(&["--manifests".into(), dir.path("upstream.yaml").display().to_string(), "--zone".into(), "example.com".into(), "--zone".into(), "cluster.local".into()]);

    // kdns, with a dead upstream first and the live one second.
    std::fs::write(dir.path("main.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: default}\nspec: {type: ExternalName, externalName: www.web.svc.example.com}\n").unwrap();
    std::fs::write(dir.path("Corefile"), "kubernetes cluster.local in-addr.arpa ip6.arpa {\n  fallthrough\n}\n").unwrap();
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed on drop
    let server = Kdns::start(&[
        "--manifests".into(),
        dir.path("main.yaml").display().to_string(),
        "--config".into(),
        dir.path("Corefile").display().to_string(),
        "--upstream".into(),
        dead.to_string(),
        upstream.udp.to_string(),
    ]);
    let ask = |name: &str, opts: &[&str]| Observed::from_dig(&dig(server.udp, name, "A", opts)).unwrap();

    // A name outside the zones is forwarded.
    let out = ask("www.web.svc.example.com.", &["+noedns"]);
    assert_eq!(out.rcode, "NOERROR");
    assert_eq!(out.answer, ["www.web.svc.example.com. 5 A 10.50.0.1"]);
    // An ExternalName to a name outside the zones gets the target's records after the CNAME.
    let out = ask("ext.default.svc.cluster.local.", &["+noedns"]);
    assert_eq!(out.answer, ["ext.default.svc.cluster.local. 5 CNAME www.web.svc.example.com.", "www.web.svc.example.com. 5 A 10.50.0.1"]);
    // fallthrough: NXDOMAIN here, the upstream knows the name.
    let out = ask("only-upstream.default.svc.cluster.local.", &["+noedns"]);
    assert_eq!(out.answer, ["only-upstream.default.svc.cluster.local. 5 A 10.50.0.2"]);
    // A large upstream answer: TC over UDP, complete over TCP (dig retries as a client would).
    let truncated = ask("big.web.svc.example.com.", &["+noedns", "+ignore"]);
    assert!(truncated.flags.contains(&"tc".to_string()), "{truncated:?}");
    let full = Observed::from_dig(&dig(server.udp, "big.web.svc.example.com.", "A", &["+noedns"])).unwrap();
    assert_eq!(full.answer.len(), 100);
    assert!(server.logs().iter().any(|l| l.contains("upstream failing") && l.contains(&dead.to_string())));
}

fn deploy_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn deploy_manifests_validate_against_the_kubernetes_schema() {
    let files: Vec<_> = ["kdns.yaml", "rbac.yaml", "coredns-grpc.yaml"].iter().map(|f| deploy_dir().join(f)).collect();
    let run = |files: &[std::path::PathBuf]| {
        Command::new("kubernetes-validate").args(["--strict", "--quiet", "-k", "1.33.0"]).args(files).output().expect("kubernetes-validate runs (tests/setup installs it)")
    };
    let out = run(&files);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The check can fail: an unknown field is rejected.
    let dir = kdns_tests::server::TempDir::new("deploy");
    let bad = dir.path("bad.yaml");
    std::fs::write(&bad, std::fs::read_to_string(&files[0]).unwrap().replace("replicas: 2", "replicas: 2\n  replicaz: 2")).unwrap();
    assert!(!run(&[bad]).status.success());
}

/// The Corefile in a deploy/ ConfigMap, as the pod mounts it.
fn configmap_corefile(file: &str) -> String {
    let text = std::fs::read_to_string(deploy_dir().join(file)).unwrap();
    let start = text.find("  Corefile: |\n").expect("Corefile in the ConfigMap") + "  Corefile: |\n".len();
    text[start..].lines().take_while(|l| l.starts_with("    ")).map(|l| format!("{}\n", &l[4..])).collect()
}

#[test]
fn the_coredns_variant_corefile_runs_in_real_coredns_and_reaches_kdns() {
    let kdns = Kdns::start(&["--manifests".into(), examples(), "--grpc-listen".into(), "127.0.0.1:0".into()]);
    let grpc = kdns.grpc.unwrap().to_string();
    // Keep the lines that matter here; drop those that listen on fixed ports or send queries
    // off this machine (forward to /etc/resolv.conf, the loop check).
    let corefile: String = configmap_corefile("coredns-grpc.yaml")
        .replace("10.96.0.53:5300", &grpc)
        .replace(":53 {", ":{PORT} {\n    bind 127.0.0.1")
        .replace(":53 ", ":{PORT} ")
        .lines()
        .filter(|l| !["health", "lameduck", "ready", "prometheus", "forward", "loop"].iter().any(|w| l.trim_start().starts_with(w)))
        .filter(|l| l.trim() != "}" || !l.starts_with("        "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(corefile.contains(&format!("grpc . {grpc}")), "{corefile}");
    let coredns = kdns_tests::server::CoreDns::start(&corefile);
    let seen = Observed::from_dig(&dig(coredns.addr, "db-1.db.data.svc.cluster.local.", "A", &["+noedns"])).unwrap();
    assert_eq!(seen.answer, ["db-1.db.data.svc.cluster.local. 5 A 10.244.3.11"]);
    let seen = Observed::from_dig(&dig(coredns.addr, "7.1.244.10.in-addr.arpa.", "PTR", &["+noedns"])).unwrap();
    assert_eq!(seen.answer, ["7.1.244.10.in-addr.arpa. 5 PTR 10-244-1-7.catalog.shop.svc.cluster.local."]);
}

#[test]
fn the_deployed_corefile_is_accepted_by_kdns() {
    let corefile = configmap_corefile("kdns.yaml");
    let dir = kdns_tests::server::TempDir::new("deploycore");
    std::fs::write(dir.path("Corefile"), corefile).unwrap();
    let out = Command::new(kdns_bin()).args(["query", "--manifests", &examples(), "10-1-2-3.shop.pod.cluster.local", "--config"]).arg(dir.path("Corefile")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = Observed::from_dig(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(seen.answer, ["10-1-2-3.shop.pod.cluster.local. 30 A 10.1.2.3"]);
}
