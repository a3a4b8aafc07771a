//! The real `kdns serve` over real UDP and TCP sockets, asked by dig: every conformance vector,
//! hot reload, bad input, and abuse (malformed packets, broken TCP streams).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use kdns_tests::cases::{run_case_raw_tcp, run_case_with_dig, tcp_exchange, udp_exchange};
use kdns_tests::server::{Kdns, TempDir, dig, kdns_bin};
use kdns_tests::vectors::{self, Observed};

fn start_vector(dir: &TempDir, v: &vectors::Vector, engine: &str) -> Kdns {
    let file = dir.path(&format!("{}.yaml", v.name()));
    std::fs::write(&file, &v.cluster).unwrap();
    let mut args = v.flags();
    args.extend(["--manifests".into(), file.display().to_string(), "--engine".into(), engine.into()]);
    Kdns::start(&args)
}

#[test]
fn every_vector_over_udp_and_tcp_with_dig_native_engine() {
    every_vector_over_udp_and_tcp_with_dig("native");
}

#[test]
fn every_vector_over_udp_and_tcp_with_dig_wasm_engine() {
    every_vector_over_udp_and_tcp_with_dig("wasm");
}

fn every_vector_over_udp_and_tcp_with_dig(engine: &str) {
    let dir = TempDir::new(&format!("vectors-{engine}"));
    let mut failures = Vec::new();
    let mut asked = 0;
    for v in vectors::load_all() {
        let server = start_vector(&dir, &v, engine);
        for (i, case) in v.cases.iter().enumerate() {
            let (_, rtype) = case.name_and_type();
            let transfer = matches!(rtype.to_string().as_str(), "AXFR" | "IXFR");
            let mut transports = Vec::new();
            if !case.is_tcp() {
                transports.push(false);
            }
            if case.truncated != Some(true) || case.is_tcp() {
                transports.push(true);
            }
            for tcp in transports {
                asked += 1;
                let result = if transfer { run_case_raw_tcp(server.tcp, case) } else { run_case_with_dig(server.udp, server.tcp, case, tcp) };
                if let Err(e) = result {
                    failures.push(format!("{} #{i} `{}` over {}: {e}", v.name(), case.query, if tcp { "TCP" } else { "UDP" }));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{engine} engine: {} of {asked} failed:\n{}", failures.len(), failures.join("\n"));
    println!("{asked} vector cases passed through the server with the {engine} engine (dig over UDP and TCP)");
}

const ONE_SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80}]
";

fn a_answers(server: SocketAddr, name: &str) -> Vec<String> {
    let out = dig(server, name, "A", &["+noedns"]);
    Observed::from_dig(&out).map(|o| o.answer).unwrap_or_default()
}

#[test]
fn manifest_edits_change_answers_and_broken_edits_keep_the_last_good_snapshot() {
    let dir = TempDir::new("reload");
    let file = dir.path("cluster.yaml");
    std::fs::write(&file, ONE_SERVICE).unwrap();
    let server = Kdns::start(&["--manifests".into(), dir.0.display().to_string()]);
    let name = "web.default.svc.cluster.local.";
    assert_eq!(a_answers(server.udp, name), ["web.default.svc.cluster.local. 5 A 10.96.0.20"]);

    // An edit changes the answer without a restart.
    std::fs::write(&file, ONE_SERVICE.replace("10.96.0.20", "10.96.0.21")).unwrap();
    let started = Instant::now();
    loop {
        if a_answers(server.udp, name) == ["web.default.svc.cluster.local. 5 A 10.96.0.21"] {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the edit was not applied:\n{}", server.logs().join("\n"));
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("edit visible after {:?}", started.elapsed());
    assert!(server.wait_for_log("reloaded manifests", Duration::from_secs(2)).is_some());

    // A new file in the directory is picked up.
    std::fs::write(dir.path("more.yaml"), ONE_SERVICE.replace("name: web", "name: api").replace("10.96.0.20", "10.96.0.30")).unwrap();
    let started = Instant::now();
    while a_answers(server.udp, "api.default.svc.cluster.local.").is_empty() {
        assert!(started.elapsed() < Duration::from_secs(5), "new file not picked up");
        std::thread::sleep(Duration::from_millis(10));
    }

    // A broken edit is reported with the file and the field, and the old answers stay.
    std::fs::write(&file, ONE_SERVICE.replace("10.96.0.20", "10.96.0.999")).unwrap();
    let line = server.wait_for_log("rejected", Duration::from_secs(5)).expect("the broken edit is reported");
    assert!(line.contains("cluster.yaml") && line.contains("spec.clusterIP") && line.contains("default/web"), "{line}");
    std::fs::write(&file, "kind: [unclosed\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a_answers(server.udp, name), ["web.default.svc.cluster.local. 5 A 10.96.0.21"]);
    assert_eq!(a_answers(server.udp, "api.default.svc.cluster.local."), ["api.default.svc.cluster.local. 5 A 10.96.0.30"]);
}

#[test]
fn relative_manifest_paths_are_watched_too() {
    let dir = TempDir::new("relative");
    std::fs::create_dir(dir.path("m")).unwrap();
    std::fs::write(dir.path("m/c.yaml"), ONE_SERVICE).unwrap();
    std::fs::write(dir.path("single.yaml"), ONE_SERVICE.replace("name: web", "name: one")).unwrap();
    let server = Kdns::start_in(&dir.0, &["--manifests".into(), "m".into(), "single.yaml".into()]);
    std::fs::write(dir.path("m/c.yaml"), ONE_SERVICE.replace("10.96.0.20", "10.96.0.22")).unwrap();
    std::fs::write(dir.path("single.yaml"), ONE_SERVICE.replace("name: web", "name: one").replace("10.96.0.20", "10.96.0.23")).unwrap();
    let started = Instant::now();
    while a_answers(server.udp, "web.default.svc.cluster.local.") != ["web.default.svc.cluster.local. 5 A 10.96.0.22"]
        || a_answers(server.udp, "one.default.svc.cluster.local.") != ["one.default.svc.cluster.local. 5 A 10.96.0.23"]
    {
        assert!(started.elapsed() < Duration::from_secs(5), "edits under relative paths were not applied:\n{}", server.logs().join("\n"));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_input_at_start_is_a_clear_error_and_a_non_zero_exit() {
    let dir = TempDir::new("bad");
    let cases = [
        ("badip.yaml", ONE_SERVICE.replace("10.96.0.20", "300.1.1.1"), vec!["badip.yaml", "Service default/web", "spec.clusterIP"]),
        ("badport.yaml", ONE_SERVICE.replace("port: 80", "port: 70000"), vec!["badport.yaml", "spec.ports[0].port"]),
        ("syntax.yaml", "kind: Service\n  bad: [".to_string(), vec!["syntax.yaml", "document 1"]),
        ("type.yaml", ONE_SERVICE.replace("ports: [{name: http, port: 80}]", "ports: \"eighty\""), vec!["type.yaml", "spec.ports"]),
    ];
    for (file, text, needles) in cases {
        let path = dir.path(file);
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(kdns_bin()).args(["serve", "--listen", "127.0.0.1:0", "--manifests"]).arg(&path).output().unwrap();
        assert!(!out.status.success(), "{file}: kdns must exit non-zero");
        let err = String::from_utf8_lossy(&out.stderr);
        for n in needles {
            assert!(err.contains(n), "{file}: message {err:?} lacks {n:?}");
        }
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{file}: {err}");
        std::fs::remove_file(&path).unwrap();
    }
    let out = std::process::Command::new(kdns_bin()).args(["serve", "--listen", "127.0.0.1:0", "--manifests", "/nonexistent/x.yaml"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.yaml"));
}

#[test]
fn malformed_packets_and_broken_tcp_streams_do_not_hurt_the_server() {
    let dir = TempDir::new("abuse");
    std::fs::write(dir.path("c.yaml"), ONE_SERVICE).unwrap();
    let mut server = Kdns::start(&["--manifests".into(), dir.0.display().to_string(), "--tcp-idle-timeout".into(), "2".into()]);
    let name = "web.default.svc.cluster.local.";
    let good = kdns_tests::vectors::query_message(0x4242, name, "A", None);

    // Thousands of malformed datagrams: random bytes, truncated queries, bit flips.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..5000 {
        let packet: Vec<u8> = match i % 3 {
            0 => (0..(next() % 600) as usize).map(|_| next() as u8).collect(),
            1 => good[..(next() as usize % good.len())].to_vec(),
            _ => {
                let mut p = good.clone();
                let at = next() as usize % p.len();
                p[at] ^= 1 << (next() % 8);
                p
            }
        };
        let _ = sock.send_to(&packet, server.udp);
    }
    // Broken TCP streams: garbage lengths, half a message then close, silence, garbage.
    let mut idle = Vec::new();
    for i in 0..200 {
        let Ok(mut s) = TcpStream::connect(server.tcp) else { continue };
        let _ = match i % 4 {
            0 => s.write_all(&[0xff, 0xff, 1, 2, 3]),
            1 => s.write_all(&[(good.len() >> 8) as u8, good.len() as u8, good[0], good[1]]),
            2 => s.write_all(&[0, 0]),
            _ => s.write_all(&[0, 5, 1, 2, 3, 4, 5]),
        };
        if i % 10 == 0 {
            idle.push(s); // keep some half-open
        }
    }
    // A slow client holding a connection does not stall others: valid queries still answer.
    let resp = udp_exchange(server.udp, &good).expect("UDP still answers");
    assert!(Observed::from_message(&hickory_proto::op::Message::from_vec(&resp).unwrap()).answer.len() == 1);
    let resp = tcp_exchange(server.tcp, &good).expect("TCP still answers");
    assert!(Observed::from_message(&hickory_proto::op::Message::from_vec(&resp).unwrap()).answer.len() == 1);
    assert_eq!(a_answers(server.udp, name).len(), 1);
    assert!(server.is_running());
    assert!(!server.logs().iter().any(|l| l.contains("panicked")));

    // Pipelined queries on one connection are all answered, in order.
    let mut s = TcpStream::connect(server.tcp).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut batch = Vec::new();
    for id in 0..20u16 {
        let q = kdns_tests::vectors::query_message(id, name, "A", None);
        batch.extend_from_slice(&(q.len() as u16).to_be_bytes());
        batch.extend_from_slice(&q);
    }
    s.write_all(&batch).unwrap();
    for id in 0..20u16 {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), id);
    }

    // Idle connections are closed by the server after the idle timeout.
    let mut quiet = TcpStream::connect(server.tcp).unwrap();
    quiet.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let started = Instant::now();
    let mut b = [0u8; 1];
    assert_eq!(quiet.read(&mut b).unwrap_or(0), 0, "closed, not answered");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(idle);

    let status = server.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}

/// Exports the zones of `paths` and asks the server for every record over TCP with dig.
fn every_exported_record_is_served(paths: &[std::path::PathBuf], origins: &[&str]) -> usize {
    let mut args: Vec<String> = vec!["--manifests".into()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let server = Kdns::start(&args);
    let mut checked = 0;
    for origin in origins {
        let zone = std::process::Command::new(kdns_bin()).arg("export-zone").args(&args).args(["--origin", origin]).output().unwrap();
        assert!(zone.status.success(), "{}", String::from_utf8_lossy(&zone.stderr));
        let zone = String::from_utf8_lossy(&zone.stdout).into_owned();
        for line in zone.lines().filter(|l| !l.starts_with(';') && !l.starts_with('$')) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f[3] == "SOA" {
                continue;
            }
            let out = dig(server.tcp, f[0], f[3], &["+tcp", "+noedns"]);
            let seen = Observed::from_dig(&out).unwrap();
            assert!(seen.answer.contains(&vectors::canonical_text(line)), "{line} not answered:\n{out}");
            checked += 1;
        }
    }
    checked
}

#[test]
fn the_example_cluster_answers_every_name() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let checked = every_exported_record_is_served(&[examples], &["cluster.local", "in-addr.arpa", "ip6.arpa"]);
    assert!(checked >= 20, "only {checked} records");
}

#[test]
fn kdns_query_prints_like_dig_and_export_zone_matches_the_server() {
    let dir = TempDir::new("query");
    let v = vectors::load_all().into_iter().find(|v| v.name() == "clusterip").unwrap();
    let file = dir.path("c.yaml");
    std::fs::write(&file, &v.cluster).unwrap();
    let out = std::process::Command::new(kdns_bin()).args(["query", "--manifests"]).arg(&file).args(["_http._tcp.catalog.shop.svc.cluster.local", "SRV"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let seen = Observed::from_dig(&text).unwrap();
    assert_eq!(seen.rcode, "NOERROR");
    assert_eq!(seen.answer, ["_http._tcp.catalog.shop.svc.cluster.local. 5 SRV 0 100 80 catalog.shop.svc.cluster.local."]);
    assert_eq!(seen.additional, ["catalog.shop.svc.cluster.local. 5 A 10.96.12.34"]);
    let nx = std::process::Command::new(kdns_bin()).args(["query", "--manifests"]).arg(&file).arg("nope.shop.svc.cluster.local").output().unwrap();
    assert!(nx.status.success());
    assert!(String::from_utf8_lossy(&nx.stdout).contains("status: NXDOMAIN"));

    // Every record of the exported zone is what the server answers for that name and type.
    let checked = every_exported_record_is_served(&[file], &["cluster.local", "in-addr.arpa"]);
    assert!(checked >= 15, "only {checked} records");
}

/// A headless Service with 150 ready endpoints (`many`, 10.244.10.1-150) and one with 18
/// named endpoints (`srv`, host-N at 10.2.0.N), whose SRV answer fits 1232 bytes with only
/// half of its address records.
fn truncation_cluster() -> String {
    let headless = |name: &str, eps: String| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  clusterIP: None\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata:\n  name: {name}-abc12\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 80, protocol: TCP}}]\nendpoints:\n{eps}---\n"
        )
    };
    let many: String = (1..=150).map(|i| format!("- {{addresses: [10.244.10.{i}], conditions: {{ready: true}}}}\n")).collect();
    let srv: String = (1..=18).map(|i| format!("- {{addresses: [10.2.0.{i}], hostname: host-{i}, conditions: {{ready: true}}}}\n")).collect();
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: default}}\n---\n{}{}", headless("many", many), headless("srv", srv))
}

