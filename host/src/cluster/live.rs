//! The cluster as a live source sees it: trimmed objects updated one event at a time, and the
//! [`v1::Delta`] that brings an engine up to date by touching only what changed.
//!
//! An event that changes nothing DNS sees (a status update, a new annotation, the same object
//! seen again in a relist) marks nothing, so it costs the engine nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};


use kdns_proto::v1;

use super::objects::{self, ObjectKey, PodObject, ServiceObject, SliceObject};

/// Which API collection an object came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    Services,
    EndpointSlices,
    Namespaces,
    Pods,
}

impl Collection {
    pub fn as_str(self) -> &'static str {
        match self {
            Collection::Services => "services",
            Collection::EndpointSlices => "endpointslices",
            Collection::Namespaces => "namespaces",
            Collection::Pods => "pods",
        }
    }
}

/// A trimmed object of any collection.
#[derive(Debug, Clone)]
pub enum Object {
    Service(ServiceObject),
    Slice(SliceObject),
    /// A Namespace (its name in `key.name`, empty `key.namespace`).
    Namespace(ObjectKey),
    Pod(PodObject),
}

/// A slice as the live state keeps it: the service it belongs to and its endpoint group,
/// protobuf-encoded in one allocation. Decoded, a slice of ten endpoints is some thirty heap
/// blocks; encoded it is one of about 300 bytes, and it is only decoded when its service
/// changes.
#[derive(Debug, PartialEq, Eq)]
struct StoredSlice {
    service: Box<str>,
    group: Box<[u8]>,
    endpoints: usize,
}

impl StoredSlice {
    fn of(slice: SliceObject) -> StoredSlice {
        use prost::Message as _;
        let endpoints = slice.endpoints.len();
        let service = slice.service.clone().into_boxed_str();
        StoredSlice { service, group: slice.into_group().encode_to_vec().into_boxed_slice(), endpoints }
    }

    fn group(&self) -> v1::EndpointGroup {
        use prost::Message as _;
        // Encoded by `of` from a valid group; decoding cannot fail short of memory corruption.
        v1::EndpointGroup::decode(&*self.group).unwrap_or_default()
    }
}

/// A service as the live state keeps it: what the engine sees of it (endpoints aside),
/// protobuf-encoded in one allocation.
#[derive(Debug, PartialEq, Eq)]
struct StoredService(Box<[u8]>);

impl StoredService {
    fn of(svc: &ServiceObject) -> StoredService {
        use prost::Message as _;
        StoredService(super::service_proto(svc, Vec::new()).encode_to_vec().into_boxed_slice())
    }

    fn with_groups(&self, endpoint_groups: Vec<v1::EndpointGroup>) -> v1::Service {
        use prost::Message as _;
        // Encoded by `of`; decoding cannot fail short of memory corruption.
        let svc = v1::Service::decode(&*self.0).unwrap_or_default();
        v1::Service { endpoint_groups, ..svc }
    }
}

/// `namespace/name` in one allocation: the state holds one per service and one per slice, and
/// two strings per key cost two heap blocks each time (measured with `kdns-mem`: 12.8 blocks per
/// service and slice became 7).
type Packed = Box<str>;

fn pack(namespace: &str, name: &str) -> Packed {
    let mut s = String::with_capacity(namespace.len() + 1 + name.len());
    s.push_str(namespace);
    s.push(',');
    s.push_str(name);
    s.into_boxed_str()
}

fn pack_key(key: &ObjectKey) -> Packed {
    pack(&key.namespace, &key.name)
}

/// Namespace and name of a packed key (a namespace holds no `/`).
fn unpack(key: &str) -> (&str, &str) {
    key.split_once(',').unwrap_or(("", key))
}

fn object_key(key: &str) -> ObjectKey {
    let (namespace, name) = unpack(key);
    ObjectKey { namespace: namespace.to_string(), name: name.to_string() }
}

/// A service name the state knows: from its Service object, its EndpointSlices, or both.
#[derive(Debug, Default)]
struct ServiceState {
    /// The Service as the engine sees it (endpoints aside), once the object has been seen.
    spec: Option<StoredService>,
    /// Its EndpointSlices' names (same namespace), so a slice event rebuilds one service.
    slices: Vec<Box<str>>,
}

