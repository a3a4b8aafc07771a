//! The records the lookup makes, borrowed from the question, the settings and the store.
//!
//! Building an answer from hickory-proto `Record`s cost an allocation per record and per name
//! (an owner copied from the question, a target built label by label), which was the largest
//! cost per query after encoding. These records borrow instead; `wire.rs` writes them, and
//! [`Rr::to_record`] turns one into a hickory `Record` for zone files and transfers.

use core::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::domain::LabelIter;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::names::EndpointLabel;

/// The longest name in wire form (RFC 1035 2.3.4).
const MAX_NAME: usize = 255;
/// The longest label (RFC 1035 2.3.4).
const MAX_LABEL: usize = 63;

/// A domain name: an optional endpoint label and up to three more labels in front of a name
/// it borrows (the question, a zone, an ExternalName target). Building one allocates nothing.
///
/// The borrowed name may be cut short in front (`skip`): the zone part of a question, in the
/// question's own case, is the question's last labels (CoreDNS answers with
/// `zone = qname[len(qname)-len(zone):]`, "maintain case of original query").
#[derive(Clone, Copy)]
pub struct Dname<'a> {
    /// An endpoint's label, held here because dashed-IP labels are formatted per answer.
    head: Option<EndpointLabel<'a>>,
    labels: [&'a [u8]; 3],
    count: u8,
    /// Leading labels of `base` left out.
    skip: u8,
    base: &'a Name,
}

impl<'a> Dname<'a> {
    /// `base` itself.
    pub fn of(base: &'a Name) -> Self {
        Dname { head: None, labels: [&[]; 3], count: 0, skip: 0, base }
    }

    /// `base` without its first `skip` labels (a suffix of it, in its case).
    pub fn suffix(base: &'a Name, skip: usize) -> Self {
        Dname { skip: skip.min(usize::from(u8::MAX)) as u8, ..Dname::of(base) }
    }

    /// `labels` (leftmost first, at most three) in front of `base`; `None` when the name would be
    /// longer than DNS allows or a label is empty or too long.
    pub fn under(base: &'a Name, labels: &[&'a [u8]]) -> Option<Self> {
        Dname::of(base).prefixed(labels)
    }

    /// `labels` (leftmost first, at most three) in front of this name, which has none yet;
    /// `None` when the name would be too long or a label is empty or too long.
    pub fn prefixed(self, labels: &[&'a [u8]]) -> Option<Self> {
        let mut d = self;
        for (slot, label) in d.labels.iter_mut().zip(labels) {
            *slot = label;
        }
        d.count = labels.len().min(3) as u8;
        (self.head.is_none() && self.count == 0 && labels.len() <= 3 && d.valid()).then_some(d)
    }

    /// [`Dname::under`], or `base` itself when the name would be too long: the labels here are
    /// validated ones, so only a very long zone gets there, and it must not fail an answer.
    pub fn under_or_base(base: &'a Name, labels: &[&'a [u8]]) -> Self {
        Dname::of(base).prefixed_or_self(labels)
    }

    /// [`Dname::prefixed`], or this name itself when that would be too long.
    pub fn prefixed_or_self(self, labels: &[&'a [u8]]) -> Self {
        self.prefixed(labels).unwrap_or(self)
    }

    /// `label` in front of this name (which has none yet); `None` when too long.
    pub fn with_head(self, label: EndpointLabel<'a>) -> Option<Self> {
        let d = Dname { head: Some(label), ..self };
        (self.head.is_none() && d.valid()).then_some(d)
    }

    fn valid(&self) -> bool {
        let own = self.own_labels();
        let len: usize = own.clone().chain(self.base_labels()).map(|l| l.len() + 1).sum::<usize>() + 1;
        len <= MAX_NAME && own.into_iter().all(|l| !l.is_empty() && l.len() <= MAX_LABEL)
    }

    // The label iterators are inlined natively (measured: 1% of the instructions per query);
    // the wasm module's own inlining (LTO, threshold 1000) does better without the hint.
    #[cfg_attr(not(target_arch = "wasm32"), inline)]
    fn own_labels(&self) -> impl DoubleEndedIterator<Item = &[u8]> + Clone + '_ {
        let head = self.head.as_ref().map(EndpointLabel::as_bytes);
        head.into_iter().chain(self.labels[..usize::from(self.count)].iter().copied())
    }

    /// The labels of the borrowed name that are part of this one (hickory's own iterator,
    /// advanced past the skipped labels: no adapter in the common case of none).
    #[cfg_attr(not(target_arch = "wasm32"), inline)]
    fn base_labels(&self) -> LabelIter<'a> {
        let mut labels = self.base.iter();
        if self.skip > 0 {
            labels.nth(usize::from(self.skip) - 1);
        }
        labels
    }

    /// The borrowed name and how many of its leading labels are left out, for a name made by
    /// [`Dname::of`] or [`Dname::suffix`] (the labels in front are not kept).
    pub fn base_and_skip(&self) -> (&'a Name, usize) {
        (self.base, usize::from(self.skip))
    }

    /// Every label, leftmost first.
    #[cfg_attr(not(target_arch = "wasm32"), inline)]
    pub fn labels(&self) -> impl DoubleEndedIterator<Item = &[u8]> + '_ {
        self.own_labels().chain(self.base_labels())
    }

    /// Whether this is exactly `name` borrowed as it is (no labels added in front).
    pub fn is(&self, name: &Name) -> bool {
        self.head.is_none() && self.count == 0 && self.skip == 0 && core::ptr::eq(self.base, name)
    }

    /// The name as a hickory `Name` (allocates).
    pub fn to_name(&self) -> Name {
        let base = match self.skip {
            0 => self.base.clone(),
            _ => Name::from_labels(self.base_labels()).unwrap_or_else(|_| self.base.clone()),
        };
        let mut name = base.clone();
        for label in self.own_labels().rev() {
            // Checked by `valid` when this name was made.
            name = name.prepend_label(label).unwrap_or_else(|_| base.clone());
        }
        name
    }
}

