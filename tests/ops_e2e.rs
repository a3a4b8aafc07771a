//! Operations features through the binary: health, readiness and metrics over HTTP, zone
//! transfers to allowed clients only; deploy/ checked against the Kubernetes schema, against
//! what a cutover from CoreDNS needs, and the image's file capability on the real binary.

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

/// The Kubernetes manifests in deploy/: every `*.yaml` there but `kind.yaml` (a kind cluster
/// config, not an API object). `examples/` is the example cluster `kdns serve --manifests`
/// reads, not something to apply.
fn deploy_manifests() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && p.file_name().unwrap() != "kind.yaml")
        .collect();
    files.sort();
    files
}

#[test]
fn deploy_manifests_validate_against_the_kubernetes_schema() {
    let files = deploy_manifests();
    let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in ["coredns-grpc.yaml", "kdns.yaml", "kube-dns-service.yaml", "rbac.yaml"] {
        assert!(names.iter().any(|n| n == expected), "{expected} not among {names:?}");
    }
    let run = |files: &[std::path::PathBuf]| {
        Command::new("kubernetes-validate").args(["--strict", "--quiet", "-k", "1.33.0"]).args(files).output().expect("kubernetes-validate runs (tests/setup installs it)")
    };
    let out = run(&files);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The check can fail: an unknown field is rejected.
    let dir = kdns_tests::server::TempDir::new("deploy");
    let bad = dir.path("bad.yaml");
    std::fs::write(&bad, std::fs::read_to_string(deploy_dir().join("kdns.yaml")).unwrap().replace("replicas: 2", "replicas: 2\n  replicaz: 2")).unwrap();
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

/// The objects of deploy/*.yaml, each with the file it is in.
fn deploy_objects() -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for file in deploy_manifests() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for object in kdns_tests::apiserver::parse_manifests(&std::fs::read_to_string(&file).unwrap()) {
            out.push((name.clone(), object));
        }
    }
    out
}

/// Whether a `matchLabels`/Service selector selects `labels`.
fn selects(selector: &serde_json::Value, labels: &serde_json::Value) -> bool {
    let selector = selector.as_object().expect("a selector map");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The value of `--NAME=VALUE` or `--NAME VALUE` in a container's args.
fn flag(args: &[String], name: &str) -> Option<String> {
    let long = format!("--{name}");
    args.iter().enumerate().find_map(|(i, a)| {
        if *a == long {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&format!("{long}=")).map(str::to_string)
        }
    })
}

/// The number of the container port a probe's or Service's port (number or name) refers to,
/// for that protocol.
fn container_port(container: &serde_json::Value, port: &serde_json::Value, protocol: &str) -> Option<u64> {
    let ports = container["ports"].as_array()?;
    let found = ports.iter().find(|p| (p["containerPort"] == *port || p["name"] == *port) && p["protocol"].as_str().unwrap_or("TCP") == protocol);
    found.map(|p| p["containerPort"].as_u64().unwrap())
}

