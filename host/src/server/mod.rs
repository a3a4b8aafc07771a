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
    /// Addresses to serve UDP and TCP on. `[::]:PORT` alone is one dual-stack socket per
    /// transport (IPv4 clients as mapped addresses); beside `0.0.0.0:PORT` it is IPv6 only.
    pub listen: Vec<SocketAddr>,
    /// Largest UDP response sent, whatever a client's EDNS buffer says.
    pub max_udp: u16,
    /// UDP sockets (SO_REUSEPORT) each served by its own task; 0 = one per core.
    pub udp_workers: usize,
    /// A TCP connection with no complete query for this long is closed (RFC 7766 §6.2.3).
    pub tcp_idle_timeout: Duration,
    /// Open TCP connections at most; a full server closes its longest-idle one for a new one.
    pub tcp_max_connections: usize,
    /// Open TCP connections from one client address at most (0 = no limit of its own).
    pub tcp_max_connections_per_client: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 53))],
            max_udp: 1232,
            udp_workers: 0,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_max_connections: 8192,
            tcp_max_connections_per_client: tcp::DEFAULT_PER_CLIENT,
        }
    }
}

/// The addresses actually bound (the port is resolved when the config asked for port 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

/// Whether a socket on `addr` should take IPv6 only: an IPv6 wildcard takes IPv4 too unless an
/// IPv4 wildcard on the same port is also served (which would then hold IPv4).
pub fn v6_only(addr: SocketAddr, all: &[SocketAddr]) -> bool {
    let v4_wildcard_too = all.iter().any(|a| a.is_ipv4() && a.ip().is_unspecified() && a.port() == addr.port());
    !(addr.ip().is_unspecified() && !v4_wildcard_too)
}

/// Binds UDP and TCP sockets on every address of `cfg.listen` and spawns their tasks on the
/// current tokio runtime; `handler_for` gives each address its handler (its `server` label).
pub async fn start(handler_for: impl Fn(SocketAddr) -> Arc<Handler>, cfg: &DnsConfig) -> anyhow::Result<Vec<Bound>> {
    let workers = if cfg.udp_workers == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { cfg.udp_workers };
    let mut bound = Vec::new();
    for &listen in &cfg.listen {
        let only_v6 = listen.is_ipv6() && v6_only(listen, &cfg.listen);
        bound.push(start_one(handler_for(listen), listen, only_v6, workers, cfg).await?);
    }
    Ok(bound)
}

async fn start_one(handler: Arc<Handler>, listen: SocketAddr, only_v6: bool, workers: usize, cfg: &DnsConfig) -> anyhow::Result<Bound> {
    // With port 0, UDP picks the port and TCP must get the same one; another program may hold
    // it for TCP, so try a few ports.
    let attempts = if listen.port() == 0 { 20 } else { 1 };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sockets = udp::bind_all(listen, only_v6, workers)?;
        let udp_addr = sockets[0].local_addr()?;
        let tcp_addr = SocketAddr::new(listen.ip(), udp_addr.port());
        match tcp::bind(tcp_addr, only_v6) {
            Ok(listener) => {
                let tcp = listener.local_addr()?;
                udp::serve_all(handler.clone(), sockets, cfg.max_udp)?;
                let limits = tcp::Limits { per_client: cfg.tcp_max_connections_per_client, ..tcp::Limits::new(cfg.tcp_idle_timeout, cfg.tcp_max_connections) };
                tcp::serve_with(handler, listener, limits);
                return Ok(Bound { udp: udp_addr, tcp });
            }
            Err(e) if attempt < attempts && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(anyhow::Error::from(e).context(format!("cannot listen on tcp {tcp_addr}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_wildcard_is_dual_stack_unless_ipv4_has_its_own() {
        let v6: SocketAddr = "[::]:53".parse().unwrap();
        let v4: SocketAddr = "0.0.0.0:53".parse().unwrap();
        assert!(!v6_only(v6, &[v6]));
        assert!(v6_only(v6, &[v4, v6]));
        assert!(!v6_only(v6, &["0.0.0.0:5353".parse().unwrap(), v6]));
        assert!(v6_only("[::1]:53".parse().unwrap(), &["[::1]:53".parse().unwrap()]));
    }
}
