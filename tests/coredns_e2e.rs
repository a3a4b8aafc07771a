//! kdns with CoreDNS (built from its Go module by tests/setup), asked with dig:
//! - behind a stock CoreDNS: the `grpc` plugin forwards every name to `kdns serve --grpc-listen`;
//! - inside CoreDNS: the kdns plugin (plugin-wasm/coredns) runs the kdns wasm module with
//!   wazero, fed by the snapshot stream of `kdns serve --grpc-listen`.

use std::time::{Duration, Instant};

use kdns_tests::apiserver::{ApiServer, parse_manifests};
use kdns_tests::cases::{run_case_raw_tcp, run_case_with_dig};
use kdns_tests::server::{CoreDns, Kdns, TempDir, coredns_kdns_bin, dig, plugin_wasm};
use kdns_tests::vectors::{self, Observed};

/// `kdns serve` with a vector's cluster and settings, and gRPC on.
fn serve_vector_with_grpc(dir: &TempDir, v: &vectors::Vector) -> Kdns {
    let file = dir.path(&format!("{}.yaml", v.name()));
    std::fs::write(&file, &v.cluster).unwrap();
    let mut args = v.flags();
    args.extend(["--manifests".into(), file.display().to_string(), "--grpc-listen".into(), "127.0.0.1:0".into()]);
    Kdns::start(&args)
}

