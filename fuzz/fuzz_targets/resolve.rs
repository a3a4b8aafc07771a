//! Query parsing and response building: any bytes in, never a panic; every response is a
//! well-formed DNS message within the size asked for, and carries the query's ID.
#![no_main]

use std::sync::OnceLock;

use hickory_proto::op::Message;
use kdns_core::{Resolver, v1};
use libfuzzer_sys::fuzz_target;

fn ip(s: &str) -> Vec<u8> {
    match s.parse::<std::net::IpAddr>().unwrap() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A cluster with every kind of name, so fuzzed queries reach every branch of the lookup.
fn resolver() -> &'static Resolver {
    static R: OnceLock<Resolver> = OnceLock::new();
    R.get_or_init(|| {
        let port = |n: &str, p| v1::Port { name: n.into(), protocol: 0, port: p };
        let ep = |a: &str, h: &str, pod: &str| v1::Endpoint { address: ip(a), hostname: h.into(), pod_name: pod.into(), ready: true, ..Default::default() };
        let mut services = vec![
            v1::Service { namespace: "ns".into(), name: "web".into(), r#type: 0, cluster_ips: vec![ip("10.96.0.1"), ip("fd00::1")], ports: vec![port("http", 80), port("dns", 53)], ..Default::default() },
            v1::Service { namespace: "kube-system".into(), name: "kube-dns".into(), r#type: 0, cluster_ips: vec![ip("10.96.0.10")], ..Default::default() },
            v1::Service { namespace: "ns".into(), name: "ext".into(), r#type: 2, external_name: "web.ns.svc.cluster.local".into(), ..Default::default() },
            v1::Service { namespace: "ns".into(), name: "out".into(), r#type: 2, external_name: "example.com".into(), ..Default::default() },
        ];
        let eps = (0..80).map(|i| ep(&format!("10.244.0.{i}"), if i % 2 == 0 { "" } else { "h" }, &format!("pod-{i}"))).collect();
        services.push(v1::Service {
            namespace: "ns".into(),
            name: "db".into(),
            r#type: 1,
            endpoint_groups: vec![
                v1::EndpointGroup { ports: vec![port("pg", 5432)], endpoints: eps },
                v1::EndpointGroup { ports: vec![], endpoints: vec![ep("fd00::2", "", "")] },
            ],
            ..Default::default()
        });
        let cfg = v1::Config { pod_mode: 2, endpoint_pod_names: true, ..Default::default() };
        let mut r = Resolver::new(cfg).unwrap();
        let pods = vec![v1::Pod { namespace: "ns".into(), name: "p".into(), ips: vec![ip("10.244.0.1")] }];
        r.load(v1::Snapshot { serial: 1, namespaces: vec!["ns".into()], services, pods }).unwrap();
        r
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, query)) = data.split_first() else { return };
    let max_udp = match mode % 4 {
        0 => 0,
        1 => 512,
        2 => 1232,
        _ => 4096,
    };
    let Some(resp) = resolver().resolve(query, max_udp) else {
        assert!(query.len() < 12 || query[2] & 0x80 != 0, "only non-queries go unanswered");
        return;
    };
    let limit = if max_udp == 0 { 65535 } else { max_udp as usize };
    assert!(resp.len() <= limit, "response of {} bytes over the {limit} limit", resp.len());
    assert_eq!(&resp[..2], &query[..2], "the ID is echoed");
    Message::from_vec(&resp).expect("every response is a well-formed message");
});