#[derive(Debug, Default)]
pub struct LiveState {
    /// By packed service key; an entry lives while the Service or one of its slices does.
    services: HashMap<Packed, ServiceState>,
    /// By packed slice key.
    slices: HashMap<Packed, StoredSlice>,
    namespaces: BTreeSet<String>,
    /// Pods (for `pods verified`) as the engine takes them; pods without IPs are left out.
    pods: BTreeMap<ObjectKey, v1::Pod>,
    dirty_services: BTreeSet<Packed>,
    dirty_namespaces: BTreeSet<String>,
    dirty_pods: BTreeSet<ObjectKey>,
    include_pods: bool,
    /// Service objects, and endpoints in all slices, kept as objects come and go (for counts
    /// without a scan).
    service_objects: usize,
    endpoints: usize,
}

impl LiveState {
    pub fn new(include_pods: bool) -> Self {
        LiveState { include_pods, ..Default::default() }
    }

    /// Adds or replaces an object; marks what DNS sees of it as changed only if it did change.
    pub fn upsert(&mut self, object: Object) {
        match object {
            Object::Service(svc) => {
                let stored = StoredService::of(&svc);
                let key = pack_key(&svc.key);
                let state = self.services.entry(key.clone()).or_default();
                if state.spec.as_ref() != Some(&stored) {
                    if state.spec.is_none() {
                        self.service_objects += 1;
                    }
                    state.spec = Some(stored);
                    self.dirty_services.insert(key);
                }
            }
            Object::Slice(slice) => {
                let key = pack_key(&slice.key);
                let stored = StoredSlice::of(slice);
                if self.slices.get(&key) == Some(&stored) {
                    return;
                }
                self.remove_slice(&key);
                let service = pack(unpack(&key).0, &stored.service);
                self.endpoints += stored.endpoints;
                self.services.entry(service.clone()).or_default().slices.push(unpack(&key).1.into());
                self.dirty_services.insert(service);
                self.slices.insert(key, stored);
            }
            Object::Namespace(key) => {
                if self.namespaces.insert(key.name.clone()) {
                    self.dirty_namespaces.insert(key.name);
                }
            }
            Object::Pod(pod) => match pod_proto(&pod) {
                Some(proto) => {
                    if self.pods.get(&pod.key) != Some(&proto) {
                        self.dirty_pods.insert(pod.key.clone());
                        self.pods.insert(pod.key, proto);
                    }
                }
                None => self.remove(Collection::Pods, &pod.key),
            },
        }
    }

    /// Removes an object if present.
    pub fn remove(&mut self, collection: Collection, key: &ObjectKey) {
        match collection {
            Collection::Services => {
                let key = pack_key(key);
                let Some(state) = self.services.get_mut(&key) else { return };
                if state.spec.take().is_some() {
                    self.service_objects -= 1;
                    if state.slices.is_empty() {
                        self.services.remove(&key);
                    }
                    self.dirty_services.insert(key);
                }
            }
            Collection::EndpointSlices => self.remove_slice(&pack_key(key)),
            Collection::Namespaces => {
                if self.namespaces.remove(&key.name) {
                    self.dirty_namespaces.insert(key.name.clone());
                }
            }
            Collection::Pods => {
                if self.pods.remove(key).is_some() {
                    self.dirty_pods.insert(key.clone());
                }
            }
        }
    }

    fn remove_slice(&mut self, key: &str) {
        let Some(old) = self.slices.remove(key) else { return };
        self.endpoints -= old.endpoints;
        let (namespace, name) = unpack(key);
        let service = pack(namespace, &old.service);
        if let Some(state) = self.services.get_mut(&service) {
            state.slices.retain(|n| **n != *name);
            if state.slices.is_empty() && state.spec.is_none() {
                self.services.remove(&service);
            }
        }
        self.dirty_services.insert(service);
    }

    /// The keys of every object of `collection` (for a relist: what was not listed again is gone).
    pub fn keys(&self, collection: Collection) -> Vec<ObjectKey> {
        match collection {
            Collection::Services => self.services.iter().filter(|(_, s)| s.spec.is_some()).map(|(k, _)| object_key(k)).collect(),
            Collection::EndpointSlices => self.slices.keys().map(|k| object_key(k)).collect(),
            Collection::Namespaces => self.namespaces.iter().map(|name| ObjectKey { namespace: String::new(), name: name.clone() }).collect(),
            Collection::Pods => self.pods.keys().cloned().collect(),
        }
    }

