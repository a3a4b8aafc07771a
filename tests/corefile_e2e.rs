//! A CoreDNS user's Corefile through the real binary (issues 17 and 22): kubeadm's file, with
//! nothing but `--manifests` beside it, serves on the block's port, forwards to its `forward`
//! target, serves /metrics on its `prometheus` address and says once per plugin what it
//! ignores; what kdns cannot do stops it at start with the file and line; `{$ENV}` works; and
//! `kdns query` takes dig's `+short` and `-x`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kdns_tests::server::{Kdns, TempDir, dig, free_port, http_get, kdns_bin, metric};
use kdns_tests::vectors::Observed;

fn examples() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples").display().to_string()
}

/// kubeadm's Corefile (cmd/kubeadm/app/phases/addons/dns), as kubeadm writes it for
/// cluster.local, with the port, the prometheus address and the forward target to fill in.
const KUBEADM: &str = ".:DNS_PORT {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus PROMETHEUS
    forward . UPSTREAM {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
";

/// `kdns serve ARGS` with `env`, without the `--listen` `Kdns::start` adds: the address comes
/// from the Corefile. Killed on drop.
struct Served {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    udp: SocketAddr,
    http: Option<SocketAddr>,
}

impl Served {
    fn start(args: &[String], env: &[(&str, &str)]) -> Served {
        let mut child = Command::new(kdns_bin())
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .env("KDNS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kdns starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (stderr, sink) = (child.stderr.take().unwrap(), logs.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let serving = logs.lock().unwrap().iter().find(|l| l.contains("kdns serving")).cloned();
            if let Some(line) = serving {
                let field = |name: &str| -> Option<SocketAddr> {
                    let start = line.find(&format!(" {name}="))? + name.len() + 2;
                    line[start..].split_whitespace().next()?.parse().ok()
                };
                let udp = field("udp").expect("udp address in the start line");
                return Served { child, logs, udp, http: field("http") };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("kdns exited with {status} before serving:\n{}", logs.lock().unwrap().join("\n"));
            }
            assert!(Instant::now() < deadline, "kdns did not start in time:\n{}", logs.lock().unwrap().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DNS server on loopback standing for the cluster's upstream: kdns serving `example.com`.
fn upstream(dir: &TempDir) -> Kdns {
    std::fs::write(dir.path("upstream.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: www, namespace: web}\nspec: {clusterIP: 10.50.0.1}\n").unwrap();
    Kdns::start(&["--manifests".into(), dir.path("upstream.yaml").display().to_string(), "--zone".into(), "example.com".into()])
}

#[test]
fn kubeadms_corefile_alone_serves_forwards_and_exports_metrics_where_it_says() {
    let dir = TempDir::new("kubeadm");
    let upstream = upstream(&dir);
    let (dns_port, prometheus) = (free_port(), format!("127.0.0.1:{}", free_port()));
    let corefile = dir.path("Corefile");
    std::fs::write(&corefile, KUBEADM.replace("DNS_PORT", &dns_port.to_string()).replace("PROMETHEUS", &prometheus).replace("UPSTREAM", &upstream.udp.to_string())).unwrap();
    let server = Served::start(&["--manifests".into(), examples(), "--config".into(), corefile.display().to_string()], &[]);

    // The server block's port, on every address (as CoreDNS's `.:53`).
    assert_eq!(server.udp, SocketAddr::from(([0, 0, 0, 0], dns_port)));
    let local = SocketAddr::from(([127, 0, 0, 1], dns_port));
    let a = |name: &str| Observed::from_dig(&dig(local, name, "A", &["+noedns"])).unwrap();
    // The kubernetes block: ttl 30, pods insecure.
    assert_eq!(a("catalog.shop.svc.cluster.local.").answer, ["catalog.shop.svc.cluster.local. 30 A 10.96.12.34"]);
    assert_eq!(a("10-1-2-3.shop.pod.cluster.local.").answer, ["10-1-2-3.shop.pod.cluster.local. 30 A 10.1.2.3"]);
    // `forward .`: a name outside the zones is asked of the forward target.
    let out = a("www.web.svc.example.com.");
    assert_eq!((out.rcode.as_str(), out.answer), ("NOERROR", vec!["www.web.svc.example.com. 5 A 10.50.0.1".to_string()]));

    // `prometheus ADDR`: /metrics, /health and /ready there.
    assert_eq!(server.http, Some(prometheus.parse().unwrap()));
    let http = server.http.unwrap();
    let (status, body) = http_get(http, "/metrics");
    assert_eq!(status, 200);
    assert!(metric(&body, "kdns_dns_requests_total", &["zone=\"cluster.local.\""]).unwrap() >= 2.0, "{body}");
    assert!(metric(&body, "kdns_forward_requests_total", &[]).unwrap() >= 1.0, "{body}");
    assert_eq!(http_get(http, "/health").0, 200);
    assert_eq!(http_get(http, "/ready").0, 200);

    // One line for each plugin kdns does not apply, saying why; one for health/ready's ports;
    // one saying what was taken from the file.
    let logs = server.logs();
    for plugin in ["errors", "loop", "reload", "loadbalance"] {
        let lines: Vec<&String> = logs.iter().filter(|l| l.contains("Corefile:") && l.contains(&format!(": {plugin}: ignored: "))).collect();
        assert_eq!(lines.len(), 1, "{plugin}: {logs:#?}");
    }
    assert_eq!(logs.iter().filter(|l| l.contains("health/ready: served on the prometheus address")).count(), 1, "{logs:#?}");
    let mapped = logs.iter().find(|l| l.contains("from the Corefile:")).expect("the mapped line");
    for part in ["--lameduck 5", "--upstream-max-concurrent 1000", "--upstream-cache-ttl 30", &format!("--http-listen {prometheus}"), &format!("--listen 0.0.0.0:{dns_port}")] {
        assert!(mapped.contains(part), "{part} in {mapped}");
    }
    assert!(!logs.iter().any(|l| l.contains("ERROR")), "{logs:#?}");
}

#[test]
fn flags_given_override_the_corefile() {
    let dir = TempDir::new("override");
    let corefile = dir.path("Corefile");
    std::fs::write(&corefile, KUBEADM.replace("DNS_PORT", &free_port().to_string()).replace("PROMETHEUS", "127.0.0.1:1").replace("UPSTREAM", "127.0.0.1:1")).unwrap();
    // Kdns::start gives --listen 127.0.0.1:0; --http-listen, --upstream given too.
    let upstream = upstream(&dir);
    let server = Kdns::start(&[
        "--manifests".into(),
        examples(),
        "--config".into(),
        corefile.display().to_string(),
        "--http-listen".into(),
        "127.0.0.1:0".into(),
        "--upstream".into(),
        upstream.udp.to_string(),
    ]);
    assert_eq!(server.udp.ip().to_string(), "127.0.0.1");
    assert_ne!(server.http.unwrap().port(), 1);
    let out = Observed::from_dig(&dig(server.udp, "www.web.svc.example.com.", "A", &["+noedns"])).unwrap();
    assert_eq!(out.answer, ["www.web.svc.example.com. 5 A 10.50.0.1"]);
    let line = server.logs().into_iter().find(|l| l.contains("from the Corefile:")).unwrap();
    assert!(line.contains("given on the command line instead: --listen, --http-listen, --upstream"), "{line}");
}

#[test]
fn what_kdns_cannot_do_stops_it_at_start_with_the_file_and_line() {
    let dir = TempDir::new("refused");
    let corefile = dir.path("Corefile");
    let kubeadm = KUBEADM.replace("DNS_PORT", "53").replace("PROMETHEUS", ":9153").replace("UPSTREAM", "/etc/resolv.conf");
    let start = |text: &str| {
        std::fs::write(&corefile, text).unwrap();
        let out = Command::new(kdns_bin()).args(["serve", "--listen", "127.0.0.1:0", "--manifests", &examples(), "--config"]).arg(&corefile).output().unwrap();
        assert!(!out.status.success(), "kdns started with:\n{text}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A kubernetes option kdns lacks: refused, named, with its line.
    let err = start(&kubeadm.replace("ttl 30", "labels app=web"));
    assert!(err.contains("Corefile:10: kubernetes: `labels` is not supported yet"), "{err}");
    // A bad value.
    let err = start(&kubeadm.replace("ttl 30", "ttl 9999"));
    assert!(err.contains("Corefile:10: ttl 9999 is above 3600"), "{err}");
    // A stub domain: refused whole, not half applied.
    let err = start(&format!("{kubeadm}consul.local:53 {{\n    errors\n    cache 30\n    forward . 10.0.0.10\n}}\n"));
    assert!(err.contains("Corefile:21: server block `consul.local:53` forwards consul.local") && err.contains("not supported yet"), "{err}");
    assert_eq!(err.lines().filter(|l| l.contains("error")).count(), 1, "{err}");
}

#[test]
fn environment_variables_in_the_corefile() {
    let dir = TempDir::new("env");
    let corefile = dir.path("Corefile");
    std::fs::write(&corefile, ".:{$KDNS_TEST_PORT} {\n    kubernetes {$KDNS_TEST_ZONE} {\n        ttl {$KDNS_TEST_TTL}\n        pods {%KDNS_TEST_PODS%}\n    }\n}\n").unwrap();
    let port = free_port().to_string();
    let env = [("KDNS_TEST_PORT", port.as_str()), ("KDNS_TEST_ZONE", "cluster.local"), ("KDNS_TEST_TTL", "17"), ("KDNS_TEST_PODS", "insecure")];
    let server = Served::start(&["--manifests".into(), examples(), "--config".into(), corefile.display().to_string()], &env);
    assert_eq!(server.udp.port().to_string(), port);
    let local = SocketAddr::from(([127, 0, 0, 1], server.udp.port()));
    let seen = Observed::from_dig(&dig(local, "10-1-2-3.shop.pod.cluster.local.", "A", &["+noedns"])).unwrap();
    assert_eq!(seen.answer, ["10-1-2-3.shop.pod.cluster.local. 17 A 10.1.2.3"]);
    drop(server);
    // Unset, a variable is empty (as in CoreDNS), and the line that needed it says so.
    let out = Command::new(kdns_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--manifests", &examples(), "--config"])
        .arg(&corefile)
        .envs(env.iter().filter(|(k, _)| *k != "KDNS_TEST_TTL").copied())
        .env_remove("KDNS_TEST_TTL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Corefile:3: `ttl`: an empty value (an unset environment variable?)"), "{err}");
}

/// SIGHUP reads the whole file again: the kubernetes block's live settings apply; a changed
/// `forward` or `cache` takes a restart and is refused whole, with the running settings kept.
#[test]
fn sighup_applies_the_kubernetes_block_and_refuses_a_changed_forward() {
    let dir = TempDir::new("hup");
    let upstream = upstream(&dir);
    let corefile = dir.path("Corefile");
    let port = free_port().to_string();
    let text = KUBEADM.replace("DNS_PORT", &port).replace("PROMETHEUS", &format!("127.0.0.1:{}", free_port())).replace("UPSTREAM", &upstream.udp.to_string());
    std::fs::write(&corefile, &text).unwrap();
    let server = Served::start(&["--manifests".into(), examples(), "--config".into(), corefile.display().to_string()], &[]);
    let local = SocketAddr::from(([127, 0, 0, 1], server.udp.port()));
    let ttl = || Observed::from_dig(&dig(local, "catalog.shop.svc.cluster.local.", "A", &["+noedns"])).unwrap().answer[0].split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(ttl(), "30");
    let hup = |text: &str, needle: &str| {
        std::fs::write(&corefile, text).unwrap();
        let _ = Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(l) = server.logs().into_iter().rev().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in {:#?}", server.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    hup(&text.replace("ttl 30", "ttl 12"), "SIGHUP: config reloaded");
    assert_eq!(ttl(), "12");
    let line = hup(&text.replace("ttl 30", "ttl 13").replace("cache 30", "cache 60").replace(&upstream.udp.to_string(), "127.0.0.1:1"), "take a restart");
    assert!(line.contains("forward") && line.contains("cache"), "{line}");
    assert_eq!(ttl(), "12");
    // No second set of "ignored" lines for the reload.
    assert_eq!(server.logs().iter().filter(|l| l.contains(": loop: ignored: ")).count(), 1);
}

#[test]
fn kdns_query_takes_short_and_x_as_dig_does() {
    let query = |args: &[&str]| {
        let out = Command::new(kdns_bin()).arg("query").args(["--manifests", &examples()]).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(query(&["catalog.shop.svc.cluster.local", "+short"]), "10.96.12.34\n");
    assert_eq!(query(&["+short", "search.shop.svc.cluster.local"]), "catalog.shop.svc.cluster.local.\n10.96.12.34\n");
    assert_eq!(query(&["-x", "10.244.1.7", "+short"]), "10-244-1-7.catalog.shop.svc.cluster.local.\n");
    let full = query(&["-x", "10.244.1.7"]);
    assert!(full.contains(";7.1.244.10.in-addr.arpa.\t\tIN\tPTR") && full.contains("status: NOERROR"), "{full}");
    let seen = Observed::from_dig(&full).unwrap();
    assert_eq!(seen.answer, ["7.1.244.10.in-addr.arpa. 5 PTR 10-244-1-7.catalog.shop.svc.cluster.local."]);
    assert_eq!(query(&["cart.shop.svc.cluster.local", "AAAA", "+noall", "+answer"]), "cart.shop.svc.cluster.local.\t5\tIN\tAAAA\tfd00:10:96::7\n");
    assert_eq!(query(&["-t", "SRV", "_pg._tcp.db.data.svc.cluster.local", "+short"]).lines().count(), 2);
    // Help says what it does; a dig option it does not know is an error naming the ones it does.
    let help = Command::new(kdns_bin()).args(["query", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("+short") && help.contains("-x <ADDR>"), "{help}");
    let out = Command::new(kdns_bin()).args(["query", "--manifests", &examples(), "x.cluster.local", "+frob"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("unknown dig option +frob"));
}
