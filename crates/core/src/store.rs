//! The indexed cluster view: services with their published endpoints, pods and namespaces,
//! plus the reverse index from IP addresses to the names that own them.
//!
//! Everything a query needs is one map lookup away (O(log n)); nothing scans the cluster.
//! Services live in a slab addressed by a `u32` id so that the IP index stays small and a delta
//! replaces one service in O(size of that service).

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use core::net::IpAddr;

use hickory_proto::rr::Name;
use kdns_proto::v1;

use crate::error::InputError;
use crate::names::{EndpointLabel, is_dns_label};

/// How a service is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    ClusterIp,
    Headless,
    ExternalName,
}

/// IP transport protocol of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A named port. `port == None` is the sentinel CoreDNS uses for a service or slice that
/// declares no port: it makes the name exist but yields no SRV record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub name: Box<str>,
    pub protocol: Protocol,
    pub port: Option<u16>,
}

/// An endpoint that is published in DNS (ready, or its service publishes not-ready addresses).
#[derive(Clone, Copy, Debug)]
pub struct EndpointEntry {
    pub ip: IpAddr,
    /// Lowercased EndpointSlice hostname, in [`ServiceEntry::text`].
    hostname: TextRef,
    /// Lowercased name of the target Pod, in [`ServiceEntry::text`].
    pod_name: TextRef,
    /// Index into [`ServiceEntry::port_groups`].
    pub group: u32,
}

/// A piece of a service's text (empty: absent). Endpoint names live in one string per
/// service rather than a heap block each (measured: 56 bytes and two allocations per
/// endpoint became 40 bytes and none).
#[derive(Clone, Copy, Debug, Default)]
struct TextRef {
    start: u32,
    len: u16,
}

#[derive(Clone, Debug)]
pub struct ServiceEntry {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub kind: ServiceKind,
    pub cluster_ips: Vec<IpAddr>,
    /// Service ports (never empty: a portless service holds the sentinel).
    pub ports: Vec<PortSpec>,
    /// The ExternalName target, when it is a domain name (not empty, not an IP address).
    pub external_name: Option<Name>,
    /// Published endpoints, in input order.
    pub endpoints: Vec<EndpointEntry>,
    /// The ports of each EndpointSlice (never empty: sentinel when the slice has none).
    pub port_groups: Vec<Vec<PortSpec>>,
    /// Endpoint indices sorted by their DNS label, for O(log n) endpoint-name lookups.
    by_label: Vec<u32>,
    /// The endpoints' hostnames and pod names, end to end.
    text: Box<str>,
}

impl ServiceEntry {
    fn text(&self, r: TextRef) -> Option<&str> {
        (r.len > 0).then(|| self.text.get(r.start as usize..r.start as usize + usize::from(r.len))).flatten()
    }

    /// The DNS label naming `ep`, one of this service's endpoints (CoreDNS `endpointHostname`).
    pub fn label(&self, ep: &EndpointEntry, pod_names: bool) -> EndpointLabel<'_> {
        if let Some(h) = self.text(ep.hostname) {
            return EndpointLabel::Text(h);
        }
        if pod_names
            && let Some(p) = self.text(ep.pod_name) {
                // A pod name longer than a DNS label cannot be a name; fall back to the IP.
                if is_dns_label(p) {
                    return EndpointLabel::Text(p);
                }
            }
        EndpointLabel::dashed(ep.ip)
    }


    /// Indices of the endpoints whose label equals `label` (lowercase).
    /// The endpoints labelled `label`, with their indexes.
    pub fn endpoints_named(&self, label: &[u8], pod_names: bool) -> impl Iterator<Item = (u32, &EndpointEntry)> {
        let key = move |i: &u32| self.label(&self.endpoints[*i as usize], pod_names);
        let start = self.by_label.partition_point(|i| key(i).as_bytes() < label);
        self.by_label[start..]
            .iter()
            .take_while(move |i| key(i).as_bytes() == label)
            .map(|i| (*i, &self.endpoints[*i as usize]))
    }

    fn sort_labels(&mut self, pod_names: bool) {
        let mut by_label: Vec<u32> = (0..self.endpoints.len() as u32).collect();
        let key = |i: &u32| self.label(&self.endpoints[*i as usize], pod_names);
        by_label.sort_by(|a, b| key(a).as_bytes().cmp(key(b).as_bytes()));
        self.by_label = by_label;
    }
}

