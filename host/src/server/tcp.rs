//! DNS over TCP (RFC 7766): length-prefixed messages, pipelined queries answered in order,
//! an idle timeout, and a cap on open connections. Each connection has its own task, so a
//! slow or half-open client holds only its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::{Handler, Reply};

/// A listening socket on `addr`; for IPv6, `only_v6` decides whether IPv4 clients reach it too.
pub fn bind(addr: SocketAddr, only_v6: bool) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(only_v6)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections on `listener`, each served by its own task.
pub fn serve(handler: Arc<Handler>, listener: TcpListener, idle: Duration, max_connections: usize) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "tcp connection limit reached; closing");
                continue; // dropping the stream closes it
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = connection(handler, stream, peer, idle).await {
                    tracing::debug!(%peer, error = %e, "tcp connection ended");
                }
            });
        }
    });
}

async fn connection(handler: Arc<Handler>, mut stream: TcpStream, peer: SocketAddr, idle: Duration) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut len = [0u8; 2];
        match timeout(idle, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()), // idle
        }
        let len = u16::from_be_bytes(len) as usize;
        if len == 0 {
            return Ok(());
        }
        buf.resize(len, 0);
        match timeout(idle, stream.read_exact(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()), // a message that never completes
        };
        let responses = match handler.handle(&buf, kdns_core::STREAM, "tcp", peer) {
            Reply::None => continue,
            Reply::One(r) => vec![r],
            Reply::Many(rs) => rs,
            Reply::Upstream(job) => match handler.finish(job).await {
                Some(r) => vec![r],
                None => continue,
            },
        };
        let mut out = Vec::new();
        for response in responses {
            out.extend_from_slice(&(response.len() as u16).to_be_bytes());
            out.extend_from_slice(&response);
        }
        match timeout(idle, stream.write_all(&out)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()), // the client stopped reading
        }
    }
}
