//! Builders for snapshots and queries shared by the core's tests.
#![allow(dead_code)]

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use kdns_core::v1;
use kdns_core::Resolver;

pub fn ip(s: &str) -> Vec<u8> {
    match s.parse::<std::net::IpAddr>().unwrap() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

pub fn port(name: &str, n: u32) -> v1::Port {
    v1::Port { name: name.into(), protocol: v1::Protocol::Tcp as i32, port: n }
}

pub fn cluster_ip(ns: &str, name: &str, addr: &str) -> v1::Service {
    v1::Service {
        namespace: ns.into(),
        name: name.into(),
        r#type: v1::ServiceType::ClusterIp as i32,
        cluster_ips: vec![ip(addr)],
        ports: vec![port("http", 80)],
        ..Default::default()
    }
}

pub fn endpoint(addr: &str, hostname: &str) -> v1::Endpoint {
    v1::Endpoint { address: ip(addr), hostname: hostname.into(), ready: true, ..Default::default() }
}

pub fn headless(ns: &str, name: &str, eps: Vec<v1::Endpoint>) -> v1::Service {
    v1::Service {
        namespace: ns.into(),
        name: name.into(),
        r#type: v1::ServiceType::Headless as i32,
        ports: vec![port("http", 80)],
        endpoint_groups: vec![v1::EndpointGroup { ports: vec![port("http", 8080)], endpoints: eps }],
        ..Default::default()
    }
}

pub fn resolver(config: v1::Config, services: Vec<v1::Service>) -> Resolver {
    let mut r = Resolver::new(config).unwrap();
    r.load(v1::Snapshot { serial: 7, namespaces: vec!["default".into()], services, pods: vec![] }).unwrap();
    r
}

pub fn query(name: &str, rtype: RecordType) -> Message {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m
}

pub fn with_edns(mut m: Message, size: u16, version: u8) -> Message {
    let mut e = Edns::new();
    e.set_max_payload(size);
    e.set_version(version);
    m.set_edns(e);
    m
}

/// Sends `m` to the resolver over UDP with the server's default limit and parses the reply.
pub fn ask(r: &Resolver, m: &Message) -> Message {
    let bytes = r.resolve(&m.to_vec().unwrap(), 1232).expect("a response");
    Message::from_vec(&bytes).expect("the response parses")
}
