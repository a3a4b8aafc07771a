//! Validated engine settings, built from a `kdns.v1.Config`.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;

use hickory_proto::rr::Name;
use kdns_proto::v1;

use crate::error::InputError;

pub const DEFAULT_ZONE: &str = "cluster.local";
pub const DEFAULT_TTL: u32 = 5;
pub const MAX_TTL: u32 = 3600;
pub const DEFAULT_NS_SERVICE: (&str, &str) = ("kube-system", "kube-dns");
/// Longest NSID (RFC 5001) the config may set, in bytes.
pub const MAX_NSID: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodMode {
    Disabled,
    Insecure,
    Verified,
}

/// When a UDP response that does not fit gets TC (`kdns.v1.Truncation`). Both keep as many
/// whole records as fit, in section order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Truncation {
    /// TC only when an answer or authority record was left out (RFC 2181 9).
    #[default]
    Fill,
    /// TC when any record was left out, additionals included (CoreDNS: miekg/dns
    /// `Msg.Truncate`).
    CoreDns,
}

/// A served zone: its name as configured (used in answers), its label count, and its labels
/// lowercased (for matching questions).
#[derive(Clone, Debug)]
pub struct Zone {
    pub name: Name,
    pub labels: usize,
    lowered: Vec<Vec<u8>>,
}

impl Zone {
    fn parse(text: &str) -> Result<Self, InputError> {
        let text = text.trim_end_matches('.');
        if text.is_empty() {
            return Err(InputError::BadZone);
        }
        let mut name = Name::from_ascii(text).map_err(|_| InputError::BadZone)?;
        name.set_fqdn(true);
        let labels = name.num_labels() as usize;
        let lowered = name.iter().map(|l| l.to_ascii_lowercase()).collect();
        Ok(Zone { name, labels, lowered })
    }

    /// Whether a name, as its lowercased labels, is this zone or under it.
    pub fn contains(&self, lowered: &[&[u8]]) -> bool {
        lowered.len() >= self.labels && lowered[lowered.len() - self.labels..].iter().zip(&self.lowered).all(|(a, b)| *a == &b[..])
    }

    /// Whether this zone lies strictly below a name, given as its lowercased labels.
    pub fn is_below(&self, lowered: &[&[u8]]) -> bool {
        self.labels > lowered.len() && self.lowered[self.labels - lowered.len()..].iter().zip(lowered).all(|(a, b)| &a[..] == *b)
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// Forward zones; the first is the primary zone.
    pub zones: Vec<Zone>,
    pub reverse_zones: Vec<Zone>,
    pub ttl: u32,
    pub pod_mode: PodMode,
    pub endpoint_pod_names: bool,
    pub no_endpoints: bool,
    pub ignore_empty_service: bool,
    pub ns_service: (Box<str>, Box<str>),
    /// Exposed namespaces; empty = all.
    pub namespaces: BTreeSet<String>,
    /// When a UDP response that does not fit gets TC.
    pub truncation: Truncation,
    /// The NSID (RFC 5001) answered to queries asking for it; `None`: not answered.
    pub nsid: Option<Box<[u8]>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from_config(v1::Config::default()).expect("the default config is valid")
    }
}

impl Settings {
    pub fn from_config(cfg: v1::Config) -> Result<Self, InputError> {
        let zones = if cfg.zones.is_empty() {
            alloc::vec![Zone::parse(DEFAULT_ZONE)?]
        } else {
            cfg.zones.iter().map(|z| Zone::parse(z)).collect::<Result<_, _>>()?
        };
        let reverse_zones = if cfg.reverse_zones.is_empty() {
            alloc::vec![Zone::parse("in-addr.arpa")?, Zone::parse("ip6.arpa")?]
        } else {
            cfg.reverse_zones.iter().map(|z| Zone::parse(z)).collect::<Result<_, _>>()?
        };
        let ttl = cfg.ttl.unwrap_or(DEFAULT_TTL);
        if ttl > MAX_TTL {
            return Err(InputError::BadTtl);
        }
        let pod_mode = match v1::PodMode::try_from(cfg.pod_mode) {
            Ok(v1::PodMode::Disabled) => PodMode::Disabled,
            Ok(v1::PodMode::Insecure) => PodMode::Insecure,
            Ok(v1::PodMode::Verified) => PodMode::Verified,
            Err(_) => return Err(InputError::BadPodMode),
        };
        let truncation = match v1::Truncation::try_from(cfg.truncation) {
            Ok(v1::Truncation::Fill) => Truncation::Fill,
            Ok(v1::Truncation::Coredns) => Truncation::CoreDns,
            Err(_) => return Err(InputError::BadTruncation),
        };
        let nsid = match cfg.nsid {
            Some(id) if id.len() > MAX_NSID => return Err(InputError::BadNsid),
            Some(id) => Some(id.into_bytes().into_boxed_slice()),
            None => None,
        };
        let ns_service = match cfg.ns_service {
            Some(k) if !k.namespace.is_empty() && !k.name.is_empty() => (k.namespace.into(), k.name.into()),
            Some(_) => return Err(InputError::MissingName),
            None => (DEFAULT_NS_SERVICE.0.into(), DEFAULT_NS_SERVICE.1.into()),
        };
        Ok(Settings {
            zones,
            reverse_zones,
            ttl,
            pod_mode,
            endpoint_pod_names: cfg.endpoint_pod_names,
            no_endpoints: cfg.no_endpoints,
            ignore_empty_service: cfg.ignore_empty_service,
            ns_service,
            namespaces: cfg.namespaces.iter().map(|n| n.to_owned()).collect(),
            truncation,
            nsid,
        })
    }

    pub fn primary_zone(&self) -> &Zone {
        &self.zones[0]
    }

    pub fn namespace_exposed(&self, ns: &[u8]) -> bool {
        self.namespaces.is_empty() || core::str::from_utf8(ns).is_ok_and(|ns| self.namespaces.contains(ns))
    }
}
