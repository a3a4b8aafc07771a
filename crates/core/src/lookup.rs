//! Record synthesis: which names exist under the served zones and which records each has.
//!
//! The rules follow the CoreDNS `kubernetes` plugin (parse.go, kubernetes.go, reverse.go and
//! plugin/backend_lookup.go), with the differences listed in docs/compat.md. The input is a
//! question (name and type), the output the sections of the answer; wire format lives in
//! `message.rs`.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};
use tinyvec::TinyVec;

use crate::config::{PodMode, Settings, Zone};
use crate::names::{ReversePrefix, parse_dashed_ip, parse_reverse, parse_reverse_prefix, strip_underscore};
use crate::record::{Dname, Rdata, Rr, Soa};
use crate::store::{EndpointEntry, IpOwner, PortSpec, ServiceEntry, ServiceKind, Store};

/// TTL of the `dns-version` TXT record (fixed by the specification).
const DNS_VERSION_TTL: u32 = 28800;
/// Schema version of the Kubernetes DNS specification implemented.
const DNS_SCHEMA_VERSION: &str = "1.1.0";
/// Bytes of label data in a name at most (255 in wire form, less the length octets).
const NAME_BYTES: usize = 255;
/// How many in-zone CNAMEs (ExternalName → service) are followed in one answer.
const MAX_CNAME_CHAIN: usize = 8;
const SOA_REFRESH: i32 = 7200;
const SOA_RETRY: i32 = 1800;
const SOA_EXPIRE: i32 = 86400;
/// How many owners of a reverse network's addresses are looked at, when a `namespaces` filter
/// may hide them, before the network counts as existing.
const PREFIX_SCAN: usize = 64;

/// The sections of an answer, before encoding; the records borrow from the question and the
/// lookup.
#[derive(Default)]
pub struct Answer<'a> {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Rr<'a>>,
    pub authority: Vec<Rr<'a>>,
    pub additionals: Vec<Rr<'a>>,
}

/// Whether the asked name exists (NOERROR) or not (NXDOMAIN), independent of its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presence {
    Exists,
    Missing,
}
use Presence::{Exists, Missing};

/// The query's port and protocol labels (`_http._tcp`); empty means any.
type PortQuery<'q> = Option<(&'q [u8], &'q [u8])>;

pub struct Lookup<'a> {
    pub settings: &'a Settings,
    pub store: &'a Store,
}

impl<'a> Lookup<'a> {
    /// The zone a name falls in (longest match) and whether it is a reverse zone.
    pub fn zone_of(&self, name: &Name) -> Option<(&'a Zone, bool)> {
        let mut text = [0u8; NAME_BYTES];
        self.zone_for(&lowercase_labels(name, &mut text))
    }

    /// [`Lookup::zone_of`] for a name as its lowercased labels.
    fn zone_for(&self, labels: &[&[u8]]) -> Option<(&'a Zone, bool)> {
        let forward = self.settings.zones.iter().map(|z| (z, false));
        let reverse = self.settings.reverse_zones.iter().map(|z| (z, true));
        forward.chain(reverse).filter(|(z, _)| z.contains(labels)).max_by_key(|(z, _)| z.labels)
    }

