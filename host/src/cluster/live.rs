//! The cluster as a live source sees it: trimmed objects updated one event at a time, and the
//! [`v1::Delta`] that brings an engine up to date by touching only what changed.
//!
//! An event that changes nothing DNS sees (a status update, a new annotation, the same object
//! seen again in a relist) marks nothing, so it costs the engine nothing.

use std::collections::{BTreeSet, HashMap};

use kdns_proto::v1;

use super::objects::{self, ObjectKey, PodObject, ServiceObject, SliceObject};
use super::{BuildOptions, ClusterState};

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

#[derive(Debug, Default)]
pub struct LiveState {
    state: ClusterState,
    /// Service → the keys of its EndpointSlices, so a slice event rebuilds one service.
    slices_of: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
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
                if self.state.services.get(&svc.key) != Some(&svc) {
                    self.dirty_services.insert(svc.key.clone());
                    self.state.services.insert(svc.key.clone(), svc);
                }
            }
            Object::Slice(slice) => {
                let old = self.state.slices.get(&slice.key);
                if old == Some(&slice) {
                    return;
                }
                if let Some((old_service, old_endpoints)) = old.map(|o| (o.service.clone(), o.endpoints.len())) {
                    self.endpoints -= old_endpoints;
                    self.unlink_slice(&slice.key, &old_service);
                }
                self.endpoints += slice.endpoints.len();
                let service = ObjectKey { namespace: slice.key.namespace.clone(), name: slice.service.clone() };
                self.slices_of.entry(service.clone()).or_default().insert(slice.key.clone());
                self.dirty_services.insert(service);
                self.state.slices.insert(slice.key.clone(), slice);
            }
            Object::Namespace(key) => {
                if self.state.namespaces.insert(key.name.clone()) {
                    self.dirty_namespaces.insert(key.name);
                }
            }
            Object::Pod(pod) => {
                if self.state.pods.get(&pod.key) != Some(&pod) {
                    self.dirty_pods.insert(pod.key.clone());
                    self.state.pods.insert(pod.key.clone(), pod);
                }
            }
        }
    }

    /// Removes an object if present.
    pub fn remove(&mut self, collection: Collection, key: &ObjectKey) {
        match collection {
            Collection::Services => {
                if self.state.services.remove(key).is_some() {
                    self.dirty_services.insert(key.clone());
                }
            }
            Collection::EndpointSlices => {
                if let Some(old) = self.state.slices.remove(key) {
                    self.endpoints -= old.endpoints.len();
                    self.unlink_slice(key, &old.service);
                }
            }
            Collection::Namespaces => {
                if self.state.namespaces.remove(&key.name) {
                    self.dirty_namespaces.insert(key.name.clone());
                }
            }
            Collection::Pods => {
                if self.state.pods.remove(key).is_some() {
                    self.dirty_pods.insert(key.clone());
                }
            }
        }
    }

    fn unlink_slice(&mut self, slice: &ObjectKey, service_name: &str) {
        let service = ObjectKey { namespace: slice.namespace.clone(), name: service_name.to_string() };
        if let Some(set) = self.slices_of.get_mut(&service) {
            set.remove(slice);
            if set.is_empty() {
                self.slices_of.remove(&service);
            }
        }
        self.dirty_services.insert(service);
    }

    /// The keys of every object of `collection` (for a relist: what was not listed again is gone).
    pub fn keys(&self, collection: Collection) -> Vec<ObjectKey> {
        let ns_key = |name: &String| ObjectKey { namespace: String::new(), name: name.clone() };
        match collection {
            Collection::Services => self.state.services.keys().cloned().collect(),
            Collection::EndpointSlices => self.state.slices.keys().cloned().collect(),
            Collection::Namespaces => self.state.namespaces.iter().map(ns_key).collect(),
            Collection::Pods => self.state.pods.keys().cloned().collect(),
        }
    }

    pub fn has_changes(&self) -> bool {
        !self.dirty_services.is_empty() || !self.dirty_namespaces.is_empty() || (self.include_pods && !self.dirty_pods.is_empty())
    }

    /// The whole view, for a full load; the pending changes are in it, so they are forgotten.
    pub fn take_snapshot(&mut self, serial: u32) -> v1::Snapshot {
        self.clear_changes();
        self.snapshot(serial)
    }

    /// The whole view (for `--snapshot-file`), pending changes included.
    pub fn snapshot(&self, serial: u32) -> v1::Snapshot {
        self.state.snapshot(self.build_options(serial))
    }

    /// What the state holds, without a scan.
    pub fn counts(&self) -> super::Counts {
        super::Counts {
            services: self.state.services.len(),
            endpoints: self.endpoints,
            pods: if self.include_pods { self.state.pods.len() } else { 0 },
            namespaces: self.state.namespaces.len(),
        }
    }

    pub fn clear_changes(&mut self) {
        self.dirty_services.clear();
        self.dirty_namespaces.clear();
        self.dirty_pods.clear();
    }

    fn build_options(&self, serial: u32) -> BuildOptions {
        // Endpoints come from the EndpointSlice controller's slices, never derived here.
        BuildOptions { derive_endpoints: false, include_pods: self.include_pods, serial }
    }

    /// The pending changes as deltas of at most `max_services` services each (so no single
    /// apply holds the engine for long), all with `serial`. Empty when nothing changed.
    pub fn take_deltas(&mut self, serial: u32, max_services: usize) -> Vec<v1::Delta> {
        let opts = self.build_options(serial);
        let mut delta = v1::Delta { serial, ..Default::default() };
        for ns in std::mem::take(&mut self.dirty_namespaces) {
            if self.state.namespaces.contains(&ns) {
                delta.upsert_namespaces.push(ns);
            } else {
                delta.remove_namespaces.push(ns);
            }
        }
        for key in std::mem::take(&mut self.dirty_pods) {
            if !self.include_pods {
                continue;
            }
            match self.state.pods.get(&key).and_then(pod_proto) {
                Some(pod) => delta.upsert_pods.push(pod),
                None => delta.remove_pods.push(v1::PodKey { namespace: key.namespace, name: key.name }),
            }
        }
        let mut deltas = Vec::new();
        for key in std::mem::take(&mut self.dirty_services) {
            if delta.upsert_services.len() + delta.remove_services.len() >= max_services.max(1) {
                deltas.push(std::mem::replace(&mut delta, v1::Delta { serial, ..Default::default() }));
            }
            match self.state.services.get(&key) {
                Some(svc) => {
                    let slices: Vec<&SliceObject> = self.slices_of.get(&key).into_iter().flatten().filter_map(|k| self.state.slices.get(k)).collect();
                    delta.upsert_services.push(self.state.service_proto(svc, &slices, &[], opts));
                }
                None => delta.remove_services.push(v1::ServiceKey { namespace: key.namespace, name: key.name }),
            }
        }
        if delta != (v1::Delta { serial, ..Default::default() }) {
            deltas.push(delta);
        }
        deltas
    }
}

/// A pod as the engine sees it; `None` for a pod without IPs (nothing to verify against).
pub fn pod_proto(pod: &PodObject) -> Option<v1::Pod> {
    (!pod.ips.is_empty()).then(|| v1::Pod { namespace: pod.key.namespace.clone(), name: pod.key.name.clone(), ips: pod.ips.iter().map(objects::ip_bytes).collect() })
}
