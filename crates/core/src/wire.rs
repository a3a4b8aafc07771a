//! The response writer: header, question, records and OPT written straight into one buffer,
//! with name compression, and the size limit applied record by record.
//!
//! Why not hickory's `Message::to_vec`: to find what fits a UDP reply kdns had to encode a
//! message up to three times (whole, without additionals, truncated), and hickory's compression
//! table allocates a copy of every name it sees. Under the benchmark mix that was half of the
//! time per query. Records stay hickory's typed [`Record`]s; only the encoding is ours. Names
//! are compressed as hickory does (RFC 1035 4.1.4): owners and CNAME/NS/PTR/SOA names point back
//! to earlier names; SRV targets are written whole (RFC 2782) but may be pointed at.

use alloc::vec::Vec;

use tinyvec::TinyVec;

use hickory_proto::op::{OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name};

use crate::config::Truncation;
use crate::record::{Dname, Rdata, Rr};

const HEADER_LEN: usize = 12;
/// An OPT record without options: root owner, type, class, TTL, RDLENGTH.
const OPT_LEN: usize = 11;
const OPT_TYPE: u16 = 41;
/// EDNS option code of NSID (RFC 5001).
pub(crate) const NSID_OPTION: u16 = 3;
const TSIG_TYPE: u16 = 250;
const CLASS_ANY: u16 = 255;
/// Offsets a compression pointer can reach (14 bits).
const POINTER_RANGE: usize = 0x4000;

/// The header fields of a response that do not depend on what fits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head {
    pub id: u16,
    pub op_code: OpCode,
    pub authoritative: bool,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    pub rcode: ResponseCode,
}

/// The OPT record of a response (RFC 6891): the UDP size advertised, the DO bit copied from the
/// query (RFC 3225: "MUST copy the DO bit"), and the NSID option when asked for and configured.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Opt<'a> {
    pub payload: u16,
    pub dnssec_ok: bool,
    pub nsid: Option<&'a [u8]>,
}

impl Opt<'_> {
    fn len(&self) -> usize {
        OPT_LEN + self.nsid.map_or(0, |id| 4 + id.len())
    }
}

/// An unsigned TSIG record carrying an error (RFC 8945 5.3.2: MAC size 0, no MAC), the last
/// record of the response: owner, algorithm, time signed and fudge as the query's TSIG had them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TsigError<'a> {
    pub key: &'a Name,
    pub algorithm: &'a Name,
    pub time_signed: u64,
    pub fudge: u16,
    pub original_id: u16,
    pub error: u16,
}

impl TsigError<'_> {
    fn len(&self) -> usize {
        let name = |n: &Name| n.iter().map(|l| l.len().min(63) + 1).sum::<usize>() + 1;
        // owner, type, class, TTL, RDLENGTH; algorithm, time (48 bits), fudge, MAC size,
        // original ID, error, other length.
        name(self.key) + 10 + name(self.algorithm) + 6 + 2 + 2 + 2 + 2 + 2
    }
}

/// The sections to write, in order.
pub(crate) struct Sections<'a> {
    pub questions: &'a [Query],
    pub answers: &'a [Rr<'a>],
    pub authority: &'a [Rr<'a>],
    pub additionals: &'a [Rr<'a>],
}

/// How the size limit applies to the records.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Limit {
    /// A datagram: as many whole records as fit, in section order (answer, authority,
    /// additional), stopping at the first that does not; TC as the mode says.
    Udp(Truncation),
    /// A stream (TCP), where TC means nothing: answer and authority must fit whole; the
    /// additional section goes whole or not at all.
    Stream,
}

/// What does not fit is left out as RFC 1035 4.2.1 and RFC 2181 9 ask.
pub(crate) enum Fit {
    /// The response, within the limit.
    Whole(Vec<u8>),
    /// The question alone exceeds `limit`, or answer and authority do over a stream.
    TooLarge,
}

