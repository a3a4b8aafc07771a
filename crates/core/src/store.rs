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
/// Kept at 28 bytes: there are a hundred thousand of these in a large cluster.
#[derive(Clone, Copy, Debug)]
pub struct EndpointEntry {
    pub ip: IpAddr,
    /// Where the lowercased EndpointSlice hostname starts in [`ServiceEntry::text`]; the
    /// lowercased name of the target Pod follows it.
    text_start: u32,
    /// Byte lengths of the hostname and the pod name (0: absent).
    host_len: u16,
    pod_len: u16,
    /// Index into [`ServiceEntry::port_groups`].
    pub group: u16,
}

impl EndpointEntry {
    fn hostname_range(&self) -> core::ops::Range<usize> {
        let start = self.text_start as usize;
        start..start + usize::from(self.host_len)
    }

    fn pod_name_range(&self) -> core::ops::Range<usize> {
        let start = self.text_start as usize + usize::from(self.host_len);
        start..start + usize::from(self.pod_len)
    }
}

/// A service and its published endpoints. Slices are boxed rather than `Vec`s (no spare
/// capacity, 8 bytes less each): an entry changes only by being replaced.
#[derive(Clone, Debug)]
pub struct ServiceEntry {
    /// "namespace/name" in one allocation; the namespace is its first `ns_len` bytes. The name
    /// index hashes this same string, so the key is stored once.
    key: Box<str>,
    ns_len: u32,
    pub kind: ServiceKind,
    pub cluster_ips: Box<[IpAddr]>,
    /// Service ports (never empty: a portless service holds the sentinel).
    pub ports: Box<[PortSpec]>,
    /// The ExternalName target, when it is a domain name (not empty, not an IP address).
    /// Boxed: one service in twenty has one, and a `Name` is some eighty bytes.
    pub external_name: Option<Box<Name>>,
    /// Published endpoints, in input order.
    pub endpoints: Box<[EndpointEntry]>,
    /// The ports of each EndpointSlice (never empty: sentinel when the slice has none).
    pub port_groups: Box<[Box<[PortSpec]>]>,
    /// Endpoint indices sorted by their DNS label, for O(log n) endpoint-name lookups.
    by_label: Box<[u32]>,
    /// The endpoints' hostnames and pod names, end to end.
    text: Box<str>,
}

impl ServiceEntry {
    pub fn namespace(&self) -> &str {
        &self.key[..self.ns_len as usize]
    }

    pub fn name(&self) -> &str {
        &self.key[self.ns_len as usize + 1..]
    }

    fn text(&self, range: core::ops::Range<usize>) -> Option<&str> {
        (!range.is_empty()).then(|| self.text.get(range)).flatten()
    }

    /// The DNS label naming `ep`, one of this service's endpoints (CoreDNS `endpointHostname`).
    pub fn label(&self, ep: &EndpointEntry, pod_names: bool) -> EndpointLabel<'_> {
        if let Some(h) = self.text(ep.hostname_range()) {
            return EndpointLabel::Text(h);
        }
        if pod_names
            && let Some(p) = self.text(ep.pod_name_range()) {
                // A pod name longer than a DNS label cannot be a name; fall back to the IP.
                if is_dns_label(p) {
                    return EndpointLabel::Text(p);
                }
            }
        EndpointLabel::dashed(ep.ip)
    }

    /// The endpoints labelled `label`, with their indexes.
    pub fn endpoints_named(&self, label: &[u8], pod_names: bool) -> impl Iterator<Item = (u32, &EndpointEntry)> {
        let key = move |i: &u32| self.label(&self.endpoints[*i as usize], pod_names);
        let start = self.by_label.partition_point(|i| key(i).as_bytes() < label);
        self.by_label[start..]
            .iter()
            .take_while(move |i| key(i).as_bytes() == label)
            .map(|i| (*i, &self.endpoints[*i as usize]))
    }

    /// Whether endpoint group (slice) `group` has a published endpoint. Endpoints are kept in
    /// group order (see `build_service`), so this is a binary search.
    pub fn group_has_endpoints(&self, group: u16) -> bool {
        let at = self.endpoints.partition_point(|e| e.group < group);
        self.endpoints.get(at).is_some_and(|e| e.group == group)
    }

    fn sort_labels(&mut self, pod_names: bool) {
        let mut by_label: Box<[u32]> = (0..self.endpoints.len() as u32).collect();
        let key = |i: &u32| self.label(&self.endpoints[*i as usize], pod_names);
        by_label.sort_by(|a, b| key(a).as_bytes().cmp(key(b).as_bytes()));
        self.by_label = by_label;
    }
}