    pub fn has_changes(&self) -> bool {
        !self.dirty_services.is_empty() || !self.dirty_namespaces.is_empty() || (self.include_pods && !self.dirty_pods.is_empty())
    }

    /// The whole view (for `--snapshot-file`), pending changes included.
    pub fn snapshot(&self, serial: u32) -> v1::Snapshot {
        // A namespace exists when a Namespace object names it or anything lives in it.
        let mut namespaces = self.namespaces.clone();
        namespaces.extend(self.services.keys().map(|k| unpack(k).0.to_string()));
        namespaces.extend(self.pods.keys().map(|k| k.namespace.clone()));
        v1::Snapshot {
            serial,
            namespaces: namespaces.into_iter().collect(),
            services: self.services.iter().filter_map(|(key, state)| self.service_proto(key, state)).collect(),
            pods: if self.include_pods { self.pods.values().cloned().collect() } else { Vec::new() },
        }
    }

    /// The service as the engine takes it; `None` while only its slices are known.
    fn service_proto(&self, key: &str, state: &ServiceState) -> Option<v1::Service> {
        let spec = state.spec.as_ref()?;
        let namespace = unpack(key).0;
        let groups = state.slices.iter().filter_map(|n| self.slices.get(&pack(namespace, n))).map(StoredSlice::group).collect();
        Some(spec.with_groups(groups))
    }

    /// What the state holds, without a scan.
    pub fn counts(&self) -> super::Counts {
        super::Counts {
            services: self.service_objects,
            endpoints: self.endpoints,
            pods: if self.include_pods { self.pods.len() } else { 0 },
            namespaces: self.namespaces.len(),
        }
    }

    /// Marks everything as changed, so the deltas that follow rebuild the whole view.
    pub fn mark_all_changed(&mut self) {
        self.dirty_services.extend(self.services.keys().cloned());
        self.dirty_namespaces.extend(self.namespaces.iter().cloned());
        if self.include_pods {
            self.dirty_pods.extend(self.pods.keys().cloned());
        }
    }

    /// The next part of the pending changes: namespaces and pods first, then at most
    /// `max_services` services (so no single apply holds the engine for long, and a large
    /// change is never copied whole). `None` once nothing is pending.
    pub fn next_delta(&mut self, serial: u32, max_services: usize) -> Option<v1::Delta> {
        let mut delta = v1::Delta { serial, ..Default::default() };
        for ns in std::mem::take(&mut self.dirty_namespaces) {
            if self.namespaces.contains(&ns) {
                delta.upsert_namespaces.push(ns);
            } else {
                delta.remove_namespaces.push(ns);
            }
        }
        for key in std::mem::take(&mut self.dirty_pods) {
            if !self.include_pods {
                continue;
            }
            match self.pods.get(&key) {
                Some(pod) => delta.upsert_pods.push(pod.clone()),
                None => delta.remove_pods.push(v1::PodKey { namespace: key.namespace, name: key.name }),
            }
        }
        while delta.upsert_services.len() + delta.remove_services.len() < max_services.max(1) {
            let Some(key) = self.dirty_services.pop_first() else { break };
            match self.services.get(&key).and_then(|state| self.service_proto(&key, state)) {
                Some(svc) => delta.upsert_services.push(svc),
                None => {
                    let (namespace, name) = unpack(&key);
                    delta.remove_services.push(v1::ServiceKey { namespace: namespace.to_string(), name: name.to_string() });
                }
            }
        }
        (delta != v1::Delta { serial, ..Default::default() }).then_some(delta)
    }
}

/// A pod as the engine sees it; `None` for a pod without IPs (nothing to verify against).
pub fn pod_proto(pod: &PodObject) -> Option<v1::Pod> {
    (!pod.ips.is_empty()).then(|| v1::Pod { namespace: pod.key.namespace.clone(), name: pod.key.name.clone(), ips: pod.ips.iter().map(objects::ip_bytes).collect() })
}
