//! The wire: a DNS query message in, a DNS response message out.
//!
//! Parsing and encoding use hickory-proto (`no_std` + alloc). This layer owns protocol
//! hygiene: FORMERR/NOTIMP/BADVERS, EDNS0, and truncation to the client's UDP size.

use alloc::vec::Vec;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::DNSClass;

use crate::lookup::Lookup;

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
    let mut response = Message::response(request.id, request.op_code);
    response.metadata.recursion_desired = request.recursion_desired;
    response.metadata.checking_disabled = request.checking_disabled;
    if let Some(req_edns) = &request.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(if max_udp == STREAM { ADVERTISED_UDP_SIZE } else { max_udp.max(CLASSIC_UDP_SIZE) });
        edns.set_version(0);
        response.set_edns(edns);
        if req_edns.version() > 0 {
            response.metadata.response_code = ResponseCode::BADVERS;
            return encode(&response, max_udp, request.edns.as_ref());
        }
    }
    if request.op_code != OpCode::Query {
        response.queries = request.queries.clone();
        response.metadata.response_code = ResponseCode::NotImp;
        return encode(&response, max_udp, request.edns.as_ref());
    }
    if request.queries.len() != 1 {
        response.metadata.response_code = ResponseCode::FormErr;
        return encode(&response, max_udp, request.edns.as_ref());
    }
    let question = &request.queries[0];
    response.add_query(question.clone());
    if question.query_class() != DNSClass::IN {
        response.metadata.response_code = ResponseCode::Refused;
        return encode(&response, max_udp, request.edns.as_ref());
    }
    let answer = lookup.answer(question.name(), question.query_type());
    response.metadata.response_code = answer.rcode;
    response.metadata.authoritative = answer.authoritative;
    response.answers = answer.answers;
    response.authorities = answer.authority;
    response.additionals = answer.additionals;
    encode(&response, max_udp, request.edns.as_ref())
}

/// Encodes `response` within the size the client can take. When the full answer does not fit,
/// the additional section goes first (no TC: it is optional data); if it still does not fit,
/// the records are dropped and TC is set so the client retries over TCP.
fn encode(response: &Message, max_udp: u16, req_edns: Option<&Edns>) -> Option<Vec<u8>> {
    let limit = if max_udp == STREAM {
        usize::from(u16::MAX)
    } else {
        let client = req_edns.map_or(CLASSIC_UDP_SIZE, |e| e.max_payload().max(CLASSIC_UDP_SIZE));
        usize::from(client.min(max_udp.max(CLASSIC_UDP_SIZE)))
    };
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit => return Some(bytes),
        Ok(_) => {}
        Err(_) => return Some(header_only_from(response, ResponseCode::ServFail)),
    }
    if !response.additionals.is_empty() {
        let mut lean = response.clone();
        lean.additionals.clear();
        if let Ok(bytes) = lean.to_vec()
            && bytes.len() <= limit {
                return Some(bytes);
            }
    }
    let truncated = response.truncate();
    match truncated.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Some(bytes),
        _ => Some(header_only_from(response, ResponseCode::ServFail)),
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

fn header_only_from(response: &Message, rcode: ResponseCode) -> Vec<u8> {
    let mut m = Message::new(response.id, MessageType::Response, response.op_code);
    m.metadata.recursion_desired = response.recursion_desired;
    m.metadata.response_code = rcode;
    m.to_vec().unwrap_or_else(|_| alloc::vec![0u8; HEADER_LEN])
}
