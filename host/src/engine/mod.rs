//! Engines answer queries from a snapshot. The native engine links the core; the wasm engine
//! (issue: WebAssembly) runs the same core as a module. Both sit behind [`Engine`].

pub mod native;

use kdns_proto::v1;

pub use native::NativeEngine;

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
}
