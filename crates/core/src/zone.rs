//! Every record of a served zone, for zone files and transfers.
//!
//! The names are enumerated from the store, and each name's records come from the same
//! [`Lookup::answer`] that answers queries, so a zone file can never disagree with the server.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::net::IpAddr;

use hickory_proto::rr::{Name, Record, RecordType};

use crate::config::PodMode;
use crate::lookup::Lookup;
use crate::names::EndpointLabel;
use crate::store::ServiceKind;

impl Lookup<'_> {
    /// The records of `zone` (one of the served zones), SOA first. `None` if not served.
    /// Pods in `pods insecure` mode answer any dashed IP and cannot be listed.
    pub fn zone_records(&self, zone: &Name) -> Option<Vec<Record>> {
        let (z, reverse) = self.zone_of(zone)?;
        if z.labels != zone.num_labels() as usize {
            return None;
        }
        let zone = &z.name;
        let mut questions: Vec<(Name, RecordType)> = Vec::new();
        let mut ask = |name: Option<Name>, types: &[RecordType]| {
            if let Some(name) = name {
                for t in types {
                    questions.push((name.clone(), *t));
                }
            }
        };
        const ADDR: &[RecordType] = &[RecordType::A, RecordType::AAAA];
        const ADDR_SRV: &[RecordType] = &[RecordType::A, RecordType::AAAA, RecordType::SRV];
        ask(Some(zone.clone()), &[RecordType::NS]);
        if reverse {
            for ip in self.store.owned_ips() {
                ask(reverse_name(ip), &[RecordType::PTR]);
            }
        } else {
            ask(child(zone, &[b"dns-version"]), &[RecordType::TXT]);
            ask(child(zone, &[b"ns", b"dns"]), ADDR);
            let pod_names = self.store.pod_names();
            for svc in self.store.services() {
                let base = child(zone, &[svc.name().as_bytes(), svc.namespace().as_bytes(), b"svc"]);
                if svc.kind == ServiceKind::ExternalName {
                    ask(base, &[RecordType::CNAME]);
                    continue;
                }
                ask(base.clone(), ADDR_SRV);
                let Some(base) = base else { continue };
                let mut ports = BTreeSet::new();
                for p in svc.ports.iter().chain(svc.port_groups.iter().flatten()) {
                    if !p.name.is_empty() && p.port.is_some() {
                        ports.insert((p.name.clone(), p.protocol.as_str()));
                    }
                }
                for (name, proto) in ports {
                    let mut port_label = alloc::vec![b'_'];
                    port_label.extend_from_slice(name.as_bytes());
                    let mut proto_label = alloc::vec![b'_'];
                    proto_label.extend_from_slice(proto.as_bytes());
                    ask(child(&base, &[&port_label, &proto_label]), &[RecordType::SRV]);
                }
                let labels: BTreeSet<Vec<u8>> = svc.endpoints.iter().map(|e| svc.label(e, pod_names).as_bytes().to_vec()).collect();
                for label in labels {
                    ask(child(&base, &[&label]), ADDR_SRV);
                }
            }
            if self.settings.pod_mode == PodMode::Verified {
                let pods: BTreeSet<(&IpAddr, &str)> = self.store.pod_ips().collect();
                for (ip, ns) in pods {
                    let label = EndpointLabel::dashed(*ip);
                    ask(child(zone, &[label.as_bytes(), ns.as_bytes(), b"pod"]), ADDR);
                }
            }
        }
        let mut records = alloc::vec![self.soa(z).to_record()];
        let mut seen = BTreeSet::new();
        for (name, qtype) in questions.into_iter().filter(|(n, _)| zone.zone_of(n)) {
            for r in self.answer(&name, qtype).answers.iter().map(|r| r.to_record()) {
                // Only the name's own records: a followed CNAME's target is listed under its name.
                if r.name == name && seen.insert((r.name.to_lowercase(), r.record_type(), r.data.clone())) {
                    records.push(r);
                }
            }
        }
        Some(records)
    }
}

/// Whether a client holding a zone at serial `client` is up to date with the zone at serial
/// `current`: the same serial or a later one in serial arithmetic (RFC 1982). An IXFR query
/// whose SOA says so is answered with the current SOA alone (RFC 1995 4).
pub fn ixfr_is_current(client: u32, current: u32) -> bool {
    // RFC 1982 3.2: s1 > s2 when s1 is ahead by less than 2^31.
    client == current || (client.wrapping_sub(current) as i32) > 0
}

/// `labels` (leftmost first) under `parent`; `None` if the name would be invalid.
fn child(parent: &Name, labels: &[&[u8]]) -> Option<Name> {
    let mut name = parent.clone();
    for l in labels.iter().rev() {
        name = name.prepend_label(*l).ok()?;
    }
    Some(name)
}

fn reverse_name(ip: IpAddr) -> Option<Name> {
    use core::fmt::Write;
    let mut text = alloc::string::String::new();
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let _ = write!(text, "{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]);
        }
        IpAddr::V6(v6) => {
            for b in v6.octets().iter().rev() {
                let _ = write!(text, "{:x}.{:x}.", b & 0xf, b >> 4);
            }
            text.push_str("ip6.arpa.");
        }
    }
    Name::from_ascii(text).ok()
}
