//! gRPC (`--grpc-listen`): CoreDNS's `DnsService`, so a stock CoreDNS with
//! `cluster.local { grpc . ADDR }` answers the cluster zone through kdns; and the
//! `kdns.v1.SnapshotService` stream that feeds the kdns plugin inside CoreDNS.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use kdns_proto::coredns::DnsPacket;
use kdns_proto::coredns::dns_service_server::{DnsService, DnsServiceServer};
use kdns_proto::v1::snapshot_service_server::{SnapshotService, SnapshotServiceServer};
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

struct Snapshots {
    feed: Arc<Feed>,
}

type UpdateStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Update, Status>> + Send>>;

#[tonic::async_trait]
impl SnapshotService for Snapshots {
    type WatchStream = UpdateStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<UpdateStream>, Status> {
        use futures::StreamExt;
        let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let sub = self.feed.subscribe();
        tracing::info!(%peer, "snapshot watcher connected");
        let backlog = futures::stream::iter(sub.backlog.into_iter().map(|kind| Ok(Update { kind: Some(kind) })));
        let live = futures::stream::unfold(Some(sub.live), move |rx| {
            let peer = peer.clone();
            async move {
                let mut rx = rx?;
                match rx.recv().await {
                    Ok(kind) => Some((Ok(Update { kind: Some(kind) }), Some(rx))),
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
pub async fn start(addr: SocketAddr, handler: Arc<Handler>, feed: Option<Arc<Feed>>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on grpc {addr}"))?;
    let bound = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .add_service(DnsServiceServer::new(Service { handler }))
        .add_optional_service(feed.map(|feed| SnapshotServiceServer::new(Snapshots { feed })));
    tokio::spawn(async move {
        if let Err(e) = server.serve_with_incoming(incoming).await {
            tracing::error!(error = %e, "grpc server stopped");
        }
    });
    Ok(bound)
}