#[test]
fn a_150_endpoint_headless_service_over_udp_gets_the_records_that_fit_and_tc() {
    let dir = TempDir::new("truncation");
    std::fs::write(dir.path("cluster.yaml"), truncation_cluster()).unwrap();
    let many = "many.default.svc.cluster.local.";
    let srv = "srv.default.svc.cluster.local.";
    let ask = |server: &Kdns, name: &str, rtype: &str, extra: &[&str]| {
        let out = dig(server.udp, name, rtype, extra);
        Observed::from_dig(&out).unwrap_or_else(|e| panic!("{name} {rtype} {extra:?}: {e}"))
    };
    let tc = |o: &Observed| o.flags.iter().any(|f| f == "tc");
    for engine in ["native", "wasm"] {
        for mode in ["fill", "coredns"] {
            let mut args = vec!["--manifests".to_string(), dir.0.display().to_string(), "--engine".into(), engine.into()];
            if mode == "coredns" {
                args.extend(["--truncation".into(), mode.into()]);
            }
            let server = Kdns::start(&args);
            let what = format!("{engine} engine, --truncation {mode}");
            // 512 bytes: 12 (header) + 36 (question) + 29 * 16 (A records pointing at the
            // question). 1232 with EDNS: 11 more for the OPT, room for 73. CoreDNS answers the same.
            let plain = ask(&server, many, "A", &["+ignore", "+noedns"]);
            assert_eq!((plain.rcode.as_str(), plain.answer.len(), tc(&plain)), ("NOERROR", 29, true), "{what}: {plain:?}");
            let edns = ask(&server, many, "A", &["+ignore", "+bufsize=1232"]);
            assert_eq!((edns.rcode.as_str(), edns.answer.len(), tc(&edns)), ("NOERROR", 73, true), "{what}: {edns:?}");
            // Whole records, all of them the service's.
            for rec in plain.answer.iter().chain(&edns.answer) {
                assert!(rec.starts_with("many.default.svc.cluster.local. 5 A 10.244.10."), "{what}: {rec}");
            }
            let tcp = ask(&server, many, "A", &["+tcp"]);
            assert_eq!((tcp.answer.len(), tc(&tcp)), (150, false), "{what}");
            // Every SRV record fits, half of the glue does: TC only in coredns mode.
            let srv_udp = ask(&server, srv, "SRV", &["+ignore", "+bufsize=1232"]);
            assert_eq!((srv_udp.answer.len(), srv_udp.additional.len()), (18, 9), "{what}: {srv_udp:?}");
            assert_eq!(tc(&srv_udp), mode == "coredns", "{what}: {srv_udp:?}");
            let srv_tcp = ask(&server, srv, "SRV", &["+tcp"]);
            assert_eq!((srv_tcp.answer.len(), srv_tcp.additional.len(), tc(&srv_tcp)), (18, 18, false), "{what}");
        }
    }
}