/// Record data of the types the lookup makes.
#[derive(Clone, Copy)]
pub enum Rdata<'a> {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(Dname<'a>),
    Ns(Dname<'a>),
    Ptr(Dname<'a>),
    Srv { priority: u16, weight: u16, port: u16, target: Dname<'a> },
    Soa(Soa<'a>),
    Txt(&'static str),
}

/// A zone's SOA data. The names are not held but made from the zone when written (keeping
/// every record small): the primary is `ns.dns.<zone>` and the mailbox `hostmaster.<zone>`,
/// as CoreDNS has them.
#[derive(Clone, Copy)]
pub struct Soa<'a> {
    /// The zone: `zone` without its first `skip` labels (the zone part of a question, in its
    /// case, as CoreDNS answers), held as a reference so that the record stays small.
    pub zone: &'a Name,
    pub skip: u8,
    pub serial: u32,
    pub refresh: i32,
    pub retry: i32,
    pub expire: i32,
    pub minimum: u32,
}

impl<'a> Soa<'a> {
    /// `ns.dns.<zone>`: the SOA's primary, and the NS target when no name server Service exists.
    pub fn primary_of(zone: Dname<'a>) -> Dname<'a> {
        zone.prefixed_or_self(&[b"ns", b"dns"])
    }

    /// The zone's name.
    pub fn zone_name(&self) -> Dname<'a> {
        Dname::suffix(self.zone, usize::from(self.skip))
    }

    pub fn mname(&self) -> Dname<'a> {
        Soa::primary_of(self.zone_name())
    }

    pub fn rname(&self) -> Dname<'a> {
        self.zone_name().prefixed_or_self(&[b"hostmaster"])
    }
}

/// A resource record of class IN.
#[derive(Clone, Copy)]
pub struct Rr<'a> {
    pub owner: Dname<'a>,
    pub ttl: u32,
    pub data: Rdata<'a>,
}

impl Rr<'_> {
    pub fn record_type(&self) -> RecordType {
        match self.data {
            Rdata::A(_) => RecordType::A,
            Rdata::Aaaa(_) => RecordType::AAAA,
            Rdata::Cname(_) => RecordType::CNAME,
            Rdata::Ns(_) => RecordType::NS,
            Rdata::Ptr(_) => RecordType::PTR,
            Rdata::Srv { .. } => RecordType::SRV,
            Rdata::Soa(_) => RecordType::SOA,
            Rdata::Txt(_) => RecordType::TXT,
        }
    }

    /// The record as hickory-proto's typed `Record` (allocates).
    pub fn to_record(&self) -> Record {
        let data = match self.data {
            Rdata::A(v4) => RData::A(A(v4)),
            Rdata::Aaaa(v6) => RData::AAAA(AAAA(v6)),
            Rdata::Cname(n) => RData::CNAME(CNAME(n.to_name())),
            Rdata::Ns(n) => RData::NS(NS(n.to_name())),
            Rdata::Ptr(n) => RData::PTR(PTR(n.to_name())),
            Rdata::Srv { priority, weight, port, target } => RData::SRV(SRV::new(priority, weight, port, target.to_name())),
            Rdata::Soa(soa) => {
                RData::SOA(SOA::new(soa.mname().to_name(), soa.rname().to_name(), soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum))
            }
            Rdata::Txt(text) => RData::TXT(TXT::new(alloc::vec![text.into()])),
        };
        Record::from_rdata(self.owner.to_name(), self.ttl, data)
    }
}
