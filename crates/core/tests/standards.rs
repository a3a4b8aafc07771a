//! What RFC-strict resolvers need (issue 22): empty non-terminals (RFC 8020), the question's
//! case in zone names (as CoreDNS), IXFR serial arithmetic.

mod support;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use kdns_core::{Resolver, v1};
use support::*;

fn rcode(r: &Resolver, name: &str, rtype: RecordType) -> ResponseCode {
    ask(r, &query(name, rtype)).response_code
}

fn cluster() -> Vec<v1::Service> {
    let mut web = cluster_ip("default", "web", "10.96.0.5");
    web.cluster_ips.push(ip("fd00:10:96::5"));
    let mut ext = cluster_ip("default", "ext", "10.96.0.6");
    ext.r#type = v1::ServiceType::ExternalName as i32;
    ext.cluster_ips.clear();
    ext.external_name = "example.com".into();
    let mut db = headless("default", "db", vec![endpoint("10.1.2.3", "db-0"), endpoint("fd00:10:244::7", "db-1")]);
    db.endpoint_groups[0].ports = vec![port("pg", 5432)];
    vec![web, ext, db, cluster_ip("hidden", "secret", "10.200.0.1")]
}

// ----- 1. empty non-terminals --------------------------------------------------------------

#[test]
fn reverse_networks_above_a_served_address_exist() {
    let r = resolver(Default::default(), cluster());
    for name in [
        "10.in-addr.arpa.",
        "96.10.in-addr.arpa.",
        "0.96.10.in-addr.arpa.",
        "1.10.in-addr.arpa.",
        "2.1.10.in-addr.arpa.",
        "d.f.ip6.arpa.",
        "0.0.d.f.ip6.arpa.",
        "6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa.",
        // fd00:10:244::7, all but its last nibble.
        "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa.",
    ] {
        for t in [RecordType::PTR, RecordType::A, RecordType::NS] {
            let resp = ask(&r, &query(name, t));
            assert_eq!(resp.response_code, ResponseCode::NoError, "{name} {t}");
            assert!(resp.answers.is_empty(), "{name} {t}");
            assert_eq!(resp.authorities.len(), 1, "{name} {t}: the SOA");
            assert_eq!(resp.authorities[0].record_type(), RecordType::SOA);
        }
    }
    for name in ["11.in-addr.arpa.", "97.10.in-addr.arpa.", "3.1.10.in-addr.arpa.", "010.in-addr.arpa.", "e.f.ip6.arpa.", "x.10.in-addr.arpa."] {
        assert_eq!(rcode(&r, name, RecordType::PTR), ResponseCode::NXDomain, "{name}");
    }
    // Still NXDOMAIN: a full address nobody holds, and names below a full address.
    assert_eq!(rcode(&r, "4.0.96.10.in-addr.arpa.", RecordType::PTR), ResponseCode::NXDomain);
    assert_eq!(rcode(&r, "x.5.0.96.10.in-addr.arpa.", RecordType::PTR), ResponseCode::NXDomain);
}

#[test]
fn reverse_networks_follow_filters_and_deltas() {
    // 10.200.0.1 is in a namespace that is not exposed; 10.1.2.3 is an endpoint.
    let cfg = v1::Config { namespaces: vec!["default".into()], ..Default::default() };
    let r = resolver(cfg, cluster());
    assert_eq!(rcode(&r, "200.10.in-addr.arpa.", RecordType::PTR), ResponseCode::NXDomain);
    assert_eq!(rcode(&r, "96.10.in-addr.arpa.", RecordType::PTR), ResponseCode::NoError);
    let cfg = v1::Config { no_endpoints: true, ..Default::default() };
    let r = resolver(cfg, cluster());
    assert_eq!(rcode(&r, "1.10.in-addr.arpa.", RecordType::PTR), ResponseCode::NXDomain, "no endpoint names");
    assert_eq!(rcode(&r, "96.10.in-addr.arpa.", RecordType::PTR), ResponseCode::NoError);
    let mut r = resolver(Default::default(), cluster());
    r.apply(v1::Delta { serial: 8, remove_services: vec![v1::ServiceKey { namespace: "hidden".into(), name: "secret".into() }], ..Default::default() }).unwrap();
    assert_eq!(rcode(&r, "200.10.in-addr.arpa.", RecordType::PTR), ResponseCode::NXDomain);
    r.apply(v1::Delta { serial: 9, upsert_services: vec![cluster_ip("default", "new", "10.201.0.1")], ..Default::default() }).unwrap();
    assert_eq!(rcode(&r, "201.10.in-addr.arpa.", RecordType::PTR), ResponseCode::NoError);
}