/// What taking over from CoreDNS needs of deploy/, read from the files: the existing kube-dns
/// Service (kubeadm's: `k8s-app: kube-dns`, 53/UDP, 53/TCP, 9153/TCP), NodeLocal DNSCache and
/// DNS NetworkPolicies select the pods by `k8s-app: kube-dns`; kube-prometheus scrapes the
/// `metrics` port, 9153. kube-dns-service.yaml, for clusters without that Service, must look
/// the same, and nothing else in deploy/ may define a kube-dns Service (applied over kubeadm's,
/// client-side apply merges its ports on `port` and loses 53/UDP).
#[test]
fn deploy_manifests_carry_what_a_cutover_from_coredns_needs() {
    let objects = deploy_objects();
    let find = |file: &str, kind: &str, name: &str| {
        objects.iter().find(|(f, o)| f == file && o["kind"] == kind && o["metadata"]["name"] == name).map(|(_, o)| o.clone()).unwrap_or_else(|| panic!("{kind} {name} in {file}"))
    };
    let deployment = find("kdns.yaml", "Deployment", "kdns");
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["k8s-app"], "kube-dns", "kdns pods carry CoreDNS's label: {labels}");
    assert_eq!(labels["app.kubernetes.io/name"], "kdns", "and one that tells them from CoreDNS's: {labels}");
    // CoreDNS's pods (kubeadm's Deployment) are labelled `k8s-app: kube-dns` and nothing kdns's
    // controllers select may take them in: not the Deployment, not the PDB, not the
    // anti-affinity (a required rule matching CoreDNS pods would keep kdns off their nodes).
    let coredns_pod = serde_json::json!({"k8s-app": "kube-dns", "pod-template-hash": "674b8bbfcf"});
    let pdb = find("kdns.yaml", "PodDisruptionBudget", "kdns");
    let anti = &pod["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    let mut selectors = vec![("the Deployment", deployment["spec"]["selector"]["matchLabels"].clone()), ("the PDB", pdb["spec"]["selector"]["matchLabels"].clone())];
    selectors.extend(anti.as_array().expect("required anti-affinity").iter().map(|t| ("the anti-affinity", t["labelSelector"]["matchLabels"].clone())));
    for (what, selector) in &selectors {
        assert!(selects(selector, labels), "{what} selects kdns pods: {selector} vs {labels}");
        assert!(!selects(selector, &coredns_pod), "{what} must not select CoreDNS pods: {selector}");
    }

    // The Service: only in kube-dns-service.yaml, alone there.
    let services: Vec<_> = objects.iter().filter(|(_, o)| o["kind"] == "Service" && o["metadata"]["name"] == "kube-dns").map(|(f, _)| f.as_str()).collect();
    assert_eq!(services, ["kube-dns-service.yaml"], "files defining a kube-dns Service");
    assert_eq!(objects.iter().filter(|(f, _)| f == "kube-dns-service.yaml").count(), 1, "kube-dns-service.yaml holds the Service only");
    let service = find("kube-dns-service.yaml", "Service", "kube-dns");
    assert_eq!(service["metadata"]["namespace"], "kube-system");
    assert!(selects(&service["spec"]["selector"], labels), "the Service selects kdns pods");
    assert!(selects(&service["spec"]["selector"], &coredns_pod), "and CoreDNS's, as kubeadm's does");
    assert_eq!(service["metadata"]["labels"]["k8s-app"], "kube-dns", "kube-prometheus finds the Service by k8s-app: kube-dns");

    let container = &pod["spec"]["containers"][0];
    assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 1);
    let ports: Vec<_> = service["spec"]["ports"].as_array().unwrap().iter().map(|p| (p["name"].as_str().unwrap(), p["port"].as_u64().unwrap(), p["protocol"].as_str().unwrap())).collect();
    assert_eq!(ports, [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]);
    for port in service["spec"]["ports"].as_array().unwrap() {
        let target = if port["targetPort"].is_null() { &port["port"] } else { &port["targetPort"] };
        let number = container_port(container, target, port["protocol"].as_str().unwrap()).unwrap_or_else(|| panic!("Service port {port} targets no container port"));
        assert_eq!(number, port["port"].as_u64().unwrap(), "{port}: kubeadm's Service targets the same port number, so kdns must listen there");
    }
    assert_eq!(service["metadata"]["annotations"]["prometheus.io/scrape"], "true");
    assert_eq!(service["metadata"]["annotations"]["prometheus.io/port"], "9153");

    // The container's names for those ports, and what kdns is told to listen on.
    let named: Vec<_> = container["ports"].as_array().unwrap().iter().map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_u64().unwrap(), p["protocol"].as_str().unwrap())).collect();
    assert_eq!(named, [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]);
    let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
    let listen: std::net::SocketAddr = flag(&args, "listen").expect("--listen").parse().unwrap();
    assert_eq!(listen, "[::]:53".parse().unwrap(), "IPv4, IPv6-primary and dual-stack clusters");
    let http: std::net::SocketAddr = flag(&args, "http-listen").expect("--http-listen").parse().unwrap();
    assert_eq!(http.port(), 9153, "--http-listen serves the metrics port");

    // Every kdns container in deploy/ (kdns.yaml and coredns-grpc.yaml): probes on the port
    // --http-listen serves, NET_BIND_SERVICE allowed (the binary's file capability makes exec
    // fail without it, whatever the port), non-root; and only kdns.yaml's pods are behind
    // kube-dns (kdns-grpc listens on no port 53).
    let kdns_pods: Vec<_> = objects.iter().filter(|(_, o)| o["kind"] == "Deployment" && o["spec"]["template"]["spec"]["containers"][0]["image"].as_str().is_some_and(|i| i.starts_with("kdns"))).collect();
    assert_eq!(kdns_pods.len(), 2, "kdns in kdns.yaml and coredns-grpc.yaml");
    for (file, deployment) in kdns_pods {
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
        let http: std::net::SocketAddr = flag(&args, "http-listen").unwrap_or_else(|| panic!("{file}: --http-listen")).parse().unwrap();
        assert_eq!(container_port(container, &"metrics".into(), "TCP"), Some(u64::from(http.port())), "{file}: the metrics port is --http-listen's");
        for (probe, path) in [("livenessProbe", "/health"), ("readinessProbe", "/ready")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{file} {probe}");
            let port = container_port(container, &get["port"], "TCP").unwrap_or_else(|| panic!("{file} {probe}: port {} is no container port", get["port"]));
            assert_eq!(port, u64::from(http.port()), "{file} {probe}: kdns serves {path} on --http-listen");
        }
        let caps = &container["securityContext"]["capabilities"];
        assert_eq!(caps["drop"], serde_json::json!(["ALL"]), "{file}");
        assert_eq!(caps["add"], serde_json::json!(["NET_BIND_SERVICE"]), "{file}");
        assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false, "{file}");
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true, "{file}");
        assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{file}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{file}");
        assert_eq!(pod["priorityClassName"], "system-cluster-critical", "{file}");
        let behind_kube_dns = selects(&service["spec"]["selector"], &deployment["spec"]["template"]["metadata"]["labels"]);
        assert_eq!(behind_kube_dns, file == "kdns.yaml", "{file}: behind the kube-dns Service");
    }

    // The image: the file capability, uid 65532, the same ports as the manifests.
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    assert!(lines.iter().any(|l| l.starts_with("RUN setcap cap_net_bind_service=+ep /kdns")), "{dockerfile}");
    assert!(lines.contains(&"COPY --from=build /kdns /usr/local/bin/kdns"), "the final image takes the setcap'd binary");
    assert!(lines.contains(&"USER 65532:65532"));
    assert!(lines.contains(&"EXPOSE 53/udp 53/tcp 9153/tcp"));
    assert!(lines.contains(&r#"CMD ["serve", "--listen=[::]:53", "--http-listen=[::]:9153"]"#));
}

/// A command found on PATH or in the sbin directories (setcap is in /usr/sbin).
fn find_tool(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':').chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]).map(|d| std::path::Path::new(d).join(name)).find(|p| p.is_file())
}

