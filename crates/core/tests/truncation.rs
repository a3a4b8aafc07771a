//! What a UDP response holds when the answer does not fit (issue 20): as many whole records as
//! fit, in section order; TC when an answer or authority record is left out (`fill`, the
//! default) or when any record is (`coredns`, as miekg/dns `Msg.Truncate`). TCP is unchanged.

mod support;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use kdns_core::{Resolver, STREAM, v1};
use support::*;

const MANY: &str = "many.default.svc.cluster.local.";
const SRV: &str = "srv.default.svc.cluster.local.";
const HEADER: usize = 12;
/// An OPT record without options.
const OPT: usize = 11;
/// An A record whose owner is a pointer to the question: pointer, type, class, TTL,
/// RDLENGTH, address.
const A_RECORD: usize = 2 + 2 + 2 + 4 + 2 + 4;

fn config(truncation: v1::Truncation) -> v1::Config {
    v1::Config { truncation: truncation as i32, ..Default::default() }
}

/// A headless service with 150 ready endpoints, 10.244.10.1 to 10.244.10.150.
fn headless_150(truncation: v1::Truncation) -> Resolver {
    let eps = (1..=150).map(|i| endpoint(&format!("10.244.10.{i}"), "")).collect();
    resolver(config(truncation), vec![headless("default", "many", eps)])
}

/// 18 endpoints with hostnames host-1..host-18: each SRV answer has an A record as glue.
fn srv_18(truncation: v1::Truncation) -> Resolver {
    let eps = (1..=18).map(|i| endpoint(&format!("10.2.0.{i}"), &format!("host-{i}"))).collect();
    resolver(config(truncation), vec![headless("default", "srv", eps)])
}

/// The question section on the wire: the name (its text length + 1 for the root) plus type
/// and class.
fn question(name: &str) -> usize {
    name.len() + 1 + 4
}

fn udp(r: &Resolver, m: &Message, max_udp: u16) -> (Vec<u8>, Message) {
    let bytes = r.resolve(&m.to_vec().unwrap(), max_udp).expect("a response");
    let parsed = Message::from_vec(&bytes).expect("the response parses");
    (bytes, parsed)
}

fn tcp(r: &Resolver, m: &Message) -> Message {
    Message::from_vec(&r.resolve(&m.to_vec().unwrap(), STREAM).unwrap()).unwrap()
}

const MODES: [v1::Truncation; 2] = [v1::Truncation::Fill, v1::Truncation::Coredns];

#[test]
fn plain_udp_gets_as_many_whole_a_records_as_fit_512_bytes_and_tc() {
    // 12 + 36 + 29 * 16 = 512: exactly 29 records, the count CoreDNS answers with.
    let fit = (512 - HEADER - question(MANY)) / A_RECORD;
    assert_eq!(fit, 29);
    for mode in MODES {
        let r = headless_150(mode);
        let q = query(MANY, RecordType::A);
        let (bytes, resp) = udp(&r, &q, 1232);
        assert_eq!(bytes.len(), HEADER + question(MANY) + fit * A_RECORD, "{mode:?}");
        assert!(bytes.len() <= 512);
        assert!(resp.truncation, "{mode:?}: TC, answer records were left out");
        assert_eq!(resp.response_code, ResponseCode::NoError);
        assert_eq!(resp.answers.len(), fit, "{mode:?}");
        assert!(resp.authorities.is_empty() && resp.additionals.is_empty() && resp.edns.is_none());
        // The first records of the full answer, in its order.
        let full = tcp(&r, &q);
        assert_eq!(full.answers.len(), 150);
        assert_eq!(resp.answers[..], full.answers[..fit]);
    }
}

#[test]
fn edns_1232_gets_as_many_whole_a_records_as_fit_with_the_opt_and_tc() {
    // 12 + 36 + 73 * 16 + 11 = 1227 <= 1232 < 1243: 73 records, as CoreDNS.
    let fit = (1232 - OPT - HEADER - question(MANY)) / A_RECORD;
    assert_eq!(fit, 73);
    for mode in MODES {
        let r = headless_150(mode);
        for client in [1232, 4096, 65000] {
            // The server's --max-udp-size (1232) caps a larger client buffer.
            let (bytes, resp) = udp(&r, &with_edns(query(MANY, RecordType::A), client, 0), 1232);
            assert_eq!(bytes.len(), HEADER + question(MANY) + fit * A_RECORD + OPT, "{mode:?} {client}");
            assert!(resp.truncation);
            assert_eq!(resp.answers.len(), fit);
            assert_eq!(resp.edns.as_ref().map(|e| e.max_payload()), Some(1232), "the OPT is kept");
        }
        // A client buffer of 512 leaves room for 28 next to the OPT.
        let (bytes, resp) = udp(&r, &with_edns(query(MANY, RecordType::A), 512, 0), 1232);
        assert_eq!(resp.answers.len(), (512 - OPT - HEADER - question(MANY)) / A_RECORD);
        assert_eq!(resp.answers.len(), 28);
        assert!(bytes.len() <= 512 && resp.truncation && resp.edns.is_some());
    }
}

