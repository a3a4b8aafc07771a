//! The wire: a DNS query message in, a DNS response message out.
//!
//! The query is parsed by hickory-proto (`no_std` + alloc); the response is written by
//! `wire.rs`. This layer owns protocol hygiene: FORMERR/NOTIMP/BADVERS, EDNS0 (the DO bit,
//! NSID), TSIG (no keys: BADKEY), and the size the client can take.

use alloc::vec::Vec;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsCode;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::config::Truncation;
use crate::lookup::{Answer, Lookup};
use crate::wire::{Fit, Head, Limit, NSID_OPTION, Opt, Sections, TsigError, write_response};

/// UDP payload size kdns advertises in its OPT record (the DNS Flag Day 2020 value).
pub const ADVERTISED_UDP_SIZE: u16 = 1232;
/// Largest response without EDNS (RFC 1035).
pub const CLASSIC_UDP_SIZE: u16 = 512;
/// `max_udp` value meaning "stream transport": no UDP size applies.
pub const STREAM: u16 = 0;

const HEADER_LEN: usize = 12;
const OPT_TYPE: u16 = 41;
const TSIG_TYPE: u16 = 250;
/// TSIG error "key not recognized" (RFC 8945 5.2).
const BADKEY: u16 = 17;

/// Answers one query message. `max_udp` is the largest UDP response the host will send, or
/// [`STREAM`] (0) for TCP. Returns `None` when nothing must be sent: the input is shorter
/// than a header or is itself a response.
pub fn respond(lookup: &Lookup<'_>, query: &[u8], max_udp: u16) -> Option<Vec<u8>> {
    if query.len() < HEADER_LEN || query[2] & 0x80 != 0 {
        return None;
    }
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => return Some(malformed(lookup, query, max_udp)),
    };
    let mut head = Head {
        id: request.id,
        op_code: request.op_code,
        authoritative: false,
        recursion_desired: request.recursion_desired,
        checking_disabled: request.checking_disabled,
        rcode: ResponseCode::NoError,
    };
    let client = request.edns.as_ref().map(ClientOpt::of);
    let reply = Reply::new(lookup, query, max_udp, client);
    if client.is_some_and(|c| c.version > 0) {
        // RFC 6891 6.1.3; the question is echoed, the OPT says version 0.
        head.rcode = ResponseCode::BADVERS;
        return Some(reply.error(head, &request.queries, None));
    }
    match signature(&request, query) {
        Signature::None => {}
        Signature::Misplaced => {
            // RFC 8945 5.1: one TSIG RR, the last of the additional section.
            head.rcode = ResponseCode::FormErr;
            return Some(reply.error(head, &request.queries, None));
        }
        Signature::Tsig(record, tsig) => return Some(bad_key(&reply, head, &request, record, tsig)),
    }
    if request.op_code != OpCode::Query {
        head.rcode = ResponseCode::NotImp;
        return Some(reply.error(head, &request.queries, None));
    }
    if request.queries.len() != 1 {
        head.rcode = ResponseCode::FormErr;
        return Some(reply.error(head, &request.queries, None));
    }
    let question = &request.queries[0];
    if question.query_class() != DNSClass::IN {
        head.rcode = ResponseCode::Refused;
        return Some(reply.error(head, core::slice::from_ref(question), None));
    }
    let answer = lookup.answer(question.name(), question.query_type());
    head.rcode = answer.rcode;
    head.authoritative = answer.authoritative;
    Some(reply.write(head, core::slice::from_ref(question), &answer))
}

/// The reply to a TSIG-signed query. kdns holds no TSIG keys, so no key is known (RFC 8945
/// 5.2: NOTAUTH, TSIG error BADKEY, the response unsigned as 5.3.2 says), as Knot answers an
/// unknown key.
#[cold]
#[inline(never)]
fn bad_key(reply: &Reply<'_>, mut head: Head, request: &Message, record: &Record, tsig: &hickory_proto::rr::rdata::TSIG) -> Vec<u8> {
    let algorithm = tsig.algorithm.to_name();
    let error = TsigError { key: &record.name, algorithm: &algorithm, time_signed: tsig.time, fudge: tsig.fudge, original_id: request.id, error: BADKEY };
    head.rcode = ResponseCode::NotAuth;
    reply.error(head, &request.queries, Some(&error))
}

/// What the query's OPT record says (RFC 6891).
#[derive(Clone, Copy, Debug)]
struct ClientOpt {
    payload: u16,
    version: u8,
    dnssec_ok: bool,
    /// An NSID option (RFC 5001 2.1; a requester sends it empty, and like CoreDNS's `nsid`
    /// and Knot, one with data is answered too).
    wants_nsid: bool,
}