/// A hash map keyed by "namespace/name". The hasher has a fixed seed: the core takes no
/// randomness, and the keys come from the cluster, not from queries.
type NameMap<V> = hashbrown::HashMap<Box<str>, V, foldhash::fast::FixedState>;

/// Whether a name-index entry (a service id) is the service named `key`.
fn is_key<'a>(services: &'a [Option<ServiceEntry>], key: &'a str) -> impl Fn(&u32) -> bool + 'a {
    move |id| services[*id as usize].as_ref().is_some_and(|s| &*s.key == key)
}

fn key_hash(key: &str) -> u64 {
    use core::hash::BuildHasher;
    foldhash::fast::FixedState::default().hash_one(key)
}

/// Who owns an IP: a service's cluster IP, or one of its endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IpOwner {
    ClusterIp { service: u32 },
    Endpoint { service: u32, endpoint: u32 },
}

/// The reverse index: who owns each IP. Endpoint addresses are most of the cluster, so they are
/// kept per family in the smallest keys that order the same way (IPv4 as a `u32`): 12 bytes an
/// IPv4 endpoint instead of 32 for an `(IpAddr, IpOwner)` pair.
#[derive(Default, Clone, Debug)]
struct IpIndex {
    /// (cluster IP, service id).
    cluster: BTreeSet<(IpAddr, u32)>,
    /// (address, service id, endpoint index).
    v4: BTreeSet<(u32, u32, u32)>,
    v6: BTreeSet<([u8; 16], u32, u32)>,
}

/// One entry of the IP index, in the set its address family and owner put it in.
enum IpEntry {
    Cluster((IpAddr, u32)),
    V4((u32, u32, u32)),
    V6(([u8; 16], u32, u32)),
}

/// The IP index entries of service `id`: its cluster IPs, then its endpoints.
fn ip_entries(id: u32, svc: &ServiceEntry) -> impl Iterator<Item = IpEntry> + '_ {
    let cluster = svc.cluster_ips.iter().map(move |ip| IpEntry::Cluster((*ip, id)));
    let endpoints = svc.endpoints.iter().enumerate().map(move |(i, ep)| match ep.ip {
        IpAddr::V4(a) => IpEntry::V4((u32::from(a), id, i as u32)),
        IpAddr::V6(a) => IpEntry::V6((a.octets(), id, i as u32)),
    });
    cluster.chain(endpoints)
}

impl IpIndex {
    /// Indexes all of `services` at once. A B-tree built from sorted input has full nodes;
    /// one built by inserting ascending addresses is left about half full.
    fn build(services: &[Option<ServiceEntry>]) -> IpIndex {
        let (mut cluster, mut v4, mut v6) = (Vec::new(), Vec::new(), Vec::new());
        let live = services.iter().enumerate().filter_map(|(id, svc)| Some((id as u32, svc.as_ref()?)));
        for entry in live.flat_map(|(id, svc)| ip_entries(id, svc)) {
            match entry {
                IpEntry::Cluster(k) => cluster.push(k),
                IpEntry::V4(k) => v4.push(k),
                IpEntry::V6(k) => v6.push(k),
            }
        }
        IpIndex { cluster: cluster.into_iter().collect(), v4: v4.into_iter().collect(), v6: v6.into_iter().collect() }
    }

    fn add(&mut self, id: u32, svc: &ServiceEntry) {
        for entry in ip_entries(id, svc) {
            match entry {
                IpEntry::Cluster(k) => self.cluster.insert(k),
                IpEntry::V4(k) => self.v4.insert(k),
                IpEntry::V6(k) => self.v6.insert(k),
            };
        }
    }

    fn remove(&mut self, id: u32, svc: &ServiceEntry) {
        for entry in ip_entries(id, svc) {
            match entry {
                IpEntry::Cluster(k) => self.cluster.remove(&k),
                IpEntry::V4(k) => self.v4.remove(&k),
                IpEntry::V6(k) => self.v6.remove(&k),
            };
        }
    }

