//! kdns-core: Kubernetes cluster DNS as a pure function.
//!
//! A [`Resolver`] holds the engine settings ([`kdns_proto::v1::Config`]) and an indexed view of
//! the cluster ([`kdns_proto::v1::Snapshot`], updated by [`kdns_proto::v1::Delta`]s) and turns
//! DNS query messages into DNS response messages. No I/O, no clock, no randomness, no threads:
//! the same code runs natively in the `kdns` server and as the WebAssembly module.
#![no_std]
#![forbid(unsafe_code)]
extern crate alloc;

pub mod config;
pub mod error;
pub mod lookup;
pub mod message;
pub mod names;
mod wire;
pub mod record;
pub mod store;
pub mod zone;

use alloc::vec::Vec;

pub use error::InputError;
pub use kdns_proto::v1;
pub use message::STREAM;
pub use store::StoreStats;

use config::Settings;
use lookup::Lookup;
use prost::Message as _;
use store::Store;

/// The DNS engine: settings plus cluster view; `resolve` answers queries.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    settings: Settings,
    store: Store,
}

impl Resolver {
    /// A resolver with `config` and an empty cluster view.
    pub fn new(config: v1::Config) -> Result<Self, InputError> {
        Ok(Resolver { settings: Settings::from_config(config)?, store: Store::default() })
    }

    /// Replaces the settings; the cluster view is kept.
    pub fn configure(&mut self, config: v1::Config) -> Result<(), InputError> {
        let settings = Settings::from_config(config)?;
        self.store.set_pod_names(settings.endpoint_pod_names);
        self.settings = settings;
        Ok(())
    }

    /// Replaces the whole cluster view. On error the previous view stays.
    pub fn load(&mut self, snapshot: v1::Snapshot) -> Result<(), InputError> {
        self.store = Store::from_snapshot(snapshot, self.settings.endpoint_pod_names)?;
        Ok(())
    }

    /// A resolver with these settings and `snapshot` as its view; `self` is untouched, so a
    /// host can keep answering from it while the new one is built.
    pub fn with_snapshot(&self, snapshot: v1::Snapshot) -> Result<Resolver, InputError> {
        let store = Store::from_snapshot(snapshot, self.settings.endpoint_pod_names)?;
        Ok(Resolver { settings: self.settings.clone(), store })
    }

    /// Applies a change in O(size of the change). On error nothing changes.
    pub fn apply(&mut self, delta: v1::Delta) -> Result<(), InputError> {
        self.store.apply(delta)
    }

    /// Answers one DNS query message. `max_udp` is the largest UDP response the host sends,
    /// or [`STREAM`] (0) over TCP. `None`: send nothing (not a query, or shorter than a header).
    pub fn resolve(&self, query: &[u8], max_udp: u16) -> Option<Vec<u8>> {
        message::respond(&self.lookup(), query, max_udp)
    }

    /// [`Resolver::configure`] from protobuf bytes.
    pub fn configure_bytes(&mut self, bytes: &[u8]) -> Result<(), InputError> {
        self.configure(v1::Config::decode(bytes).map_err(|_| InputError::Decode)?)
    }

    /// [`Resolver::load`] from protobuf bytes.
    pub fn load_bytes(&mut self, bytes: &[u8]) -> Result<(), InputError> {
        self.load(v1::Snapshot::decode(bytes).map_err(|_| InputError::Decode)?)
    }

    /// [`Resolver::apply`] from protobuf bytes.
    pub fn apply_bytes(&mut self, bytes: &[u8]) -> Result<(), InputError> {
        self.apply(v1::Delta::decode(bytes).map_err(|_| InputError::Decode)?)
    }

    pub fn stats(&self) -> StoreStats {
        self.store.stats()
    }

    pub fn serial(&self) -> u32 {
        self.store.serial
    }

    /// The record-synthesis view, for hosts that need records rather than messages
    /// (zone export, transfers).
    pub fn lookup(&self) -> Lookup<'_> {
        Lookup { settings: &self.settings, store: &self.store }
    }
}