/// What `kdns serve` did when started under `setpriv`.
enum Run {
    Exited(std::process::ExitStatus, String),
    Serving(std::process::Child),
}

/// Runs `setpriv --reuid=65532 --regid=65532 --clear-groups EXTRA... BIN serve --manifests
/// examples --listen ADDR` and waits until it serves or exits.
fn serve_as_65532(setpriv: &std::path::Path, extra: &[&str], bin: &std::path::Path, addr: std::net::SocketAddr, cwd: &std::path::Path) -> Run {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let mut child = Command::new(setpriv)
        .args(["--reuid=65532", "--regid=65532", "--clear-groups"])
        .args(extra)
        .arg(bin)
        .args(["serve", "--manifests", &examples(), "--listen", &addr.to_string()])
        .current_dir(cwd)
        .env("KDNS_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv starts");
    let mut stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            reader.join().unwrap();
            return Run::Exited(status, log.lock().unwrap().clone());
        }
        if log.lock().unwrap().contains("kdns serving") {
            return Run::Serving(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kdns neither served nor exited:\n{}", log.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The image's `RUN setcap cap_net_bind_service=+ep` on the real binary: as uid 65532, kdns
/// cannot bind port 53 (the error names the address); with the file capability it serves there
/// and answers, also inside the capability bounds of deploy/'s pods (bounding set
/// NET_BIND_SERVICE alone, no_new_privs: `drop: [ALL]`, `add: [NET_BIND_SERVICE]`,
/// `allowPrivilegeEscalation: false`); and where NET_BIND_SERVICE is outside the bounding set
/// (`drop: [ALL]` alone) the kernel refuses to run the binary at all, which is why every kdns
/// container in deploy/ adds it.
#[test]
fn the_file_capability_lets_uid_65532_bind_port_53() {
    use std::os::unix::fs::PermissionsExt;
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    if uid != "0" {
        println!("the_file_capability_lets_uid_65532_bind_port_53: skipped: needs root to switch to uid 65532 and set a file capability (running as uid {uid})");
        return;
    }
    let (Some(setpriv), Some(setcap)) = (find_tool("setpriv"), find_tool("setcap")) else {
        println!("the_file_capability_lets_uid_65532_bind_port_53: skipped: needs setpriv (util-linux) and setcap (libcap2-bin; tests/setup installs it)");
        return;
    };
    let unprivileged_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").ok().and_then(|s| s.trim().parse::<u16>().ok()).unwrap_or(1024);
    if unprivileged_start <= 53 {
        println!("the_file_capability_lets_uid_65532_bind_port_53: skipped: net.ipv4.ip_unprivileged_port_start is {unprivileged_start}, so any user may bind port 53 here");
        return;
    }

    // A copy uid 65532 can execute (the build's target/ may not be reachable for it), on a
    // loopback address of its own so no other server's port 53 is in the way.
    let dir = kdns_tests::server::TempDir::new("setcap");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path("kdns");
    std::fs::copy(kdns_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pid = std::process::id();
    let addr: std::net::SocketAddr = format!("127.53.{}.{}:53", (pid >> 8) & 0xff, 1 + pid % 254).parse().unwrap();

    // Without the capability: EACCES, and the error says on what.
    match serve_as_65532(&setpriv, &[], &bin, addr, &dir.0) {
        Run::Exited(status, err) => {
            assert!(!status.success(), "{err}");
            assert!(err.contains("Permission denied") && err.contains(&addr.to_string()), "the error names the cause and the address:\n{err}");
        }
        Run::Serving(mut child) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("uid 65532 bound {addr} without the capability");
        }
    }

    let out = Command::new(&setcap).args(["cap_net_bind_service=+ep"]).arg(&bin).output().unwrap();
    assert!(out.status.success(), "setcap: {}", String::from_utf8_lossy(&out.stderr));

    // With it: serves, over UDP and TCP; and within the pods' capability bounds.
    let pod_bounds: &[&str] = &["--bounding-set=-all,+net_bind_service", "--no-new-privs"];
    for extra in [&[][..], pod_bounds] {
        match serve_as_65532(&setpriv, extra, &bin, addr, &dir.0) {
            Run::Serving(mut child) => {
                let udp = Observed::from_dig(&dig(addr, "catalog.shop.svc.cluster.local.", "A", &["+noedns"]));
                let tcp = Observed::from_dig(&dig(addr, "catalog.shop.svc.cluster.local.", "A", &["+noedns", "+tcp"]));
                let _ = child.kill();
                let _ = child.wait();
                for seen in [udp, tcp] {
                    assert_eq!(seen.expect("an answer").answer, ["catalog.shop.svc.cluster.local. 5 A 10.96.12.34"], "setpriv {extra:?}");
                }
            }
            Run::Exited(status, err) => panic!("with cap_net_bind_service=+ep (setpriv {extra:?}) kdns exited with {status} (is {} mounted nosuid?):\n{err}", dir.0.display()),
        }
    }

    // NET_BIND_SERVICE outside the bounding set (a pod with `drop: [ALL]` and no `add`): the
    // binary is not run at all.
    match serve_as_65532(&setpriv, &["--bounding-set=-all", "--no-new-privs"], &bin, addr, &dir.0) {
        Run::Exited(status, err) => {
            assert!(!status.success());
            assert!(err.contains("Operation not permitted") && !err.contains("kdns: error") && !err.contains("kdns serving"), "exec itself fails:\n{err}");
        }
        Run::Serving(mut child) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kdns ran with a file capability outside its bounding set");
        }
    }
}
