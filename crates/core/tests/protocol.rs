//! Protocol hygiene of `Resolver::resolve`: header handling, EDNS0, truncation, errors.

mod support;

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use kdns_core::{Resolver, STREAM};
use support::*;

fn many_endpoints(n: usize) -> Resolver {
    let eps = (1..=n).map(|i| endpoint(&format!("10.1.{}.{}", i / 250, i % 250 + 1), "")).collect();
    resolver(Default::default(), vec![headless("default", "many", eps)])
}

#[test]
fn responses_to_responses_and_short_packets_get_nothing() {
    let r = resolver(Default::default(), vec![]);
    let mut m = query("a.default.svc.cluster.local.", RecordType::A).to_vec().unwrap();
    m[2] |= 0x80; // QR
    assert!(r.resolve(&m, 1232).is_none());
    assert!(r.resolve(&[1, 2, 3], 1232).is_none());
    assert!(r.resolve(&[], 1232).is_none());
}

#[test]
fn garbage_after_the_header_is_formerr_with_the_id() {
    let r = resolver(Default::default(), vec![]);
    let packet = [0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3f, 0xff];
    let resp = r.resolve(&packet, 1232).unwrap();
    assert_eq!(&resp[..2], &[0xab, 0xcd]);
    assert_eq!(resp[2] & 0x80, 0x80, "QR set");
    assert_eq!(resp[2] & 0x01, 0x01, "RD echoed");
    assert_eq!(resp[3] & 0x0f, 1, "FORMERR");
}

#[test]
fn qdcount_other_than_one_is_formerr() {
    let r = resolver(Default::default(), vec![]);
    let mut two = query("a.cluster.local.", RecordType::A);
    two.add_query(hickory_proto::op::Query::query("b.cluster.local.".parse().unwrap(), RecordType::A));
    assert_eq!(ask(&r, &two).response_code, ResponseCode::FormErr);
    let mut none = query("a.cluster.local.", RecordType::A);
    none.queries.clear();
    assert_eq!(ask(&r, &none).response_code, ResponseCode::FormErr);
}

#[test]
fn other_opcodes_are_notimp() {
    let r = resolver(Default::default(), vec![]);
    let mut m = query("cluster.local.", RecordType::SOA);
    m.metadata.op_code = OpCode::Status;
    let resp = ask(&r, &m);
    assert_eq!(resp.response_code, ResponseCode::NotImp);
    assert_eq!(resp.op_code, OpCode::Status);
}

#[test]
fn edns_is_answered_with_opt_and_badvers_above_version_zero() {
    let r = resolver(Default::default(), vec![cluster_ip("default", "web", "10.96.0.5")]);
    let plain = ask(&r, &query("web.default.svc.cluster.local.", RecordType::A));
    assert!(plain.edns.is_none(), "no OPT without one in the query");
    let resp = ask(&r, &with_edns(query("web.default.svc.cluster.local.", RecordType::A), 4096, 0));
    let edns = resp.edns.as_ref().expect("OPT in the response");
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(resp.answers.len(), 1);
    let bad = ask(&r, &with_edns(query("web.default.svc.cluster.local.", RecordType::A), 4096, 1));
    assert_eq!(u16::from(bad.response_code), 16, "BADVERS");
    assert!(bad.answers.is_empty());
}

#[test]
fn truncation_follows_the_clients_buffer() {
    let r = many_endpoints(60);
    let q = query("many.default.svc.cluster.local.", RecordType::A);
    let small = ask(&r, &q);
    assert!(small.truncation);
    // As many whole records as fit 512 bytes (tests/truncation.rs has the arithmetic).
    assert_eq!(small.answers.len(), 29);
    assert_eq!(small.queries.len(), 1, "the question is kept");
    let big = ask(&r, &with_edns(q.clone(), 4096, 0));
    assert!(!big.truncation);
    assert_eq!(big.answers.len(), 60);
    let tcp = Message::from_vec(&r.resolve(&q.to_vec().unwrap(), STREAM).unwrap()).unwrap();
    assert!(!tcp.truncation);
    assert_eq!(tcp.answers.len(), 60);
    // Never more than the server limit, whatever the client says.
    let r = many_endpoints(200);
    let q = with_edns(query("many.default.svc.cluster.local.", RecordType::A), 65000, 0);
    let bytes = r.resolve(&q.to_vec().unwrap(), 1232).unwrap();
    assert!(bytes.len() <= 1232);
    assert!(Message::from_vec(&bytes).unwrap().truncation);
}

#[test]
fn additional_records_that_do_not_fit_are_left_out_without_tc() {
    // 18 SRV records (SRV targets are never compressed) fit in 1232 bytes with only 9 of
    // their 18 address records.
    let eps = (1..=18).map(|i| endpoint(&format!("10.2.0.{i}"), &format!("host-{i}"))).collect();
    let r = resolver(Default::default(), vec![headless("default", "srv", eps)]);
    let resp = ask(&r, &with_edns(query("srv.default.svc.cluster.local.", RecordType::SRV), 1232, 0));
    assert!(!resp.truncation);
    assert_eq!(resp.answers.len(), 18);
    assert_eq!(resp.additionals.len(), 9);
}