/// A hash map keyed by "namespace/name". The hasher has a fixed seed: the core takes no
/// randomness, and the keys come from the cluster, not from queries.
type NameMap<V> = hashbrown::HashMap<Box<str>, V, foldhash::fast::FixedState>;

/// Who owns an IP: a service's cluster IP, or one of its endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IpOwner {
    ClusterIp { service: u32 },
    Endpoint { service: u32, endpoint: u32 },
}

#[derive(Default, Clone, Debug)]
struct NamespaceRefs {
    explicit: bool,
    services: u32,
    pods: u32,
}

impl IpOwner {
    const FIRST: IpOwner = IpOwner::ClusterIp { service: 0 };
    const LAST: IpOwner = IpOwner::Endpoint { service: u32::MAX, endpoint: u32::MAX };
}

impl NamespaceRefs {
    fn unused(&self) -> bool {
        !self.explicit && self.services == 0 && self.pods == 0
    }
}

/// The cluster view, indexed for queries.
#[derive(Default, Clone, Debug)]
pub struct Store {
    pub serial: u32,
    services: Vec<Option<ServiceEntry>>,
    free_ids: Vec<u32>,
    /// "namespace/name" → service id.
    by_name: NameMap<u32>,
    /// (IP, owner) pairs: one B-tree of small entries rather than a list per IP (measured:
    /// about 60 bytes less per endpoint).
    by_ip: BTreeSet<(IpAddr, IpOwner)>,
    namespaces: BTreeMap<Box<str>, NamespaceRefs>,
    /// "namespace/name" of each pod → its IPs.
    pods: NameMap<Vec<IpAddr>>,
    /// IP → the namespace of each pod that has it (one entry per pod), for `pods verified`.
    pod_ips: BTreeMap<IpAddr, Vec<Box<str>>>,
    pod_names: bool,
}

/// Counts of what a store holds (for logs and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub services: usize,
    pub endpoints: usize,
    pub pods: usize,
    pub namespaces: usize,
}

impl Store {
    /// Builds a store from a full snapshot. `pod_names` is the `endpoint_pod_names` setting,
    /// which decides the endpoint labels the name index sorts by.
    pub fn from_snapshot(snapshot: v1::Snapshot, pod_names: bool) -> Result<Self, InputError> {
        let mut store = Store { serial: snapshot.serial, pod_names, ..Store::default() };
        for ns in snapshot.namespaces {
            store.namespaces.entry(ns.into_boxed_str()).or_default().explicit = true;
        }
        for svc in snapshot.services {
            store.insert_service(build_service(svc, pod_names)?);
        }
        for pod in snapshot.pods {
            let (pod, ips) = build_pod(pod)?;
            store.insert_pod(pod, ips);
        }
        Ok(store)
    }

    /// Applies a delta in O(size of the change). Every item is validated before anything
    /// changes, so a bad delta leaves the store as it was.
    pub fn apply(&mut self, delta: v1::Delta) -> Result<(), InputError> {
        let services = delta
            .upsert_services
            .into_iter()
            .map(|svc| build_service(svc, self.pod_names))
            .collect::<Result<Vec<_>, _>>()?;
        let pods = delta.upsert_pods.into_iter().map(build_pod).collect::<Result<Vec<_>, _>>()?;
        for key in delta.remove_services {
            self.remove_service(&key.namespace, &key.name);
        }
        for entry in services {
            self.insert_service(entry);
        }
        for key in delta.remove_pods {
            self.remove_pod(&key.namespace, &key.name);
        }
        for (pod, ips) in pods {
            self.insert_pod(pod, ips);
        }
        for ns in delta.remove_namespaces {
            self.release_ns(&ns, |r| r.explicit = false);
        }
        for ns in delta.upsert_namespaces {
            self.ns_refs(&ns).explicit = true;
        }
        self.serial = delta.serial;
        Ok(())
    }