/// Writes the response. `opt`: the OPT record, if the query had one; `tsig`: a TSIG error record
/// after it. Their room is kept free within `limit`. Over UDP the records that fit are
/// written in order and the first that does not ends the message: TC is set when an answer or
/// authority record was left out, and, with [`Truncation::CoreDns`], when an additional one was
/// (miekg/dns `Msg.Truncate`, which CoreDNS applies to every response). Over a stream see
/// [`Limit::Stream`]. A question section over `limit` is [`Fit::TooLarge`].
pub(crate) fn write_response(head: Head, s: &Sections<'_>, opt: Option<Opt<'_>>, tsig: Option<&TsigError<'_>>, limit: usize, fit: Limit) -> Fit {
    // Sized for the common UDP answer so that it is not grown while written.
    let mut w = Writer { buf: Vec::with_capacity(limit.min(usize::from(crate::message::ADVERTISED_UDP_SIZE))), suffixes: TinyVec::new(), question: None };
    w.buf.resize(HEADER_LEN, 0);
    let mut counts = [0u16; 4];
    for q in s.questions {
        w.name(&Dname::of(q.name()), true);
        w.u16(q.query_type().into());
        w.u16(q.query_class().into());
    }
    w.question = s.questions.first().map(Query::name);
    counts[0] = s.questions.len().min(usize::from(u16::MAX)) as u16;
    let room = limit.saturating_sub(opt.map_or(0, |o| o.len()) + tsig.map_or(0, TsigError::len));
    if w.buf.len() > room {
        // Only a NOTIMP echoing many long questions gets here; there is nothing to truncate.
        return Fit::TooLarge;
    }
    let stream = matches!(fit, Limit::Stream);
    let (an, all_an) = w.records(s.answers, room);
    let (ns, all_ns) = if all_an { w.records(s.authority, room) } else { (0, false) };
    let required = all_an && all_ns;
    if stream && !required {
        return Fit::TooLarge;
    }
    let after_authority = w.mark();
    let (mut ar, all_ar) = if required { w.records(s.additionals, room) } else { (0, s.additionals.is_empty()) };
    if stream && !all_ar {
        w.rewind(after_authority);
        ar = 0;
    }
    let truncated = match fit {
        Limit::Stream => false,
        Limit::Udp(Truncation::Fill) => !required,
        Limit::Udp(Truncation::CoreDns) => !required || !all_ar,
    };
    counts[1] = an;
    counts[2] = ns;
    counts[3] = ar;
    if let Some(opt) = opt {
        w.buf.push(0); // root owner
        w.u16(OPT_TYPE);
        w.u16(opt.payload);
        // Extended RCODE (high 8 bits), version 0, DO as the query had it.
        w.u32(u32::from(head.rcode.high()) << 24 | if opt.dnssec_ok { 0x8000 } else { 0 });
        match opt.nsid {
            Some(id) => w.nsid(id),
            None => w.u16(0),
        }
        counts[3] = counts[3].saturating_add(1);
    }
    if let Some(t) = tsig {
        w.tsig(t);
        counts[3] = counts[3].saturating_add(1);
    }
    let flags = 0x80
        | (u8::from(head.op_code) << 3)
        | if head.authoritative { 0x04 } else { 0 }
        | if truncated { 0x02 } else { 0 }
        | if head.recursion_desired { 0x01 } else { 0 };
    let low = if head.checking_disabled { 0x10 } else { 0 } | head.rcode.low();
    w.buf[0..2].copy_from_slice(&head.id.to_be_bytes());
    w.buf[2] = flags;
    w.buf[3] = low;
    for (i, c) in counts.iter().enumerate() {
        w.buf[4 + 2 * i..6 + 2 * i].copy_from_slice(&c.to_be_bytes());
    }
    Fit::Whole(w.buf)
}