    /// Answers `qname`/`qtype`. Names outside every served zone are REFUSED.
    pub fn answer<'q>(&self, qname: &'q Name, qtype: RecordType) -> Answer<'q>
    where
        'a: 'q,
    {
        let mut text = [0u8; NAME_BYTES];
        let labels = lowercase_labels(qname, &mut text);
        let Some((zone, reverse)) = self.zone_for(&labels) else {
            return Answer { rcode: ResponseCode::Refused, ..Answer::default() };
        };
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            // Zone transfers are the host's business (it checks who may ask); the core refuses.
            return Answer { rcode: ResponseCode::Refused, ..Answer::default() };
        }
        let mut ans = Answer { authoritative: true, ..Answer::default() };
        let mut presence = self.records(qname, &labels, zone, reverse, qtype, &mut ans, 0);
        if presence == Missing && self.zone_below(&labels) {
            // Another served zone lies below the name: it is an empty non-terminal.
            presence = Exists;
        }
        if ans.answers.is_empty() {
            ans.authority.push(self.soa_in(zone_part(qname, zone)));
            if presence == Missing {
                ans.rcode = ResponseCode::NXDomain;
            }
        }
        ans
    }

    /// Whether a served zone lies strictly below the name made of `labels`.
    // Off the hot path: only names that would otherwise be NXDOMAIN get here.
    #[cold]
    #[inline(never)]
    fn zone_below(&self, labels: &[&[u8]]) -> bool {
        self.settings.zones.iter().chain(&self.settings.reverse_zones).any(|z| z.is_below(labels))
    }

    /// The records of `qname` (`labels`: its labels lowercased) in `zone`.
    #[allow(clippy::too_many_arguments)]
    fn records<'q>(&self, qname: &'q Name, labels: &[&[u8]], zone: &'a Zone, reverse: bool, qtype: RecordType, ans: &mut Answer<'q>, depth: usize) -> Presence
    where
        'a: 'q,
    {
        let rel = &labels[..labels.len().saturating_sub(zone.labels)];
        if rel.is_empty() {
            self.apex(zone, Dname::of(qname), qtype, ans);
            return Exists;
        }
        if reverse {
            return self.reverse(labels, qname, qtype, ans);
        }
        match rel {
            [b"dns-version"] => {
                if qtype == RecordType::TXT {
                    ans.answers.push(Rr { owner: Dname::of(qname), ttl: DNS_VERSION_TTL, data: Rdata::Txt(DNS_SCHEMA_VERSION) });
                }
                Exists
            }
            [b"dns"] => Exists,
            [b"ns", b"dns"] => {
                if let Some(svc) = self.ns_service() {
                    self.push_addresses(Dname::of(qname), qtype, svc.cluster_ips.iter().copied(), &mut ans.answers);
                }
                Exists
            }
            [segs @ .., b"svc"] => self.services(segs, qname, zone, qtype, ans, depth),
            [segs @ .., b"pod"] => self.pods(segs, qname, qtype, ans),
            _ => Missing,
        }
    }

    // ----- zone apex -------------------------------------------------------------------------

    /// `zname`: the zone as asked (the question itself, here).
    fn apex<'q>(&self, zone: &'a Zone, zname: Dname<'q>, qtype: RecordType, ans: &mut Answer<'q>)
    where
        'a: 'q,
    {
        match qtype {
            RecordType::SOA => ans.answers.push(self.soa_in(zname)),
            RecordType::NS => {
                let (target, glue) = self.ns_target(zone, zname);
                ans.answers.push(Rr { owner: zname, ttl: self.ttl(), data: Rdata::Ns(target) });
                if let Some(svc) = glue {
                    self.push_addresses(target, RecordType::A, svc.cluster_ips.iter().copied(), &mut ans.additionals);
                    self.push_addresses(target, RecordType::AAAA, svc.cluster_ips.iter().copied(), &mut ans.additionals);
                }
            }
            _ => {}
        }
    }

    /// The SOA record of `zone`, its names as the zone is configured.
    pub fn soa(&self, zone: &'a Zone) -> Rr<'a> {
        self.soa_in(Dname::of(&zone.name))
    }

    /// The SOA record of a zone named `zone` (owner, primary and mailbox in its case).
    fn soa_in<'q>(&self, zone: Dname<'q>) -> Rr<'q> {
        let ttl = self.ttl();
        let (name, skip) = zone.base_and_skip();
        let skip = skip.min(usize::from(u8::MAX)) as u8;
        let data = Rdata::Soa(Soa { zone: name, skip, serial: self.store.serial, refresh: SOA_REFRESH, retry: SOA_RETRY, expire: SOA_EXPIRE, minimum: ttl });
        Rr { owner: zone, ttl, data }
    }

    fn ns_service(&self) -> Option<&'a ServiceEntry> {
        let (ns, name) = &self.settings.ns_service;
        self.store.service(ns.as_bytes(), name.as_bytes())
    }

    /// The NS target (the `--ns-service` Service's name, in the primary zone) and the service
    /// for its glue; when that Service is absent, `ns.dns.<primary zone>` without glue. Asked
    /// at the primary zone (`zname`, in the question's case), the target's zone part is in the
    /// question's case, as CoreDNS's.
    fn ns_target<'q>(&self, zone: &'a Zone, zname: Dname<'q>) -> (Dname<'q>, Option<&'a ServiceEntry>)
    where
        'a: 'q,
    {
        let primary = self.settings.primary_zone();
        let base = if core::ptr::eq(zone, primary) { zname } else { Dname::of(&primary.name) };
        match self.ns_service() {
            Some(svc) => (service_name(svc, base), Some(svc)),
            None => (Soa::primary_of(base), None),
        }
    }

    // ----- <service>.<namespace>.svc.<zone> ---------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn services<'q>(&self, segs: &[&[u8]], qname: &'q Name, zone: &'a Zone, qtype: RecordType, ans: &mut Answer<'q>, depth: usize) -> Presence
    where
        'a: 'q,
    {
        let n = segs.len();
        if n == 0 {
            return Exists;
        }
        let ns = segs[n - 1];
        if !self.settings.namespace_exposed(ns) {
            return Missing;
        }
        if n == 1 {
            return if self.store.namespace_exists(ns) { Exists } else { Missing };
        }
        let (endpoint, port): (Option<&[u8]>, PortQuery) = match n {
            2 => (None, None),
            3 => (Some(segs[0]), None),
            4 => (None, Some((strip_underscore(segs[0]), strip_underscore(segs[1])))),
            _ => return Missing,
        };
        let Some(svc) = self.store.service(ns, segs[n - 2]) else { return Missing };
        let presence = match svc.kind {
            ServiceKind::ExternalName => return self.external_name(svc, endpoint.is_some() || port.is_some(), qname, qtype, ans, depth),
            ServiceKind::ClusterIp if self.settings.ignore_empty_service && svc.endpoints.is_empty() => return Missing,
            ServiceKind::Headless => self.endpoints(svc, endpoint, port, qname, zone, qtype, ans),
            ServiceKind::ClusterIp if endpoint.is_some() => self.endpoints(svc, endpoint, port, qname, zone, qtype, ans),
            ServiceKind::ClusterIp => self.cluster_ip(svc, port, qname, zone, qtype, ans),
        };
        match endpoint {
            // `<x>.<service>...` that names no endpoint is the protocol label of the SRV names
            // below it (`_<port>._<x>.<service>...`) when one of them exists: an empty
            // non-terminal (RFC 8020), `_tcp.<service>` above `_http._tcp.<service>`.
            Some(label) if presence == Missing && self.has_protocol(svc, strip_underscore(label)) => Exists,
            _ => presence,
        }
    }

    /// Whether some `_<port>._<proto>.<service>` name exists: a port with a number and
    /// protocol `proto` (any when empty) among the service's ports (cluster IP) or among the
    /// ports of a slice that has a published endpoint (headless), as the SRV lookups count them.
    // Off the hot path: only names that would otherwise be NXDOMAIN get here.
    #[cold]
    #[inline(never)]
    fn has_protocol(&self, svc: &ServiceEntry, proto: &[u8]) -> bool {
        let any_port = Some((&b""[..], proto));
        match svc.kind {
            ServiceKind::ExternalName => false,
            ServiceKind::ClusterIp => svc.ports.iter().any(|p| port_matches(any_port, p)),
            ServiceKind::Headless => {
                !self.settings.no_endpoints
                    && (0..).zip(&svc.port_groups).any(|(g, ports)| ports.iter().any(|p| port_matches(any_port, p)) && svc.group_has_endpoints(g))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn external_name<'q>(&self, svc: &'a ServiceEntry, below: bool, qname: &'q Name, qtype: RecordType, ans: &mut Answer<'q>, depth: usize) -> Presence
    where
        'a: 'q,
    {
        // Names below an ExternalName service (endpoints, ports) do not exist.
        if below {
            return Missing;
        }
        // No target: empty, an IP (not a CNAME target; CoreDNS ignores such services) or not
        // a domain name (the store keeps it parsed).
        let Some(target) = svc.external_name.as_ref() else { return Missing };
        if !matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::CNAME) {
            return Exists;
        }
        ans.answers.push(Rr { owner: Dname::of(qname), ttl: self.ttl(), data: Rdata::Cname(Dname::of(target)) });
        // Follow a target inside our forward zones so the client gets the addresses at once.
        if qtype != RecordType::CNAME && depth < MAX_CNAME_CHAIN {
            let mut text = [0u8; NAME_BYTES];
            let labels = lowercase_labels(target, &mut text);
            if let Some((zone, false)) = self.zone_for(&labels) {
                let mut chased = Answer::default();
                self.records(target, &labels, zone, false, qtype, &mut chased, depth + 1);
                ans.answers.append(&mut chased.answers);
            }
        }
        Exists
    }

    #[allow(clippy::too_many_arguments)]
    fn cluster_ip<'q>(&self, svc: &'a ServiceEntry, port: PortQuery, qname: &'q Name, zone: &'a Zone, qtype: RecordType, ans: &mut Answer<'q>) -> Presence
    where
        'a: 'q,
    {
        let ports = || svc.ports.iter().filter(|p| port_matches(port, p));
        let matching = ports().count();
        if matching == 0 {
            return Missing;
        }
        match qtype {
            RecordType::A | RecordType::AAAA => {
                self.push_addresses(Dname::of(qname), qtype, svc.cluster_ips.iter().copied(), &mut ans.answers);
            }
            RecordType::SRV => {
                let weight = srv_weight(matching * svc.cluster_ips.len());
                // The zone part in the question's case (CoreDNS's SRV targets are).
                let target = service_name(svc, zone_part(qname, zone));
                if !svc.cluster_ips.is_empty() {
                    // Two ports with one number (53/UDP and 53/TCP) are one record: an RRset
                    // holds no duplicates (RFC 2181 5). The weight still counts both, as in CoreDNS.
                    for (i, p) in ports().enumerate() {
                        let Some(number) = p.port else { continue };
                        if !ports().take(i).any(|q| q.port == Some(number)) {
                            ans.answers.push(srv(Dname::of(qname), self.ttl(), weight, number, target));
                        }
                    }
                    for ip in &svc.cluster_ips {
                        ans.additionals.push(address_record(target, self.ttl(), *ip));
                    }
                }
            }
            _ => {}
        }
        Exists
    }

    #[allow(clippy::too_many_arguments)]
    fn endpoints<'q>(&self, svc: &'a ServiceEntry, endpoint: Option<&[u8]>, port: PortQuery, qname: &'q Name, zone: &'a Zone, qtype: RecordType, ans: &mut Answer<'q>) -> Presence
    where
        'a: 'q,
    {
        if self.settings.no_endpoints {
            return Missing;
        }
        let pod_names = self.store.pod_names();
        // (endpoint, port) pairs, as CoreDNS counts them for existence and SRV weights; as
        // indexes, so that a typical answer's pairs stay on the stack.
        let mut pairs: TinyVec<[(u32, u16); 32]> = TinyVec::new();
        let mut add = |(i, ep): (u32, &'a EndpointEntry)| {
            for (j, p) in svc.port_groups[ep.group as usize].iter().enumerate() {
                if port_matches(port, p) {
                    pairs.push((i, j as u16));
                }
            }
        };
        match endpoint {
            Some(label) => svc.endpoints_named(label, pod_names).for_each(&mut add),
            None => (0..).zip(&svc.endpoints).for_each(&mut add),
        }
        if pairs.is_empty() {
            return Missing;
        }
        let pair = |&(i, j): &(u32, u16)| {
            let ep = &svc.endpoints[i as usize];
            (ep, &svc.port_groups[ep.group as usize][usize::from(j)])
        };
        match qtype {
            RecordType::A | RecordType::AAAA => {
                let mut seen = Seen::default();
                let ips = pairs.iter().map(|p| pair(p).0.ip).filter(|ip| seen.insert(*ip));
                self.push_addresses(Dname::of(qname), qtype, ips, &mut ans.answers);
            }
            RecordType::SRV => {
                let weight = srv_weight(pairs.len());
                let svc_name = service_name(svc, zone_part(qname, zone));
                ans.answers.reserve(pairs.len());
                ans.additionals.reserve(pairs.len());
                let mut seen_srv = Seen::default();
                let mut seen_addr = Seen::default();
                for (ep, p) in pairs.iter().map(pair) {
                    let Some(port) = p.port else { continue };
                    let label = svc.label(ep, pod_names);
                    let Some(target) = svc_name.with_head(label) else { continue };
                    // Endpoints with one label are one target: its records are not repeated.
                    if seen_srv.insert((label, port)) {
                        ans.answers.push(srv(Dname::of(qname), self.ttl(), weight, port, target));
                    }
                    if seen_addr.insert((label, ep.ip)) {
                        ans.additionals.push(address_record(target, self.ttl(), ep.ip));
                    }
                }
            }
            _ => {}
        }
        Exists
    }

    // ----- <dashed-ip>.<namespace>.pod.<zone> -------------------------------------------------

    fn pods<'q>(&self, segs: &[&[u8]], qname: &'q Name, qtype: RecordType, ans: &mut Answer<'q>) -> Presence {
        let n = segs.len();
        if n == 0 {
            return Exists;
        }
        if self.settings.pod_mode == PodMode::Disabled || n > 2 {
            return Missing;
        }
        let ns = segs[n - 1];
        if !self.settings.namespace_exposed(ns) || !self.store.namespace_exists(ns) {
            return Missing;
        }
        if n == 1 {
            return Exists;
        }
        let Some(ip) = parse_dashed_ip(segs[0]) else { return Missing };
        if self.settings.pod_mode == PodMode::Verified && !self.store.pod_exists(ip, ns) {
            return Missing;
        }
        self.push_addresses(Dname::of(qname), qtype, core::iter::once(ip), &mut ans.answers);
        Exists
    }

    // ----- reverse zones ----------------------------------------------------------------------

    fn reverse<'q>(&self, labels: &[&[u8]], qname: &'q Name, qtype: RecordType, ans: &mut Answer<'q>) -> Presence
    where
        'a: 'q,
    {
        let Some(ip) = parse_reverse(labels) else {
            // A network rather than an address: it exists when an address below it does.
            return match parse_reverse_prefix(labels) {
                Some(prefix) if self.network_named(prefix) => Exists,
                _ => Missing,
            };
        };
        let primary = Dname::of(&self.settings.primary_zone().name);
        let exposed = |svc: &&ServiceEntry| self.settings.namespace_exposed(svc.namespace().as_bytes());
        let owners = || self.store.ip_owners(ip);
        // A cluster IP names its service alone; otherwise every endpoint with the IP is named.
        let cluster = owners().find_map(|o| match o {
            IpOwner::ClusterIp { service } => self.store.service_by_id(service).filter(exposed),
            IpOwner::Endpoint { .. } => None,
        });
        let mut named = |target: Dname<'a>| {
            // Endpoints of one name (in several slices) are one record.
            let known = |r: &Rr<'_>| matches!(&r.data, Rdata::Ptr(t) if t.labels().eq(target.labels()));
            if qtype == RecordType::PTR && !ans.answers.iter().any(known) {
                ans.answers.push(Rr { owner: Dname::of(qname), ttl: self.ttl(), data: Rdata::Ptr(target) });
            }
        };
        let mut presence = Missing;
        if let Some(svc) = cluster {
            named(service_name(svc, primary));
            presence = Exists;
        } else if !self.settings.no_endpoints {
            for owner in owners() {
                let IpOwner::Endpoint { service, endpoint } = owner else { continue };
                let Some(svc) = self.store.service_by_id(service).filter(exposed) else { continue };
                let ep = &svc.endpoints[endpoint as usize];
                let Some(target) = service_name(svc, primary).with_head(svc.label(ep, self.store.pod_names())) else { continue };
                named(target);
                presence = Exists;
            }
        }
        presence
    }

    /// Whether an address in `prefix` has a PTR record: an empty non-terminal of the reverse
    /// tree (`10.in-addr.arpa` above `7.1.244.10.in-addr.arpa`). Range queries on the sorted
    /// IP index, O(log n): the first owner found answers, unless its namespace is filtered
    /// out; after [`PREFIX_SCAN`] hidden owners the network counts as existing (a NODATA is
    /// never wrong for a resolver, a NXDOMAIN hides what is below).
    // Off the hot path: only names that would otherwise be NXDOMAIN get here.
    #[cold]
    #[inline(never)]
    fn network_named(&self, prefix: ReversePrefix) -> bool {
        let (low, high) = prefix.range();
        let exposed = |service: u32| self.store.service_by_id(service).is_some_and(|s| self.settings.namespace_exposed(s.namespace().as_bytes()));
        let cluster = self.store.cluster_ips_in(low, high).map(|(_, service)| service);
        let endpoints = self.store.endpoint_ips_in(low, high).filter(|_| !self.settings.no_endpoints).map(|(_, service, _)| service);
        let mut owners = cluster.chain(endpoints);
        if self.settings.namespaces.is_empty() {
            return owners.next().is_some();
        }
        let mut looked = 0;
        for service in owners {
            looked += 1;
            if exposed(service) || looked >= PREFIX_SCAN {
                return true;
            }
        }
        false
    }

    // ----- helpers ------------------------------------------------------------------------------

    fn ttl(&self) -> u32 {
        self.settings.ttl
    }

    /// Pushes an A or AAAA record (as `qtype` asks) for each address of the matching family.
    fn push_addresses<'q>(&self, owner: Dname<'q>, qtype: RecordType, ips: impl Iterator<Item = IpAddr>, out: &mut Vec<Rr<'q>>) {
        for ip in ips {
            let wanted = matches!((qtype, ip), (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_)));
            if wanted {
                out.push(address_record(owner, self.ttl(), ip));
            }
        }
    }
}

