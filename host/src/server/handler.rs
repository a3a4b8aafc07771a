//! What both transports do with a message: count it, hand it to the engine, serve zone
//! transfers to allowed clients.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::engine::Engine;
use crate::metrics::{DurationLabels, Metrics, RequestLabels, ResponseLabels, SizeLabels, TypeLabel};
use crate::upstream::Failure;

/// An allowed network for zone transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?} is not an address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{s:?}: prefix length must be 0-{max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// What a server sends back: nothing, one message, (a zone transfer over TCP) several, or
/// what the upstreams make of it (the server awaits [`Handler::finish`] off its receive loop).
pub enum Reply {
    None,
    One(Vec<u8>),
    Many(Vec<Vec<u8>>),
    Upstream(Job),
}

/// Work for the upstreams, with the engine's own answer to fall back on.
pub struct Job {
    kind: JobKind,
    query: Vec<u8>,
    question: Option<(String, u16)>,
    fallback: Vec<u8>,
    max_size: usize,
    proto: &'static str,
    peer: SocketAddr,
    started: Instant,
}

enum JobKind {
    /// Outside the zones, or NXDOMAIN in a fallthrough zone: the upstream answers instead.
    Forward,
    /// An ExternalName CNAME to a name outside the zones: add the target's records.
    Chase,
}

#[derive(Clone)]
pub struct Handler {
    pub engine: Arc<dyn Engine>,
    pub metrics: Option<Arc<Metrics>>,
    /// `dns://ADDR:PORT`, the `server` label.
    pub server: String,
    /// Served zones, lowercase with the trailing dot, for the `zone` label.
    pub zones: Vec<String>,
    /// Clients allowed to transfer the zones (AXFR; IXFR is answered with a full transfer).
    pub transfer_to: Vec<Cidr>,
    pub upstreams: Option<Arc<crate::upstream::Upstreams>>,
    /// `fallthrough` zones (lowercase, trailing dot); an empty list means every zone.
    pub fallthrough: Option<Vec<String>>,
    /// Whether the engine holds a cluster view yet; until then names in the zones get SERVFAIL
    /// (as CoreDNS answers before its first sync) rather than a false NXDOMAIN.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
}

/// Most records in one transfer message (well under 64 KiB for cluster records).
const TRANSFER_CHUNK: usize = 400;

impl Handler {
    pub fn handle(&self, query: &[u8], max_udp: u16, proto: &'static str, peer: SocketAddr) -> Reply {
        let started = Instant::now();
        // Read the question once, and only when something here needs it.
        let ready = self.ready.load(std::sync::atomic::Ordering::Relaxed);
        let wanted = !ready || self.metrics.is_some() || self.upstreams.is_some() || !self.transfer_to.is_empty();
        let question = if wanted { question(query) } else { None };
        let transfer = matches!(question.as_ref().map(|q| q.1), Some(252 | 251));
        let not_yet = !ready && question.as_ref().is_some_and(|(qname, _)| self.zone_of(qname).is_some());
        let reply = if not_yet {
            self.not_synced(query, question.as_ref()).map_or(Reply::None, Reply::One)
        } else if transfer && proto == "tcp" && self.transfer_to.iter().any(|c| c.contains(peer.ip())) {
            self.transfer(query)
        } else {
            match self.engine.resolve(query, max_udp) {
                Some(r) => match (&self.upstreams, &question) {
                    (Some(upstreams), Some((qname, qtype))) => match self.upstream_job(qname, *qtype, &r) {
                        // Our own loop probe, come back: answered here, never sent on again.
                        Some(JobKind::Forward) if upstreams.is_probe(qname) => crate::engine::servfail(query).map_or(Reply::None, Reply::One),
                        Some(kind) => {
                            let max_size = if max_udp == 0 { 65535 } else { usize::from(max_udp) };
                            return Reply::Upstream(Job { kind, query: query.to_vec(), question, fallback: r, max_size, proto, peer, started });
                        }
                        None => Reply::One(r),
                    },
                    _ => Reply::One(r),
                },
                None => Reply::None,
            }
        };
        self.record_reply(question.as_ref(), query.len(), &reply, proto, peer, started, false);
        reply
    }