#[test]
fn tcp_gets_every_record_without_tc() {
    for mode in MODES {
        let r = headless_150(mode);
        let resp = tcp(&r, &query(MANY, RecordType::A));
        assert!(!resp.truncation);
        assert_eq!(resp.answers.len(), 150);
        let srv = tcp(&srv_18(mode), &query(SRV, RecordType::SRV));
        assert!(!srv.truncation);
        assert_eq!((srv.answers.len(), srv.additionals.len()), (18, 18));
    }
}

/// One SRV answer: owner pointer, type, class, TTL, RDLENGTH, priority, weight, port and the
/// target written whole (RFC 2782): host-N.srv.default.svc.cluster.local.
fn srv_record(i: usize) -> usize {
    2 + 10 + 6 + 1 + format!("host-{i}").len() + SRV.len() + 1
}

#[test]
fn srv_answers_that_fit_with_glue_that_does_not_fill_mode_has_no_tc_coredns_mode_has() {
    let answers: usize = (1..=18).map(srv_record).sum();
    let used = HEADER + question(SRV) + answers;
    // Each glue A record's owner points at its SRV target: 16 bytes.
    let glue = (1232 - OPT - used) / A_RECORD;
    assert_eq!(glue, 9);
    let q = with_edns(query(SRV, RecordType::SRV), 1232, 0);

    let (bytes, fill) = udp(&srv_18(v1::Truncation::Fill), &q, 1232);
    assert!(!fill.truncation, "fill: every answer is there, glue is optional (RFC 2181 9)");
    assert_eq!((fill.answers.len(), fill.additionals.len()), (18, glue));
    assert_eq!(bytes.len(), used + glue * A_RECORD + OPT);
    // The glue kept is the first of the full additional section.
    let full = tcp(&srv_18(v1::Truncation::Fill), &query(SRV, RecordType::SRV));
    assert_eq!(fill.additionals[..], full.additionals[..glue]);

    let (coredns_bytes, coredns) = udp(&srv_18(v1::Truncation::Coredns), &q, 1232);
    assert!(coredns.truncation, "coredns: TC whenever a record was left out");
    assert_eq!((coredns.answers.len(), coredns.additionals.len()), (18, glue));
    // The same records; only the TC bit differs.
    assert_eq!(coredns_bytes[3..], bytes[3..]);
    assert_eq!(coredns_bytes[2], bytes[2] | 0x02);

    // Everything fits: no TC in either mode.
    for mode in MODES {
        let (_, resp) = udp(&srv_18(mode), &with_edns(query(SRV, RecordType::SRV), 4096, 0), 4096);
        assert!(!resp.truncation, "{mode:?}");
        assert_eq!((resp.answers.len(), resp.additionals.len()), (18, 18));
    }
}

#[test]
fn when_an_answer_record_is_left_out_no_later_record_is_written() {
    // 512 bytes without EDNS: the SRV answers themselves do not all fit, so there is no glue
    // (nothing after the first record left out, as miekg/dns does), and TC in both modes.
    let fit = {
        let mut used = HEADER + question(SRV);
        let mut n = 0;
        while used + srv_record(n + 1) <= 512 {
            used += srv_record(n + 1);
            n += 1;
        }
        n
    };
    assert_eq!(fit, 8);
    for mode in MODES {
        let (bytes, resp) = udp(&srv_18(mode), &query(SRV, RecordType::SRV), 1232);
        assert!(resp.truncation, "{mode:?}");
        assert_eq!(resp.answers.len(), fit);
        assert!(resp.additionals.is_empty());
        assert_eq!(bytes.len(), HEADER + question(SRV) + (1..=fit).map(srv_record).sum::<usize>());
    }
}

#[test]
fn small_answers_are_untouched_by_the_mode() {
    let web = || vec![cluster_ip("default", "web", "10.96.0.5")];
    let q = with_edns(query("web.default.svc.cluster.local.", RecordType::A), 1232, 0).to_vec().unwrap();
    let fill = resolver(config(v1::Truncation::Fill), web()).resolve(&q, 1232).unwrap();
    let coredns = resolver(config(v1::Truncation::Coredns), web()).resolve(&q, 1232).unwrap();
    let default = resolver(Default::default(), web()).resolve(&q, 1232).unwrap();
    assert_eq!(fill, coredns);
    assert_eq!(fill, default);
    assert_eq!(Message::from_vec(&fill).unwrap().answers.len(), 1);
}

#[test]
fn the_default_is_fill_and_an_unknown_mode_is_rejected() {
    assert_eq!(v1::Config::default().truncation, v1::Truncation::Fill as i32);
    let err = Resolver::new(v1::Config { truncation: 2, ..Default::default() }).unwrap_err();
    assert_eq!(err, kdns_core::InputError::BadTruncation);
    assert_eq!(err.code(), -12);
    // Reconfiguring changes the mode of a loaded resolver; a bad mode keeps the old one.
    let mut r = srv_18(v1::Truncation::Fill);
    let q = with_edns(query(SRV, RecordType::SRV), 1232, 0);
    assert!(!udp(&r, &q, 1232).1.truncation);
    r.configure(config(v1::Truncation::Coredns)).unwrap();
    assert!(udp(&r, &q, 1232).1.truncation);
    assert!(r.configure(v1::Config { truncation: -1, ..Default::default() }).is_err());
    assert!(udp(&r, &q, 1232).1.truncation);
}