#[test]
fn a_filter_hiding_many_owners_of_a_network_is_bounded() {
    // Hundreds of hidden addresses under 10.50/16 and one exposed one above them all: the
    // scan stops at its bound and counts the network as existing, never NXDOMAIN for a name
    // with a record below it. The price: a network holding only hidden addresses, more than
    // the bound, is NODATA rather than NXDOMAIN.
    let eps = (0..500).map(|i| endpoint(&format!("10.50.{}.{}", i / 200, i % 200 + 1), "")).collect();
    let few = (1..=10).map(|i| endpoint(&format!("10.60.1.{i}"), "")).collect();
    let mut services = vec![headless("hidden", "many", eps), headless("hidden", "few", few)];
    services.push(cluster_ip("default", "top", "10.50.255.1"));
    let cfg = v1::Config { namespaces: vec!["default".into()], ..Default::default() };
    let r = resolver(cfg, services);
    assert_eq!(rcode(&r, "50.10.in-addr.arpa.", RecordType::PTR), ResponseCode::NoError);
    assert_eq!(rcode(&r, "255.50.10.in-addr.arpa.", RecordType::PTR), ResponseCode::NoError);
    assert_eq!(rcode(&r, "1.50.10.in-addr.arpa.", RecordType::PTR), ResponseCode::NoError, "200 hidden: past the bound");
    // 10.60/16: only hidden owners, fewer than the bound.
    assert_eq!(rcode(&r, "60.10.in-addr.arpa.", RecordType::PTR), ResponseCode::NXDomain);
    assert_eq!(rcode(&r, "1.60.10.in-addr.arpa.", RecordType::PTR), ResponseCode::NXDomain);
}

#[test]
fn protocol_labels_above_srv_names_exist() {
    let r = resolver(Default::default(), cluster());
    // Cluster IP service with http/TCP; headless service with pg/TCP endpoints.
    for name in ["_tcp.web.default.svc.cluster.local.", "tcp.web.default.svc.cluster.local.", "_tcp.db.default.svc.cluster.local.", "_TCP.Web.default.svc.cluster.local."] {
        let resp = ask(&r, &query(name, RecordType::A));
        assert_eq!(resp.response_code, ResponseCode::NoError, "{name}");
        assert!(resp.answers.is_empty());
        assert_eq!(resp.authorities.len(), 1, "{name}: the SOA");
    }
    for name in [
        "_udp.web.default.svc.cluster.local.",
        "_udp.db.default.svc.cluster.local.",
        "_tcp.ext.default.svc.cluster.local.",
        "_tcp.nothing.default.svc.cluster.local.",
        "x._http._tcp.web.default.svc.cluster.local.",
    ] {
        assert_eq!(rcode(&r, name, RecordType::A), ResponseCode::NXDomain, "{name}");
    }
    // Endpoint names keep answering as before.
    assert_eq!(ask(&r, &query("db-0.db.default.svc.cluster.local.", RecordType::A)).answers.len(), 1);
    let cfg = v1::Config { no_endpoints: true, ..Default::default() };
    let r = resolver(cfg, cluster());
    assert_eq!(rcode(&r, "_tcp.db.default.svc.cluster.local.", RecordType::A), ResponseCode::NXDomain);
}

#[test]
fn a_name_above_another_served_zone_exists() {
    let cfg = v1::Config { zones: vec!["example.".into(), "k8s.corp.example.".into()], ..Default::default() };
    let r = resolver(cfg, cluster());
    assert_eq!(rcode(&r, "corp.example.", RecordType::A), ResponseCode::NoError);
    assert_eq!(rcode(&r, "other.example.", RecordType::A), ResponseCode::NXDomain);
}

/// Every ancestor of every name a zone holds (as `zone_records` lists it), up to the zone,
/// answers NOERROR: nothing a resolver can reach by QNAME minimisation is denied above it.
#[test]
fn every_ancestor_of_every_served_name_is_noerror() {
    let mut services = cluster();
    services.push(headless("other", "sts", vec![endpoint("10.244.9.1", "sts-0"), endpoint("10.244.9.2", "")]));
    let cfg = v1::Config { pod_mode: v1::PodMode::Verified as i32, ..Default::default() };
    let mut r = Resolver::new(cfg).unwrap();
    let pods = vec![v1::Pod { namespace: "default".into(), name: "p".into(), ips: vec![ip("10.244.1.5")] }];
    r.load(v1::Snapshot { serial: 7, namespaces: vec!["default".into()], services, pods }).unwrap();
    let mut checked = 0;
    for zone in ["cluster.local.", "in-addr.arpa.", "ip6.arpa."] {
        let zone = Name::from_ascii(zone).unwrap();
        let records = r.lookup().zone_records(&zone).unwrap();
        assert!(records.len() > 3, "{zone}");
        for record in records {
            let mut name = record.name.clone();
            while name.num_labels() > zone.num_labels() {
                let resp = ask(&r, &query(&name.to_ascii(), RecordType::A));
                assert_eq!(resp.response_code, ResponseCode::NoError, "{name} (above {})", record.name);
                checked += 1;
                name = name.base_name();
            }
        }
    }
    assert!(checked > 100, "{checked}");
}