    /// Who owns `ip`: cluster IPs first (by service id), then endpoints by service and position.
    fn owners(&self, ip: IpAddr) -> impl Iterator<Item = IpOwner> + '_ {
        let cluster = self.cluster.range((ip, 0)..=(ip, u32::MAX)).map(|(_, service)| IpOwner::ClusterIp { service: *service });
        let (v4, v6) = match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                (Some(self.v4.range((a, 0, 0)..=(a, u32::MAX, u32::MAX)).map(|(_, s, e)| (*s, *e))), None)
            }
            IpAddr::V6(a) => {
                let a = a.octets();
                (None, Some(self.v6.range((a, 0, 0)..=(a, u32::MAX, u32::MAX)).map(|(_, s, e)| (*s, *e))))
            }
        };
        let endpoints = v4.into_iter().flatten().chain(v6.into_iter().flatten());
        cluster.chain(endpoints.map(|(service, endpoint)| IpOwner::Endpoint { service, endpoint }))
    }

    /// The cluster IPs from `low` to `high` (one family), with their service ids.
    fn cluster_in(&self, low: IpAddr, high: IpAddr) -> impl Iterator<Item = (IpAddr, u32)> + '_ {
        self.cluster.range((low, 0)..=(high, u32::MAX)).copied()
    }

    /// The endpoint addresses from `low` to `high` (one family), with (service id, endpoint).
    fn endpoints_in(&self, low: IpAddr, high: IpAddr) -> impl Iterator<Item = (IpAddr, u32, u32)> + '_ {
        let (v4, v6) = match (low, high) {
            (IpAddr::V4(l), IpAddr::V4(h)) if l <= h => {
                let (l, h) = (u32::from(l), u32::from(h));
                (Some(self.v4.range((l, 0, 0)..=(h, u32::MAX, u32::MAX)).map(|(a, s, e)| (IpAddr::from(core::net::Ipv4Addr::from(*a)), *s, *e))), None)
            }
            (IpAddr::V6(l), IpAddr::V6(h)) if l <= h => {
                let (l, h) = (l.octets(), h.octets());
                (None, Some(self.v6.range((l, 0, 0)..=(h, u32::MAX, u32::MAX)).map(|(a, s, e)| (IpAddr::from(*a), *s, *e))))
            }
            _ => (None, None),
        };
        v4.into_iter().flatten().chain(v6.into_iter().flatten())
    }

    /// Every indexed IP, in order, once each.
    fn ips(&self) -> BTreeSet<IpAddr> {
        let v4 = self.v4.iter().map(|(a, _, _)| IpAddr::from(core::net::Ipv4Addr::from(*a)));
        let v6 = self.v6.iter().map(|(a, _, _)| IpAddr::from(*a));
        self.cluster.iter().map(|(ip, _)| *ip).chain(v4).chain(v6).collect()
    }
}

