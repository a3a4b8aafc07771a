//! The wire: a DNS query message in, a DNS response message out.
//!
//! The query is parsed by hickory-proto (`no_std` + alloc); the response is written by
//! `wire.rs`. This layer owns protocol hygiene: FORMERR/NOTIMP/BADVERS, EDNS0, and the size
//! the client can take.

use alloc::vec::Vec;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::DNSClass;

use crate::lookup::{Answer, Lookup};
use crate::config::Truncation;
use crate::wire::{Fit, Head, Limit, Sections, write_response};

/// UDP payload size kdns advertises in its OPT record (the DNS Flag Day 2020 value).
pub const ADVERTISED_UDP_SIZE: u16 = 1232;
/// Largest response without EDNS (RFC 1035).
pub const CLASSIC_UDP_SIZE: u16 = 512;
/// `max_udp` value meaning "stream transport": no UDP size applies.
pub const STREAM: u16 = 0;

const HEADER_LEN: usize = 12;

/// Answers one query message. `max_udp` is the largest UDP response the host will send, or
/// [`STREAM`] (0) for TCP. Returns `None` when nothing must be sent: the input is shorter
/// than a header or is itself a response.
pub fn respond(lookup: &Lookup<'_>, query: &[u8], max_udp: u16) -> Option<Vec<u8>> {
    if query.len() < HEADER_LEN || query[2] & 0x80 != 0 {
        return None;
    }
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => return Some(header_only(query, ResponseCode::FormErr)),
    };
    let mut head = Head {
        id: request.id,
        op_code: request.op_code,
        authoritative: false,
        recursion_desired: request.recursion_desired,
        checking_disabled: request.checking_disabled,
        rcode: ResponseCode::NoError,
    };
    let reply = Reply { query, max_udp, client_edns: request.edns.as_ref(), truncation: lookup.settings.truncation };
    if let Some(req_edns) = &request.edns
        && req_edns.version() > 0 {
            head.rcode = ResponseCode::BADVERS;
            return Some(reply.write(head, &[], &Answer::default()));
        }
    if request.op_code != OpCode::Query {
        head.rcode = ResponseCode::NotImp;
        return Some(reply.write(head, &request.queries, &Answer::default()));
    }
    if request.queries.len() != 1 {
        head.rcode = ResponseCode::FormErr;
        return Some(reply.write(head, &[], &Answer::default()));
    }
    let question = &request.queries[0];
    if question.query_class() != DNSClass::IN {
        head.rcode = ResponseCode::Refused;
        return Some(reply.write(head, core::slice::from_ref(question), &Answer::default()));
    }
    let answer = lookup.answer(question.name(), question.query_type());
    head.rcode = answer.rcode;
    head.authoritative = answer.authoritative;
    Some(reply.write(head, core::slice::from_ref(question), &answer))
}

/// How a reply must be shaped: the query it answers, the host's UDP limit, the client's EDNS
/// and when a short reply gets TC.
struct Reply<'a> {
    query: &'a [u8],
    max_udp: u16,
    client_edns: Option<&'a Edns>,
    truncation: Truncation,
}

impl Reply<'_> {
    /// Encodes the response within the size the client can take. Over UDP, when the full answer
    /// does not fit, as many whole records as fit are kept in section order, and TC is set as
    /// `truncation` says (see [`write_response`]). Over a stream answer and authority go whole
    /// (else SERVFAIL), the additional section whole or not at all.
    fn write(&self, head: Head, questions: &[Query], answer: &Answer) -> Vec<u8> {
        let stream = self.max_udp == STREAM;
        let limit = if stream {
            usize::from(u16::MAX)
        } else {
            let client = self.client_edns.map_or(CLASSIC_UDP_SIZE, |e| e.max_payload().max(CLASSIC_UDP_SIZE));
            usize::from(client.min(self.max_udp.max(CLASSIC_UDP_SIZE)))
        };
        let advertised = if stream { ADVERTISED_UDP_SIZE } else { self.max_udp.max(CLASSIC_UDP_SIZE) };
        let edns_payload = self.client_edns.map(|_| advertised);
        let sections = Sections { questions, answers: &answer.answers, authority: &answer.authority, additionals: &answer.additionals };
        let fit = if stream { Limit::Stream } else { Limit::Udp(self.truncation) };
        match write_response(head, &sections, edns_payload, limit, fit) {
            Fit::Whole(bytes) => bytes,
            Fit::TooLarge => header_only(self.query, ResponseCode::ServFail),
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
