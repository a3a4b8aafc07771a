//! What RFC-strict resolvers need (issue 22): empty non-terminals (RFC 8020), the DO bit
//! (RFC 3225), BADVERS and FORMERR replies (RFC 6891), TSIG without keys (RFC 8945), NSID
//! (RFC 5001), the question's case in zone names (as CoreDNS), IXFR serial arithmetic.

mod support;

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
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

// ----- 2. DO -----------------------------------------------------------------------------------

fn with_do(m: Message) -> Message {
    let mut m = with_edns(m, 1232, 0);
    m.edns.as_mut().unwrap().set_dnssec_ok(true);
    m
}

#[test]
fn the_do_bit_is_copied_into_the_reply() {
    let r = resolver(Default::default(), cluster());
    let q = query("web.default.svc.cluster.local.", RecordType::A);
    let resp = ask(&r, &with_do(q.clone()));
    assert!(resp.edns.as_ref().unwrap().flags().dnssec_ok, "DO copied");
    assert_eq!(resp.answers.len(), 1);
    let resp = ask(&r, &with_edns(q, 1232, 0));
    assert!(!resp.edns.as_ref().unwrap().flags().dnssec_ok, "DO clear when the query's is");
    // Negative answers and errors too.
    let resp = ask(&r, &with_do(query("nothing.default.svc.cluster.local.", RecordType::A)));
    assert_eq!(resp.response_code, ResponseCode::NXDomain);
    assert!(resp.edns.as_ref().unwrap().flags().dnssec_ok);
    let resp = ask(&r, &with_do(query("example.org.", RecordType::A)));
    assert_eq!(resp.response_code, ResponseCode::Refused);
    assert!(resp.edns.as_ref().unwrap().flags().dnssec_ok);
}

// ----- 3. BADVERS, FORMERR ------------------------------------------------------------------

#[test]
fn badvers_echoes_the_question_and_carries_opt() {
    let r = resolver(Default::default(), cluster());
    let mut q = with_edns(query("web.default.svc.cluster.local.", RecordType::A), 1232, 1);
    q.edns.as_mut().unwrap().set_dnssec_ok(true);
    let resp = ask(&r, &q);
    // Extended RCODE 16 (hickory-proto reads it as BADSIG, which shares the number).
    assert_eq!(u16::from(resp.response_code), 16, "BADVERS");
    assert_eq!(resp.queries.len(), 1);
    assert_eq!(resp.queries[0].name().to_ascii(), "web.default.svc.cluster.local.");
    let edns = resp.edns.as_ref().expect("OPT");
    assert_eq!(edns.version(), 0);
    assert!(edns.flags().dnssec_ok);
    assert!(resp.answers.is_empty());
}

/// A query for web.default.svc.cluster.local. A, RD, with an OPT record whose RDATA is `opt`.
fn with_raw_opt(flags: u32, opt: &[u8]) -> Vec<u8> {
    let mut bytes = query("web.default.svc.cluster.local.", RecordType::A).to_vec().unwrap();
    bytes[11] = 1; // ARCOUNT
    bytes.push(0);
    bytes.extend_from_slice(&41u16.to_be_bytes());
    bytes.extend_from_slice(&1232u16.to_be_bytes());
    bytes.extend_from_slice(&flags.to_be_bytes());
    bytes.extend_from_slice(&(opt.len() as u16).to_be_bytes());
    bytes.extend_from_slice(opt);
    bytes
}

#[test]
fn formerr_for_an_invalid_client_subnet_echoes_the_question_and_carries_opt() {
    let r = resolver(Default::default(), cluster());
    // ECS (option 8) of family 1 with a source prefix of 33 bits: hickory-proto refuses it.
    let bad_ecs = [0, 8, 0, 8, 0, 1, 33, 0, 10, 0, 0, 1];
    for (flags, ecs) in [(0u32, &bad_ecs[..]), (0x8000, &bad_ecs[..]), (0, &[0u8, 8, 0, 4, 0, 9, 0, 0][..]), (0, &[0u8, 8, 0, 0][..])] {
        let bytes = r.resolve(&with_raw_opt(flags, ecs), 1232).unwrap();
        let resp = Message::from_vec(&bytes).expect("well-formed");
        assert_eq!(resp.response_code, ResponseCode::FormErr, "{ecs:?}");
        assert_eq!(resp.id, 4242);
        assert_eq!(resp.queries.len(), 1, "the question echoed");
        let edns = resp.edns.as_ref().expect("OPT in the FORMERR (RFC 6891 7)");
        assert_eq!(edns.flags().dnssec_ok, flags != 0);
        assert!(resp.recursion_desired);
    }
    // The same broken option under EDNS version 1, whose options may mean something else: BADVERS.
    let bytes = r.resolve(&with_raw_opt(0x0001_0000, &bad_ecs), 1232).unwrap();
    let resp = Message::from_vec(&bytes).unwrap();
    assert_eq!(u16::from(resp.response_code), 16, "BADVERS");
    assert_eq!(resp.queries.len(), 1);
}