/// The labels of `name` lowercased into `text`: a query allocates nothing to be matched.
fn lowercase_labels<'t>(name: &Name, text: &'t mut [u8; NAME_BYTES]) -> TinyVec<[&'t [u8]; 16]> {
    let mut spans: TinyVec<[(u8, u8); 16]> = TinyVec::new();
    let mut end = 0;
    for label in name.iter() {
        let start = end;
        end = (start + label.len()).min(NAME_BYTES);
        text[start..end].copy_from_slice(&label[..end - start]);
        text[start..end].make_ascii_lowercase();
        spans.push((start as u8, end as u8));
    }
    let text = &*text;
    spans.iter().map(|&(a, b)| &text[usize::from(a)..usize::from(b)]).collect()
}

/// A set for leaving duplicates out of an answer: a few entries on the stack, compared one by
/// one; a B-tree once there are more (a headless service can have thousands of endpoints).
struct Seen<T> {
    few: tinyvec::ArrayVec<[Option<T>; 8]>,
    many: BTreeSet<T>,
}

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Seen { few: tinyvec::ArrayVec::new(), many: BTreeSet::new() }
    }
}

impl<T: Ord + Copy> Seen<T> {
    /// Adds `value`; false if it was there.
    fn insert(&mut self, value: T) -> bool {
        if !self.many.is_empty() {
            return self.many.insert(value);
        }
        if self.few.contains(&Some(value)) {
            return false;
        }
        if self.few.len() < self.few.capacity() {
            self.few.push(Some(value));
        } else {
            self.many.extend(self.few.drain(..).flatten());
            self.many.insert(value);
        }
        true
    }
}