impl ClientOpt {
    fn of(edns: &Edns) -> Self {
        ClientOpt {
            payload: edns.max_payload(),
            version: edns.version(),
            dnssec_ok: edns.flags().dnssec_ok,
            wants_nsid: edns.option(EdnsCode::NSID).is_some(),
        }
    }
}

/// The query's TSIG record, if it has one.
enum Signature<'m> {
    None,
    /// More than one TSIG record, or one that is not the last record.
    Misplaced,
    Tsig(&'m Record, &'m hickory_proto::rr::rdata::TSIG),
}

/// hickory-proto (without its DNSSEC features) leaves a TSIG record among the additionals (it
/// has already refused one in another section) and takes the OPT record out of them, so the
/// message itself (`query`) says whether the TSIG record is the last one.
fn signature<'m>(request: &'m Message, query: &[u8]) -> Signature<'m> {
    let is_tsig = |r: &&Record| r.record_type() == RecordType::TSIG;
    let additionals = &request.additionals;
    match (additionals.iter().filter(is_tsig).count(), additionals.last()) {
        (0, _) => Signature::None,
        (1, Some(last)) => match &last.data {
            RData::TSIG(tsig) if last_record_type(query) == Some(TSIG_TYPE) => Signature::Tsig(last, tsig),
            _ => Signature::Misplaced,
        },
        _ => Signature::Misplaced,
    }
}

/// The type of the last record of a message (read raw).
#[cold]
#[inline(never)]
fn last_record_type(msg: &[u8]) -> Option<u16> {
    let count = |at: usize| usize::from(u16::from_be_bytes([msg[at], msg[at + 1]]));
    let mut at = HEADER_LEN;
    for _ in 0..count(4) {
        at = skip_name(msg, at)? + 4;
    }
    let mut last = None;
    for _ in 0..count(6) + count(8) + count(10) {
        let record = raw_record(msg, at)?;
        last = Some(record.rtype);
        at = record.end;
    }
    last
}

/// The reply to a query hickory-proto does not parse: FORMERR (BADVERS if its OPT asks for a
/// later EDNS version, whose options may mean something else), with the questions and the OPT
/// record when they can still be read (RFC 6891 7: a reply to a query with OPT carries OPT,
/// e.g. for an invalid Client Subnet option), else the bare header.
#[cold]
#[inline(never)]
fn malformed(lookup: &Lookup<'_>, query: &[u8], max_udp: u16) -> Vec<u8> {
    let (questions, client) = salvage(query);
    if questions.is_empty() && client.is_none() {
        return header_only(query, ResponseCode::FormErr);
    }
    let head = Head {
        id: u16::from_be_bytes([query[0], query[1]]),
        op_code: OpCode::from_u8((query[2] >> 3) & 0x0f),
        authoritative: false,
        recursion_desired: query[2] & 0x01 != 0,
        checking_disabled: query[3] & 0x10 != 0,
        rcode: if client.is_some_and(|c| c.version > 0) { ResponseCode::BADVERS } else { ResponseCode::FormErr },
    };
    Reply::new(lookup, query, max_udp, client).error(head, &questions, None)
}

/// What can be read of a message that does not parse: its questions, if every one parses, and
/// the first OPT record of its additional section, if the records before it can be stepped over.
fn salvage(query: &[u8]) -> (Vec<Query>, Option<ClientOpt>) {
    let count = |at: usize| usize::from(u16::from_be_bytes([query[at], query[at + 1]]));
    let mut decoder = BinDecoder::new(query);
    if decoder.read_slice(HEADER_LEN).is_err() {
        return (Vec::new(), None);
    }
    let mut questions = Vec::new();
    for _ in 0..count(4) {
        match Query::read(&mut decoder) {
            Ok(q) => questions.push(q),
            Err(_) => return (Vec::new(), None),
        }
    }
    let mut at = decoder.index();
    let before_additional = count(6) + count(8);
    for i in 0..before_additional + count(10) {
        let Some(record) = raw_record(query, at) else { break };
        if i >= before_additional && record.rtype == OPT_TYPE {
            return (questions, Some(raw_opt(&record)));
        }
        at = record.end;
    }
    (questions, None)
}

/// A resource record's fixed fields and RDATA, read without interpreting them.
struct RawRecord<'a> {
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata: &'a [u8],
    end: usize,
}

/// Where the name at `at` ends: after its labels up to the root or a compression pointer.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => at += 1 + usize::from(len),
            0xC0 => return Some(at + 2),
            _ => return None,
        }
    }
}

