//! The native engine: the core linked in, its state swapped atomically on every change so the
//! query path never waits for a writer.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use arc_swap::ArcSwap;
use kdns_core::Resolver;
use kdns_proto::v1;

use super::Engine;

pub struct NativeEngine {
    current: ArcSwap<Resolver>,
    /// Serializes writers (load/apply); readers never take it.
    writer: Mutex<()>,
}

impl NativeEngine {
    pub fn new(config: v1::Config) -> anyhow::Result<Self> {
        let resolver = Resolver::new(config).context("invalid engine config")?;
        Ok(NativeEngine { current: ArcSwap::from_pointee(resolver), writer: Mutex::new(()) })
    }

    /// The resolver serving right now (for stats and offline commands).
    pub fn resolver(&self) -> Arc<Resolver> {
        self.current.load_full()
    }
}

impl Engine for NativeEngine {
    fn load(&self, snapshot: v1::Snapshot) -> anyhow::Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        // Settings are kept; only the cluster view is rebuilt (off the query path).
        let next = self.current.load().with_snapshot(snapshot).context("snapshot rejected")?;
        self.current.store(Arc::new(next));
        Ok(())
    }

    fn apply(&self, delta: v1::Delta) -> anyhow::Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        // Copy-on-write: readers keep the old view until the new one is complete.
        let mut next = Resolver::clone(&self.current.load());
        next.apply(delta).context("delta rejected")?;
        self.current.store(Arc::new(next));
        Ok(())
    }

    fn resolve(&self, query: &[u8], max_udp: u16) -> Option<Vec<u8>> {
        self.current.load().resolve(query, max_udp)
    }

    fn kind(&self) -> &'static str {
        "native"
    }

    fn zone_records(&self, zone: &hickory_proto::rr::Name) -> Option<Vec<hickory_proto::rr::Record>> {
        self.current.load().lookup().zone_records(zone)
    }
}
