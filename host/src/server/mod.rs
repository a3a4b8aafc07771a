//! DNS over UDP and TCP on one address, answering from an [`Engine`].

pub mod handler;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use handler::{Cidr, Handler, Reply};

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub listen: SocketAddr,
    /// Largest UDP response sent, whatever a client's EDNS buffer says.
    pub max_udp: u16,
    /// UDP sockets (SO_REUSEPORT) each served by its own task; 0 = one per core.
    pub udp_workers: usize,
    /// A TCP connection with no complete query for this long is closed (RFC 7766 §6.2.3).
    pub tcp_idle_timeout: Duration,
    /// Open TCP connections beyond this are closed at once.
    pub tcp_max_connections: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 53)),
            max_udp: 1232,
            udp_workers: 0,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_max_connections: 1024,
        }
    }
}

/// The addresses actually bound (the port is resolved when the config asked for port 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

/// Binds UDP and TCP sockets and spawns their tasks on the current tokio runtime.
pub async fn start(handler: Arc<Handler>, cfg: &DnsConfig) -> anyhow::Result<Bound> {
    let workers = if cfg.udp_workers == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { cfg.udp_workers };
    let udp = udp::start(handler.clone(), cfg.listen, workers, cfg.max_udp)?;
    // Port 0: serve TCP on the port UDP got, so both transports share one address.
    let tcp_addr = SocketAddr::new(cfg.listen.ip(), udp.port());
    let tcp = tcp::start(handler, tcp_addr, cfg.tcp_idle_timeout, cfg.tcp_max_connections).await?;
    Ok(Bound { udp, tcp })
}