#[derive(Default, Clone, Debug)]
struct NamespaceRefs {
    explicit: bool,
    services: u32,
    pods: u32,
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
    /// Service ids, hashed by their "namespace/name" key (kept in the entry itself).
    by_name: hashbrown::HashTable<u32>,
    ips: IpIndex,
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
        store.services.reserve_exact(snapshot.services.len());
        for svc in snapshot.services {
            store.place_service(build_service(svc, pod_names)?);
        }
        store.ips = IpIndex::build(&store.services);
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
        let id = self.service_id(object_key(&mut buf, ns, name)?)?;
        self.service_by_id(id)
    }

    fn service_id(&self, key: &str) -> Option<u32> {
        self.by_name.find(key_hash(key), is_key(&self.services, key)).copied()
    }

    pub fn service_by_id(&self, id: u32) -> Option<&ServiceEntry> {
        self.services.get(id as usize)?.as_ref()
    }

    /// Every service, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.iter().flatten()
    }

    /// Every IP that names something (cluster IPs and published endpoints), in order.
    pub fn owned_ips(&self) -> impl Iterator<Item = IpAddr> {
        self.ips.ips().into_iter()
    }

    /// Every (pod IP, namespace) pair.
    pub fn pod_ips(&self) -> impl Iterator<Item = (&IpAddr, &str)> {
        self.pod_ips.iter().flat_map(|(ip, nss)| nss.iter().map(move |ns| (ip, &**ns)))
    }

    /// Who owns `ip`: its service's cluster IP first, then endpoints by service and position.
    pub fn ip_owners(&self, ip: IpAddr) -> impl Iterator<Item = IpOwner> + '_ {
        self.ips.owners(ip)
    }

    /// Cluster IPs from `low` to `high` (both of one family) with their service ids, in order.
    pub fn cluster_ips_in(&self, low: IpAddr, high: IpAddr) -> impl Iterator<Item = (IpAddr, u32)> + '_ {
        let valid = low <= high && low.is_ipv4() == high.is_ipv4();
        self.ips.cluster_in(low, if valid { high } else { low }).filter(move |_| valid)
    }

    /// Endpoint addresses from `low` to `high` (both of one family) with (service id, endpoint
    /// index), in order.
    pub fn endpoint_ips_in(&self, low: IpAddr, high: IpAddr) -> impl Iterator<Item = (IpAddr, u32, u32)> + '_ {
        self.ips.endpoints_in(low, high)
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
        let (id, replaced) = self.place_service(entry);
        if let Some((old_id, old)) = replaced {
            self.ips.remove(old_id, &old);
        }
        if let Some(entry) = &self.services[id as usize] {
            self.ips.add(id, entry);
        }
    }

    fn remove_service(&mut self, ns: &str, name: &str) {
        if let Some((id, old)) = self.take_service(&owned_key(ns, name)) {
            self.ips.remove(id, &old);
        }
    }

    /// Puts `entry` in the slab and the name index, leaving the IP index to the caller. Returns
    /// its id and the service of the same name it replaced, with that one's id.
    fn place_service(&mut self, entry: ServiceEntry) -> (u32, Option<(u32, ServiceEntry)>) {
        let replaced = self.take_service(&entry.key);
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None => {
                if self.services.len() == self.services.capacity() {
                    // Grow by an eighth, not double: a slot is ~130 bytes and a cluster that
                    // gains a service after its snapshot should not pay for ten thousand.
                    self.services.reserve_exact(self.services.len() / 8 + 16);
                }
                self.services.push(None);
                (self.services.len() - 1) as u32
            }
        };
        self.ns_refs(entry.namespace()).services += 1;
        let services = &self.services;
        let hasher = |id: &u32| services[*id as usize].as_ref().map_or(0, |s| key_hash(&s.key));
        self.by_name.insert_unique(key_hash(&entry.key), id, hasher);
        self.services[id as usize] = Some(entry);
        (id, replaced)
    }

    /// Takes the service named `key` out of the slab and the name index, with its id.
    fn take_service(&mut self, key: &str) -> Option<(u32, ServiceEntry)> {
        let (id, _) = self.by_name.find_entry(key_hash(key), is_key(&self.services, key)).ok()?.remove();
        let entry = self.services[id as usize].take()?;
        self.free_ids.push(id);
        self.release_ns(entry.namespace(), |r| r.services -= 1);
        Some((id, entry))
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

fn ports_or_sentinel(ports: &[v1::Port]) -> Result<Box<[PortSpec]>, InputError> {
    if ports.is_empty() {
        return Ok(Box::new([PortSpec { name: Box::from(""), protocol: Protocol::Tcp, port: None }]));
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
    // Appends `s` lowercased and returns its length; a name too long to be a DNS name (over
    // 64 KiB) is kept as absent.
    let add_text = |text: &mut String, s: &str| -> u16 {
        match u16::try_from(s.len()) {
            Ok(len) if u32::try_from(text.len() + s.len()).is_ok() => {
                text.extend(s.chars().map(|c| c.to_ascii_lowercase()));
                len
            }
            _ => 0,
        }
    };
    for group in &svc.endpoint_groups {
        let group_id = u16::try_from(port_groups.len()).map_err(|_| InputError::TooManySlices)?;
        port_groups.push(ports_or_sentinel(&group.ports)?);
        for ep in &group.endpoints {
            let ip = ip_from_bytes(&ep.address).ok_or(InputError::BadAddress)?;
            if !(ep.ready || svc.publish_not_ready_addresses) {
                continue;
            }
            let text_start = text.len() as u32;
            let host_len = add_text(&mut text, &ep.hostname);
            let pod_len = add_text(&mut text, &ep.pod_name);
            endpoints.push(EndpointEntry { ip, text_start, host_len, pod_len, group: group_id });
        }
    }
    let ns_len = u32::try_from(svc.namespace.len()).map_err(|_| InputError::MissingName)?;
    let mut entry = ServiceEntry {
        key: owned_key(&svc.namespace, &svc.name),
        ns_len,
        kind,
        cluster_ips: cluster_ips.into_boxed_slice(),
        ports: ports_or_sentinel(&svc.ports)?,
        external_name: external_target(&svc.external_name).map(Box::new),
        endpoints: endpoints.into_boxed_slice(),
        port_groups: port_groups.into_boxed_slice(),
        by_label: Box::default(),
        text: text.into_boxed_str(),
    };
    entry.sort_labels(pod_names);
    Ok(entry)
}
