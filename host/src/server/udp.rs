//! DNS over UDP: one SO_REUSEPORT socket per worker so every core receives.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::{Handler, Reply};

/// The largest datagram read; bigger ones are cut and then fail to parse (FORMERR).
const RECV_BUFFER: usize = 65535;

fn bind(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into())?)
}

/// Binds `workers` sockets on `addr` (SO_REUSEPORT); the first one's address is the bound one.
pub fn bind_all(addr: SocketAddr, workers: usize) -> anyhow::Result<Vec<UdpSocket>> {
    let first = bind(addr).with_context(|| format!("cannot listen on udp {addr}"))?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        sockets.push(bind(bound).with_context(|| format!("cannot listen on udp {bound}"))?);
    }
    Ok(sockets)
}

/// Serves each socket on a thread of its own with blocking I/O: two system calls per query
/// and no event-loop wake-ups. Upstream work is handed to the tokio runtime.
pub fn serve_all(handler: Arc<Handler>, sockets: Vec<UdpSocket>, max_udp: u16) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Handle::current();
    for (i, socket) in sockets.into_iter().enumerate() {
        let std_socket = socket.into_std()?;
        std_socket.set_nonblocking(false)?;
        let (handler, runtime) = (handler.clone(), runtime.clone());
        std::thread::Builder::new().name(format!("kdns-udp-{i}")).spawn(move || serve_blocking(handler, std_socket, max_udp, runtime))?;
    }
    Ok(())
}

fn serve_blocking(handler: Arc<Handler>, socket: std::net::UdpSocket, max_udp: u16, runtime: tokio::runtime::Handle) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                tracing::debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        let response = match handler.handle(&buf[..len], max_udp, "udp", peer) {
            Reply::One(r) => r,
            // Waiting on an upstream must not hold up this socket's other queries.
            Reply::Upstream(job) => {
                let (handler, socket) = (handler.clone(), socket.clone());
                runtime.spawn(async move {
                    if let Some(r) = handler.finish(job).await {
                        let _ = socket.send_to(&r, peer);
                    }
                });
                continue;
            }
            // Zone transfers need TCP; over UDP the engine refuses them.
            Reply::None | Reply::Many(_) => continue,
        };
        if let Err(e) = socket.send_to(&response, peer) {
            tracing::debug!(error = %e, %peer, "udp send failed");
        }
    }
}
