//! kdns with CoreDNS (built from its Go module by tests/setup), asked with dig:
//! - behind a stock CoreDNS: the `grpc` plugin forwards every name to `kdns serve --grpc-listen`;
//! - inside CoreDNS: the kdns plugin (plugin-wasm/coredns) runs the kdns wasm module with
//!   wazero, fed by the snapshot stream of `kdns serve --grpc-listen`.

use std::time::{Duration, Instant};

use kdns_tests::cases::{run_case_raw_tcp, run_case_with_dig};
use kdns_tests::server::{CoreDns, Kdns, TempDir, coredns_kdns_bin, dig, plugin_wasm};
use kdns_tests::vectors::{self, Observed};

#[test]
fn every_vector_through_stock_coredns_grpc() {
    let dir = TempDir::new("coredns-grpc");
    let mut failures = Vec::new();
    let mut asked = 0;
    for v in vectors::load_all() {
        let file = dir.path(&format!("{}.yaml", v.name()));
        std::fs::write(&file, &v.cluster).unwrap();
        let mut args = v.flags();
        args.extend(["--manifests".into(), file.display().to_string(), "--grpc-listen".into(), "127.0.0.1:0".into()]);
        let kdns = Kdns::start(&args);
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
        let file = dir.path(&format!("{}.yaml", v.name()));
        std::fs::write(&file, &v.cluster).unwrap();
        let mut args = v.flags();
        args.extend(["--manifests".into(), file.display().to_string(), "--grpc-listen".into(), "127.0.0.1:0".into()]);
        let kdns = Kdns::start(&args);
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
