//! `--snapshot-from ADDR`: the cluster view from another kdns's snapshot stream instead of the
//! Kubernetes API, so that N answering replicas cost the API server one watch (the fan-out
//! tier). The whole view first, then every delta; after a lost connection the stream resumes
//! with only what was missed when the other kdns still holds it, else the whole view again.
//! Meanwhile answers keep coming from the last view.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use kdns_proto::v1;
use kdns_proto::v1::snapshot_service_client::SnapshotServiceClient;
use kdns_proto::v1::update::Kind;
use prost::Message as _;

use crate::engine::Engine;
use crate::metrics::Metrics;

/// Reconnect backoff: from the first, doubling to the last, with jitter; reset once a stream
/// delivers again.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// While the other kdns stays away, one reminder this often.
const REMIND_EVERY: Duration = Duration::from_secs(60);

pub struct StreamOptions {
    /// `http://HOST:PORT` (a bare `HOST:PORT` gets `http://`).
    pub addr: String,
    /// Sent as `authorization: Bearer TOKEN` (the other side's --snapshot-token-file).
    pub token: Option<String>,
    /// This replica's settings: the stream's config is compared with them, not taken.
    pub config: v1::Config,
}

/// Where a resumed stream starts: the feed's id and the position of the last update applied.
#[derive(Default, Clone)]
struct Position {
    stream: String,
    seq: u64,
}

/// Follows the stream for ever; `synced` turns true (and `ready` is set) at the first whole view.
pub fn start(opts: StreamOptions, engine: Arc<dyn Engine>, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> tokio::sync::watch::Receiver<bool> {
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut position = Position::default();
        let mut backoff = BACKOFF_FIRST;
        let mut lost: Option<(Instant, Instant, u32)> = None; // (since, last reminder, attempts)
        loop {
            let mut delivered = false;
            let result = follow(&opts, &engine, &metrics, &ready, &synced_tx, &mut position, &mut delivered, &mut lost).await;
            if delivered {
                backoff = BACKOFF_FIRST;
            }
            let error = match result {
                Ok(()) => "the stream ended".to_string(),
                Err(e) => format!("{e:#}"),
            };
            match &mut lost {
                None => {
                    tracing::warn!(from = %opts.addr, %error, "snapshot stream lost; answering from the last view while reconnecting");
                    let now = Instant::now();
                    lost = Some((now, now, 1));
                }
                Some((since, reminded, attempts)) => {
                    *attempts += 1;
                    if reminded.elapsed() >= REMIND_EVERY {
                        *reminded = Instant::now();
                        tracing::warn!(from = %opts.addr, %error, down_s = since.elapsed().as_secs(), attempts = *attempts, "snapshot stream still down");
                    }
                }
            }
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
    synced
}

/// Between half and all of `d`, so replicas that lost the same server do not come back in step.
fn jittered(d: Duration) -> Duration {
    let fraction = (crate::random_u64() % 1000) as f64 / 1000.0;
    d.mul_f64(0.5 + fraction / 2.0)
}

#[allow(clippy::too_many_arguments)]
async fn follow(
    opts: &StreamOptions,
    engine: &Arc<dyn Engine>,
    metrics: &Metrics,
    ready: &AtomicBool,
    synced: &tokio::sync::watch::Sender<bool>,
    position: &mut Position,
    delivered: &mut bool,
    lost: &mut Option<(Instant, Instant, u32)>,
) -> anyhow::Result<()> {
    let uri = if opts.addr.contains("://") { opts.addr.clone() } else { format!("http://{}", opts.addr) };
    let channel = tonic::transport::Endpoint::from_shared(uri.clone())
        .with_context(|| format!("--snapshot-from {}: not an address", opts.addr))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {uri}"))?;
    let mut client = SnapshotServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let mut request = tonic::Request::new(v1::WatchRequest { resume_stream: position.stream.clone(), resume_seq: position.seq });
    if let Some(token) = &opts.token {
        let value = format!("Bearer {token}").parse().context("the snapshot token is not a valid header value")?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut stream = client.watch(request).await.map_err(describe)?.into_inner();
    let mut first = true;
    while let Some(update) = stream.message().await.map_err(describe)? {
        let Some(kind) = update.kind else { continue };
        if first {
            first = false;
            if let Some((since, _, attempts)) = lost.take() {
                tracing::info!(from = %opts.addr, down_s = since.elapsed().as_secs(), attempts, "snapshot stream back");
            }
        }
        match kind {
            Kind::Config(bytes) => {
                let theirs = v1::Config::decode(bytes.as_ref()).context("a config that does not decode")?;
                if theirs.zones != opts.config.zones || theirs.pod_mode != opts.config.pod_mode {
                    tracing::warn!(from = %opts.addr, "the snapshot stream's zones or pod mode differ from this replica's settings; answering with this replica's");
                }
                // The position is of snapshots and deltas: a resumed stream opens with the
                // config at the server's position, which says whether anything was missed.
                if !position.stream.is_empty() && update.stream == position.stream && update.seq >= position.seq {
                    tracing::info!(from = %opts.addr, missed = update.seq - position.seq, "snapshot stream resumed with only the deltas missed");
                }
            }
            Kind::Snapshot(bytes) => {
                let snapshot = v1::Snapshot::decode(bytes.as_ref()).context("a snapshot that does not decode")?;
                let (serial, counts) = (snapshot.serial, crate::cluster::counts(&snapshot));
                let started = Instant::now();
                if let Err(e) = engine.load(snapshot) {
                    metrics.apply_errors.inc();
                    return Err(e.context("the engine rejected the stream's snapshot"));
                }
                metrics.loaded(serial, counts);
                tracing::info!(from = %opts.addr, serial, %counts, took_ms = %format!("{:.1}", started.elapsed().as_secs_f64() * 1e3), "cluster view from the snapshot stream");
                ready.store(true, Ordering::Relaxed);
                let _ = synced.send(true);
                *position = Position { stream: update.stream, seq: update.seq };
            }
            Kind::Delta(bytes) => {
                let delta = v1::Delta::decode(bytes.as_ref()).context("a delta that does not decode")?;
                let serial = delta.serial;
                if let Err(e) = engine.apply(delta) {
                    // Out of step with the stream: start again from a whole view.
                    metrics.apply_errors.inc();
                    *position = Position::default();
                    return Err(e.context("the engine rejected a delta from the stream; asking for the whole view again"));
                }
                metrics.snapshot_generation.set(i64::from(serial));
                *position = Position { stream: update.stream, seq: update.seq };
            }
        }
        *delivered = true;
    }
    Ok(())
}

/// A gRPC status as a line an operator can act on.
fn describe(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => anyhow::anyhow!("refused by the other kdns: {}", status.message()),
        tonic::Code::Unimplemented => anyhow::anyhow!("the other side serves no snapshot stream (is it kdns with --grpc-listen?)"),
        _ => anyhow::anyhow!("{}: {}", status.code(), status.message()),
    }
}
