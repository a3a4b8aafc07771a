//! The snapshot feed: an [`Engine`] in front of another that also tells remote engines (the kdns
//! plugin inside CoreDNS, over the `kdns.v1.SnapshotService` stream) every view it takes.
//!
//! It keeps the last snapshot and the deltas since, protobuf-encoded (a few MB at 100k
//! endpoints, and only when `--grpc-listen` is on), so a watcher that arrives late gets the same
//! view: config, snapshot, deltas, then what follows. When the deltas outgrow the snapshot they
//! are folded into it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kdns_proto::v1;
use kdns_proto::v1::update::Kind;
use prost::Message as _;

use super::Engine;

/// Updates a watcher may fall behind by before its stream is ended (it then starts again).
const BACKLOG: usize = 4096;

pub struct Feed {
    config: Bytes,
    state: Mutex<FeedState>,
    live: tokio::sync::broadcast::Sender<Kind>,
}

#[derive(Default)]
struct FeedState {
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
        Arc::new(Feed { config: config.encode_to_vec().into(), state: Mutex::new(FeedState::default()), live: tokio::sync::broadcast::channel(BACKLOG).0 })
    }

    pub fn subscribe(&self) -> Subscription {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Subscribed under the lock: nothing published falls between the backlog and `live`.
        let live = self.live.subscribe();
        let mut backlog = vec![Kind::Config(self.config.clone())];
        if let Some(s) = &state.snapshot {
            backlog.push(Kind::Snapshot(s.clone()));
            backlog.extend(state.deltas.iter().cloned().map(Kind::Delta));
        }
        Subscription { backlog, live }
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
        if state.delta_bytes > 2 * snapshot_len + (1 << 20) {
            state.fold();
        }
    }
}

impl FeedState {
    /// Folds the deltas into the snapshot (the same rules as the core's store: a delta replaces
    /// or removes whole services, pods and namespaces).
    fn fold(&mut self) {
        let Some(snapshot) = self.snapshot.as_ref().and_then(|b| v1::Snapshot::decode(b.as_ref()).ok()) else { return };
        let mut namespaces: BTreeSet<String> = snapshot.namespaces.into_iter().collect();
        let mut services: BTreeMap<(String, String), v1::Service> = snapshot.services.into_iter().map(|s| ((s.namespace.clone(), s.name.clone()), s)).collect();
        let mut pods: BTreeMap<(String, String), v1::Pod> = snapshot.pods.into_iter().map(|p| ((p.namespace.clone(), p.name.clone()), p)).collect();
        let mut serial = snapshot.serial;
        for bytes in self.deltas.drain(..) {
            let Ok(d) = v1::Delta::decode(bytes.as_ref()) else { continue };
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
        self.snapshot = Some(folded.encode_to_vec().into());
        self.delta_bytes = 0;
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
