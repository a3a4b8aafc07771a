//! Kubernetes objects trimmed to the fields DNS needs, validated at the edge.
//!
//! Both sources (manifest files and the API watcher) convert `k8s-openapi` objects into these
//! right away, so no full API object stays in memory and every input error names its field.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core_v1;
use k8s_openapi::api::discovery::v1 as discovery_v1;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kdns_proto::v1;

/// A field that does not hold what DNS needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

/// `namespace/name` of an object, for messages and keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, namespaced: bool) -> Result<ObjectKey, FieldError> {
    let name = meta.name.clone().filter(|n| !n.is_empty()).ok_or_else(|| field_err("metadata.name", "missing"))?;
    let namespace = if namespaced { meta.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into()) } else { String::new() };
    Ok(ObjectKey { namespace, name })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
}

fn parse_ip(text: &str, field: &str) -> Result<IpAddr, FieldError> {
    text.parse().map_err(|_| field_err(field, format!("{text:?} is not an IP address")))
}

pub fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn protocol(text: Option<&str>, field: &str) -> Result<v1::Protocol, FieldError> {
    match text.unwrap_or("TCP") {
        "TCP" => Ok(v1::Protocol::Tcp),
        "UDP" => Ok(v1::Protocol::Udp),
        "SCTP" => Ok(v1::Protocol::Sctp),
        other => Err(field_err(field, format!("unknown protocol {other:?} (TCP, UDP or SCTP)"))),
    }
}