#[test]
fn case_of_the_question_is_kept() {
    let r = resolver(Default::default(), vec![cluster_ip("default", "web", "10.96.0.5")]);
    let resp = ask(&r, &query("WeB.Default.SVC.cluster.LOCAL.", RecordType::A));
    assert_eq!(resp.answers[0].name.to_ascii(), "WeB.Default.SVC.cluster.LOCAL.");
    assert_eq!(resp.queries[0].name().to_ascii(), "WeB.Default.SVC.cluster.LOCAL.");
}

#[test]
fn non_in_class_and_out_of_zone_are_refused_without_aa() {
    let r = resolver(Default::default(), vec![]);
    let mut m = query("version.bind.", RecordType::TXT);
    m.queries[0].set_query_class(hickory_proto::rr::DNSClass::CH);
    assert_eq!(ask(&r, &m).response_code, ResponseCode::Refused);
    let out = ask(&r, &query("example.com.", RecordType::A));
    assert_eq!(out.response_code, ResponseCode::Refused);
    assert!(!out.authoritative);
}

#[test]
fn every_prefix_of_a_valid_query_gets_a_well_formed_answer_or_none() {
    let r = resolver(Default::default(), vec![cluster_ip("default", "web", "10.96.0.5")]);
    let full = with_edns(query("web.default.svc.cluster.local.", RecordType::A), 1232, 0).to_vec().unwrap();
    for len in 0..full.len() {
        if let Some(resp) = r.resolve(&full[..len], 1232) {
            Message::from_vec(&resp).expect("well-formed");
            assert_eq!(&resp[..2], &full[..2]);
        }
    }
}

#[test]
fn names_are_compressed_against_the_question_and_each_other() {
    let eps = (1..=3).map(|i| endpoint(&format!("10.2.0.{i}"), &format!("host-{i}"))).collect();
    let r = resolver(Default::default(), vec![headless("default", "srv", eps)]);
    let q = query("srv.default.svc.cluster.local.", RecordType::SRV);
    let bytes = r.resolve(&q.to_vec().unwrap(), STREAM).unwrap();
    let resp = Message::from_vec(&bytes).unwrap();
    assert_eq!(resp.answers.len(), 3);
    assert_eq!(resp.additionals.len(), 3);
    // Each SRV owner is a pointer to the question (offset 12); each SRV target is written
    // whole (RFC 2782); each address record's owner points at its SRV target.
    let question = 12 + "srv.default.svc.cluster.local.".len() + 1 + 4;
    let target = 1 + "host-1".len() + "srv.default.svc.cluster.local.".len() + 1;
    let answer = 2 + 10 + 6 + target;
    let additional = 2 + 10 + 4;
    assert_eq!(bytes.len(), question + 3 * answer + 3 * additional);
    assert_eq!(&bytes[question..question + 2], &[0xc0, 0x0c]);
}

#[test]
fn a_mixed_case_question_is_not_a_pointer_target_for_lowercase_names() {
    let r = resolver(Default::default(), vec![cluster_ip("default", "web", "10.96.0.5")]);
    let resp = ask(&r, &query("_HTTP._tcp.WEB.default.svc.cluster.local.", RecordType::SRV));
    for rec in resp.answers.iter() {
        assert_eq!(rec.name.to_ascii(), "_HTTP._tcp.WEB.default.svc.cluster.local.");
    }
    for rec in resp.additionals.iter() {
        assert_eq!(rec.name.to_ascii(), "web.default.svc.cluster.local.", "glue owner keeps its own case");
    }
}

#[test]
fn an_answer_beyond_64_kib_over_tcp_is_servfail() {
    let r = many_endpoints(5000);
    let q = query("many.default.svc.cluster.local.", RecordType::A);
    let resp = Message::from_vec(&r.resolve(&q.to_vec().unwrap(), STREAM).unwrap()).unwrap();
    // 5,000 A records are 80,000 bytes even with every owner compressed.
    assert_eq!(resp.response_code, ResponseCode::ServFail);
    assert!(resp.answers.is_empty());
}

#[test]
fn a_question_section_over_the_limit_is_left_out_of_an_error_reply() {
    // Found by fuzzing: an unknown opcode is answered NOTIMP with its questions echoed, and
    // eight 250-byte questions do not fit in 512 bytes: the NOTIMP goes without them (it was
    // SERVFAIL before error replies echoed their questions where they fit).
    let r = resolver(Default::default(), vec![]);
    // Distinct names, so that compression cannot shrink them.
    let long = |q: usize| -> String { (0..4).map(|i| format!("{}{q}{i}.", "a".repeat(60))).collect() };
    let mut m = query(&long(0), RecordType::A);
    m.metadata.op_code = OpCode::Status;
    for q in 1..8 {
        m.add_query(hickory_proto::op::Query::query(long(q).parse().unwrap(), RecordType::A));
    }
    let bytes = r.resolve(&m.to_vec().unwrap(), 512).unwrap();
    assert!(bytes.len() <= 512);
    let resp = Message::from_vec(&bytes).unwrap();
    assert_eq!(resp.response_code, ResponseCode::NotImp);
    assert!(resp.queries.is_empty());
    assert_eq!(resp.id, m.id);
}
