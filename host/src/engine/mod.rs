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
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    if let Ok(request) = Message::from_vec(query) {
        let mut m = Message::new(request.id, MessageType::Response, request.op_code);
        m.metadata.recursion_desired = request.recursion_desired;
        m.metadata.response_code = ResponseCode::ServFail;
        if request.queries.len() == 1 {
            m.queries = request.queries;
        }
        if let Ok(bytes) = m.to_vec() {
            return Some(bytes);
        }
    }
    let mut header = query[..12].to_vec();
    header[2] = 0x80 | (query[2] & 0x79);
    header[3] = ResponseCode::ServFail.low();
    header[4..].fill(0);
    Some(header)
}
