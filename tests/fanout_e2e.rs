//! The fan-out tier through the real binaries: one kdns watches the cluster (here, manifest
//! files) and serves its snapshot stream; replicas started with `--snapshot-from` hold no watch
//! of their own and answer from that stream. Changes reach every replica, a restarted replica
//! catches up, replicas keep answering
//! while the watcher is gone, and a watcher that is not allowed is refused.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kdns_tests::server::{Kdns, TempDir, dig, free_port};

const CLUSTER: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {clusterIP: 10.96.0.10}\n";

fn answer(server: SocketAddr, name: &str) -> String {
    dig(server, name, "A", &["+noedns", "+short", "+tries=1", "+time=1"]).trim().to_string()
}

/// Waits until `server` answers `name` with `want`.
fn until(server: SocketAddr, name: &str, want: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let got = answer(server, name);
        if got == want {
            return started.elapsed();
        }
        assert!(started.elapsed() < timeout, "{server} still answers {name} with {got:?}, not {want:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn replica(watcher: SocketAddr, extra: &[&str]) -> Kdns {
    let mut args = vec!["--snapshot-from".to_string(), watcher.to_string(), "--sync-timeout".into(), "10".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Kdns::start(&args)
}

#[test]
fn a_watcher_feeds_three_replicas_that_follow_changes_restarts_and_outages() {
    let dir = TempDir::new("fanout");
    let manifests = dir.path("cluster.yaml");
    std::fs::write(&manifests, CLUSTER).unwrap();
    let grpc_port = free_port();
    let watcher_args = vec!["--manifests".to_string(), manifests.display().to_string(), "--grpc-listen".into(), format!("127.0.0.1:{grpc_port}")];
    let watcher = Kdns::start(&watcher_args);
    let grpc = watcher.grpc.expect("grpc address in the start line");
    let mut replicas: Vec<Kdns> = (0..3).map(|_| replica(grpc, &[])).collect();
    for r in &replicas {
        until(r.udp, "web.shop.svc.cluster.local.", "10.96.0.10", Duration::from_secs(10));
        assert!(r.logs().iter().any(|l| l.contains("cluster view from the snapshot stream")));
    }

    // A change at the watcher reaches every replica.
    std::fs::write(&manifests, CLUSTER.replace("10.96.0.10", "10.96.0.11")).unwrap();
    for r in &replicas {
        let took = until(r.udp, "web.shop.svc.cluster.local.", "10.96.0.11", Duration::from_secs(10));
        eprintln!("replica {}: change answered {took:?} after the edit", r.udp);
    }

    // A restarted replica catches up with the whole view.
    replicas[1] = replica(grpc, &[]);
    until(replicas[1].udp, "web.shop.svc.cluster.local.", "10.96.0.11", Duration::from_secs(10));

    // The watcher goes away: the replicas keep answering from the last view...
    drop(watcher);
    std::thread::sleep(Duration::from_millis(500));
    for r in &replicas {
        assert_eq!(answer(r.udp, "web.shop.svc.cluster.local."), "10.96.0.11", "{}", r.logs().join("\n"));
        assert!(r.wait_for_log("snapshot stream lost", Duration::from_secs(5)).is_some());
    }
    // ...and resync when it is back, with what changed meanwhile.
    std::fs::write(&manifests, CLUSTER.replace("10.96.0.10", "10.96.0.12")).unwrap();
    let _watcher = Kdns::start(&watcher_args);
    for r in &replicas {
        until(r.udp, "web.shop.svc.cluster.local.", "10.96.0.12", Duration::from_secs(20));
        assert!(r.wait_for_log("snapshot stream back", Duration::from_secs(1)).is_some());
    }
}

#[test]
fn the_snapshot_stream_refuses_watchers_it_does_not_allow() {
    let dir = TempDir::new("fanout-auth");
    let manifests = dir.path("cluster.yaml");
    std::fs::write(&manifests, CLUSTER).unwrap();
    let token = dir.path("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let wrong = dir.path("wrong");
    std::fs::write(&wrong, "guess\n").unwrap();
    let watcher = Kdns::start(&["--manifests".into(), manifests.display().to_string(), "--grpc-listen".into(), "127.0.0.1:0".into(), "--snapshot-token-file".into(), token.display().to_string()]);
    let grpc = watcher.grpc.unwrap();

    // No token, or the wrong one: refused, and nothing to answer from.
    for extra in [vec![], vec!["--snapshot-token-file", wrong.to_str().unwrap()]] {
        let r = replica(grpc, &extra);
        let line = r.wait_for_log("snapshot stream lost", Duration::from_secs(5)).expect("the refusal is logged");
        assert!(line.contains("refused by the other kdns") && line.contains("token"), "{line}");
        assert!(dig(r.udp, "web.shop.svc.cluster.local.", "A", &["+noedns"]).contains("SERVFAIL"));
    }
    assert!(watcher.logs().iter().any(|l| l.contains("snapshot watcher refused")));
    // The right token: served.
    let r = replica(grpc, &["--snapshot-token-file", token.to_str().unwrap()]);
    until(r.udp, "web.shop.svc.cluster.local.", "10.96.0.10", Duration::from_secs(10));

    // An address outside --snapshot-allow is refused as a zone transfer is.
    let closed = Kdns::start(&["--manifests".into(), manifests.display().to_string(), "--grpc-listen".into(), "127.0.0.1:0".into(), "--snapshot-allow".into(), "10.0.0.0/8".into()]);
    let r = replica(closed.grpc.unwrap(), &[]);
    let line = r.wait_for_log("snapshot stream lost", Duration::from_secs(5)).expect("refused");
    assert!(line.contains("not open to this address"), "{line}");
}
