//! The wasm engine against the native one, byte for byte, and its behaviour when a module
//! traps, loops, or speaks another ABI.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use kdns_host::engine::wasm::EMBEDDED_MODULE;
use kdns_host::engine::{Engine, NativeEngine, WasmEngine, WasmLimits};
use kdns_proto::v1;
use kdns_tests::server::{Kdns, TempDir, kdns_bin};
use kdns_tests::vectors;

fn engines(config: v1::Config) -> (NativeEngine, WasmEngine) {
    let limits = WasmLimits { instances: 2, ..Default::default() };
    (NativeEngine::new(config.clone()).unwrap(), WasmEngine::new(EMBEDDED_MODULE, config, limits).unwrap())
}

/// The embedded module compiled without interruption checks (`--wasm-no-timeouts`).
fn wasm_without_timeouts(config: v1::Config) -> WasmEngine {
    WasmEngine::new(EMBEDDED_MODULE, config, WasmLimits { instances: 1, timeouts: false, ..Default::default() }).unwrap()
}

#[test]
fn every_vector_is_byte_identical_across_engines() {
    let mut compared = 0;
    for v in vectors::load_all() {
        let (native, wasm) = engines(v.config());
        native.load(v.snapshot()).unwrap();
        wasm.load(v.snapshot()).unwrap();
        for (i, case) in v.cases.iter().enumerate() {
            for max_udp in [0, 512, 1232] {
                let q = case.message(i as u16);
                assert_eq!(native.resolve(&q, max_udp), wasm.resolve(&q, max_udp), "{} #{i} {} (max_udp {max_udp})", v.name(), case.query);
                compared += 1;
            }
        }
    }
    println!("{compared} responses identical");
}

/// xorshift64*: a seeded generator, so a failure names the seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const NAMES: [&str; 8] = ["web", "db", "api", "cache", "kube-dns", "a", "x-1", "search"];
const NAMESPACES: [&str; 4] = ["default", "shop", "kube-system", "data"];

