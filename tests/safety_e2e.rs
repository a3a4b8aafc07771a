//! What could take cluster DNS down, through the real binary: a dead or looping upstream, a
//! stop that drops queries, a signal that kills it, a socket that misses a family.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kdns_tests::server::{Kdns, TempDir, dig, free_port, http_get, metric};
use kdns_tests::vectors::Observed;

fn examples() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples").display().to_string()
}

/// A query message for `name` (type A, RD set) with `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// A field of /proc/PID/status in kB (VmRSS, VmHWM).
fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap()
}

fn signal(server: &Kdns, sig: &str) {
    assert!(Command::new("kill").args([&format!("-{sig}"), &server.pid().to_string()]).status().unwrap().success());
}

/// Before: a blackholed upstream at 2.9k queries/s took kdns from 13 to 402 MB in 5 s (every
/// query waiting 2 s with a 64 KiB buffer), one WARN per query. Now: at most
/// --upstream-max-concurrent wait, the rest are REFUSED at once, the upstream is reported once.
#[test]
fn a_blackholed_upstream_at_5k_qps_keeps_memory_bounded_and_cluster_names_answered() {
    // An upstream that takes every query and never answers.
    let hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        hole.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let _ = hole.recv_from(&mut buf);
            }
        });
    }
    let server = Kdns::start(&["--manifests".into(), examples(), "--upstream".into(), hole_addr.to_string(), "--http-listen".into(), "127.0.0.1:0".into()]);
    let rss_before = proc_status_kb(server.pid(), "VmRSS");

    // 5,000 queries/s of distinct names outside the zones, for 5 s, from four sockets.
    let (sent, answered, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let senders: Vec<_> = (0..4u16)
        .map(|t| {
            let (sent, answered, refused, target) = (sent.clone(), answered.clone(), refused.clone(), server.udp);
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                let reader = socket.try_clone().unwrap();
                reader.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                let done = Arc::new(AtomicBool::new(false));
                let receiving = {
                    let done = done.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        while !done.load(Ordering::Relaxed) {
                            if let Ok(n) = reader.recv(&mut buf)
                                && n >= 12
                            {
                                answered.fetch_add(1, Ordering::Relaxed);
                                if buf[3] & 0x0f == 5 {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    })
                };
                let start = Instant::now();
                let mut i: u32 = 0;
                // 1,250 queries/s per socket: 25 every 20 ms.
                while start.elapsed() < Duration::from_secs(5) {
                    for _ in 0..25 {
                        let name = format!("n{t}x{i}.blackholed.example.");
                        let _ = socket.send_to(&query(i as u16, &name), target);
                        sent.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    let next = start + Duration::from_millis(20) * (i / 25);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                std::thread::sleep(Duration::from_millis(300));
                done.store(true, Ordering::Relaxed);
                receiving.join().unwrap();
            })
        })
        .collect();
    // Cluster names are answered while the upstream swallows everything.
    std::thread::sleep(Duration::from_secs(2));
    let during = Instant::now();
    let out = dig(server.udp, "catalog.shop.svc.cluster.local.", "A", &["+noedns", "+tries=1", "+time=1"]);
    assert!(out.contains("status: NOERROR") && out.contains("10.96.12.34"), "{out}");
    assert!(during.elapsed() < Duration::from_millis(900), "cluster answer took {:?}", during.elapsed());
    for s in senders {
        s.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let peak_mb = proc_status_kb(server.pid(), "VmHWM") as f64 / 1024.0;
    let (sent, answered, refused) = (sent.load(Ordering::Relaxed), answered.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    eprintln!("blackholed upstream: sent {sent}, answered {answered} ({refused} REFUSED), RSS before {:.1} MB, peak {peak_mb:.1} MB", rss_before as f64 / 1024.0);
    assert!(sent >= 20_000, "the load generator fell short: {sent}");
    assert!(peak_mb < 64.0, "peak resident memory {peak_mb:.1} MB");
    assert!(refused > sent / 2, "beyond max_concurrent queries are refused at once: {refused} of {sent}");
    let (_, text) = http_get(server.http.unwrap(), "/metrics");
    assert!(metric(&text, "kdns_forward_max_concurrent_rejects_total", &[]).unwrap() > 0.0);
    // One line when the upstream starts failing (and a reminder every 30 s), not one per query.
    let lines = server.logs().iter().filter(|l| l.contains("upstream") && l.contains(&hole_addr.to_string())).count();
    assert!((1..=2).contains(&lines), "{lines} log lines about the upstream:\n{}", server.logs().join("\n"));
}

/// Before: an upstream pointing back at kdns turned one query into 64,305 requests in 10 s.
/// Now the loop probe finds it at start, forwarding is turned off with one clear line, and a
/// query that comes round again waits for the first instead of being sent on.
#[test]
fn an_upstream_that_points_back_at_kdns_is_detected_and_does_not_multiply_queries() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = Kdns::start_on(&listen, &["--manifests".into(), examples(), "--upstream".into(), listen.clone(), "--http-listen".into(), "127.0.0.1:0".into()]);
    let line = server.wait_for_log("forwarding loop detected", Duration::from_secs(5)).expect("the loop is reported");
    assert!(line.contains(&listen), "{line}");
    let out = dig(server.udp, "www.example.com.", "A", &["+noedns", "+tries=1", "+time=3"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    // Cluster names are unaffected.
    assert!(dig(server.udp, "catalog.shop.svc.cluster.local.", "A", &["+noedns"]).contains("10.96.12.34"));
    std::thread::sleep(Duration::from_secs(2));
    let (_, text) = http_get(server.http.unwrap(), "/metrics");
    let outside = metric(&text, "kdns_dns_requests_total", &["zone=\".\""]).unwrap_or(0.0);
    assert!(outside <= 3.0, "requests for names outside the zones: {outside} (the probe's return and the one query)");
    assert_eq!(metric(&text, "kdns_forward_loop_detected", &[]), Some(1.0));
}

/// The same question already waiting on an upstream is not sent again: later askers wait for
/// its answer. This is what keeps a loop the probe did not see (one that starts later) from
/// multiplying, and a slow upstream from being asked the same name a thousand times.
#[test]
fn a_question_already_waiting_upstream_is_not_sent_again() {
    // An upstream that counts what it receives and never answers.
    let hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    {
        let received = received.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while hole.recv_from(&mut buf).is_ok() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let server = Kdns::start(&["--manifests".into(), examples(), "--upstream".into(), hole_addr.to_string()]);
    std::thread::sleep(Duration::from_millis(300));
    let probes = received.load(Ordering::Relaxed);
    assert_eq!(probes, 1, "the loop probe");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for id in 0..50 {
        client.send_to(&query(id, "same.example.org."), server.udp).unwrap();
    }
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut servfails = 0;
    let mut buf = [0u8; 512];
    while servfails < 50 {
        let Ok(n) = client.recv(&mut buf) else { break };
        if n >= 12 && buf[3] & 0x0f == 2 {
            servfails += 1;
        }
    }
    assert_eq!(servfails, 50, "every asker gets the (failed) outcome of the one query");
    assert_eq!(received.load(Ordering::Relaxed) - probes, 1, "one question sent upstream for fifty askers");
}

#[test]
fn upstream_answers_are_cached_for_their_ttl() {
    let dir = TempDir::new("cache");
    std::fs::write(dir.path("up.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: www, namespace: web}\nspec: {clusterIP: 10.50.0.1}\n").unwrap();
    let upstream = Kdns::start(&["--manifests".into(), dir.path("up.yaml").display().to_string(), "--zone".into(), "example.com".into(), "--ttl".into(), "20".into(), "--http-listen".into(), "127.0.0.1:0".into()]);
    let server = Kdns::start(&["--manifests".into(), examples(), "--upstream".into(), upstream.udp.to_string(), "--http-listen".into(), "127.0.0.1:0".into()]);
    let ask = || Observed::from_dig(&dig(server.udp, "www.web.svc.example.com.", "A", &["+noedns"])).unwrap();
    assert_eq!(ask().answer, ["www.web.svc.example.com. 20 A 10.50.0.1"]);
    std::thread::sleep(Duration::from_millis(2100));
    let again = ask();
    let ttl: u32 = again.answer[0].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((16..=18).contains(&ttl), "the cached TTL counts down: {again:?}");
    let up = metric(&http_get(upstream.http.unwrap(), "/metrics").1, "kdns_dns_requests_total", &["zone=\"example.com.\""]).unwrap();
    assert_eq!(up, 1.0, "the second question was answered from the cache");
    let (_, text) = http_get(server.http.unwrap(), "/metrics");
    assert_eq!(metric(&text, "kdns_cache_hits_total", &[]), Some(1.0));

    // --upstream-cache-ttl 0: every question goes upstream.
    let uncached = Kdns::start(&["--manifests".into(), examples(), "--upstream".into(), upstream.udp.to_string(), "--upstream-cache-ttl".into(), "0".into()]);
    for _ in 0..2 {
        assert!(dig(uncached.udp, "www.web.svc.example.com.", "A", &["+noedns"]).contains("10.50.0.1"));
    }
    let up = metric(&http_get(upstream.http.unwrap(), "/metrics").1, "kdns_dns_requests_total", &["zone=\"example.com.\""]).unwrap();
    assert_eq!(up, 3.0);
}

/// Before: SIGTERM exited within a millisecond and /ready never said 503, so queries the
/// Service still sent were lost. Now: lameduck, as CoreDNS's health plugin does.
#[test]
fn sigterm_starts_a_lameduck_period_with_ready_503_and_answers_still_served() {
    let server = Kdns::start(&["--manifests".into(), examples(), "--http-listen".into(), "127.0.0.1:0".into(), "--lameduck".into(), "2".into()]);
    let http = server.http.unwrap();
    assert_eq!(http_get(http, "/ready").0, 200);
    let stopped = Instant::now();
    signal(&server, "TERM");
    server.wait_for_log("lameduck", Duration::from_secs(2)).expect("lameduck logged");
    assert_eq!(http_get(http, "/ready"), (503, "shutting down".into()));
    assert_eq!(http_get(http, "/health").0, 200, "still alive: the liveness probe must not restart it");
    let out = dig(server.udp, "catalog.shop.svc.cluster.local.", "A", &["+noedns"]);
    assert!(out.contains("10.96.12.34"), "still answering during lameduck: {out}");
    let out = dig(server.tcp, "catalog.shop.svc.cluster.local.", "A", &["+tcp", "+noedns"]);
    assert!(out.contains("10.96.12.34"), "TCP too: {out}");
    let status = server.wait_for_exit(Duration::from_secs(10));
    let took = stopped.elapsed();
    assert!(status.success(), "{status}");
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(5), "exited after {took:?}");

    // A second SIGTERM cuts the lameduck short; --lameduck 0 exits at once.
    let server = Kdns::start(&["--manifests".into(), examples(), "--lameduck".into(), "30".into()]);
    let stopped = Instant::now();
    signal(&server, "TERM");
    server.wait_for_log("lameduck", Duration::from_secs(2)).unwrap();
    signal(&server, "TERM");
    assert!(server.wait_for_exit(Duration::from_secs(10)).success());
    assert!(stopped.elapsed() < Duration::from_secs(3));
    let server = Kdns::start(&["--manifests".into(), examples(), "--lameduck".into(), "0".into()]);
    let stopped = Instant::now();
    assert!(server.terminate().success());
    assert!(stopped.elapsed() < Duration::from_secs(2));
}

/// Before: SIGHUP and SIGUSR1 killed the process without a word, and an edited --config was
/// never read again. Now SIGHUP reloads what can change live and refuses the rest.
#[test]
fn sighup_reloads_the_config_and_other_signals_do_not_kill() {
    let dir = TempDir::new("sighup");
    let corefile = dir.path("Corefile");
    std::fs::write(&corefile, ".:53 {\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        ttl 7\n    }\n}\n").unwrap();
    let mut server = Kdns::start(&["--manifests".into(), examples(), "--config".into(), corefile.display().to_string()]);
    let ttl = |server: &Kdns| Observed::from_dig(&dig(server.udp, "catalog.shop.svc.cluster.local.", "A", &["+noedns"])).unwrap().answer[0].split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(ttl(&server), "7");

    for sig in ["USR1", "USR2"] {
        signal(&server, sig);
        server.wait_for_log(&format!("SIG{sig} ignored"), Duration::from_secs(2)).expect("logged");
    }
    assert!(server.is_running());

    std::fs::write(&corefile, ".:53 {\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        ttl 30\n    }\n}\n").unwrap();
    signal(&server, "HUP");
    server.wait_for_log("SIGHUP: config reloaded", Duration::from_secs(3)).expect("reloaded");
    assert_eq!(ttl(&server), "30");

    // A change that needs a restart (the zones) is refused whole: the TTL change with it too.
    std::fs::write(&corefile, ".:53 {\n    kubernetes example.internal in-addr.arpa ip6.arpa {\n        ttl 9\n    }\n}\n").unwrap();
    signal(&server, "HUP");
    let line = server.wait_for_log("take a restart", Duration::from_secs(3)).expect("refused");
    assert!(line.contains("zones"), "{line}");
    assert_eq!(ttl(&server), "30");
    // A file that does not parse is reported with its line; the running settings stay.
    std::fs::write(&corefile, "kubernetes cluster.local {\n    ttl 30\n    bogus\n}\n").unwrap();
    signal(&server, "HUP");
    let line = server.wait_for_log("config not reloaded; the running settings stay", Duration::from_secs(3)).expect("reported");
    assert!(line.contains(":3"), "{line}");
    assert_eq!(ttl(&server), "30");
    assert!(server.is_running());
}

fn ipv6_loopback() -> bool {
    UdpSocket::bind("[::1]:0").is_ok()
}

/// Before: `--listen [::]:PORT` served IPv4 over TCP but not over UDP, and only one address
/// could be given. Now `[::]` is one dual-stack socket per transport, and --listen repeats.
#[test]
fn an_ipv6_wildcard_serves_both_families_on_both_transports_and_listen_repeats() {
    if !ipv6_loopback() {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    }
    let server = Kdns::start_on("[::]:0", &["--manifests".into(), examples()]);
    let port = server.udp.port();
    for addr in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        let addr: SocketAddr = addr.parse().unwrap();
        let udp = dig(addr, "catalog.shop.svc.cluster.local.", "A", &["+noedns", "+tries=1", "+time=2"]);
        assert!(udp.contains("10.96.12.34"), "UDP to {addr}: {udp}");
        let tcp = dig(addr, "catalog.shop.svc.cluster.local.", "A", &["+tcp", "+noedns", "+tries=1", "+time=2"]);
        assert!(tcp.contains("10.96.12.34"), "TCP to {addr}: {tcp}");
    }
    drop(server);

    // Two addresses: both answer; the start line names the second.
    let server = Kdns::start_on("127.0.0.1:0", &["--manifests".into(), examples(), "--listen".into(), "[::1]:0".into()]);
    let line = server.wait_for_log("kdns serving", Duration::from_secs(1)).unwrap();
    let also: SocketAddr = line.split("also=").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{line}"));
    assert!(also.is_ipv6());
    for addr in [server.udp, also] {
        assert!(dig(addr, "catalog.shop.svc.cluster.local.", "A", &["+noedns"]).contains("10.96.12.34"), "{addr}");
        assert!(dig(addr, "catalog.shop.svc.cluster.local.", "A", &["+tcp", "+noedns"]).contains("10.96.12.34"), "{addr} tcp");
    }
}

/// Before: the request-duration buckets stopped at 0.131 s, so "slower than 4 s" alerts could
/// never fire. Now CoreDNS's buckets: 0.25 ms doubling to 8.192 s.
#[test]
fn request_duration_buckets_reach_8_seconds_as_coredns() {
    let server = Kdns::start(&["--manifests".into(), examples(), "--http-listen".into(), "127.0.0.1:0".into()]);
    assert!(dig(server.udp, "catalog.shop.svc.cluster.local.", "A", &["+noedns"]).contains("NOERROR"));
    let (_, text) = http_get(server.http.unwrap(), "/metrics");
    let les: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("kdns_dns_request_duration_seconds_bucket") && l.contains("type=\"A\""))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(les.first(), Some(&"0.00025"), "{les:?}");
    assert!(les.contains(&"4.096") && les.contains(&"8.192"), "{les:?}");
    assert_eq!(les.len(), 17, "16 buckets and +Inf: {les:?}");
}

/// Before the first list from the API server, as CoreDNS's kubernetes plugin answers before its
/// first sync: SERVFAIL carrying the zone's SOA (so resolvers cache the failure briefly), and
/// the zone's SOA, NS and the dns-version TXT, which need no cluster view, answered.
#[test]
fn before_the_first_sync_servfail_carries_the_soa_and_the_zone_apex_is_answered() {
    let dir = TempDir::new("not-synced");
    let port = free_port(); // nothing listens there: the API server is away
    let kubeconfig = dir.path("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\nusers: [{{name: t, user: {{}}}}]\ncontexts: [{{name: t, context: {{cluster: t, user: t}}}}]\ncurrent-context: t\n"),
    )
    .unwrap();
    let server = Kdns::start(&["--kubeconfig".into(), kubeconfig.display().to_string(), "--sync-timeout".into(), "0.2".into()]);
    let ask = |name: &str, rtype: &str, opts: &[&str]| Observed::from_dig(&dig(server.udp, name, rtype, opts)).unwrap();
    for opts in [&["+noedns"][..], &["+edns=0"][..]] {
        let out = ask("web.shop.svc.cluster.local.", "A", opts);
        assert_eq!(out.rcode, "SERVFAIL", "{out:?}");
        assert!(out.answer.is_empty());
        assert_eq!(out.authority.len(), 1, "{out:?}");
        assert!(out.authority[0].starts_with("cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local."), "{out:?}");
    }
    let soa = ask("cluster.local.", "SOA", &["+noedns"]);
    assert_eq!((soa.rcode.as_str(), soa.answer.len()), ("NOERROR", 1), "{soa:?}");
    let ns = ask("cluster.local.", "NS", &["+noedns"]);
    assert_eq!(ns.rcode, "NOERROR");
    // The NS target's Service is not known yet: the name the core gives without it.
    assert_eq!(ns.answer, ["cluster.local. 5 NS ns.dns.cluster.local."]);
    let version = ask("dns-version.cluster.local.", "TXT", &["+noedns"]);
    assert_eq!(version.rcode, "NOERROR");
    assert_eq!(version.answer.len(), 1, "{version:?}");
    assert!(version.answer[0].contains("\"1.1.0\""), "{version:?}");
    assert_eq!(ask("example.com.", "A", &["+noedns"]).rcode, "REFUSED");
}