    /// Re-sorts the endpoint-name index when `endpoint_pod_names` changes.
    pub fn set_pod_names(&mut self, pod_names: bool) {
        if self.pod_names == pod_names {
            return;
        }
        self.pod_names = pod_names;
        for svc in self.services.iter_mut().flatten() {
            svc.sort_labels(pod_names);
        }
    }

    pub fn stats(&self) -> StoreStats {
        let services = self.by_name.len();
        let endpoints = self.services.iter().flatten().map(|s| s.endpoints.len()).sum();
        StoreStats { services, endpoints, pods: self.pods.len(), namespaces: self.namespaces.len() }
    }

    pub fn namespace_exists(&self, ns: &[u8]) -> bool {
        core::str::from_utf8(ns).is_ok_and(|ns| self.namespaces.contains_key(ns))
    }

    pub fn service(&self, ns: &[u8], name: &[u8]) -> Option<&ServiceEntry> {
        let mut buf = [0u8; KEY_MAX];
        let id = self.by_name.get(object_key(&mut buf, ns, name)?)?;
        self.service_by_id(*id)
    }

    pub fn service_by_id(&self, id: u32) -> Option<&ServiceEntry> {
        self.services.get(id as usize)?.as_ref()
    }

    /// Every service, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.iter().flatten()
    }

    /// Every IP that names something (cluster IPs and published endpoints), in order.
    pub fn owned_ips(&self) -> impl Iterator<Item = &IpAddr> {
        let mut last = None;
        self.by_ip.iter().map(|(ip, _)| ip).filter(move |ip| last.replace(*ip) != Some(*ip))
    }

    /// Every (pod IP, namespace) pair.
    pub fn pod_ips(&self) -> impl Iterator<Item = (&IpAddr, &str)> {
        self.pod_ips.iter().flat_map(|(ip, nss)| nss.iter().map(move |ns| (ip, &**ns)))
    }

    /// Who owns `ip`: its service's cluster IP first, then endpoints by service and position.
    pub fn ip_owners(&self, ip: &IpAddr) -> impl Iterator<Item = &IpOwner> {
        self.by_ip.range((*ip, IpOwner::FIRST)..=(*ip, IpOwner::LAST)).map(|(_, owner)| owner)
    }

    pub fn pod_exists(&self, ip: IpAddr, ns: &[u8]) -> bool {
        self.pod_ips.get(&ip).is_some_and(|nss| nss.iter().any(|n| n.as_bytes() == ns))
    }

    pub fn pod_names(&self) -> bool {
        self.pod_names
    }

    fn ns_refs(&mut self, ns: &str) -> &mut NamespaceRefs {
        if !self.namespaces.contains_key(ns) {
            self.namespaces.insert(Box::from(ns), NamespaceRefs::default());
        }
        self.namespaces.get_mut(ns).expect("just inserted")
    }

    fn release_ns(&mut self, ns: &str, f: impl FnOnce(&mut NamespaceRefs)) {
        if let Some(refs) = self.namespaces.get_mut(ns) {
            f(refs);
            if refs.unused() {
                self.namespaces.remove(ns);
            }
        }
    }

    fn insert_service(&mut self, entry: ServiceEntry) {
        self.remove_service(&entry.namespace, &entry.name);
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None => {
                self.services.push(None);
                (self.services.len() - 1) as u32
            }
        };
        for ip in &entry.cluster_ips {
            self.by_ip.insert((*ip, IpOwner::ClusterIp { service: id }));
        }
        for (i, ep) in entry.endpoints.iter().enumerate() {
            self.by_ip.insert((ep.ip, IpOwner::Endpoint { service: id, endpoint: i as u32 }));
        }
        self.ns_refs(&entry.namespace).services += 1;
        self.by_name.insert(owned_key(&entry.namespace, &entry.name), id);
        self.services[id as usize] = Some(entry);
    }

    fn remove_service(&mut self, ns: &str, name: &str) {
        let Some(id) = self.by_name.remove(owned_key(ns, name).as_ref()) else { return };
        let Some(entry) = self.services[id as usize].take() else { return };
        for ip in &entry.cluster_ips {
            self.by_ip.remove(&(*ip, IpOwner::ClusterIp { service: id }));
        }
        for (i, ep) in entry.endpoints.iter().enumerate() {
            self.by_ip.remove(&(ep.ip, IpOwner::Endpoint { service: id, endpoint: i as u32 }));
        }
        self.free_ids.push(id);
        self.release_ns(ns, |r| r.services -= 1);
    }

    fn insert_pod(&mut self, pod: v1::Pod, ips: Vec<IpAddr>) {
        self.remove_pod(&pod.namespace, &pod.name);
        let ns: Box<str> = pod.namespace.as_str().into();
        for ip in &ips {
            self.pod_ips.entry(*ip).or_default().push(ns.clone());
        }
        self.ns_refs(&ns).pods += 1;
        self.pods.insert(owned_key(&pod.namespace, &pod.name), ips);
    }

    fn remove_pod(&mut self, ns: &str, name: &str) {
        let Some(ips) = self.pods.remove(owned_key(ns, name).as_ref()) else { return };
        for ip in ips {
            if let Some(nss) = self.pod_ips.get_mut(&ip) {
                // One entry per pod: host-network pods share an IP, so remove just this pod's.
                if let Some(i) = nss.iter().position(|n| &**n == ns) {
                    nss.swap_remove(i);
                }
                if nss.is_empty() {
                    self.pod_ips.remove(&ip);
                }
            }
        }
        self.release_ns(ns, |r| r.pods -= 1);
    }
}