/// CoreDNS's `match(port, name) && match(protocol, proto)`: an empty query label matches any;
/// the portless sentinel matches only a query without port and protocol.
fn port_matches(query: PortQuery, p: &PortSpec) -> bool {
    let Some((name, proto)) = query else { return true };
    let name_ok = name.is_empty() || name.eq_ignore_ascii_case(p.name.as_bytes());
    let proto_ok = proto.is_empty() || (p.port.is_some() && proto.eq_ignore_ascii_case(p.protocol.as_str().as_bytes()));
    name_ok && proto_ok
}

/// CoreDNS's SRV weight: every record gets `floor(100 / n)` of n, at least 1 (computed in
/// floating point exactly as CoreDNS does, so the figures agree).
fn srv_weight(n: usize) -> u16 {
    if n == 0 {
        return 100;
    }
    let w = (100.0f64 / (100.0 * n as f64)) * 100.0;
    (w as u16).max(1)
}

fn srv<'q>(owner: Dname<'q>, ttl: u32, weight: u16, port: u16, target: Dname<'q>) -> Rr<'q> {
    Rr { owner, ttl, data: Rdata::Srv { priority: 0, weight, port, target } }
}

fn address_record(owner: Dname<'_>, ttl: u32, ip: IpAddr) -> Rr<'_> {
    let data = match ip {
        IpAddr::V4(v4) => Rdata::A(v4),
        IpAddr::V6(v6) => Rdata::Aaaa(v6),
    };
    Rr { owner, ttl, data }
}

/// `<service>.<namespace>.svc.<zone>`.
#[inline]
fn service_name<'a>(svc: &'a ServiceEntry, zone: Dname<'a>) -> Dname<'a> {
    zone.prefixed_or_self(&[svc.name().as_bytes(), svc.namespace().as_bytes(), b"svc"])
}

/// The zone part of `qname` (a name in `zone`), in the question's case: the zone's own name
/// when the question spells it the same (the common case, and the name every other record
/// holds), else the question's last labels.
#[inline]
fn zone_part<'q>(qname: &'q Name, zone: &'q Zone) -> Dname<'q> {
    let same = qname.iter().rev().take(zone.labels).eq(zone.name.iter().rev());
    if same { Dname::of(&zone.name) } else { Dname::suffix(qname, qname.iter().len().saturating_sub(zone.labels)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_match_coredns() {
        assert_eq!(srv_weight(1), 100);
        assert_eq!(srv_weight(2), 50);
        assert_eq!(srv_weight(3), 33);
        assert_eq!(srv_weight(4), 25);
        assert_eq!(srv_weight(7), 14);
        assert_eq!(srv_weight(200), 1);
        assert_eq!(srv_weight(100_000), 1);
    }

    #[test]
    fn seen_keeps_first_occurrences_on_the_stack_and_past_it() {
        let mut seen = Seen::default();
        // Past the stack's eight entries it moves to the B-tree; answers must not change.
        let values = [3u32, 1, 3, 2, 1, 4, 5, 6, 7, 8, 9, 3, 10, 9, 11, 1];
        let kept: Vec<u32> = values.iter().copied().filter(|v| seen.insert(*v)).collect();
        assert_eq!(kept, [3, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert!(!seen.many.is_empty());
    }

    #[test]
    fn port_matching() {
        let http = PortSpec { name: "http".into(), protocol: crate::store::Protocol::Tcp, port: Some(80) };
        let sentinel = PortSpec { name: "".into(), protocol: crate::store::Protocol::Tcp, port: None };
        assert!(port_matches(None, &http));
        assert!(port_matches(Some((b"HTTP", b"tcp")), &http));
        assert!(!port_matches(Some((b"http", b"udp")), &http));
        assert!(port_matches(None, &sentinel));
        assert!(!port_matches(Some((b"http", b"tcp")), &sentinel));
        assert!(!port_matches(Some((b"", b"tcp")), &sentinel));
    }
}