fn random_ip(rng: &mut Rng) -> Vec<u8> {
    if rng.below(4) == 0 {
        let mut v6 = vec![0xfd, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        v6[15] = rng.below(8) as u8;
        v6[14] = rng.below(3) as u8;
        v6
    } else {
        vec![10, rng.below(3) as u8 + 96, rng.below(4) as u8, rng.below(12) as u8]
    }
}

fn random_cluster(rng: &mut Rng) -> v1::Snapshot {
    let port = |rng: &mut Rng| v1::Port { name: (*rng.pick(&["http", "", "dns", "pg"])).into(), protocol: rng.below(3) as i32, port: rng.below(70000) as u32 % 65536 };
    let mut services = Vec::new();
    for _ in 0..rng.below(12) {
        let kind = rng.below(3) as i32;
        let mut svc = v1::Service {
            namespace: (*rng.pick(&NAMESPACES)).into(),
            name: (*rng.pick(&NAMES)).into(),
            r#type: kind,
            publish_not_ready_addresses: rng.below(5) == 0,
            ..Default::default()
        };
        if kind == 0 {
            svc.cluster_ips = (0..rng.below(3)).map(|_| random_ip(rng)).collect();
        }
        if kind == 2 {
            svc.external_name = (*rng.pick(&["example.com", "web.default.svc.cluster.local", "db.shop.svc.cluster.local.", "1.2.3.4"])).into();
        }
        svc.ports = (0..rng.below(3)).map(|_| port(rng)).collect();
        for _ in 0..rng.below(3) {
            let endpoints = (0..rng.below(6))
                .map(|_| v1::Endpoint {
                    address: random_ip(rng),
                    hostname: (*rng.pick(&["", "", "db-0", "db-1", "Host"])).into(),
                    pod_name: (*rng.pick(&["", "pod-a", "pod-b"])).into(),
                    ready: rng.below(4) != 0,
                    ..Default::default()
                })
                .collect();
            svc.endpoint_groups.push(v1::EndpointGroup { ports: (0..rng.below(3)).map(|_| port(rng)).collect(), endpoints });
        }
        services.push(svc);
    }
    let pods = (0..rng.below(5)).map(|i| v1::Pod { namespace: (*rng.pick(&NAMESPACES)).into(), name: format!("p{i}"), ips: vec![random_ip(rng)] }).collect();
    v1::Snapshot { serial: rng.below(1 << 31) as u32, namespaces: vec![(*rng.pick(&NAMESPACES)).into()], services, pods }
}

fn random_query(rng: &mut Rng, snapshot: &v1::Snapshot) -> Vec<u8> {
    let mut labels: Vec<String> = Vec::new();
    let svc = snapshot.services.get(rng.below(snapshot.services.len().max(1) as u64) as usize);
    match rng.below(8) {
        0 => labels.extend(["cluster", "local"].map(String::from)),
        1 => {
            let ip = random_ip(rng);
            if ip.len() == 4 {
                labels.extend(ip.iter().rev().map(|b| b.to_string()));
                labels.extend(["in-addr", "arpa"].map(String::from));
            } else {
                for b in ip.iter().rev() {
                    labels.push(format!("{:x}", b & 0xf));
                    labels.push(format!("{:x}", b >> 4));
                }
                labels.extend(["ip6", "arpa"].map(String::from));
            }
        }
        2 => {
            let &ns = rng.pick(&NAMESPACES);
            labels.extend(["10-96-1-2", ns, "pod", "cluster", "local"].map(String::from))
        }
        3 => labels.extend(["www", "example", "com"].map(String::from)),
        _ => {
            if let Some(s) = svc {
                match rng.below(4) {
                    0 => labels.push((*rng.pick(&["db-0", "db-1", "host", "pod-a", "10-96-0-1", "fd00-10--1"])).into()),
                    1 => labels.extend([format!("_{}", rng.pick(&["http", "dns", "pg", ""])), format!("_{}", rng.pick(&["tcp", "udp", "sctp"]))]),
                    _ => {}
                }
                labels.extend([s.name.clone(), s.namespace.clone(), "svc".into(), "cluster".into(), "local".into()]);
            } else {
                labels.extend(["svc", "cluster", "local"].map(String::from));
            }
        }
    }
    // Random case: matching is case-insensitive and the answer keeps the question's case.
    let name: String = labels.join(".").chars().map(|c| if rng.below(3) == 0 { c.to_ascii_uppercase() } else { c }).collect();
    let rtype = *rng.pick(&["A", "AAAA", "SRV", "PTR", "TXT", "CNAME", "NS", "SOA", "ANY", "MX", "AXFR"]);
    let edns = match rng.below(3) {
        0 => None,
        1 => Some(512),
        _ => Some(4096),
    };
    let mut q = vectors::query_message(rng.below(65536) as u16, &format!("{name}."), rtype, edns);
    // Now and then, damage it.
    match rng.below(10) {
        0 => q.truncate(rng.below(q.len() as u64) as usize),
        1 => {
            let at = rng.below(q.len() as u64) as usize;
            q[at] ^= 1 << rng.below(8);
        }
        2 => q = (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        _ => {}
    }
    q
}

#[test]
fn random_clusters_and_queries_are_byte_identical_across_engines() {
    let seed = std::env::var("KDNS_DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6b646e73u64);
    let mut rng = Rng(seed);
    let config = v1::Config { pod_mode: 2, ..Default::default() };
    let (native, wasm) = engines(config.clone());
    let fast = wasm_without_timeouts(config);
    let mut compared = 0;
    for round in 0..150 {
        let snapshot = random_cluster(&mut rng);
        let a = native.load(snapshot.clone());
        let b = wasm.load(snapshot.clone());
        let c = fast.load(snapshot.clone());
        assert_eq!(a.is_ok(), b.is_ok(), "seed {seed} round {round}: load accepted by one engine only");
        assert_eq!(a.is_ok(), c.is_ok(), "seed {seed} round {round}: load accepted by one engine only (no timeouts)");
        for _ in 0..150 {
            let q = random_query(&mut rng, &snapshot);
            let max_udp = *rng.pick(&[0u16, 512, 1232]);
            let (x, y, z) = (native.resolve(&q, max_udp), wasm.resolve(&q, max_udp), fast.resolve(&q, max_udp));
            assert_eq!(x, y, "seed {seed} round {round}: query {q:02x?} max_udp {max_udp}");
            assert_eq!(x, z, "seed {seed} round {round}: query {q:02x?} max_udp {max_udp} (no timeouts)");
            compared += 1;
        }
    }
    assert_eq!(wasm.traps.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(fast.traps.load(std::sync::atomic::Ordering::Relaxed), 0);
    println!("{compared} random queries identical (seed {seed})");
}

/// A module that answers by echoing the query as a response, traps when the ID starts with
/// 0xde, and loops forever when it starts with 0xad.
const MISBEHAVING_MODULE: &str = r#"
(module
  (memory (export "memory") 2)
  (func (export "kdns_abi_version") (result i32) i32.const ABI)
  (func (export "kdns_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "kdns_free") (param i32 i32))
  (func (export "kdns_configure") (param i32 i32) (result i32) i32.const 0)
  (func (export "kdns_load") (param i32 i32) (result i32) i32.const 0)
  (func (export "kdns_apply") (param i32 i32) (result i32) i32.const 0)
  (func (export "kdns_resolve") (param $p i32) (param $n i32) (param $max i32) (result i64)
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 0xde)) (then unreachable))
    (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 0xad)) (then (loop $forever (br $forever))))
    ;; set QR
    (i32.store8 (i32.add (local.get $p) (i32.const 2))
      (i32.or (i32.load8_u (i32.add (local.get $p) (i32.const 2))) (i32.const 0x80)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $n))))
)
"#;

