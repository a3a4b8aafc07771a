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

#[derive(Debug, Default)]
pub struct LiveState {
    services: HashMap<ObjectKey, StoredService>,
    slices: HashMap<ObjectKey, StoredSlice>,
    /// Service → the names of its EndpointSlices (same namespace), so a slice event rebuilds
    /// one service.
    slices_of: HashMap<ObjectKey, Vec<Box<str>>>,
    namespaces: BTreeSet<String>,
    /// Pods (for `pods verified`) as the engine takes them; pods without IPs are left out.
    pods: BTreeMap<ObjectKey, v1::Pod>,
    dirty_services: BTreeSet<ObjectKey>,
    dirty_namespaces: BTreeSet<String>,
    dirty_pods: BTreeSet<ObjectKey>,
    include_pods: bool,
    /// Endpoints in all slices, kept as slices come and go (for counts without a scan).
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
                if self.services.get(&svc.key) != Some(&stored) {
                    self.dirty_services.insert(svc.key.clone());
                    self.services.insert(svc.key, stored);
                }
            }
            Object::Slice(slice) => {
                let key = slice.key.clone();
                let stored = StoredSlice::of(slice);
                if self.slices.get(&key) == Some(&stored) {
                    return;
                }
                self.remove(Collection::EndpointSlices, &key);
                let service = ObjectKey { namespace: key.namespace.clone(), name: stored.service.to_string() };
                self.endpoints += stored.endpoints;
                self.slices_of.entry(service.clone()).or_default().push(key.name.clone().into_boxed_str());
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
                if self.services.remove(key).is_some() {
                    self.dirty_services.insert(key.clone());
                }
            }
            Collection::EndpointSlices => {
                if let Some(old) = self.slices.remove(key) {
                    self.endpoints -= old.endpoints;
                    let service = ObjectKey { namespace: key.namespace.clone(), name: old.service.to_string() };
                    if let Some(names) = self.slices_of.get_mut(&service) {
                        names.retain(|n| **n != *key.name);
                        if names.is_empty() {
                            self.slices_of.remove(&service);
                        }
                    }
                    self.dirty_services.insert(service);
                }
            }
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

    /// The keys of every object of `collection` (for a relist: what was not listed again is gone).
    pub fn keys(&self, collection: Collection) -> Vec<ObjectKey> {
        match collection {
            Collection::Services => self.services.keys().cloned().collect(),
            Collection::EndpointSlices => self.slices.keys().cloned().collect(),
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
        namespaces.extend(self.services.keys().map(|k| k.namespace.clone()));
        namespaces.extend(self.slices.keys().map(|k| k.namespace.clone()));
        namespaces.extend(self.pods.keys().map(|k| k.namespace.clone()));
        v1::Snapshot {
            serial,
            namespaces: namespaces.into_iter().collect(),
            services: self.services.iter().map(|(key, svc)| self.service_proto(key, svc)).collect(),
            pods: if self.include_pods { self.pods.values().cloned().collect() } else { Vec::new() },
        }
    }

    fn service_proto(&self, key: &ObjectKey, svc: &StoredService) -> v1::Service {
        let slice_key = |name: &str| ObjectKey { namespace: key.namespace.clone(), name: name.to_string() };
        let groups = self.slices_of.get(key).into_iter().flatten().filter_map(|n| self.slices.get(&slice_key(n))).map(StoredSlice::group).collect();
        svc.with_groups(groups)
    }

    /// What the state holds, without a scan.
    pub fn counts(&self) -> super::Counts {
        super::Counts {
            services: self.services.len(),
            endpoints: self.endpoints,
            pods: if self.include_pods { self.pods.len() } else { 0 },
            namespaces: self.namespaces.len(),
        }
    }

    /// Marks everything as changed, so the deltas that follow rebuild the whole view.
    pub fn mark_all_changed(&mut self) {
        self.dirty_services.extend(self.services.keys().cloned());
        self.dirty_services.extend(self.slices_of.keys().cloned());
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
            match self.services.get(&key) {
                Some(svc) => delta.upsert_services.push(self.service_proto(&key, svc)),
                None => delta.remove_services.push(v1::ServiceKey { namespace: key.namespace, name: key.name }),
            }
        }
        (delta != v1::Delta { serial, ..Default::default() }).then_some(delta)
    }
}

/// A pod as the engine sees it; `None` for a pod without IPs (nothing to verify against).
pub fn pod_proto(pod: &PodObject) -> Option<v1::Pod> {
    (!pod.ips.is_empty()).then(|| v1::Pod { namespace: pod.key.namespace.clone(), name: pod.key.name.clone(), ips: pod.ips.iter().map(objects::ip_bytes).collect() })
}
