//! The CoreDNS dashboard and alerts (the coredns-mixin kube-prometheus ships) against the real
//! binary, measured with Prometheus's own code: `kdns serve --metrics-prefix coredns` gets
//! traffic for every panel, /metrics is scraped twice with more traffic between, and
//! `promqlcheck` (tests/promql, built by tests/setup) parses both scrapes with Prometheus's
//! exposition parser, stores them as Prometheus's scrape loop would, and evaluates each query of
//! tests/promql/queries.txt with the PromQL engine: every one must return data (or what its mark
//! in that file says).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kdns_tests::server::{Kdns, TempDir, dig, http_get};

fn examples() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples").display().to_string()
}

/// The tool tests/setup builds into the target directory's tools/bin, or $KDNS_PROMQLCHECK.
fn promqlcheck_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KDNS_PROMQLCHECK") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let path = exe.ancestors().nth(3).expect("target directory").join("tools/bin/promqlcheck");
    assert!(path.exists(), "{} not found: run tests/setup (it builds tests/promql), or set KDNS_PROMQLCHECK", path.display());
    path
}

/// GET /metrics as Prometheus does; returns the Content-Type (which picks Prometheus's parser)
/// and the body.
fn scrape(addr: SocketAddr) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("http connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim().to_string()))
        .expect("a Content-Type");
    (content_type, body.to_string())
}

fn status(out: &str) -> &str {
    out.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("no answer")
}

#[test]
fn coredns_dashboards_and_alerts_have_data() {
    let dir = TempDir::new("metrics");
    // The upstream: a second kdns serving example.com, itself forwarding to a closed port, so
    // that it answers SERVFAIL for names outside example.com (an upstream SERVFAIL for the
    // forward alerts, and one that kdns passes on for CoreDNSErrorsHigh).
    std::fs::write(
        dir.path("upstream.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: www1, namespace: web}\nspec: {clusterIP: 10.50.0.1}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: www2, namespace: web}\nspec: {clusterIP: 10.50.0.2}\n",
    )
    .unwrap();
    let closed = || std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed on drop
    let upstream = Kdns::start(&[
        "--manifests".into(),
        dir.path("upstream.yaml").display().to_string(),
        "--zone".into(),
        "example.com".into(),
        "--upstream".into(),
        closed().to_string(),
    ]);
    // kdns as the cluster DNS, with CoreDNS's metric names; a dead upstream first (health-check
    // failures), the live one second.
    let server = Kdns::start(&[
        "--manifests".into(),
        examples(),
        "--http-listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-prefix".into(),
        "coredns".into(),
        "--upstream".into(),
        closed().to_string(),
        upstream.udp.to_string(),
    ]);
    let http = server.http.expect("http address in the start line");

    // Every panel's traffic: qtypes A, AAAA, SRV, PTR over UDP and TCP; the cluster zone, the
    // reverse zone and forwarded names; NOERROR, NXDOMAIN and SERVFAIL; a forwarded name asked
    // twice (a cache miss, then a hit) and a forwarded NXDOMAIN (a denial in the cache). The
    // forwarded names differ per round so that the second round reaches the upstream too.
    let round = |r: u32| {
        let cases: Vec<(String, &str, Vec<&str>, &str)> = vec![
            ("catalog.shop.svc.cluster.local.".into(), "A", vec![], "NOERROR"),
            ("catalog.shop.svc.cluster.local.".into(), "A", vec!["+tcp"], "NOERROR"),
            ("cart.shop.svc.cluster.local.".into(), "AAAA", vec![], "NOERROR"),
            ("cart.shop.svc.cluster.local.".into(), "AAAA", vec!["+tcp"], "NOERROR"),
            ("_pg._tcp.db.data.svc.cluster.local.".into(), "SRV", vec![], "NOERROR"),
            ("_pg._tcp.db.data.svc.cluster.local.".into(), "SRV", vec!["+tcp"], "NOERROR"),
            ("7.1.244.10.in-addr.arpa.".into(), "PTR", vec![], "NOERROR"),
            ("7.1.244.10.in-addr.arpa.".into(), "PTR", vec!["+tcp"], "NOERROR"),
            ("missing.shop.svc.cluster.local.".into(), "A", vec![], "NXDOMAIN"),
            (format!("www{r}.web.svc.example.com."), "A", vec![], "NOERROR"),
            (format!("www{r}.web.svc.example.com."), "A", vec![], "NOERROR"),
            (format!("nope{r}.example.com."), "A", vec![], "NXDOMAIN"),
            (format!("gone{r}.dead.test."), "A", vec![], "SERVFAIL"),
        ];
        for (name, rtype, opts, want) in cases {
            let out = dig(server.udp, &name, rtype, &opts);
            assert_eq!(status(&out), want, "{name} {rtype} {opts:?}:\n{out}");
        }
    };
    round(1);
    let (content_type, first) = scrape(http);
    round(2);
    let (_, second) = scrape(http);

    std::fs::write(dir.path("t0.txt"), &first).unwrap();
    std::fs::write(dir.path("t60.txt"), &second).unwrap();
    let queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("promql/queries.txt");
    let labels = format!("job=kube-dns,namespace=kube-system,service=kube-dns,endpoint=metrics,pod=kdns-0,container=kdns,instance={http}");
    let check = |scrapes: &[(&str, PathBuf)]| {
        let mut cmd = Command::new(promqlcheck_bin());
        for (at, file) in scrapes {
            cmd.arg("--scrape").arg(format!("{at}={}", file.display()));
        }
        let out = cmd.args(["--labels", &labels, "--content-type", &content_type]).arg("--queries").arg(&queries).output().expect("promqlcheck runs");
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };

    let (ok, report) = check(&[("t0", dir.path("t0.txt")), ("t60", dir.path("t60.txt"))]);
    println!("{report}");
    assert!(ok, "a CoreDNS dashboard or alert query failed on kdns's metrics:\n{report}\nkdns logs:\n{}", server.logs().join("\n"));

    // The ruler is strict: an exposition Prometheus would refuse is refused.
    std::fs::write(dir.path("bad.txt"), second.replace("# EOF\n", "")).unwrap();
    let (ok, report) = check(&[("t0", dir.path("t0.txt")), ("t60", dir.path("bad.txt"))]);
    assert!(!ok && report.contains("REJECTED"), "a scrape without # EOF was accepted:\n{report}");
}

#[test]
fn default_prefix_is_kdns() {
    let server = Kdns::start(&["--manifests".into(), examples(), "--http-listen".into(), "127.0.0.1:0".into()]);
    assert!(dig(server.udp, "catalog.shop.svc.cluster.local.", "A", &[]).contains("status: NOERROR"));
    let (_, text) = http_get(server.http.unwrap(), "/metrics");
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    assert!(samples.iter().any(|l| l.starts_with("kdns_dns_requests_total{")) && samples.iter().all(|l| l.starts_with("kdns_")), "{text}");
}
