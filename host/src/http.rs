//! The operations endpoint: `/health` (liveness), `/ready` (200 once a cluster view is
//! loaded), `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::engine::Engine;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Ops {
    pub metrics: Arc<Metrics>,
    pub engine: Arc<dyn Engine>,
    pub ready: Arc<AtomicBool>,
    /// Shutting down (lameduck): not ready, so the Service stops sending queries here.
    pub draining: Arc<AtomicBool>,
}

pub async fn start(addr: SocketAddr, ops: Ops) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on http {addr}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new().route("/health", get(health)).route("/ready", get(ready)).route("/metrics", get(metrics)).with_state(ops);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    Ok(bound)
}

async fn health() -> &'static str {
    "OK"
}

async fn ready(State(ops): State<Ops>) -> impl IntoResponse {
    if ops.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else if ops.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "OK")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for the first cluster view")
    }
}

async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], ops.metrics.encode(ops.engine.as_ref()))
}