struct Writer<'a> {
    buf: Vec<u8>,
    /// The first question's name, written at offset 12: most owners are this name.
    question: Option<&'a Name>,
    /// (hash of a name suffix, its offset) for every label written out in full; on the stack
    /// up to a typical answer's worth (allocations cost most under wasm).
    suffixes: TinyVec<[(u64, u16); 32]>,
}

/// A point to rewind to: the buffer and the compression table as they were.
#[derive(Clone, Copy)]
struct Mark {
    len: usize,
    suffixes: usize,
}

impl Writer<'_> {
    fn mark(&self) -> Mark {
        Mark { len: self.buf.len(), suffixes: self.suffixes.len() }
    }

    fn rewind(&mut self, m: Mark) {
        self.buf.truncate(m.len);
        self.suffixes.truncate(m.suffixes);
    }

    /// An OPT record's RDATA holding one NSID option (RFC 5001), RDLENGTH first.
    #[cold]
    #[inline(never)]
    fn nsid(&mut self, id: &[u8]) {
        self.u16(4 + id.len() as u16);
        self.u16(NSID_OPTION);
        self.u16(id.len() as u16);
        self.buf.extend_from_slice(id);
    }

    /// The TSIG error record. Names written whole (RFC 8945 4.2: the algorithm name is not
    /// compressed).
    #[cold]
    #[inline(never)]
    fn tsig(&mut self, t: &TsigError<'_>) {
        self.name(&Dname::of(t.key), false);
        self.u16(TSIG_TYPE);
        self.u16(CLASS_ANY);
        self.u32(0);
        let len_at = self.buf.len();
        self.u16(0);
        self.name(&Dname::of(t.algorithm), false);
        self.buf.extend_from_slice(&t.time_signed.to_be_bytes()[2..]);
        self.u16(t.fudge);
        self.u16(0); // MAC size
        self.u16(t.original_id);
        self.u16(t.error);
        self.u16(0); // other length
        let rdlen = (self.buf.len() - len_at - 2) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    }

    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes `records` up to the first that does not fit in `room` (which is taken back out);
    /// returns how many were written and whether that is all of them.
    fn records(&mut self, records: &[Rr<'_>], room: usize) -> (u16, bool) {
        for (i, r) in records.iter().enumerate() {
            let before = self.mark();
            self.record(r);
            if self.buf.len() > room {
                self.rewind(before);
                // Each record takes at least 11 bytes, so no more than 65535 / 11 fit.
                return (i as u16, false);
            }
        }
        (records.len() as u16, true)
    }

    fn record(&mut self, r: &Rr<'_>) {
        self.name(&r.owner, true);
        self.u16(r.record_type().into());
        self.u16(DNSClass::IN.into());
        self.u32(r.ttl);
        let len_at = self.buf.len();
        self.u16(0);
        match &r.data {
            Rdata::A(v4) => self.buf.extend_from_slice(&v4.octets()),
            Rdata::Aaaa(v6) => self.buf.extend_from_slice(&v6.octets()),
            Rdata::Cname(n) | Rdata::Ns(n) | Rdata::Ptr(n) => self.name(n, true),
            Rdata::Srv { priority, weight, port, target } => {
                self.u16(*priority);
                self.u16(*weight);
                self.u16(*port);
                self.name(target, false);
            }
            Rdata::Soa(soa) => {
                self.name(&soa.mname(), true);
                self.name(&soa.rname(), true);
                self.u32(soa.serial);
                self.buf.extend_from_slice(&soa.refresh.to_be_bytes());
                self.buf.extend_from_slice(&soa.retry.to_be_bytes());
                self.buf.extend_from_slice(&soa.expire.to_be_bytes());
                self.u32(soa.minimum);
            }
            Rdata::Txt(text) => {
                // One character-string; the lookup's texts are short constants.
                let text = &text.as_bytes()[..text.len().min(255)];
                self.buf.push(text.len() as u8);
                self.buf.extend_from_slice(text);
            }
        }
        let rdlen = (self.buf.len() - len_at - 2).min(usize::from(u16::MAX)) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    }

    /// Writes `name`, ending in a pointer to an earlier copy of its longest known suffix when
    /// `compress`; every label written out in full becomes a suffix later names may point to.
    fn name(&mut self, name: &Dname<'_>, compress: bool) {
        if compress && self.question.is_some_and(|q| name.is(q)) {
            return self.u16(0xC000 | HEADER_LEN as u16);
        }
        // The labels once (a name's label iterator is slow under wasm), and hashes[i]: the
        // suffix starting at label i.
        let labels: TinyVec<[&[u8]; 16]> = name.labels().collect();
        let n = labels.len();
        let mut hashes: TinyVec<[u64; 16]> = TinyVec::new();
        hashes.resize(n, 0);
        let mut h = ROOT_HASH;
        for (slot, label) in hashes.iter_mut().zip(&labels).rev() {
            h = suffix_hash(h, label);
            *slot = h;
        }
        let known = if compress { (0..n).find_map(|i| self.find(hashes[i], &labels[i..]).map(|at| (i, at))) } else { None };
        let whole = known.map_or(n, |(i, _)| i);
        for (label, hash) in labels.iter().zip(&hashes).take(whole) {
            let at = self.buf.len();
            if at < POINTER_RANGE {
                self.suffixes.push((*hash, at as u16));
            }
            let label = &label[..label.len().min(63)];
            self.buf.push(label.len() as u8);
            self.buf.extend_from_slice(label);
        }
        match known {
            Some((_, at)) => self.u16(0xC000 | at),
            None => self.buf.push(0),
        }
    }

    /// The offset of an earlier copy of the name made of `labels`, compared byte for byte.
    fn find(&self, hash: u64, labels: &[&[u8]]) -> Option<u16> {
        self.suffixes.iter().filter(|(h, _)| *h == hash).map(|(_, at)| *at).find(|at| self.holds(usize::from(*at), labels))
    }

    /// Whether the name written at `at` (pointers followed) is exactly `labels`.
    fn holds(&self, mut at: usize, labels: &[&[u8]]) -> bool {
        let mut labels = labels.iter();
        // Every hop moves backwards, so a name has at most as many hops as the buffer has bytes;
        // the bound only guards against a bug turning into a hang.
        for _ in 0..self.buf.len() {
            let Some(&len) = self.buf.get(at) else { return false };
            if len & 0xC0 == 0xC0 {
                let Some(&low) = self.buf.get(at + 1) else { return false };
                at = (usize::from(len & 0x3F) << 8) | usize::from(low);
                continue;
            }
            if len == 0 {
                return labels.next().is_none();
            }
            let Some(label) = labels.next() else { return false };
            let end = at + 1 + usize::from(len);
            if self.buf.get(at + 1..end) != Some(*label) {
                return false;
            }
            at = end;
        }
        false
    }
}

const ROOT_HASH: u64 = 0x9e37_79b9_7f4a_7c15;

/// A filter, not an identity (every hit is compared byte for byte): the label's length, first
/// and last eight bytes, chained onto the hash of the rest of the name. Hashing every byte cost
/// a tenth of the time per query.
fn suffix_hash(rest: u64, label: &[u8]) -> u64 {
    let (head, tail) = match label.len() {
        // Fixed-size reads: a copy of variable length is a call out of the module under wasm.
        8.. => (word(&label[..8]), word(&label[label.len() - 8..])),
        _ => {
            let short = label.iter().rev().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
            (short, short)
        }
    };
    let h = (rest ^ head).wrapping_mul(0xff51_afd7_ed55_8ccd);
    (h.rotate_left(29) ^ tail ^ label.len() as u64).wrapping_mul(0xc4ce_b9fe_1a85_ec53)
}

fn word(eight: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(eight);
    u64::from_le_bytes(b)
}
