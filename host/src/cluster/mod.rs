//! The host's cluster view: trimmed objects from any source, turned into `kdns.v1` snapshots.

pub mod derive;
pub mod live;
pub mod objects;

use std::collections::{BTreeMap, BTreeSet};

use kdns_proto::v1;

pub use objects::{FieldError, ObjectKey, PodObject, ServiceObject, SliceObject};

/// Everything a source has seen, keyed by namespace/name.
#[derive(Debug, Default, Clone)]
pub struct ClusterState {
    pub namespaces: BTreeSet<String>,
    pub services: BTreeMap<ObjectKey, ServiceObject>,
    pub slices: BTreeMap<ObjectKey, SliceObject>,
    pub pods: BTreeMap<ObjectKey, PodObject>,
}

/// How a snapshot is built from the state.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptions {
    /// Give selector services without EndpointSlices the endpoints the EndpointSlice controller
    /// would derive from their pods (manifest mode: a dump of Pods and Services is enough).
    pub derive_endpoints: bool,
    /// Carry pods in the snapshot (needed by `pods verified`).
    pub include_pods: bool,
    /// SOA serial.
    pub serial: u32,
}

/// Counts for logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub services: usize,
    pub endpoints: usize,
    pub pods: usize,
    pub namespaces: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} services, {} endpoints, {} pods, {} namespaces", self.services, self.endpoints, self.pods, self.namespaces)
    }
}

impl ClusterState {
    /// Adds `other`'s objects, replacing objects with the same key.
    pub fn merge(&mut self, other: ClusterState) {
        self.namespaces.extend(other.namespaces);
        self.services.extend(other.services);
        self.slices.extend(other.slices);
        self.pods.extend(other.pods);
    }

    /// A namespace exists when a Namespace object names it or any object lives in it.
    pub fn all_namespaces(&self) -> BTreeSet<String> {
        let mut all = self.namespaces.clone();
        all.extend(self.services.keys().map(|k| k.namespace.clone()));
        all.extend(self.slices.keys().map(|k| k.namespace.clone()));
        all.extend(self.pods.keys().map(|k| k.namespace.clone()));
        all
    }

    pub fn snapshot(&self, opts: BuildOptions) -> v1::Snapshot {
        let slices_by_service = self.slices_by_service();
        let pods_by_ns = if opts.derive_endpoints { self.pods_by_namespace() } else { BTreeMap::new() };
        let services = self
            .services
            .values()
            .map(|svc| {
                let slices = slices_by_service.get(&svc.key).map(Vec::as_slice).unwrap_or(&[]);
                let ns_pods = pods_by_ns.get(svc.key.namespace.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                self.service_proto(svc, slices, ns_pods, opts)
            })
            .collect();
        let pods = if opts.include_pods {
            self.pods.values().filter_map(live::pod_proto).collect()
        } else {
            Vec::new()
        };
        v1::Snapshot { serial: opts.serial, namespaces: self.all_namespaces().into_iter().collect(), services, pods }
    }

    fn service_proto(&self, svc: &ServiceObject, slices: &[&SliceObject], ns_pods: &[&PodObject], opts: BuildOptions) -> v1::Service {
        // (`service_proto` drops endpoints of an ExternalName service.)
        let endpoint_groups = if slices.is_empty() && opts.derive_endpoints && !svc.selector.is_empty() && svc.kind != v1::ServiceType::ExternalName {
            derive::endpoint_groups(svc, ns_pods)
        } else {
            slices.iter().map(|s| s.group()).collect()
        };
        service_proto(svc, endpoint_groups)
    }

    fn slices_by_service(&self) -> BTreeMap<ObjectKey, Vec<&SliceObject>> {
        let mut map: BTreeMap<ObjectKey, Vec<&SliceObject>> = BTreeMap::new();
        for slice in self.slices.values() {
            let key = ObjectKey { namespace: slice.key.namespace.clone(), name: slice.service.clone() };
            map.entry(key).or_default().push(slice);
        }
        map
    }

    fn pods_by_namespace(&self) -> BTreeMap<&str, Vec<&PodObject>> {
        let mut map: BTreeMap<&str, Vec<&PodObject>> = BTreeMap::new();
        for pod in self.pods.values() {
            map.entry(pod.key.namespace.as_str()).or_default().push(pod);
        }
        map
    }
}

/// A service as the engine sees it, with its endpoints.
pub fn service_proto(svc: &ServiceObject, endpoint_groups: Vec<v1::EndpointGroup>) -> v1::Service {
    let endpoint_groups = if svc.kind == v1::ServiceType::ExternalName { Vec::new() } else { endpoint_groups };
    v1::Service {
        namespace: svc.key.namespace.clone(),
        name: svc.key.name.clone(),
        r#type: svc.kind as i32,
        cluster_ips: svc.cluster_ips.iter().map(objects::ip_bytes).collect(),
        ports: svc.ports.iter().map(|p| v1::Port { name: p.name.clone(), protocol: p.protocol as i32, port: p.port as u32 }).collect(),
        external_name: svc.external_name.clone(),
        publish_not_ready_addresses: svc.publish_not_ready_addresses,
        endpoint_groups,
    }
}

/// Counts of a snapshot, for logs.
pub fn counts(s: &v1::Snapshot) -> Counts {
    Counts {
        services: s.services.len(),
        endpoints: s.services.iter().flat_map(|svc| &svc.endpoint_groups).map(|g| g.endpoints.len()).sum(),
        pods: s.pods.len(),
        namespaces: s.namespaces.len(),
    }
}