#[test]
fn formerr_echoes_the_question_when_only_later_records_are_broken() {
    let r = resolver(Default::default(), cluster());
    let mut bytes = query("web.default.svc.cluster.local.", RecordType::A).to_vec().unwrap();
    bytes[7] = 1; // ANCOUNT 1, with a record cut short
    bytes.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    let resp = Message::from_vec(&r.resolve(&bytes, 1232).unwrap()).unwrap();
    assert_eq!(resp.response_code, ResponseCode::FormErr);
    assert_eq!(resp.queries.len(), 1);
    assert!(resp.edns.is_none(), "no OPT: the query's could not be read");
}

#[test]
fn formerr_for_two_questions_echoes_them() {
    let r = resolver(Default::default(), cluster());
    let mut two = with_edns(query("a.cluster.local.", RecordType::A), 1232, 0);
    two.add_query(hickory_proto::op::Query::query("b.cluster.local.".parse().unwrap(), RecordType::A));
    let resp = ask(&r, &two);
    assert_eq!(resp.response_code, ResponseCode::FormErr);
    assert_eq!(resp.queries.len(), 2);
    assert!(resp.edns.is_some());
}

// ----- 4. TSIG ---------------------------------------------------------------------------------

/// A TSIG record (RFC 8945 4.2) for key `key`, algorithm hmac-sha256, with a 32-byte MAC.
fn tsig_record(key: &str, id: u16) -> Vec<u8> {
    let name = |n: &str| -> Vec<u8> {
        let mut out = Vec::new();
        for label in n.trim_end_matches('.').split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    };
    let mut rdata = name("hmac-sha256.");
    rdata.extend_from_slice(&0x0000_6543_2100u64.to_be_bytes()[2..]); // time signed
    rdata.extend_from_slice(&300u16.to_be_bytes()); // fudge
    rdata.extend_from_slice(&32u16.to_be_bytes());
    rdata.extend_from_slice(&[0xab; 32]);
    rdata.extend_from_slice(&id.to_be_bytes());
    rdata.extend_from_slice(&[0, 0, 0, 0]); // error, other length
    let mut rr = name(key);
    rr.extend_from_slice(&250u16.to_be_bytes());
    rr.extend_from_slice(&255u16.to_be_bytes());
    rr.extend_from_slice(&0u32.to_be_bytes());
    rr.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    rr.extend_from_slice(&rdata);
    rr
}

fn signed(m: &Message, key: &str) -> Vec<u8> {
    let mut bytes = m.to_vec().unwrap();
    let ar = u16::from_be_bytes([bytes[10], bytes[11]]) + 1;
    bytes[10..12].copy_from_slice(&ar.to_be_bytes());
    bytes.extend_from_slice(&tsig_record(key, m.id));
    bytes
}

#[test]
fn a_tsig_signed_query_gets_notauth_badkey_unsigned() {
    let r = resolver(Default::default(), cluster());
    for q in [query("web.default.svc.cluster.local.", RecordType::A), with_do(query("web.default.svc.cluster.local.", RecordType::A))] {
        let bytes = r.resolve(&signed(&q, "Transfer-Key."), 1232).unwrap();
        let resp = Message::from_vec(&bytes).unwrap();
        assert_eq!(resp.response_code, ResponseCode::NotAuth);
        assert!(resp.answers.is_empty());
        assert_eq!(resp.queries.len(), 1);
        assert_eq!(resp.edns.is_some(), q.edns.is_some());
        let tsig = resp.additionals.last().expect("a TSIG record");
        assert_eq!(tsig.name.to_ascii(), "Transfer-Key.");
        assert_eq!(tsig.dns_class, hickory_proto::rr::DNSClass::ANY);
        assert_eq!(tsig.ttl, 0);
        let RData::TSIG(t) = &tsig.data else { panic!("not TSIG: {tsig:?}") };
        assert_eq!(t.algorithm.to_name().to_ascii().trim_end_matches('.'), "hmac-sha256");
        assert_eq!(t.time, 0x6543_2100);
        assert_eq!(t.fudge, 300);
        assert!(t.mac.is_empty(), "unsigned: MAC size 0");
        assert_eq!(t.oid, q.id);
        assert_eq!(t.error.map(u16::from), Some(17), "BADKEY");
        // The TSIG record is the last record of the message.
        assert!(bytes.ends_with(&[0, 17, 0, 0]));
    }
    // Out-of-zone and AXFR questions alike: the key is checked first.
    let resp = Message::from_vec(&r.resolve(&signed(&query("example.org.", RecordType::A), "k."), 1232).unwrap()).unwrap();
    assert_eq!(resp.response_code, ResponseCode::NotAuth);
    let resp = Message::from_vec(&r.resolve(&signed(&query("cluster.local.", RecordType::AXFR), "k."), 0).unwrap()).unwrap();
    assert_eq!(resp.response_code, ResponseCode::NotAuth);
}