fn ask(addr: SocketAddr, q: &[u8]) -> Vec<u8> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.send_to(q, addr).unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).expect("an answer");
    buf.truncate(n);
    buf
}

#[test]
fn a_trapping_or_looping_module_fails_only_the_affected_query() {
    let dir = TempDir::new("trap");
    let module = dir.path("misbehaving.wat");
    std::fs::write(&module, MISBEHAVING_MODULE.replace("ABI", "1")).unwrap();
    std::fs::write(dir.path("c.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n").unwrap();
    let mut server = Kdns::start(&["--manifests".into(), dir.path("c.yaml").display().to_string(), "--plugin".into(), module.display().to_string()]);
    let query = |id: u16| vectors::query_message(id, "web.default.svc.cluster.local.", "A", None);
    let rcode = |resp: &[u8]| resp[3] & 0x0f;

    assert_eq!(rcode(&ask(server.udp, &query(0x0101))), 0, "a normal query is echoed");
    for round in 0..3 {
        let trap = ask(server.udp, &query(0xde00 + round));
        assert_eq!(rcode(&trap), 2, "a trap answers SERVFAIL");
        assert_eq!(&trap[..2], &[0xde, round as u8]);
        let started = Instant::now();
        let spin = ask(server.udp, &query(0xad00 + round));
        assert_eq!(rcode(&spin), 2, "a query that never ends answers SERVFAIL");
        assert!(started.elapsed() < Duration::from_secs(2), "interrupted in {:?}", started.elapsed());
        assert_eq!(rcode(&ask(server.udp, &query(0x0202))), 0, "the next query is answered again");
    }
    assert!(server.is_running());
    assert!(server.logs().iter().any(|l| l.contains("trapped")));
}

#[test]
fn without_timeouts_a_trap_still_fails_only_its_query() {
    let dir = TempDir::new("trap-no-timeouts");
    let module = dir.path("misbehaving.wat");
    std::fs::write(&module, MISBEHAVING_MODULE.replace("ABI", "1")).unwrap();
    let cluster = dir.path("c.yaml");
    std::fs::write(&cluster, "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n").unwrap();
    let mut server = Kdns::start(&["--manifests".into(), cluster.display().to_string(), "--plugin".into(), module.display().to_string(), "--wasm-no-timeouts".into()]);
    let query = |id: u16| vectors::query_message(id, "web.default.svc.cluster.local.", "A", None);
    let rcode = |resp: &[u8]| resp[3] & 0x0f;
    assert_eq!(rcode(&ask(server.udp, &query(0x0101))), 0, "a normal query is echoed");
    assert_eq!(rcode(&ask(server.udp, &query(0xde01))), 2, "a trap answers SERVFAIL");
    assert_eq!(rcode(&ask(server.udp, &query(0x0202))), 0, "the next query is answered again");
    assert!(server.is_running());

    // The option belongs to the wasm engine; with the native one it is a mistake, said so.
    let out = std::process::Command::new(kdns_bin()).args(["serve", "--listen", "127.0.0.1:0", "--wasm-no-timeouts", "--manifests"]).arg(&cluster).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--engine wasm"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_module_of_another_abi_version_is_a_clear_error_at_start() {
    let dir = TempDir::new("abi");
    let module = dir.path("v2.wat");
    std::fs::write(&module, MISBEHAVING_MODULE.replace("ABI", "2")).unwrap();
    std::fs::write(dir.path("c.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n").unwrap();
    let out = std::process::Command::new(kdns_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--manifests"])
        .arg(dir.path("c.yaml"))
        .arg("--plugin")
        .arg(&module)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ABI version 2") && err.contains("v2.wat"), "{err}");
    let garbage = dir.path("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0garbage").unwrap();
    let out = std::process::Command::new(kdns_bin()).args(["serve", "--listen", "127.0.0.1:0", "--manifests"]).arg(dir.path("c.yaml")).arg("--plugin").arg(&garbage).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("garbage.wasm"));
}

#[test]
fn a_changed_plugin_file_is_swapped_in_without_dropping_queries() {
    let dir = TempDir::new("swap");
    let module = dir.path("plugin.wat");
    std::fs::write(&module, MISBEHAVING_MODULE.replace("ABI", "1")).unwrap();
    std::fs::write(dir.path("c.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n").unwrap();
    let server = Kdns::start(&["--manifests".into(), dir.path("c.yaml").display().to_string(), "--plugin".into(), module.display().to_string()]);
    let query = vectors::query_message(0x0303, "web.default.svc.cluster.local.", "A", None);
    // The echoing module answers NOERROR; the real core answers NXDOMAIN (no such service).
    assert_eq!(ask(server.udp, &query)[3] & 0x0f, 0);

    // Ask continuously while the module is replaced; every query must be answered.
    let addr = server.udp;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asker = {
        let (stop, query) = (stop.clone(), query.clone());
        std::thread::spawn(move || {
            let mut rcodes = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                rcodes.push(ask(addr, &query)[3] & 0x0f);
            }
            rcodes
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let tmp = dir.path("plugin.wat.new");
    std::fs::write(&tmp, EMBEDDED_MODULE).unwrap();
    std::fs::rename(&tmp, &module).unwrap();
    assert!(server.wait_for_log("swapped in", Duration::from_secs(20)).is_some(), "{}", server.logs().join("\n"));
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rcodes = asker.join().expect("no query went unanswered");
    assert!(rcodes.first() == Some(&0) && rcodes.last() == Some(&3), "old module first, new one last: {rcodes:?}");
    assert!(rcodes.iter().all(|r| *r == 0 || *r == 3), "only old or new answers: {rcodes:?}");

    // A module of another ABI is rejected and the current one keeps serving.
    std::fs::write(&module, MISBEHAVING_MODULE.replace("ABI", "2")).unwrap();
    assert!(server.wait_for_log("rejected", Duration::from_secs(20)).is_some());
    assert_eq!(ask(server.udp, &query)[3] & 0x0f, 3);
}
