//! DNS over UDP: one SO_REUSEPORT socket per worker so every core receives.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::{Handler, Reply};

/// The largest datagram read; bigger ones are cut and then fail to parse (FORMERR).
const RECV_BUFFER: usize = 65535;

fn bind(addr: SocketAddr, only_v6: bool) -> anyhow::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Set either way: the system default (net.ipv6.bindv6only) is not ours to rely on.
        socket.set_only_v6(only_v6)?;
    }
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into())?)
}

/// Binds `workers` sockets on `addr` (SO_REUSEPORT); the first one's address is the bound one.
pub fn bind_all(addr: SocketAddr, only_v6: bool, workers: usize) -> anyhow::Result<Vec<UdpSocket>> {
    let first = bind(addr, only_v6).with_context(|| format!("cannot listen on udp {addr}"))?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        sockets.push(bind(bound, only_v6).with_context(|| format!("cannot listen on udp {bound}"))?);
    }
    Ok(sockets)
}

/// Serves each socket on a thread of its own with blocking I/O and no event-loop wake-ups: on
/// Linux a batch of queries per system call each way (recvmmsg/sendmmsg), elsewhere two calls
/// per query. Upstream work is handed to the tokio runtime.
pub fn serve_all(handler: Arc<Handler>, sockets: Vec<UdpSocket>, max_udp: u16) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Handle::current();
    for (i, socket) in sockets.into_iter().enumerate() {
        let std_socket = socket.into_std()?;
        std_socket.set_nonblocking(false)?;
        let (handler, runtime) = (handler.clone(), runtime.clone());
        std::thread::Builder::new().name(format!("kdns-udp-{i}")).spawn(move || {
            #[cfg(target_os = "linux")]
            batched::serve(handler, std_socket, max_udp, runtime);
            #[cfg(not(target_os = "linux"))]
            serve_blocking(handler, std_socket, max_udp, runtime);
        })?;
    }
    Ok(())
}

#[cfg_attr(target_os = "linux", allow(dead_code))]
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

/// Batched datagram I/O: up to [`batched::BATCH`] queries taken with one `recvmmsg` and their
/// answers sent with one `sendmmsg`. Under load this halves the kernel's share of the work
/// (a system call per datagram each way was the largest cost in the profile).
#[cfg(target_os = "linux")]
mod batched {
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;
    use std::sync::Arc;

    use super::super::{Handler, Reply};

    pub const BATCH: usize = 32;

    /// The peer address the kernel wrote into `storage`.
    fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
        use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
        match i32::from(storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in, which it is large
                // and aligned enough for.
                let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)), u16::from_be(a.sin_port))))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for sockaddr_in6.
                let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(a.sin6_addr.s6_addr), u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
            }
            _ => None,
        }
    }
    /// Room for one query; a longer datagram is cut (MSG_TRUNC) and answered FORMERR. Queries
    /// are a few hundred bytes; 4 KiB leaves room for large EDNS options.
    const SLOT: usize = 4096;

    pub fn serve(handler: Arc<Handler>, socket: std::net::UdpSocket, max_udp: u16, runtime: tokio::runtime::Handle) {
        let socket = Arc::new(socket);
        let fd = socket.as_raw_fd();
        let mut bufs = vec![[0u8; SLOT]; BATCH];
        // SAFETY (for every zeroed() here): these are plain C structs for which all-zero is valid.
        let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut iovs: Vec<libc::iovec> = vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut answers: Vec<(Vec<u8>, usize)> = Vec::with_capacity(BATCH);
        let mut out_iovs: Vec<libc::iovec> = Vec::with_capacity(BATCH);
        let mut out_msgs: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
        loop {
            for i in 0..BATCH {
                iovs[i] = libc::iovec { iov_base: bufs[i].as_mut_ptr().cast(), iov_len: SLOT };
                msgs[i] = unsafe { std::mem::zeroed() };
                msgs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: every msghdr points at a live buffer, iovec and sockaddr_storage of this
            // loop, sized as declared; the kernel writes within those sizes.
            let n = unsafe { libc::recvmmsg(fd, msgs.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
            if n < 0 {
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                tracing::debug!(error = %std::io::Error::last_os_error(), "udp receive failed");
                continue;
            }
            answers.clear();
            for i in 0..n as usize {
                let len = (msgs[i].msg_len as usize).min(SLOT);
                let Some(peer) = socket_addr(&names[i]) else { continue };
                match handler.handle(&bufs[i][..len], max_udp, "udp", peer) {
                    Reply::One(r) => answers.push((r, i)),
                    // Waiting on an upstream must not hold up this socket's other queries.
                    Reply::Upstream(job) => {
                        let (handler, socket) = (handler.clone(), socket.clone());
                        runtime.spawn(async move {
                            if let Some(r) = handler.finish(job).await {
                                let _ = socket.send_to(&r, peer);
                            }
                        });
                    }
                    // Zone transfers need TCP; over UDP the engine refuses them.
                    Reply::None | Reply::Many(_) => {}
                }
            }
            if answers.is_empty() {
                continue;
            }
            out_iovs.clear();
            out_msgs.clear();
            for (answer, i) in answers.iter_mut() {
                out_iovs.push(libc::iovec { iov_base: answer.as_mut_ptr().cast(), iov_len: answer.len() });
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (&mut names[*i] as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_namelen = msgs[*i].msg_hdr.msg_namelen;
                out_msgs.push(m);
            }
            for (m, iov) in out_msgs.iter_mut().zip(out_iovs.iter_mut()) {
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
            }
            let mut sent = 0;
            while sent < out_msgs.len() {
                // SAFETY: the headers point at the answers, iovecs and addresses above, all
                // alive until this loop ends.
                let r = unsafe { libc::sendmmsg(fd, out_msgs[sent..].as_mut_ptr(), (out_msgs.len() - sent) as libc::c_uint, 0) };
                if r <= 0 {
                    tracing::debug!(error = %std::io::Error::last_os_error(), "udp send failed");
                    // Skip the datagram that failed (e.g. an unreachable peer) and go on.
                    sent += 1;
                } else {
                    sent += r as usize;
                }
            }
        }
    }
}