// ----- 6. the question's case --------------------------------------------------------------

fn names(m: &Message) -> Vec<String> {
    let mut out = Vec::new();
    for r in m.answers.iter().chain(&m.authorities).chain(&m.additionals) {
        out.push(r.name.to_ascii());
        match &r.data {
            RData::SRV(s) => out.push(s.target.to_ascii()),
            RData::SOA(s) => {
                out.push(s.mname.to_ascii());
                out.push(s.rname.to_ascii());
            }
            RData::NS(n) => out.push(n.0.to_ascii()),
            _ => {}
        }
    }
    out
}

#[test]
fn zone_names_keep_the_questions_case() {
    // CoreDNS's handler_case_test.go, the same questions.
    let mut services = cluster();
    services.push(cluster_ip("kube-system", "kube-dns", "10.96.0.10"));
    let r = resolver(Default::default(), services);
    let resp = ask(&r, &query("not-a-service.default.svc.ClUsTeR.lOcAl.", RecordType::A));
    assert_eq!(resp.response_code, ResponseCode::NXDomain);
    assert_eq!(names(&resp), ["ClUsTeR.lOcAl.", "ns.dns.ClUsTeR.lOcAl.", "hostmaster.ClUsTeR.lOcAl."]);
    let resp = ask(&r, &query("_HtTp._TcP.wEb.DeFaUlT.SvC.cLuStEr.LoCaL.", RecordType::SRV));
    assert_eq!(
        names(&resp),
        ["_HtTp._TcP.wEb.DeFaUlT.SvC.cLuStEr.LoCaL.", "web.default.svc.cLuStEr.LoCaL.", "web.default.svc.cLuStEr.LoCaL.", "web.default.svc.cLuStEr.LoCaL."]
    );
    let resp = ask(&r, &query("Cluster.local.", RecordType::SOA));
    assert_eq!(names(&resp), ["Cluster.local.", "ns.dns.Cluster.local.", "hostmaster.Cluster.local."]);
    let resp = ask(&r, &query("dB.default.svc.CLUSTER.local.", RecordType::SRV));
    assert_eq!(names(&resp)[1], "db-0.db.default.svc.CLUSTER.local.");
    let resp = ask(&r, &query("CLUSTER.local.", RecordType::NS));
    assert_eq!(names(&resp), ["CLUSTER.local.", "kube-dns.kube-system.svc.CLUSTER.local.", "kube-dns.kube-system.svc.CLUSTER.local."]);
    let resp = ask(&r, &query("In-Addr.Arpa.", RecordType::SOA));
    assert_eq!(names(&resp), ["In-Addr.Arpa.", "ns.dns.In-Addr.Arpa.", "hostmaster.In-Addr.Arpa."]);
    // PTR targets are in the primary zone as configured (CoreDNS: k.primaryZone()).
    let resp = ask(&r, &query("5.0.96.10.IN-ADDR.ARPA.", RecordType::PTR));
    let RData::PTR(target) = &resp.answers[0].data else { panic!() };
    assert_eq!(target.0.to_ascii(), "web.default.svc.cluster.local.");
}

#[test]
fn mixed_case_zone_names_compress_against_the_question() {
    let r = resolver(Default::default(), cluster());
    let q = query("nothing.default.svc.ClUsTeR.lOcAl.", RecordType::A);
    let bytes = r.resolve(&q.to_vec().unwrap(), 1232).unwrap();
    // Header, question, then the SOA: owner, mname and rname all point into the question.
    let question = 12 + "nothing.default.svc.ClUsTeR.lOcAl.".len() + 1 + 4;
    let soa = 2 + 10 + (7 + 2) + (11 + 2) + 20;
    assert_eq!(bytes.len(), question + soa);
}

// ----- 7. IXFR ---------------------------------------------------------------------------------

#[test]
fn ixfr_serials_compare_in_serial_arithmetic() {
    use kdns_core::zone::ixfr_is_current;
    assert!(ixfr_is_current(7, 7));
    assert!(ixfr_is_current(8, 7), "a client ahead is current (RFC 1995 4)");
    assert!(!ixfr_is_current(6, 7));
    assert!(ixfr_is_current(3, u32::MAX - 2), "wrapped past 2^32");
    assert!(!ixfr_is_current(u32::MAX - 2, 3));
}