fn port_number(n: i32, field: &str) -> Result<u16, FieldError> {
    u16::try_from(n).ok().filter(|p| *p != 0).ok_or_else(|| field_err(field, format!("{n} is not a port number (1-65535)")))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub protocol: v1::Protocol,
    pub port: u16,
    pub target: TargetPort,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceObject {
    pub key: ObjectKey,
    pub kind: v1::ServiceType,
    pub cluster_ips: Vec<IpAddr>,
    pub ip_families: Vec<Family>,
    pub ports: Vec<ServicePort>,
    pub external_name: String,
    pub selector: BTreeMap<String, String>,
    pub publish_not_ready_addresses: bool,
}

impl TryFrom<&core_v1::Service> for ServiceObject {
    type Error = FieldError;
    fn try_from(svc: &core_v1::Service) -> Result<Self, FieldError> {
        let key = key_of(&svc.metadata, true)?;
        let spec = svc.spec.clone().unwrap_or_default();
        let external = spec.type_.as_deref() == Some("ExternalName");
        let mut ip_texts: Vec<(String, String)> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().enumerate().map(|(i, ip)| (format!("spec.clusterIPs[{i}]"), ip.clone())).collect(),
            _ => spec.cluster_ip.iter().map(|ip| ("spec.clusterIP".to_string(), ip.clone())).collect(),
        };
        let headless = ip_texts.iter().any(|(_, ip)| ip == "None");
        ip_texts.retain(|(_, ip)| ip != "None" && !ip.is_empty());
        let cluster_ips = ip_texts.iter().map(|(f, ip)| parse_ip(ip, f)).collect::<Result<Vec<_>, _>>()?;
        let kind = if external {
            v1::ServiceType::ExternalName
        } else if headless {
            v1::ServiceType::Headless
        } else {
            v1::ServiceType::ClusterIp
        };
        let external_name = if external {
            let name = spec.external_name.clone().unwrap_or_default();
            let trimmed = name.trim_end_matches('.');
            if trimmed.is_empty() || trimmed.len() > 253 || trimmed.split('.').any(|l| l.is_empty() || l.len() > 63) {
                return Err(field_err("spec.externalName", format!("{name:?} is not a DNS name")));
            }
            name
        } else {
            String::new()
        };
        let mut ports = Vec::new();
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let port = port_number(p.port, &format!("spec.ports[{i}].port"))?;
            let target = match &p.target_port {
                None => TargetPort::Number(port),
                Some(IntOrString::Int(n)) => TargetPort::Number(port_number(*n, &format!("spec.ports[{i}].targetPort"))?),
                Some(IntOrString::String(s)) => match s.parse::<i32>() {
                    Ok(n) => TargetPort::Number(port_number(n, &format!("spec.ports[{i}].targetPort"))?),
                    Err(_) => TargetPort::Name(s.clone()),
                },
            };
            ports.push(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol: protocol(p.protocol.as_deref(), &format!("spec.ports[{i}].protocol"))?,
                port,
                target,
            });
        }
        let mut ip_families = Vec::new();
        for (i, f) in spec.ip_families.iter().flatten().enumerate() {
            ip_families.push(match f.as_str() {
                "IPv4" => Family::V4,
                "IPv6" => Family::V6,
                other => return Err(field_err(format!("spec.ipFamilies[{i}]"), format!("unknown family {other:?}"))),
            });
        }
        Ok(ServiceObject {
            key,
            kind,
            cluster_ips,
            ip_families,
            ports,
            external_name,
            selector: spec.selector.clone().unwrap_or_default(),
            publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SliceObject {
    pub key: ObjectKey,
    /// The service it belongs to (label `kubernetes.io/service-name`).
    pub service: String,
    pub ports: Vec<v1::Port>,
    pub endpoints: Vec<v1::Endpoint>,
}

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl SliceObject {
    /// Its ports and endpoints, as the engine takes them.
    pub fn group(&self) -> v1::EndpointGroup {
        v1::EndpointGroup { ports: self.ports.clone(), endpoints: self.endpoints.clone() }
    }

    /// Like [`SliceObject::group`], taking them out.
    pub fn into_group(self) -> v1::EndpointGroup {
        v1::EndpointGroup { ports: self.ports, endpoints: self.endpoints }
    }

    /// `None` for slices DNS does not use: FQDN slices and slices not owned by a service.
    pub fn from_k8s(slice: &discovery_v1::EndpointSlice) -> Result<Option<Self>, FieldError> {
        let key = key_of(&slice.metadata, true)?;
        let Some(service) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).cloned() else {
            return Ok(None);
        };
        let family = match slice.address_type.as_str() {
            "IPv4" => Family::V4,
            "IPv6" => Family::V6,
            "FQDN" => return Ok(None),
            other => return Err(field_err("addressType", format!("unknown address type {other:?}"))),
        };
        let mut ports = Vec::new();
        for (i, p) in slice.ports.iter().flatten().enumerate() {
            // A port without a number means "all ports"; DNS has nothing to publish for it.
            let Some(n) = p.port else { continue };
            ports.push(v1::Port {
                name: p.name.clone().unwrap_or_default(),
                protocol: protocol(p.protocol.as_deref(), &format!("ports[{i}].protocol"))? as i32,
                port: port_number(n, &format!("ports[{i}].port"))? as u32,
            });
        }
        let mut endpoints = Vec::new();
        for (i, ep) in slice.endpoints.iter().enumerate() {
            let cond = ep.conditions.clone().unwrap_or_default();
            // An absent `ready` means ready (EndpointSlice API).
            let ready = cond.ready.unwrap_or(true);
            let pod_name = ep.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).and_then(|r| r.name.clone()).unwrap_or_default();
            for (j, addr) in ep.addresses.iter().enumerate() {
                let field = format!("endpoints[{i}].addresses[{j}]");
                let ip = parse_ip(addr, &field)?;
                if Family::of(&ip) != family {
                    return Err(field_err(field, format!("{addr} does not match addressType {}", slice.address_type)));
                }
                endpoints.push(v1::Endpoint {
                    address: ip_bytes(&ip),
                    hostname: ep.hostname.clone().unwrap_or_default(),
                    pod_name: pod_name.clone(),
                    ready,
                    serving: cond.serving.unwrap_or(ready),
                    terminating: cond.terminating.unwrap_or(false),
                });
            }
        }
        Ok(Some(SliceObject { key, service, ports, endpoints }))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: String,
    pub port: u16,
    pub protocol: v1::Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodObject {
    pub key: ObjectKey,
    pub labels: BTreeMap<String, String>,
    pub ips: Vec<IpAddr>,
    pub ready: bool,
    /// Has a deletionTimestamp, or has finished (Succeeded/Failed).
    pub gone: bool,
    pub hostname: String,
    pub subdomain: String,
    pub container_ports: Vec<ContainerPort>,
}

impl TryFrom<&core_v1::Pod> for PodObject {
    type Error = FieldError;
    fn try_from(pod: &core_v1::Pod) -> Result<Self, FieldError> {
        let key = key_of(&pod.metadata, true)?;
        let status = pod.status.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let mut ips = Vec::new();
        match &status.pod_ips {
            Some(list) if !list.is_empty() => {
                for (i, p) in list.iter().enumerate() {
                    ips.push(parse_ip(&p.ip, &format!("status.podIPs[{i}].ip"))?);
                }
            }
            _ => {
                if let Some(ip) = status.pod_ip.as_deref().filter(|s| !s.is_empty()) {
                    ips.push(parse_ip(ip, "status.podIP")?);
                }
            }
        }
        let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
        let finished = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
        let mut container_ports = Vec::new();
        for (i, c) in spec.containers.iter().enumerate() {
            for (j, p) in c.ports.iter().flatten().enumerate() {
                let field = format!("spec.containers[{i}].ports[{j}]");
                container_ports.push(ContainerPort {
                    name: p.name.clone().unwrap_or_default(),
                    port: port_number(p.container_port, &format!("{field}.containerPort"))?,
                    protocol: protocol(p.protocol.as_deref(), &format!("{field}.protocol"))?,
                });
            }
        }
        Ok(PodObject {
            key,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ips,
            ready,
            gone: pod.metadata.deletion_timestamp.is_some() || finished,
            hostname: spec.hostname.unwrap_or_default(),
            subdomain: spec.subdomain.unwrap_or_default(),
            container_ports,
        })
    }
}

pub fn namespace_name(ns: &core_v1::Namespace) -> Result<String, FieldError> {
    Ok(key_of(&ns.metadata, false)?.name)
}
