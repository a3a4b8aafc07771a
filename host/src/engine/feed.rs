//! The snapshot feed: an [`Engine`] in front of another that also tells remote engines (the kdns
//! plugin inside CoreDNS, over the `kdns.v1.SnapshotService` stream) every view it takes.
//!
//! It keeps the last snapshot and the deltas since, protobuf-encoded (a few MB at 100k
//! endpoints, and only when `--grpc-listen` is on), so a watcher that arrives late gets the same
//! view: config, snapshot, deltas, then what follows. When the deltas outgrow the snapshot they
//! are folded into it.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kdns_proto::v1;
use kdns_proto::v1::update::Kind;
use prost::Message as _;

use super::Engine;

/// Updates a watcher may fall behind by before its stream is ended (it then starts again).
const BACKLOG: usize = 4096;

pub struct Feed {
    state: Mutex<FeedState>,
    live: tokio::sync::broadcast::Sender<Kind>,
}

#[derive(Default)]
struct FeedState {
    /// The settings every watcher starts with.
    config: Bytes,
    /// The last snapshot, once there is one.
    snapshot: Option<Bytes>,
    /// Deltas applied since, in order.
    deltas: Vec<Bytes>,
    delta_bytes: usize,
}

/// What a new watcher gets: everything up to now, and a receiver for what follows.
pub struct Subscription {
    pub backlog: Vec<Kind>,
    pub live: tokio::sync::broadcast::Receiver<Kind>,
}

impl Feed {
    pub fn new(config: &v1::Config) -> Arc<Feed> {
        let state = FeedState { config: config.encode_to_vec().into(), ..Default::default() };
        Arc::new(Feed { state: Mutex::new(state), live: tokio::sync::broadcast::channel(BACKLOG).0 })
    }

    pub fn subscribe(&self) -> Subscription {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Subscribed under the lock: nothing published falls between the backlog and `live`.
        let live = self.live.subscribe();
        let mut backlog = vec![Kind::Config(state.config.clone())];
        if let Some(s) = &state.snapshot {
            backlog.push(Kind::Snapshot(s.clone()));
            backlog.extend(state.deltas.iter().cloned().map(Kind::Delta));
        }
        Subscription { backlog, live }
    }

    fn configured(&self, config: Bytes) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.config = config.clone();
        let _ = self.live.send(Kind::Config(config));
    }

    fn loaded(&self, snapshot: Bytes) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.snapshot = Some(snapshot.clone());
        state.deltas.clear();
        state.delta_bytes = 0;
        let _ = self.live.send(Kind::Snapshot(snapshot));
    }

    fn applied(&self, delta: Bytes) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.delta_bytes += delta.len();
        state.deltas.push(delta.clone());
        let _ = self.live.send(Kind::Delta(delta));
        let snapshot_len = state.snapshot.as_ref().map_or(0, Bytes::len);
        // Geometric: folding while a view is built up from deltas costs O(view) in all.
        if super::time_to_fold(snapshot_len, state.delta_bytes) {
            state.fold();
        }
    }
}

impl FeedState {
    fn fold(&mut self) {
        let Some(snapshot) = &self.snapshot else { return };
        if let Some(folded) = super::fold_deltas(snapshot, self.deltas.iter().map(|d| d.as_ref())) {
            self.snapshot = Some(folded.into());
            self.deltas.clear();
            self.delta_bytes = 0;
        }
    }
}

/// An engine whose every accepted change also goes to the feed.
pub struct Fed {
    pub inner: Arc<dyn Engine>,
    pub feed: Arc<Feed>,
}

impl Engine for Fed {
    fn load(&self, snapshot: v1::Snapshot) -> anyhow::Result<()> {
        let bytes: Bytes = snapshot.encode_to_vec().into();
        self.inner.load(snapshot)?;
        self.feed.loaded(bytes);
        Ok(())
    }

    fn apply(&self, delta: v1::Delta) -> anyhow::Result<()> {
        let bytes: Bytes = delta.encode_to_vec().into();
        self.inner.apply(delta)?;
        self.feed.applied(bytes);
        Ok(())
    }

    fn configure(&self, config: v1::Config) -> anyhow::Result<()> {
        let bytes: Bytes = config.encode_to_vec().into();
        self.inner.configure(config)?;
        self.feed.configured(bytes);
        Ok(())
    }

    fn resolve(&self, query: &[u8], max_udp: u16) -> Option<Vec<u8>> {
        self.inner.resolve(query, max_udp)
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn zone_records(&self, zone: &hickory_proto::rr::Name) -> Option<Vec<hickory_proto::rr::Record>> {
        self.inner.zone_records(zone)
    }

    fn trap_counts(&self) -> Option<(u64, u64)> {
        self.inner.trap_counts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, ip: u8) -> v1::Service {
        v1::Service { namespace: "ns".into(), name: name.into(), cluster_ips: vec![vec![10, 0, 0, ip]], ..Default::default() }
    }

    #[test]
    fn a_late_watcher_gets_the_same_view_before_and_after_folding() {
        let feed = Feed::new(&v1::Config::default());
        feed.loaded(v1::Snapshot { serial: 1, namespaces: vec!["ns".into()], services: vec![service("a", 1)], pods: vec![] }.encode_to_vec().into());
        feed.applied(v1::Delta { serial: 2, upsert_services: vec![service("b", 2)], ..Default::default() }.encode_to_vec().into());
        feed.applied(v1::Delta { serial: 3, remove_services: vec![v1::ServiceKey { namespace: "ns".into(), name: "a".into() }], ..Default::default() }.encode_to_vec().into());
        let sub = feed.subscribe();
        assert_eq!(sub.backlog.len(), 4, "config, snapshot, two deltas");
        feed.state.lock().unwrap().fold();
        let sub = feed.subscribe();
        let [Kind::Config(_), Kind::Snapshot(s)] = sub.backlog.as_slice() else { panic!("config and one snapshot after folding") };
        let s = v1::Snapshot::decode(s.as_ref()).unwrap();
        assert_eq!(s.serial, 3);
        assert_eq!(s.services, vec![service("b", 2)]);
        assert_eq!(s.namespaces, vec!["ns".to_string()]);
    }
}