fn build_pod(pod: v1::Pod) -> Result<(v1::Pod, Vec<IpAddr>), InputError> {
    if pod.namespace.is_empty() || pod.name.is_empty() {
        return Err(InputError::MissingName);
    }
    let ips = pod.ips.iter().map(|raw| ip_from_bytes(raw).ok_or(InputError::BadAddress)).collect::<Result<_, _>>()?;
    Ok((pod, ips))
}

/// Longest "namespace/name" key a DNS query can ask for (two 63-byte labels and a slash).
const KEY_MAX: usize = 128;

/// Writes "namespace/name" into `buf` and borrows it, so a lookup allocates nothing.
fn object_key<'a>(buf: &'a mut [u8; KEY_MAX], ns: &[u8], name: &[u8]) -> Option<&'a str> {
    let len = ns.len() + 1 + name.len();
    if len > KEY_MAX {
        return None;
    }
    buf[..ns.len()].copy_from_slice(ns);
    buf[ns.len()] = b'/';
    buf[ns.len() + 1..len].copy_from_slice(name);
    core::str::from_utf8(&buf[..len]).ok()
}

fn owned_key(ns: &str, name: &str) -> Box<str> {
    let mut key = String::with_capacity(ns.len() + 1 + name.len());
    key.push_str(ns);
    key.push('/');
    key.push_str(name);
    key.into_boxed_str()
}

pub fn ip_from_bytes(raw: &[u8]) -> Option<IpAddr> {
    match raw.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(raw).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(raw).ok()?)),
        _ => None,
    }
}

