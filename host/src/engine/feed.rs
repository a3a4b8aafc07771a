//! The snapshot feed: an [`Engine`] in front of another that also tells remote engines (the kdns
//! plugin inside CoreDNS, replicas started with `--snapshot-from`, over the
//! `kdns.v1.SnapshotService` stream) every view it takes.
//!
//! It keeps the last snapshot and the deltas since, protobuf-encoded (a few MB at 100k
//! endpoints, and only when `--grpc-listen` is on), so a watcher that arrives late gets the same
//! view: config, snapshot, deltas, then what follows. When the deltas outgrow the snapshot they
//! are folded into it. Every snapshot and delta has a sequence number in this feed (whose id is
//! random per process), so a watcher whose stream ended can resume with only what it missed.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kdns_proto::v1;
use kdns_proto::v1::update::Kind;
use prost::Message as _;

use super::Engine;

/// Updates a watcher may fall behind by before its stream is ended (it then starts again).
const BACKLOG: usize = 4096;

pub struct Feed {
    /// This feed's id (random per process): a resume names the feed it resumes.
    id: String,
    state: Mutex<FeedState>,
    live: tokio::sync::broadcast::Sender<(Kind, u64)>,
}

#[derive(Default)]
struct FeedState {
    /// The settings every watcher starts with.
    config: Bytes,
    /// The last snapshot, once there is one, and its sequence number.
    snapshot: Option<(Bytes, u64)>,
    /// Deltas applied since, in order, with their sequence numbers.
    deltas: Vec<(Bytes, u64)>,
    delta_bytes: usize,
    /// The sequence number of the last snapshot or delta.
    seq: u64,
}

/// What a new watcher gets: everything up to now (each with the sequence number to resume
/// from after it), and a receiver for what follows.
pub struct Subscription {
    pub backlog: Vec<(Kind, u64)>,
    pub live: tokio::sync::broadcast::Receiver<(Kind, u64)>,
    /// Whether this is a resumed stream (only the deltas after the watcher's position).
    pub resumed: bool,
}

impl Feed {
    pub fn new(config: &v1::Config) -> Arc<Feed> {
        let state = FeedState { config: config.encode_to_vec().into(), ..Default::default() };
        let id = format!("{:016x}", crate::random_u64());
        Arc::new(Feed { id, state: Mutex::new(state), live: tokio::sync::broadcast::channel(BACKLOG).0 })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A watcher's stream: the config and the whole view, or, when `resume` names this feed and
    /// a position at or after the last snapshot, the config and the deltas after that position.
    pub fn subscribe(&self, resume: Option<(&str, u64)>) -> Subscription {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Subscribed under the lock: nothing published falls between the backlog and `live`.
        let live = self.live.subscribe();
        let mut backlog = vec![(Kind::Config(state.config.clone()), state.seq)];
        let mut resumed = false;
        if let Some((snapshot, at)) = &state.snapshot {
            match resume {
                Some((id, seq)) if id == self.id && seq >= *at && seq <= state.seq => {
                    backlog.extend(state.deltas.iter().filter(|(_, n)| *n > seq).map(|(d, n)| (Kind::Delta(d.clone()), *n)));
                    resumed = true;
                }
                _ => {
                    backlog.push((Kind::Snapshot(snapshot.clone()), *at));
                    backlog.extend(state.deltas.iter().map(|(d, n)| (Kind::Delta(d.clone()), *n)));
                }
            }
        }
        Subscription { backlog, live, resumed }
    }

    fn configured(&self, config: Bytes) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.config = config.clone();
        let _ = self.live.send((Kind::Config(config), state.seq));
    }

    fn loaded(&self, snapshot: Bytes) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.seq += 1;
        let seq = state.seq;
        state.snapshot = Some((snapshot.clone(), seq));
        state.deltas.clear();
        state.delta_bytes = 0;
        let _ = self.live.send((Kind::Snapshot(snapshot), seq));
    }

    fn applied(&self, delta: Bytes) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.seq += 1;
        let seq = state.seq;
        state.delta_bytes += delta.len();
        state.deltas.push((delta.clone(), seq));
        let _ = self.live.send((Kind::Delta(delta), seq));
        let snapshot_len = state.snapshot.as_ref().map_or(0, |(s, _)| s.len());
        // Geometric: folding while a view is built up from deltas costs O(view) in all.
        if super::time_to_fold(snapshot_len, state.delta_bytes) {
            state.fold();
        }
    }
}

impl FeedState {
    /// The deltas folded into the snapshot, which then stands at the last delta's position
    /// (a watcher behind it resumes with the whole view).
    fn fold(&mut self) {
        let Some((snapshot, _)) = &self.snapshot else { return };
        if let Some(folded) = super::fold_deltas(snapshot, self.deltas.iter().map(|(d, _)| d.as_ref())) {
            self.snapshot = Some((folded.into(), self.seq));
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
        let sub = feed.subscribe(None);
        assert_eq!(sub.backlog.len(), 4, "config, snapshot, two deltas");
        assert_eq!(sub.backlog.iter().map(|(_, n)| *n).collect::<Vec<_>>(), [3, 1, 2, 3]);
        feed.state.lock().unwrap().fold();
        let sub = feed.subscribe(None);
        let [(Kind::Config(_), _), (Kind::Snapshot(s), 3)] = sub.backlog.as_slice() else { panic!("config and one snapshot after folding") };
        let s = v1::Snapshot::decode(s.as_ref()).unwrap();
        assert_eq!(s.serial, 3);
        assert_eq!(s.services, vec![service("b", 2)]);
        assert_eq!(s.namespaces, vec!["ns".to_string()]);
    }

    #[test]
    fn a_watcher_resumes_with_the_deltas_it_missed_when_the_feed_still_has_them() {
        let feed = Feed::new(&v1::Config::default());
        feed.loaded(v1::Snapshot { serial: 1, namespaces: vec!["ns".into()], services: vec![service("a", 1)], pods: vec![] }.encode_to_vec().into());
        feed.applied(v1::Delta { serial: 2, upsert_services: vec![service("b", 2)], ..Default::default() }.encode_to_vec().into());
        feed.applied(v1::Delta { serial: 3, upsert_services: vec![service("c", 3)], ..Default::default() }.encode_to_vec().into());
        let id = feed.id().to_string();
        // At the second delta: the config and the third delta only.
        let sub = feed.subscribe(Some((&id, 2)));
        assert!(sub.resumed);
        let [(Kind::Config(_), 3), (Kind::Delta(_), 3)] = sub.backlog.as_slice() else { panic!("{:?}", sub.backlog.len()) };
        // Up to date: the config alone.
        assert_eq!(feed.subscribe(Some((&id, 3))).backlog.len(), 1);
        // Another feed, or a position from before the snapshot: everything.
        assert_eq!(feed.subscribe(Some(("other", 2))).backlog.len(), 4);
        assert!(!feed.subscribe(Some(("other", 2))).resumed);
        feed.loaded(v1::Snapshot { serial: 4, ..Default::default() }.encode_to_vec().into());
        let sub = feed.subscribe(Some((&id, 3)));
        assert!(!sub.resumed, "the deltas after 3 are gone into snapshot 4");
        assert_eq!(sub.backlog.len(), 2);
        // A position the feed never reached (a restarted feed with a reused id cannot happen,
        // but a bad request can): everything.
        assert!(!feed.subscribe(Some((&id, 99))).resumed);
    }
}