    /// A query for a name in the zones before the first cluster view, answered as CoreDNS's
    /// kubernetes plugin does before its first sync: the zone's SOA and NS and the dns-version
    /// TXT (which come from the settings alone), and for anything else SERVFAIL with the SOA,
    /// so that resolvers cache the failure only briefly.
    fn not_synced(&self, query: &[u8], question: Option<&(String, u16)>) -> Option<Vec<u8>> {
        let (qname, qtype) = question?;
        let zone = self.zone_of(qname)?;
        let from_settings = (qname == zone && matches!(qtype, 2 | 6)) || (*qtype == 16 && qname.strip_suffix(zone.as_str()) == Some("dns-version."));
        if from_settings {
            return self.engine.resolve(query, 0);
        }
        let request = Message::from_vec(query).ok()?;
        let mut m = Message::new(request.id, MessageType::Response, request.op_code);
        m.metadata.recursion_desired = request.recursion_desired;
        m.metadata.response_code = ResponseCode::ServFail;
        m.queries = request.queries.clone();
        let mut soa_query = Message::new(request.id, MessageType::Query, OpCode::Query);
        soa_query.add_query(hickory_proto::op::Query::query(hickory_proto::rr::Name::from_ascii(zone).ok()?, RecordType::SOA));
        let soa = self.engine.resolve(&soa_query.to_vec().ok()?, 0).and_then(|r| Message::from_vec(&r).ok());
        m.authorities = soa.map(|r| r.answers).unwrap_or_default();
        if request.edns.is_some() {
            let mut opt = hickory_proto::op::Edns::new();
            opt.set_max_payload(kdns_core::message::ADVERTISED_UDP_SIZE);
            m.set_edns(opt);
        }
        m.to_vec().ok().or_else(|| crate::engine::servfail(query))
    }

    /// Whether the upstreams have something to add to the engine's `response`.
    fn upstream_job(&self, qname: &str, qtype: u16, response: &[u8]) -> Option<JobKind> {
        let (flags, rcode, answers) = (response[2], response[3] & 0x0f, u16::from_be_bytes([response[6], response[7]]));
        let authoritative = flags & 0x04 != 0;
        match rcode {
            5 if !authoritative && self.zone_of(qname).is_none() && !matches!(qtype, 251 | 252) => Some(JobKind::Forward),
            3 if self.falls_through(qname) => Some(JobKind::Forward),
            0 if answers > 0 && matches!(qtype, 1 | 28) => Some(JobKind::Chase),
            _ => None,
        }
    }

    fn falls_through(&self, qname: &str) -> bool {
        match &self.fallthrough {
            None => false,
            Some(zones) if zones.is_empty() => true,
            Some(zones) => zones.iter().any(|z| in_zone(qname, z)),
        }
    }

    fn zone_of(&self, qname: &str) -> Option<&String> {
        self.zones.iter().find(|z| in_zone(qname, z))
    }

    /// Completes an upstream job; the answer to send, if any.
    pub async fn finish(&self, job: Job) -> Option<Vec<u8>> {
        let upstreams = self.upstreams.as_ref()?;
        let answer = match job.kind {
            JobKind::Forward => match upstreams.exchange(&job.query).await {
                Ok(a) if a.len() <= job.max_size => a,
                // Too big for the client's UDP buffer: tell it to come back over TCP.
                Ok(_) => truncated(&job.query).unwrap_or(job.fallback),
                // As CoreDNS's forward answers past its max_concurrent.
                Err(Failure::Busy) => crate::engine::error_reply(&job.query, ResponseCode::Refused).unwrap_or(job.fallback),
                Err(Failure::Loop | Failure::Failed(_)) => crate::engine::servfail(&job.query).unwrap_or(job.fallback),
            },
            JobKind::Chase => {
                let in_zones = |n: &hickory_proto::rr::Name| self.zone_of(&n.to_lowercase().to_ascii()).is_some();
                upstreams.chase_cname(&job.fallback, in_zones, job.max_size).await.unwrap_or(job.fallback)
            }
        };
        let reply = Reply::One(answer);
        self.record_reply(job.question.as_ref(), job.query.len(), &reply, job.proto, job.peer, job.started, matches!(job.kind, JobKind::Forward));
        match reply {
            Reply::One(a) => Some(a),
            _ => None,
        }
    }