fn raw_record(msg: &[u8], at: usize) -> Option<RawRecord<'_>> {
    let at = skip_name(msg, at)?;
    let fixed = msg.get(at..at + 10)?;
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let class = u16::from_be_bytes([fixed[2], fixed[3]]);
    let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let start = at + 10;
    let rdata = msg.get(start..start + rdlen)?;
    Some(RawRecord { rtype, class, ttl, rdata, end: start + rdlen })
}

/// An OPT record's fields; its options are only looked at for NSID.
fn raw_opt(record: &RawRecord<'_>) -> ClientOpt {
    let mut wants_nsid = false;
    let mut options = record.rdata;
    while let [c0, c1, l0, l1, rest @ ..] = options {
        let (code, len) = (u16::from_be_bytes([*c0, *c1]), usize::from(u16::from_be_bytes([*l0, *l1])));
        wants_nsid |= code == NSID_OPTION;
        options = rest.get(len..).unwrap_or_default();
    }
    ClientOpt { payload: record.class, version: (record.ttl >> 16) as u8, dnssec_ok: record.ttl & 0x8000 != 0, wants_nsid }
}

/// How a reply must be shaped: the query it answers, the host's UDP limit, the client's EDNS,
/// the NSID to answer, and when a short reply gets TC.
struct Reply<'a> {
    query: &'a [u8],
    max_udp: u16,
    client: Option<ClientOpt>,
    nsid: Option<&'a [u8]>,
    truncation: Truncation,
}

impl<'a> Reply<'a> {
    fn new(lookup: &Lookup<'a>, query: &'a [u8], max_udp: u16, client: Option<ClientOpt>) -> Self {
        let nsid = lookup.settings.nsid.as_deref().filter(|_| client.is_some_and(|c| c.wants_nsid));
        Reply { query, max_udp, client, nsid, truncation: lookup.settings.truncation }
    }

    /// Encodes the response within the size the client can take, or SERVFAIL (see
    /// [`Reply::encode`]).
    fn write(&self, head: Head, questions: &[Query], answer: &Answer) -> Vec<u8> {
        self.encode(head, questions, answer, None).unwrap_or_else(|| header_only(self.query, ResponseCode::ServFail))
    }

    /// An error reply (no records): the questions echoed, or left out when they do not fit
    /// (a NOTIMP or FORMERR echoing many long questions).
    #[cold]
    #[inline(never)]
    fn error(&self, head: Head, questions: &[Query], tsig: Option<&TsigError<'_>>) -> Vec<u8> {
        let none = Answer::default();
        self.encode(head, questions, &none, tsig)
            .or_else(|| self.encode(head, &[], &none, tsig))
            .unwrap_or_else(|| header_only(self.query, head.rcode))
    }

    /// Encodes the response within the size the client can take. Over UDP, when the full answer
    /// does not fit, as many whole records as fit are kept in section order, and TC is set as
    /// `truncation` says (see [`write_response`]). Over a stream answer and authority go whole
    /// (else `None`), the additional section whole or not at all.
    fn encode(&self, head: Head, questions: &[Query], answer: &Answer, tsig: Option<&TsigError<'_>>) -> Option<Vec<u8>> {
        let stream = self.max_udp == STREAM;
        let limit = if stream {
            usize::from(u16::MAX)
        } else {
            let client = self.client.map_or(CLASSIC_UDP_SIZE, |e| e.payload.max(CLASSIC_UDP_SIZE));
            usize::from(client.min(self.max_udp.max(CLASSIC_UDP_SIZE)))
        };
        let advertised = if stream { ADVERTISED_UDP_SIZE } else { self.max_udp.max(CLASSIC_UDP_SIZE) };
        let opt = self.client.map(|c| Opt { payload: advertised, dnssec_ok: c.dnssec_ok, nsid: self.nsid });
        let sections = Sections { questions, answers: &answer.answers, authority: &answer.authority, additionals: &answer.additionals };
        let fit = if stream { Limit::Stream } else { Limit::Udp(self.truncation) };
        match write_response(head, &sections, opt, tsig, limit, fit) {
            Fit::Whole(bytes) => Some(bytes),
            Fit::TooLarge => None,
        }
    }
}

/// A bare header answering `query` with `rcode`, for messages too broken to parse: the ID,
/// opcode and RD are echoed, every count is zero.
fn header_only(query: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut out = alloc::vec![0u8; HEADER_LEN];
    out[0] = query[0];
    out[1] = query[1];
    out[2] = 0x80 | (query[2] & 0x79); // QR, opcode and RD echoed; AA and TC clear
    out[3] = rcode.low();
    out
}