fn port_spec(p: &v1::Port) -> Result<PortSpec, InputError> {
    let protocol = match v1::Protocol::try_from(p.protocol) {
        Ok(v1::Protocol::Tcp) => Protocol::Tcp,
        Ok(v1::Protocol::Udp) => Protocol::Udp,
        Ok(v1::Protocol::Sctp) => Protocol::Sctp,
        Err(_) => return Err(InputError::BadProtocol),
    };
    let port = u16::try_from(p.port).map_err(|_| InputError::BadPort)?;
    Ok(PortSpec { name: lower(&p.name), protocol, port: Some(port) })
}

fn ports_or_sentinel(ports: &[v1::Port]) -> Result<Vec<PortSpec>, InputError> {
    if ports.is_empty() {
        return Ok(alloc::vec![PortSpec { name: Box::from(""), protocol: Protocol::Tcp, port: None }]);
    }
    ports.iter().map(port_spec).collect()
}

fn lower(s: &str) -> Box<str> {
    let mut s = String::from(s);
    s.make_ascii_lowercase();
    s.into_boxed_str()
}

/// An ExternalName target as a CNAME target: lowercase, fully qualified; `None` when empty, an
/// IP address (CoreDNS ignores such services) or not a domain name.
fn external_target(text: &str) -> Option<Name> {
    let text = text.trim_end_matches('.');
    if text.is_empty() || text.parse::<IpAddr>().is_ok() {
        return None;
    }
    let mut name = Name::from_ascii(text.to_ascii_lowercase()).ok()?;
    name.set_fqdn(true);
    Some(name)
}

fn build_service(svc: v1::Service, pod_names: bool) -> Result<ServiceEntry, InputError> {
    if svc.namespace.is_empty() || svc.name.is_empty() {
        return Err(InputError::MissingName);
    }
    let kind = match v1::ServiceType::try_from(svc.r#type) {
        Ok(v1::ServiceType::ClusterIp) => ServiceKind::ClusterIp,
        Ok(v1::ServiceType::Headless) => ServiceKind::Headless,
        Ok(v1::ServiceType::ExternalName) => ServiceKind::ExternalName,
        Err(_) => return Err(InputError::BadServiceType),
    };
    let mut cluster_ips = Vec::with_capacity(svc.cluster_ips.len());
    for raw in &svc.cluster_ips {
        cluster_ips.push(ip_from_bytes(raw).ok_or(InputError::BadAddress)?);
    }
    let mut port_groups = Vec::with_capacity(svc.endpoint_groups.len());
    let mut endpoints = Vec::new();
    let mut text = String::new();
    // A name too long to be a DNS name (over 64 KiB) is kept as absent.
    let mut add_text = |s: &str| -> TextRef {
        match (u32::try_from(text.len()), u16::try_from(s.len())) {
            (Ok(start), Ok(len)) if len > 0 => {
                text.extend(s.chars().map(|c| c.to_ascii_lowercase()));
                TextRef { start, len }
            }
            _ => TextRef::default(),
        }
    };
    for group in &svc.endpoint_groups {
        let group_id = port_groups.len() as u32;
        port_groups.push(ports_or_sentinel(&group.ports)?);
        for ep in &group.endpoints {
            let ip = ip_from_bytes(&ep.address).ok_or(InputError::BadAddress)?;
            if !(ep.ready || svc.publish_not_ready_addresses) {
                continue;
            }
            endpoints.push(EndpointEntry { ip, hostname: add_text(&ep.hostname), pod_name: add_text(&ep.pod_name), group: group_id });
        }
    }
    let mut entry = ServiceEntry {
        namespace: svc.namespace.into_boxed_str(),
        name: svc.name.into_boxed_str(),
        kind,
        cluster_ips,
        ports: ports_or_sentinel(&svc.ports)?,
        external_name: external_target(&svc.external_name),
        endpoints: { endpoints.shrink_to_fit(); endpoints },
        port_groups,
        by_label: Vec::new(),
        text: text.into_boxed_str(),
    };
    entry.sort_labels(pod_names);
    Ok(entry)
}
