//! A synthetic cluster with a realistic mix, as `kdns.v1` snapshots (for in-process
//! benchmarks) and as Kubernetes manifests (for servers), plus the query mix to drive it.
//!
//! Mix per 20 services: 12 ClusterIP with an EndpointSlice, 5 headless StatefulSet-style with
//! hostnames, 2 dual-stack ClusterIP, 1 ExternalName. Endpoints are spread evenly over the
//! services that have them.

use std::fmt::Write;

use kdns_proto::v1;

#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub services: usize,
    pub endpoints: usize,
    pub namespaces: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ClusterIp,
    Headless,
    DualStack,
    ExternalName,
}

pub fn kind_of(i: usize) -> Kind {
    match i % 20 {
        0..=11 => Kind::ClusterIp,
        12..=16 => Kind::Headless,
        17..=18 => Kind::DualStack,
        _ => Kind::ExternalName,
    }
}

pub fn namespace(shape: &Shape, i: usize) -> String {
    format!("ns-{}", i % shape.namespaces.max(1))
}

pub fn service_name(i: usize) -> String {
    format!("svc-{i}")
}

fn cluster_ip(i: usize) -> [u8; 4] {
    [10, 96 + (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

fn pod_ip(n: usize) -> [u8; 4] {
    [10, 128 + (n >> 16) as u8, (n >> 8) as u8, n as u8]
}

fn cluster_ip6(i: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0xfd, 0x00, 0x00, 0x96]);
    a[12..].copy_from_slice(&(i as u32).to_be_bytes());
    a
}

/// Endpoint count of service `i`: endpoints spread over the services that take endpoints.
pub fn endpoints_of(shape: &Shape, i: usize) -> std::ops::Range<usize> {
    let takers = shape.services - shape.services / 20;
    let idx = i - i / 20; // services before i that take endpoints (every 20th is ExternalName)
    let per = shape.endpoints / takers.max(1);
    let extra = shape.endpoints % takers.max(1);
    let start = idx * per + idx.min(extra);
    let len = per + usize::from(idx < extra);
    start..start + len
}

pub fn snapshot(shape: &Shape) -> v1::Snapshot {
    let mut services = Vec::with_capacity(shape.services);
    let takers_total = shape.services - shape.services / 20;
    let per = shape.endpoints / takers_total.max(1);
    let extra = shape.endpoints % takers_total.max(1);
    let mut next_ep = 0;
    let mut idx = 0;
    for i in 0..shape.services {
        let kind = kind_of(i);
        let mut svc = v1::Service { namespace: namespace(shape, i), name: service_name(i), ..Default::default() };
        if kind == Kind::ExternalName {
            svc.r#type = v1::ServiceType::ExternalName as i32;
            svc.external_name = format!("svc-{i}.example.com");
            services.push(svc);
            continue;
        }
        let count = per + usize::from(idx < extra);
        idx += 1;
        let http = v1::Port { name: "http".into(), protocol: v1::Protocol::Tcp as i32, port: 80 };
        svc.ports = vec![http.clone()];
        let endpoints = (next_ep..next_ep + count)
            .map(|n| v1::Endpoint {
                address: pod_ip(n).to_vec(),
                hostname: if kind == Kind::Headless { format!("{}-{}", service_name(i), n - next_ep) } else { String::new() },
                pod_name: format!("{}-{}", service_name(i), n - next_ep),
                ready: true,
                serving: true,
                terminating: false,
            })
            .collect();
        next_ep += count;
        svc.endpoint_groups = vec![v1::EndpointGroup { ports: vec![v1::Port { port: 8080, ..http }], endpoints }];
        match kind {
            Kind::Headless => svc.r#type = v1::ServiceType::Headless as i32,
            Kind::DualStack => svc.cluster_ips = vec![cluster_ip(i).to_vec(), cluster_ip6(i).to_vec()],
            _ => svc.cluster_ips = vec![cluster_ip(i).to_vec()],
        }
        services.push(svc);
    }
    let namespaces = (0..shape.namespaces).map(|n| format!("ns-{n}")).collect();
    v1::Snapshot { serial: 1, namespaces, services, pods: Vec::new() }
}

/// The cluster as manifests: one multi-document YAML file per namespace.
pub fn manifests(shape: &Shape) -> Vec<(String, String)> {
    let snap = snapshot(shape);
    let mut files: Vec<String> = (0..shape.namespaces).map(|n| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{n}}}\n")).collect();
    for (i, svc) in snap.services.iter().enumerate() {
        let ns_index = i % shape.namespaces.max(1);
        let out = &mut files[ns_index];
        let ip = |b: &Vec<u8>| -> String {
            if b.len() == 4 { std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string() } else { std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b.as_slice()).unwrap()).to_string() }
        };
        let _ = write!(out, "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {}, namespace: {}}}\nspec:\n", svc.name, svc.namespace);
        match kind_of(i) {
            Kind::ExternalName => {
                let _ = writeln!(out, "  type: ExternalName\n  externalName: {}", svc.external_name);
                continue;
            }
            Kind::Headless => {
                let _ = writeln!(out, "  clusterIP: None");
            }
            Kind::DualStack => {
                let ips: Vec<String> = svc.cluster_ips.iter().map(|b| format!("\"{}\"", ip(b))).collect();
                let _ = writeln!(out, "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n  clusterIP: {}\n  clusterIPs: [{}]", ip(&svc.cluster_ips[0]), ips.join(", "));
            }
            Kind::ClusterIp => {
                let _ = writeln!(out, "  clusterIP: {}", ip(&svc.cluster_ips[0]));
            }
        }
        let _ = writeln!(out, "  selector: {{app: {}}}\n  ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080}}]", svc.name);
        for group in &svc.endpoint_groups {
            let _ = write!(
                out,
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {}-abcde\n  namespace: {}\n  labels: {{kubernetes.io/service-name: {}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n",
                svc.name, svc.namespace, svc.name
            );
            for ep in &group.endpoints {
                let host = if ep.hostname.is_empty() { String::new() } else { format!(", hostname: {}", ep.hostname) };
                let _ = writeln!(
                    out,
                    "- {{addresses: [{}]{host}, conditions: {{ready: true}}, targetRef: {{kind: Pod, name: {}, namespace: {}}}}}",
                    ip(&ep.address),
                    ep.pod_name,
                    svc.namespace
                );
            }
        }
    }
    files.into_iter().enumerate().map(|(n, text)| (format!("ns-{n}.yaml"), text)).collect()
}

