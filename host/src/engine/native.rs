//! The native engine: the core linked in. Queries share a read lock; a delta is applied in
//! place under the write lock in O(size of the change) (microseconds), and a full load is
//! built off the lock and swapped in, so a writer never holds queries up for long and the
//! cluster view is never held twice except during a full load.

use std::sync::{Mutex, RwLock};

use anyhow::Context;
use kdns_core::Resolver;
use kdns_proto::v1;

use super::Engine;

pub struct NativeEngine {
    current: RwLock<Resolver>,
    /// Serializes writers, so a full load is not built from settings another writer changes.
    writer: Mutex<()>,
}

impl NativeEngine {
    pub fn new(config: v1::Config) -> anyhow::Result<Self> {
        let resolver = Resolver::new(config).context("invalid engine config")?;
        Ok(NativeEngine { current: RwLock::new(resolver), writer: Mutex::new(()) })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Resolver> {
        // A panic cannot leave the resolver half-changed (apply validates before it mutates),
        // so a poisoned lock still guards a good view.
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Resolver> {
        self.current.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts of the view serving right now.
    pub fn stats(&self) -> kdns_core::StoreStats {
        self.read().stats()
    }
}

impl Engine for NativeEngine {
    fn load(&self, snapshot: v1::Snapshot) -> anyhow::Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let next = self.read().with_snapshot(snapshot).context("snapshot rejected")?;
        let old = std::mem::replace(&mut *self.write(), next);
        // The old view is freed after the lock is released.
        drop(old);
        Ok(())
    }

    fn apply(&self, delta: v1::Delta) -> anyhow::Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.write().apply(delta).context("delta rejected")
    }

    fn configure(&self, config: v1::Config) -> anyhow::Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.write().configure(config).context("config rejected")
    }

    fn resolve(&self, query: &[u8], max_udp: u16) -> Option<Vec<u8>> {
        self.read().resolve(query, max_udp)
    }

    fn kind(&self) -> &'static str {
        "native"
    }

    fn zone_records(&self, zone: &hickory_proto::rr::Name) -> Option<Vec<hickory_proto::rr::Record>> {
        self.read().lookup().zone_records(zone)
    }
}
