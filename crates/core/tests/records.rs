//! Record synthesis beyond the shared vectors: options, deltas, edge names.

mod support;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use kdns_core::v1;
use support::*;

fn a_records(m: &hickory_proto::op::Message) -> Vec<String> {
    m.answers.iter().filter_map(|r| match &r.data {
        RData::A(a) => Some(a.0.to_string()),
        RData::AAAA(a) => Some(a.0.to_string()),
        _ => None,
    }).collect()
}

#[test]
fn delta_replaces_and_removes_services() {
    let mut r = resolver(Default::default(), vec![cluster_ip("default", "web", "10.96.0.5")]);
    r.apply(v1::Delta {
        serial: 8,
        upsert_services: vec![cluster_ip("default", "web", "10.96.0.6"), cluster_ip("shop", "cart", "10.96.0.7")],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(a_records(&ask(&r, &query("web.default.svc.cluster.local.", RecordType::A))), ["10.96.0.6"]);
    assert_eq!(a_records(&ask(&r, &query("cart.shop.svc.cluster.local.", RecordType::A))), ["10.96.0.7"]);
    // The old cluster IP no longer names the service.
    let ptr = ask(&r, &query("5.0.96.10.in-addr.arpa.", RecordType::PTR));
    assert_eq!(ptr.response_code, ResponseCode::NXDomain);
    // The namespace `shop` exists while a service lives in it.
    assert_eq!(ask(&r, &query("shop.svc.cluster.local.", RecordType::A)).response_code, ResponseCode::NoError);
    r.apply(v1::Delta { serial: 9, remove_services: vec![v1::ServiceKey { namespace: "shop".into(), name: "cart".into() }], ..Default::default() }).unwrap();
    assert_eq!(ask(&r, &query("cart.shop.svc.cluster.local.", RecordType::A)).response_code, ResponseCode::NXDomain);
    assert_eq!(ask(&r, &query("shop.svc.cluster.local.", RecordType::A)).response_code, ResponseCode::NXDomain);
    assert_eq!(r.serial(), 9);
}

#[test]
fn a_bad_delta_changes_nothing() {
    let mut r = resolver(Default::default(), vec![cluster_ip("default", "web", "10.96.0.5")]);
    let mut bad = cluster_ip("default", "web", "10.96.0.9");
    bad.cluster_ips.push(vec![1, 2, 3]);
    let err = r.apply(v1::Delta { serial: 2, remove_services: vec![v1::ServiceKey { namespace: "default".into(), name: "web".into() }], upsert_services: vec![bad], ..Default::default() });
    assert!(err.is_err());
    assert_eq!(a_records(&ask(&r, &query("web.default.svc.cluster.local.", RecordType::A))), ["10.96.0.5"]);
    assert_eq!(r.serial(), 7);
}

#[test]
fn garbage_protobuf_is_an_error_not_a_panic() {
    let mut r = resolver(Default::default(), vec![cluster_ip("default", "web", "10.96.0.5")]);
    assert!(r.load_bytes(&[0xff, 0xff, 0xff]).is_err());
    assert!(r.apply_bytes(&[0x0a, 0x05, 0x01]).is_err());
    assert!(r.configure_bytes(&[0x1a]).is_err());
    assert_eq!(a_records(&ask(&r, &query("web.default.svc.cluster.local.", RecordType::A))), ["10.96.0.5"]);
}

#[test]
fn ignore_empty_service_hides_clusterip_services_without_endpoints() {
    let cfg = v1::Config { ignore_empty_service: true, ..Default::default() };
    let r = resolver(cfg, vec![cluster_ip("default", "web", "10.96.0.5")]);
    assert_eq!(ask(&r, &query("web.default.svc.cluster.local.", RecordType::A)).response_code, ResponseCode::NXDomain);
}

#[test]
fn noendpoints_hides_endpoint_names_and_headless_services() {
    let cfg = v1::Config { no_endpoints: true, ..Default::default() };
    let r = resolver(cfg, vec![headless("default", "db", vec![endpoint("10.1.0.1", "db-0")])]);
    assert_eq!(ask(&r, &query("db.default.svc.cluster.local.", RecordType::A)).response_code, ResponseCode::NXDomain);
    assert_eq!(ask(&r, &query("db-0.db.default.svc.cluster.local.", RecordType::A)).response_code, ResponseCode::NXDomain);
    assert_eq!(ask(&r, &query("1.0.1.10.in-addr.arpa.", RecordType::PTR)).response_code, ResponseCode::NXDomain);
}

#[test]
fn namespaces_filter_limits_what_is_exposed() {
    let cfg = v1::Config { namespaces: vec!["default".into()], ..Default::default() };
    let r = resolver(cfg, vec![cluster_ip("default", "web", "10.96.0.5"), cluster_ip("hidden", "db", "10.96.0.6")]);
    assert_eq!(ask(&r, &query("web.default.svc.cluster.local.", RecordType::A)).response_code, ResponseCode::NoError);
    assert_eq!(ask(&r, &query("db.hidden.svc.cluster.local.", RecordType::A)).response_code, ResponseCode::NXDomain);
    assert_eq!(ask(&r, &query("6.0.96.10.in-addr.arpa.", RecordType::PTR)).response_code, ResponseCode::NXDomain);
}

#[test]
fn external_name_loops_end() {
    let mut a = cluster_ip("default", "a", "10.96.0.1");
    a.r#type = v1::ServiceType::ExternalName as i32;
    a.cluster_ips.clear();
    a.external_name = "b.default.svc.cluster.local".into();
    let mut b = a.clone();
    b.name = "b".into();
    b.external_name = "a.default.svc.cluster.local.".into();
    let r = resolver(Default::default(), vec![a, b]);
    let resp = ask(&r, &query("a.default.svc.cluster.local.", RecordType::A));
    assert_eq!(resp.response_code, ResponseCode::NoError);
    assert!(resp.answers.len() <= 10, "the chain is bounded");
}

#[test]
fn other_zones_and_ttl_are_configurable() {
    let cfg = v1::Config { zones: vec!["k8s.example.".into()], ttl: Some(60), ..Default::default() };
    let r = resolver(cfg, vec![cluster_ip("default", "web", "10.96.0.5")]);
    let resp = ask(&r, &query("web.default.svc.k8s.example.", RecordType::A));
    assert_eq!(resp.answers[0].ttl, 60);
    assert_eq!(ask(&r, &query("web.default.svc.cluster.local.", RecordType::A)).response_code, ResponseCode::Refused);
    assert!(kdns_core::Resolver::new(v1::Config { ttl: Some(3601), ..Default::default() }).is_err());
}

#[test]
fn endpoint_labels_are_found_among_many() {
    let eps = (0..2000).map(|i| endpoint(&format!("10.3.{}.{}", i / 200, i % 200 + 1), &format!("pod-{i}"))).collect();
    let r = resolver(Default::default(), vec![headless("default", "big", eps)]);
    let resp = ask(&r, &query("pod-1234.big.default.svc.cluster.local.", RecordType::A));
    assert_eq!(a_records(&resp), ["10.3.6.35"]);
    let srv = ask(&r, &query("pod-7.big.default.svc.cluster.local.", RecordType::SRV));
    assert_eq!(srv.answers.len(), 1);
}

#[test]
fn names_for_the_name_server() {
    let r = resolver(Default::default(), vec![cluster_ip("kube-system", "kube-dns", "10.96.0.10")]);
    assert_eq!(a_records(&ask(&r, &query("ns.dns.cluster.local.", RecordType::A))), ["10.96.0.10"]);
    let ns = ask(&r, &query("in-addr.arpa.", RecordType::NS));
    assert_eq!(ns.answers.len(), 1);
    assert_eq!(ns.additionals.len(), 1);
}

fn ptr_targets(r: &kdns_core::Resolver, name: &str) -> Vec<String> {
    let m = ask(r, &query(name, RecordType::PTR));
    m.answers.iter().filter_map(|r| match &r.data {
        RData::PTR(p) => Some(p.0.to_string()),
        _ => None,
    }).collect()
}

#[test]
fn reverse_names_follow_deltas_for_both_families() {
    // One IPv4 address that is a cluster IP and, in another service, an endpoint; one IPv6
    // endpoint shared by two headless services.
    let mut r = resolver(Default::default(), vec![
        cluster_ip("default", "web", "10.1.0.9"),
        headless("default", "db", vec![endpoint("10.1.0.9", "db-0"), endpoint("fd00::9", "db-1")]),
        headless("default", "cache", vec![endpoint("fd00::9", "cache-0")]),
    ]);
    let v4 = "9.0.1.10.in-addr.arpa.";
    let v6 = "9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    // A cluster IP names its service alone; an endpoint address names every endpoint with it.
    assert_eq!(ptr_targets(&r, v4), ["web.default.svc.cluster.local."]);
    // In snapshot order of their services.
    assert_eq!(ptr_targets(&r, v6), ["db-1.db.default.svc.cluster.local.", "cache-0.cache.default.svc.cluster.local."]);
    r.apply(v1::Delta {
        serial: 8,
        remove_services: vec![v1::ServiceKey { namespace: "default".into(), name: "web".into() }],
        upsert_services: vec![headless("default", "cache", vec![endpoint("fd00::10", "cache-0")])],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(ptr_targets(&r, v4), ["db-0.db.default.svc.cluster.local."]);
    assert_eq!(ptr_targets(&r, v6), ["db-1.db.default.svc.cluster.local."]);
    let moved = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    assert_eq!(ptr_targets(&r, moved), ["cache-0.cache.default.svc.cluster.local."]);
}

#[test]
fn a_service_with_more_endpoint_groups_than_the_index_holds_is_rejected() {
    let mut r = resolver(Default::default(), vec![cluster_ip("default", "web", "10.96.0.5")]);
    let mut big = headless("default", "big", vec![endpoint("10.1.0.1", "")]);
    let group = big.endpoint_groups[0].clone();
    big.endpoint_groups = vec![group; 65_537];
    let err = r.apply(v1::Delta { serial: 8, upsert_services: vec![big], ..Default::default() }).unwrap_err();
    assert_eq!(err.code(), -11);
    assert_eq!(r.serial(), 7);
    assert_eq!(ask(&r, &query("big.default.svc.cluster.local.", RecordType::A)).response_code, ResponseCode::NXDomain);
    assert_eq!(a_records(&ask(&r, &query("web.default.svc.cluster.local.", RecordType::A))), ["10.96.0.5"]);
}