#[test]
fn a_tsig_record_that_is_not_last_is_formerr() {
    let r = resolver(Default::default(), cluster());
    // TSIG, then an OPT record after it.
    let q = query("web.default.svc.cluster.local.", RecordType::A);
    let mut bytes = signed(&q, "k.");
    bytes[11] = 2;
    bytes.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
    let resp = Message::from_vec(&r.resolve(&bytes, 1232).unwrap()).unwrap();
    assert_eq!(resp.response_code, ResponseCode::FormErr);
}

// ----- 5. NSID -------------------------------------------------------------------------------

fn asking_nsid(m: Message, payload: &[u8]) -> Message {
    let mut m = with_edns(m, 1232, 0);
    let edns: &mut Edns = m.edns.as_mut().unwrap();
    edns.options_mut().insert(EdnsOption::Unknown(3, payload.to_vec()));
    m
}

fn nsid_of(m: &Message) -> Option<Vec<u8>> {
    match m.edns.as_ref()?.option(EdnsCode::NSID)? {
        EdnsOption::NSID(p) => Some(p.as_ref().to_vec()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn nsid_is_answered_when_configured_and_asked_for() {
    let cfg = v1::Config { nsid: Some("kdns-7f9c-abcde".into()), ..Default::default() };
    let r = resolver(cfg, cluster());
    let q = query("web.default.svc.cluster.local.", RecordType::A);
    let resp = ask(&r, &asking_nsid(q.clone(), b""));
    assert_eq!(nsid_of(&resp).as_deref(), Some(&b"kdns-7f9c-abcde"[..]));
    assert_eq!(resp.answers.len(), 1);
    // Not asked for; asked with data in the option (RFC 5001 2.1 has it empty), as CoreDNS's
    // `nsid` plugin answers any NSID option.
    assert_eq!(nsid_of(&ask(&r, &with_edns(q.clone(), 1232, 0))), None);
    assert_eq!(nsid_of(&ask(&r, &asking_nsid(q.clone(), b"x"))).as_deref(), Some(&b"kdns-7f9c-abcde"[..]));
    // Errors carry it too.
    let resp = ask(&r, &asking_nsid(query("example.org.", RecordType::A), b""));
    assert_eq!(resp.response_code, ResponseCode::Refused);
    assert_eq!(nsid_of(&resp).as_deref(), Some(&b"kdns-7f9c-abcde"[..]));
    // Not configured: never answered.
    let r = resolver(Default::default(), cluster());
    assert_eq!(nsid_of(&ask(&r, &asking_nsid(q, b""))), None);
}

#[test]
fn nsid_room_is_kept_in_a_full_udp_reply() {
    let cfg = v1::Config { nsid: Some("n".repeat(128)), ..Default::default() };
    let eps = (1..=200).map(|i| endpoint(&format!("10.1.{}.{}", i / 250, i % 250 + 1), "")).collect();
    let r = resolver(cfg, vec![headless("default", "many", eps)]);
    let q = asking_nsid(query("many.default.svc.cluster.local.", RecordType::A), b"");
    let bytes = r.resolve(&q.to_vec().unwrap(), 1232).unwrap();
    assert!(bytes.len() <= 1232, "{}", bytes.len());
    let resp = Message::from_vec(&bytes).unwrap();
    assert!(resp.truncation);
    assert_eq!(nsid_of(&resp).unwrap().len(), 128);
}

#[test]
fn an_nsid_over_128_bytes_is_refused() {
    let err = Resolver::new(v1::Config { nsid: Some("n".repeat(129)), ..Default::default() }).unwrap_err();
    assert_eq!(err, kdns_core::InputError::BadNsid);
    assert_eq!(err.code(), -13);
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