#[test]
fn every_vector_through_stock_coredns_grpc() {
    let dir = TempDir::new("coredns-grpc");
    let mut failures = Vec::new();
    let mut asked = 0;
    for v in vectors::load_all() {
        let kdns = serve_vector_with_grpc(&dir, &v);
        let grpc = kdns.grpc.expect("grpc address in the start line");
        let coredns = CoreDns::start(&format!(".:{{PORT}} {{\n    bind 127.0.0.1\n    grpc . {grpc}\n}}\n"));
        for (i, case) in v.cases.iter().enumerate() {
            let (_, rtype) = case.name_and_type();
            let transfer = matches!(rtype.to_string().as_str(), "AXFR" | "IXFR");
            let tcp = case.is_tcp();
            asked += 1;
            let result = if transfer { run_case_raw_tcp(coredns.addr, case) } else { run_case_with_dig(coredns.addr, coredns.addr, case, tcp) };
            if let Err(e) = result {
                failures.push(format!("{} #{i} `{}`: {e}", v.name(), case.query));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {asked} failed through CoreDNS:\n{}", failures.len(), failures.join("\n"));
    println!("{asked} vector cases passed through stock CoreDNS + grpc + kdns");
}

/// CoreDNS with the kdns plugin, fed by `kdns` at `grpc`; waits until it answers from a snapshot.
fn coredns_with_plugin(grpc: std::net::SocketAddr, extra: &str) -> CoreDns {
    let corefile = format!(".:{{PORT}} {{\n    bind 127.0.0.1\n    kdns {{\n        wasm {}\n        snapshot {grpc}\n    }}\n{extra}}}\n", plugin_wasm().display());
    let coredns = CoreDns::start_with(&coredns_kdns_bin(), &corefile);
    let deadline = Instant::now() + Duration::from_secs(20);
    // SERVFAIL until the first snapshot is in, like the kubernetes plugin before its sync.
    while dig(coredns.addr, "cluster.local.", "SOA", &["+time=1", "+tries=1"]).contains("SERVFAIL") {
        assert!(Instant::now() < deadline, "the kdns plugin got no snapshot");
        std::thread::sleep(Duration::from_millis(20));
    }
    coredns
}

#[test]
fn every_vector_through_coredns_with_the_kdns_wasm_plugin() {
    let dir = TempDir::new("coredns-kdns");
    let mut failures = Vec::new();
    let mut asked = 0;
    for v in vectors::load_all() {
        let kdns = serve_vector_with_grpc(&dir, &v);
        let coredns = coredns_with_plugin(kdns.grpc.expect("grpc address"), "");
        for (i, case) in v.cases.iter().enumerate() {
            let (_, rtype) = case.name_and_type();
            // Zone transfers are kdns serve's (--transfer-to); the plugin answers queries.
            if matches!(rtype.to_string().as_str(), "AXFR" | "IXFR") {
                continue;
            }
            asked += 1;
            if let Err(e) = run_case_with_dig(coredns.addr, coredns.addr, case, case.is_tcp()) {
                failures.push(format!("{} #{i} `{}`: {e}", v.name(), case.query));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {asked} failed through CoreDNS + the kdns plugin:\n{}", failures.len(), failures.join("\n"));
    println!("{asked} vector cases passed through CoreDNS + the kdns wasm plugin");
}

#[test]
fn the_plugin_follows_changes_and_keeps_answering_when_the_host_goes_away() {
    let dir = TempDir::new("coredns-kdns-live");
    let file = dir.path("cluster.yaml");
    let service = |ip: &str| format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n  clusterIP: {ip}\n  ports: [{{port: 80}}]\n");
    std::fs::write(&file, service("10.96.0.10")).unwrap();
    let args = vec!["--manifests".to_string(), file.display().to_string(), "--grpc-listen".into(), "127.0.0.1:0".into()];
    let kdns = Kdns::start(&args);
    let coredns = coredns_with_plugin(kdns.grpc.unwrap(), "    log\n");
    let answer = || Observed::from_dig(&dig(coredns.addr, "web.default.svc.cluster.local.", "A", &[])).map(|o| o.answer).unwrap_or_default();
    assert_eq!(answer(), ["web.default.svc.cluster.local. 5 A 10.96.0.10"]);
    // An edit on the host reaches the plugin over the stream.
    std::fs::write(&file, service("10.96.0.11")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answer() != ["web.default.svc.cluster.local. 5 A 10.96.0.11"] {
        assert!(Instant::now() < deadline, "the change did not reach the plugin: {:?}", answer());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The host goes away: the plugin answers from the last view.
    drop(kdns);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(answer(), ["web.default.svc.cluster.local. 5 A 10.96.0.11"]);
}

/// The Corefile `kubernetes` block CoreDNS's own plugin needs for a vector's settings.
fn kubernetes_block(v: &vectors::Vector, kubeconfig: &std::path::Path) -> String {
    let zone = v.config.zone.clone().unwrap_or_else(|| "cluster.local".into());
    let mut block = format!("    kubernetes {zone} in-addr.arpa ip6.arpa {{\n        kubeconfig {} test\n", kubeconfig.display());
    if let Some(p) = &v.config.pods {
        block += &format!("        pods {p}\n");
    }
    if let Some(t) = v.config.ttl {
        block += &format!("        ttl {t}\n");
    }
    if v.config.endpoint_pod_names == Some(true) {
        block += "        endpoint_pod_names\n";
    }
    block + "    }\n"
}

/// Questions about everything in a cluster: every service's A, AAAA, SRV and TXT, every
/// endpoint name and pod name, every IP reversed, and the vector's own questions.
fn questions(v: &vectors::Vector) -> Vec<(String, String)> {
    let zone = v.config.zone.clone().unwrap_or_else(|| "cluster.local".into());
    let mut qs: Vec<(String, String)> = v.cases.iter().map(|c| {
        let (name, rtype) = c.name_and_type();
        (name.to_ascii(), rtype.to_string())
    }).filter(|(_, t)| t != "AXFR" && t != "IXFR").collect();
    let mut reverse = |ip: &str| {
        if let Ok(ip) = ip.parse::<std::net::IpAddr>() {
            let name = match ip {
                std::net::IpAddr::V4(v4) => { let o = v4.octets(); format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]) }
                std::net::IpAddr::V6(v6) => v6.octets().iter().rev().flat_map(|b| [b & 0xf, b >> 4]).map(|n| format!("{n:x}.")).collect::<String>() + "ip6.arpa.",
            };
            qs.push((name, "PTR".into()));
        }
    };
    let objects = parse_manifests(&v.cluster);
    let mut names = Vec::new();
    for o in &objects {
        let (ns, name) = (o["metadata"]["namespace"].as_str().unwrap_or("default"), o["metadata"]["name"].as_str().unwrap_or(""));
        match o["kind"].as_str() {
            Some("Service") => {
                let base = format!("{name}.{ns}.svc.{zone}.");
                for t in ["A", "AAAA", "SRV", "TXT"] {
                    names.push((base.clone(), t.to_string()));
                }
                for p in o["spec"]["ports"].as_array().into_iter().flatten() {
                    let proto = p["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase();
                    if let Some(pn) = p["name"].as_str() {
                        names.push((format!("_{pn}._{proto}.{base}"), "SRV".into()));
                    }
                }
                for ip in o["spec"]["clusterIPs"].as_array().into_iter().flatten().chain(o["spec"]["clusterIP"].as_str().map(|_| &o["spec"]["clusterIP"])) {
                    reverse(ip.as_str().unwrap_or(""));
                }
            }
            Some("EndpointSlice") => {
                let service = o["metadata"]["labels"]["kubernetes.io/service-name"].as_str().unwrap_or("");
                for ep in o["endpoints"].as_array().into_iter().flatten() {
                    for a in ep["addresses"].as_array().into_iter().flatten() {
                        let addr = a.as_str().unwrap_or("");
                        reverse(addr);
                        let label = ep["hostname"].as_str().map(String::from).unwrap_or_else(|| addr.replace(['.', ':'], "-"));
                        names.push((format!("{label}.{service}.{ns}.svc.{zone}."), "A".into()));
                        names.push((format!("{label}.{service}.{ns}.svc.{zone}."), "AAAA".into()));
                    }
                }
            }
            Some("Pod") => {
                for ip in o["status"]["podIPs"].as_array().into_iter().flatten() {
                    let addr = ip["ip"].as_str().unwrap_or("");
                    names.push((format!("{}.{ns}.pod.{zone}.", addr.replace(['.', ':'], "-")), if addr.contains(':') { "AAAA".into() } else { "A".into() }));
                }
            }
            _ => {}
        }
    }
    qs.extend(names);
    qs.sort();
    qs.dedup();
    qs
}

/// What a difference is, if it is one docs/compat.md explains.
fn documented(question: &(String, String), kdns: &Observed, coredns: &Observed) -> Option<&'static str> {
    let nodata = |o: &Observed| o.rcode == "NOERROR" && o.answer.is_empty();
    let only = |o: &Observed, t: &str| !o.answer.is_empty() && o.answer.iter().all(|r| r.split_whitespace().nth(2) == Some(t));
    if nodata(kdns) && coredns.rcode == "NXDOMAIN" {
        return Some("compat.md: an existing name asked for a type it has none of is NODATA (RFC 8020), CoreDNS says NXDOMAIN");
    }
    if question.1 == "NS" && only(kdns, "NS") && nodata(coredns) {
        return Some("compat.md: apex NS names the --ns-service; CoreDNS lists only its own pod's addresses, none outside a pod");
    }
    if kdns.rcode == "REFUSED" && coredns.rcode == "SERVFAIL" {
        return Some("compat.md: a name outside the zones is REFUSED; CoreDNS without a next plugin says SERVFAIL");
    }
    if only(kdns, "CNAME") && nodata(coredns) {
        return Some("compat.md: an ExternalName asked for a type its target lacks answers the CNAME (RFC 1034 3.6.2), CoreDNS NODATA");
    }
    None
}

#[test]
fn coredns_kubernetes_plugin_and_kdns_fed_by_the_same_api_agree() {
    let dir = TempDir::new("differential");
    let (mut asked, mut same) = (0, 0);
    let mut explained: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut unexplained = Vec::new();
    for v in vectors::load_all() {
        let objects = parse_manifests(&v.cluster);
        if !objects.iter().any(|o| o["kind"] == "EndpointSlice") && objects.iter().any(|o| o["kind"] == "Pod") {
            continue; // endpoints derived from Pods: manifest mode only (see kube_watch.rs)
        }
        let api = ApiServer::start(&v.cluster);
        let kubeconfig = dir.path(&format!("{}.kubeconfig", v.name()));
        api.write_kubeconfig(&kubeconfig);
        let mut args = v.flags();
        args.extend(["--kubeconfig".into(), kubeconfig.display().to_string()]);
        let kdns = Kdns::start(&args);
        let coredns = CoreDns::start(&format!(".:{{PORT}} {{\n    bind 127.0.0.1\n{}}}\n", kubernetes_block(&v, &kubeconfig)));
        // CoreDNS answers SERVFAIL until its informers have synced.
        let deadline = Instant::now() + Duration::from_secs(30);
        while dig(coredns.addr, "kubernetes.default.svc.cluster.local.", "A", &["+time=1", "+tries=1"]).contains("SERVFAIL") {
            assert!(Instant::now() < deadline, "CoreDNS did not sync from the test API server");
            std::thread::sleep(Duration::from_millis(50));
        }
        for q in questions(&v) {
            asked += 1;
            let ask = |server| Observed::from_dig(&dig(server, &q.0, &q.1, &["+noedns"])).unwrap_or_default();
            let (k, c) = (ask(kdns.udp), ask(coredns.addr));
            let key = |o: &Observed| {
                let (mut a, mut au) = (o.answer.clone(), o.authority.clone());
                a.sort();
                au.sort();
                (o.rcode.clone(), a, au)
            };
            if key(&k) == key(&c) {
                same += 1;
            } else if let Some(why) = documented(&q, &k, &c) {
                *explained.entry(why).or_default() += 1;
            } else {
                unexplained.push(format!("{} {} {}\n  kdns:    {} {:?} {:?}\n  CoreDNS: {} {:?} {:?}", v.name(), q.0, q.1, k.rcode, k.answer, k.authority, c.rcode, c.answer, c.authority));
            }
        }
    }
    println!("{asked} questions: {same} answered alike; documented differences: {explained:#?}");
    assert!(unexplained.is_empty(), "{} differences not in docs/compat.md:\n{}", unexplained.len(), unexplained.join("\n"));
}
