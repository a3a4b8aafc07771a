//! Endpoints derived from Pods, the way the EndpointSlice controller writes them, for a
//! manifest set that has Services and Pods but no EndpointSlices.

use std::collections::BTreeMap;

use kdns_proto::v1;

use super::objects::{Family, PodObject, ServiceObject, TargetPort, ip_bytes};

/// A port as (name, protocol, number): sortable, so groups can be keyed by their ports.
type PortKey = (String, i32, u32);

/// One group per (address family, resolved ports), as the controller splits slices.
pub fn endpoint_groups(svc: &ServiceObject, pods: &[&PodObject]) -> Vec<v1::EndpointGroup> {
    let families = service_families(svc);
    let mut groups: BTreeMap<(Family, Vec<PortKey>), Vec<v1::Endpoint>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| selects(svc, p) && !p.gone) {
        let ports = resolve_ports(svc, pod);
        // The controller publishes every pod as ready when the service asks for not-ready ones.
        let ready = pod.ready || svc.publish_not_ready_addresses;
        let hostname = if !pod.hostname.is_empty() && pod.subdomain == svc.key.name { pod.hostname.clone() } else { String::new() };
        for ip in &pod.ips {
            let family = Family::of(ip);
            if !families.contains(&family) {
                continue;
            }
            groups.entry((family, ports.clone())).or_default().push(v1::Endpoint {
                address: ip_bytes(ip),
                hostname: hostname.clone(),
                pod_name: pod.key.name.clone(),
                ready,
                serving: ready,
                terminating: false,
            });
        }
    }
    groups
        .into_iter()
        .map(|((_, ports), endpoints)| v1::EndpointGroup {
            ports: ports.into_iter().map(|(name, protocol, port)| v1::Port { name, protocol, port }).collect(),
            endpoints,
        })
        .collect()
}

/// The service's families: `ipFamilies`, else those of its cluster IPs, else both (a headless
/// manifest often omits them; the API server would default them from the cluster).
fn service_families(svc: &ServiceObject) -> Vec<Family> {
    if !svc.ip_families.is_empty() {
        return svc.ip_families.clone();
    }
    let mut fams: Vec<Family> = svc.cluster_ips.iter().map(Family::of).collect();
    fams.dedup();
    if fams.is_empty() { vec![Family::V4, Family::V6] } else { fams }
}

fn selects(svc: &ServiceObject, pod: &PodObject) -> bool {
    pod.key.namespace == svc.key.namespace && !svc.selector.is_empty() && svc.selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
}

/// Service ports with targetPort resolved against the pod; a named targetPort the pod lacks
/// leaves that port out for the pod, as the controller does.
fn resolve_ports(svc: &ServiceObject, pod: &PodObject) -> Vec<PortKey> {
    svc.ports
        .iter()
        .filter_map(|p| {
            let port = match &p.target {
                TargetPort::Number(n) => *n,
                TargetPort::Name(name) => pod.container_ports.iter().find(|c| &c.name == name && c.protocol == p.protocol)?.port,
            };
            Some((p.name.clone(), p.protocol as i32, port as u32))
        })
        .collect()
}
