//! gRPC (`--grpc-listen`): CoreDNS's `DnsService`, so a stock CoreDNS with
//! `cluster.local { grpc . ADDR }` answers the cluster zone through kdns; and the
//! `kdns.v1.SnapshotService` stream that feeds the kdns plugin inside CoreDNS.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use kdns_proto::coredns::DnsPacket;
use kdns_proto::coredns::dns_service_server::{DnsService, DnsServiceServer};
use kdns_proto::v1::snapshot_service_server::{SnapshotService, SnapshotServiceServer};
use kdns_proto::v1::update::Kind;
use kdns_proto::v1::{Update, WatchRequest};
use tonic::{Request, Response, Status};

use crate::engine::feed::Feed;

use super::{Handler, Reply};

struct Service {
    handler: Arc<Handler>,
}

#[tonic::async_trait]
impl DnsService for Service {
    async fn query(&self, request: Request<DnsPacket>) -> Result<Response<DnsPacket>, Status> {
        let peer = request.remote_addr().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let query = request.into_inner().msg;
        // The caller (CoreDNS) fits the answer to its client's transport, so no UDP limit here.
        let answer = match self.handler.handle(&query, kdns_core::STREAM, "grpc", peer) {
            Reply::One(r) => Some(r),
            Reply::Upstream(job) => self.handler.finish(job).await,
            Reply::Many(_) | Reply::None => None,
        };
        match answer {
            Some(msg) => Ok(Response::new(DnsPacket { msg })),
            None => Err(Status::invalid_argument("not a DNS query message")),
        }
    }
}

/// Who may watch the snapshot stream: it is the whole cluster view (every Service, endpoint and
/// pod IP), as a zone transfer is, so it is refused unless the peer is allowed.
#[derive(Clone, Debug, Default)]
pub struct StreamAccess {
    /// Source networks allowed to watch.
    pub allow: Vec<super::Cidr>,
    /// When set, a watcher must also send `authorization: Bearer TOKEN` with this token.
    pub token: Option<String>,
}

impl StreamAccess {
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let ip = request.remote_addr().map(|a| a.ip());
        if !ip.is_some_and(|ip| self.allow.iter().any(|c| c.contains(ip))) {
            return Err(Status::permission_denied("the snapshot stream is not open to this address (see --snapshot-allow)"));
        }
        if let Some(token) = &self.token {
            let given = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
                return Err(Status::unauthenticated("the snapshot stream needs the token of --snapshot-token-file"));
            }
        }
        Ok(())
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Snapshots {
    feed: Arc<Feed>,
    access: StreamAccess,
}

type UpdateStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Update, Status>> + Send>>;

#[tonic::async_trait]
impl SnapshotService for Snapshots {
    type WatchStream = UpdateStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<UpdateStream>, Status> {
        use futures::StreamExt;
        let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        if let Err(refused) = self.access.check(&request) {
            tracing::warn!(%peer, reason = refused.message(), "snapshot watcher refused");
            return Err(refused);
        }
        let want = request.into_inner();
        let resume = (!want.resume_stream.is_empty()).then_some((want.resume_stream.as_str(), want.resume_seq));
        let sub = self.feed.subscribe(resume);
        let from = if sub.resumed { "resumed: only what it missed" } else { "the whole view" };
        tracing::info!(%peer, seq = want.resume_seq, "snapshot watcher connected; sending {from}");
        let stream = self.feed.id().to_string();
        let update = move |(kind, seq): (Kind, u64)| Update { kind: Some(kind), stream: stream.clone(), seq };
        let backlog = futures::stream::iter(sub.backlog.into_iter().map(update.clone()).map(Ok));
        let live = futures::stream::unfold(Some(sub.live), move |rx| {
            let (peer, update) = (peer.clone(), update.clone());
            async move {
                let mut rx = rx?;
                match rx.recv().await {
                    Ok(item) => Some((Ok(update(item)), Some(rx))),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(%peer, missed = n, "snapshot watcher fell behind; ending its stream so it starts again");
                        Some((Err(Status::resource_exhausted("fell behind the snapshot feed; watch again")), None))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
                }
            }
        });
        Ok(Response::new(Box::pin(backlog.chain(live))))
    }
}

/// Binds `addr` and serves the DnsService (and, with a feed, the SnapshotService) on it;
/// returns the bound address.
pub async fn start(addr: SocketAddr, handler: Arc<Handler>, feed: Option<Arc<Feed>>, access: StreamAccess) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on grpc {addr}"))?;
    let bound = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .add_service(DnsServiceServer::new(Service { handler }))
        .add_optional_service(feed.map(|feed| SnapshotServiceServer::new(Snapshots { feed, access })));
    tokio::spawn(async move {
        if let Err(e) = server.serve_with_incoming(incoming).await {
            tracing::error!(error = %e, "grpc server stopped");
        }
    });
    Ok(bound)
}
