//! Engines answer queries from a snapshot. The native engine links the core; the wasm engine
//! (issue: WebAssembly) runs the same core as a module. Both sit behind [`Engine`].

pub mod feed;
pub mod native;
pub mod wasm;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use kdns_proto::v1;

pub use native::NativeEngine;
pub use wasm::{WasmEngine, WasmLimits};

/// Bytes of a query in, bytes of a response out, plus snapshot load and delta apply.
/// Implementations are shared by every server task: `resolve` takes `&self` and never blocks
/// on a writer.
pub trait Engine: Send + Sync + 'static {
    /// Replaces the whole cluster view. On error the previous view keeps serving.
    fn load(&self, snapshot: v1::Snapshot) -> anyhow::Result<()>;
    /// Applies a change. On error the previous view keeps serving.
    fn apply(&self, delta: v1::Delta) -> anyhow::Result<()>;
    /// Replaces the settings, keeping the cluster view (SIGHUP). On error the old ones stay.
    fn configure(&self, config: v1::Config) -> anyhow::Result<()>;
    /// Answers a query; `max_udp` is the UDP response limit or 0 over TCP. `None` means
    /// "send nothing" (the input is not a query).
    fn resolve(&self, query: &[u8], max_udp: u16) -> Option<Vec<u8>>;
    /// A short name for logs and metrics.
    fn kind(&self) -> &'static str;
    /// Every record of a served zone, SOA first (for zone transfers); `None` if the zone is
    /// not served or the engine cannot list it.
    fn zone_records(&self, _zone: &hickory_proto::rr::Name) -> Option<Vec<hickory_proto::rr::Record>> {
        None
    }
    /// (traps, instance rebuilds) for engines that can trap.
    fn trap_counts(&self) -> Option<(u64, u64)> {
        None
    }
}

/// A SERVFAIL answer to `query` (its ID, opcode, RD and question echoed), for when an engine
/// could not answer; `None` when the input is not a query, so nothing is sent.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    error_reply(query, ResponseCode::ServFail)
}

/// An answer to `query` with no records and `rcode` (its ID, opcode, RD and question echoed);
/// `None` when the input is not a query.
pub fn error_reply(query: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    if let Ok(request) = Message::from_vec(query) {
        let mut m = Message::new(request.id, MessageType::Response, request.op_code);
        m.metadata.recursion_desired = request.recursion_desired;
        m.metadata.response_code = rcode;
        if request.queries.len() == 1 {
            m.queries = request.queries;
        }
        if let Ok(bytes) = m.to_vec() {
            return Some(bytes);
        }
    }
    let mut header = query[..12].to_vec();
    header[2] = 0x80 | (query[2] & 0x79);
    header[3] = rcode.low();
    header[4..].fill(0);
    Some(header)
}

/// Whether deltas kept beside a snapshot (to rebuild an engine or to catch a watcher up) should
/// be folded into it: once they outweigh it twice over, plus a MiB. Geometric, so building a
/// view up from deltas costs O(view) in folding.
pub fn time_to_fold(snapshot_bytes: usize, delta_bytes: usize) -> bool {
    delta_bytes > 2 * snapshot_bytes + (1 << 20)
}

/// The snapshot that `deltas` make of `snapshot` (all protobuf-encoded), by the core store's
/// rules: a delta replaces or removes whole services, pods and namespaces. `None` if the
/// snapshot does not decode (a delta that does not decode is skipped: it was never applied).
pub fn fold_deltas<'a>(snapshot: &[u8], deltas: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    use std::collections::{BTreeMap, BTreeSet};

    use prost::Message as _;
    let snapshot = v1::Snapshot::decode(snapshot).ok()?;
    let mut namespaces: BTreeSet<String> = snapshot.namespaces.into_iter().collect();
    let mut services: BTreeMap<(String, String), v1::Service> = snapshot.services.into_iter().map(|s| ((s.namespace.clone(), s.name.clone()), s)).collect();
    let mut pods: BTreeMap<(String, String), v1::Pod> = snapshot.pods.into_iter().map(|p| ((p.namespace.clone(), p.name.clone()), p)).collect();
    let mut serial = snapshot.serial;
    for bytes in deltas {
        let Ok(d) = v1::Delta::decode(bytes) else { continue };
        for k in d.remove_services {
            services.remove(&(k.namespace, k.name));
        }
        for s in d.upsert_services {
            services.insert((s.namespace.clone(), s.name.clone()), s);
        }
        for k in d.remove_pods {
            pods.remove(&(k.namespace, k.name));
        }
        for p in d.upsert_pods {
            pods.insert((p.namespace.clone(), p.name.clone()), p);
        }
        for ns in d.remove_namespaces {
            namespaces.remove(&ns);
        }
        namespaces.extend(d.upsert_namespaces);
        serial = d.serial;
    }
    let folded = v1::Snapshot { serial, namespaces: namespaces.into_iter().collect(), services: services.into_values().collect(), pods: pods.into_values().collect() };
    Some(folded.encode_to_vec())
}
