//! DNS over UDP and TCP on one address, answering from an [`Engine`].

pub mod grpc;
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
    // With port 0, UDP picks the port and TCP must get the same one; another program may hold
    // it for TCP, so try a few ports.
    let attempts = if cfg.listen.port() == 0 { 20 } else { 1 };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sockets = udp::bind_all(cfg.listen, workers)?;
        let udp_addr = sockets[0].local_addr()?;
        let tcp_addr = SocketAddr::new(cfg.listen.ip(), udp_addr.port());
        match tcp::bind(tcp_addr).await {
            Ok(listener) => {
                let tcp = listener.local_addr()?;
                udp::serve_all(handler.clone(), sockets, cfg.max_udp)?;
                tcp::serve(handler, listener, cfg.tcp_idle_timeout, cfg.tcp_max_connections);
                return Ok(Bound { udp: udp_addr, tcp });
            }
            Err(e) if attempt < attempts && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(anyhow::Error::from(e).context(format!("cannot listen on tcp {tcp_addr}"))),
        }
    }
}
