//! CoreDNS's `DnsService` over gRPC (`--grpc-listen`): a stock CoreDNS with
//! `cluster.local { grpc . ADDR }` answers the cluster zone through kdns.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use kdns_proto::coredns::DnsPacket;
use kdns_proto::coredns::dns_service_server::{DnsService, DnsServiceServer};
use tonic::{Request, Response, Status};

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

/// Binds `addr` and serves the DnsService on it; returns the bound address.
pub async fn start(addr: SocketAddr, handler: Arc<Handler>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on grpc {addr}"))?;
    let bound = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder().add_service(DnsServiceServer::new(Service { handler }));
    tokio::spawn(async move {
        if let Err(e) = server.serve_with_incoming(incoming).await {
            tracing::error!(error = %e, "grpc server stopped");
        }
    });
    Ok(bound)
}