/// A query mix over the cluster: A for ClusterIP services, A for endpoint names of headless
/// services, AAAA for dual-stack, SRV, PTR of cluster and pod IPs, and names that do not exist.
pub fn queries(shape: &Shape, count: usize) -> Vec<(String, &'static str)> {
    let mut out = Vec::with_capacity(count);
    let zone = "cluster.local.";
    let mut i = 0usize;
    while out.len() < count {
        let s = (i.wrapping_mul(7919)) % shape.services;
        let ns = namespace(shape, s);
        let name = service_name(s);
        let q = match (i % 10, kind_of(s)) {
            (0..=3, Kind::ClusterIp | Kind::DualStack) => (format!("{name}.{ns}.svc.{zone}"), "A"),
            (0..=3, Kind::Headless) => {
                let eps = endpoints_of(shape, s);
                (format!("{name}-{}.{name}.{ns}.svc.{zone}", i % eps.len().max(1)), "A")
            }
            (4, Kind::DualStack) | (4, Kind::ClusterIp) => (format!("{name}.{ns}.svc.{zone}"), "AAAA"),
            (5, Kind::ClusterIp | Kind::Headless) => (format!("_http._tcp.{name}.{ns}.svc.{zone}"), "SRV"),
            (6, Kind::ClusterIp | Kind::DualStack) => {
                let ip = cluster_ip(s);
                (format!("{}.{}.{}.{}.in-addr.arpa.", ip[3], ip[2], ip[1], ip[0]), "PTR")
            }
            (7, _) => {
                let ip = pod_ip(i % shape.endpoints.max(1));
                (format!("{}.{}.{}.{}.in-addr.arpa.", ip[3], ip[2], ip[1], ip[0]), "PTR")
            }
            (8, _) => (format!("missing-{i}.{ns}.svc.{zone}"), "A"),
            (9, Kind::ExternalName) => (format!("{name}.{ns}.svc.{zone}"), "CNAME"),
            _ => (format!("{name}.{ns}.svc.{zone}"), "A"),
        };
        out.push(q);
        i += 1;
    }
    out
}

/// The query as a DNS message (RD set, no EDNS).
pub fn message(id: u16, name: &str, rtype: &str) -> Vec<u8> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(hickory_proto::rr::Name::from_ascii(name).unwrap(), rtype.parse().unwrap()));
    m.to_vec().unwrap()
}