    /// `forwarded`: the upstreams wrote the answer (CoreDNS's `plugin="forward"`).
    #[allow(clippy::too_many_arguments)]
    fn record_reply(&self, question: Option<&(String, u16)>, query_len: usize, reply: &Reply, proto: &'static str, peer: SocketAddr, started: Instant, forwarded: bool) {
        if let (Some(m), Some((qname, qtype))) = (&self.metrics, question) {
            let first = match &reply {
                Reply::One(r) => Some(r.as_slice()),
                Reply::Many(rs) => rs.first().map(Vec::as_slice),
                Reply::None | Reply::Upstream(_) => None,
            };
            if let Some(response) = first {
                self.record(m, qname, *qtype, query_len, response, proto, peer, started, forwarded);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(&self, m: &Metrics, qname: &str, qtype: u16, query_len: usize, response: &[u8], proto: &'static str, peer: SocketAddr, started: Instant, forwarded: bool) {
        let served = self.zone_of(qname).cloned();
        let plugin = match (&served, forwarded) {
            (_, true) => "forward",
            (Some(_), false) => "kubernetes",
            (None, false) => "",
        };
        let zone = served.unwrap_or_else(|| ".".into());
        let rtype = RecordType::from(qtype).to_string();
        let family = if peer.is_ipv4() || matches!(peer.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()) { "1" } else { "2" };
        m.requests.get_or_create(&RequestLabels { server: self.server.clone(), zone: zone.clone(), view: "", proto, family, kind: TypeLabel { r#type: rtype.clone() } }).inc();
        let rcode = crate::dig::rcode_name(ResponseCode::from_low(response.get(3).map_or(2, |b| b & 0x0f)));
        m.responses.get_or_create(&ResponseLabels { server: self.server.clone(), zone: zone.clone(), view: "", rcode, plugin }).inc();
        m.duration.get_or_create(&DurationLabels { server: self.server.clone(), zone: zone.clone(), view: "", r#type: rtype }).observe(started.elapsed().as_secs_f64());
        let size = SizeLabels { server: self.server.clone(), zone, view: "", proto };
        m.request_size.get_or_create(&size).observe(query_len as f64);
        m.response_size.get_or_create(&size).observe(response.len() as f64);
    }

    /// A full zone transfer (RFC 5936): SOA, every record, SOA, in as many messages as needed.
    fn transfer(&self, query: &[u8]) -> Reply {
        let Ok(request) = Message::from_vec(query) else { return self.refuse(query) };
        let Some(q) = request.queries.first() else { return self.refuse(query) };
        let Some(records) = self.engine.zone_records(q.name()) else { return self.refuse(query) };
        let soa = records[0].clone();
        // IXFR from a client already at the current serial: the SOA alone (RFC 1995 §4).
        // Otherwise IXFR gets the whole zone, which RFC 1995 allows.
        let current = match &soa.data {
            hickory_proto::rr::RData::SOA(s) => Some(s.serial),
            _ => None,
        };
        let client = request.authorities.iter().find_map(|r| match &r.data {
            hickory_proto::rr::RData::SOA(s) => Some(s.serial),
            _ => None,
        });
        if q.query_type() == RecordType::IXFR
            && let (Some(client), Some(current)) = (client, current)
            && kdns_core::zone::ixfr_is_current(client, current)
        {
            let mut m = Message::new(request.id, MessageType::Response, OpCode::Query);
            m.metadata.authoritative = true;
            m.metadata.recursion_desired = request.recursion_desired;
            m.queries = request.queries.clone();
            m.answers = vec![soa];
            return m.to_vec().map_or_else(|_| self.refuse(query), |b| Reply::Many(vec![b]));
        }
        let mut all = records;
        all.push(soa);
        let mut messages = Vec::new();
        for chunk in all.chunks(TRANSFER_CHUNK) {
            let mut m = Message::new(request.id, MessageType::Response, OpCode::Query);
            m.metadata.authoritative = true;
            m.metadata.recursion_desired = request.recursion_desired;
            if messages.is_empty() {
                m.queries = request.queries.clone();
            }
            m.answers = chunk.to_vec();
            match m.to_vec() {
                Ok(bytes) => messages.push(bytes),
                Err(_) => return self.refuse(query),
            }
        }
        Reply::Many(messages)
    }

    fn refuse(&self, query: &[u8]) -> Reply {
        match self.engine.resolve(query, 0) {
            Some(r) => Reply::One(r),
            None => Reply::None,
        }
    }
}

/// Whether `name` is `zone` or below it (both lowercase with the trailing dot).
fn in_zone(name: &str, zone: &str) -> bool {
    zone == "." || (name.ends_with(zone) && (name.len() == zone.len() || name.as_bytes()[name.len() - zone.len() - 1] == b'.'))
}

/// An empty answer with TC set, echoing the question.
fn truncated(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mut m = Message::new(request.id, MessageType::Response, request.op_code);
    m.metadata.recursion_desired = request.recursion_desired;
    m.metadata.truncation = true;
    m.queries = request.queries;
    m.to_vec().ok()
}

/// The question's name (lowercase, with the trailing dot) and type, read without a full parse.
pub fn question(msg: &[u8]) -> Option<(String, u16)> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut name = String::new();
    let mut i = 12;
    loop {
        let len = *msg.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 || name.len() + len > 254 {
            return None;
        }
        for b in msg.get(i..i + len)? {
            name.push(b.to_ascii_lowercase() as char);
        }
        name.push('.');
        i += len;
    }
    if name.is_empty() {
        name.push('.');
    }
    let qtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    Some((name, qtype))
}

/// The zone names for the `zone` label: the configured zones and the reverse zones.
pub fn zone_labels(config: &kdns_proto::v1::Config) -> Vec<String> {
    let mut zones: Vec<String> = if config.zones.is_empty() { vec![kdns_core::config::DEFAULT_ZONE.into()] } else { config.zones.clone() };
    if config.reverse_zones.is_empty() {
        zones.extend(["in-addr.arpa".into(), "ip6.arpa".into()]);
    } else {
        zones.extend(config.reverse_zones.iter().cloned());
    }
    let mut zones: Vec<String> = zones.into_iter().map(|z| format!("{}.", z.trim_end_matches('.').to_ascii_lowercase())).collect();
    zones.sort_by_key(|z| std::cmp::Reverse(z.len()));
    zones
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn question_is_read_from_the_wire() {
        let q = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'W', b'e', b'b', 5, b'l', b'o', b'c', b'a', b'l', 0, 0, 28, 0, 1];
        assert_eq!(question(&q), Some(("web.local.".into(), 28)));
        assert_eq!(question(&q[..20]), None);
    }
}
