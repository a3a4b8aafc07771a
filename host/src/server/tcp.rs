//! DNS over TCP (RFC 7766): length-prefixed messages, pipelined queries answered in order, and
//! connections managed so that none can lock the others out (§6.2.3), the way Knot DNS does:
//!
//! - a connection waits for its next query up to the idle timeout, and up to [`PRESSURE_IDLE`]
//!   once more than half the connection budget is open; a message whose first byte has arrived
//!   must be complete within the I/O timeout ([`IO_TIMEOUT`]), and an answer must be taken by
//!   the client within it too (a write that makes no progress for that long ends the
//!   connection);
//! - one client address holds at most `per_client` connections: more are closed at once;
//! - a full server closes the connection that has waited longest on its client to take the new
//!   one: idle connections first, then those in the middle of a message. Only when every
//!   connection is being answered is a new one refused.
//!
//! Each connection has its own task. A [`Registry`] (one mutex, O(log n) per change) knows what
//! each is waiting for and since when, and tells a task to close through its `Notify`.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::timeout;

use super::{Handler, Reply};

/// A message must arrive whole, and a write must make progress, within this (Knot: 500 ms).
pub const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// The idle timeout while more than half the connection budget is open.
pub const PRESSURE_IDLE: Duration = Duration::from_secs(1);
/// Connections one client address may hold when not told otherwise.
pub const DEFAULT_PER_CLIENT: usize = 256;
/// How often idle connections are swept while under pressure.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// At most one warning about refused or closed connections in this long.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// How long connections may wait, and how many there may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection with no query for this long is closed.
    pub idle: Duration,
    /// A message must complete, and a write progress, within this.
    pub io: Duration,
    /// Open connections at most (the budget); lowered to what the open-file limit allows.
    pub max_connections: usize,
    /// Open connections from one client address at most; 0 = no limit but the budget.
    pub per_client: usize,
}

impl Limits {
    pub fn new(idle: Duration, max_connections: usize) -> Limits {
        Limits { idle, io: IO_TIMEOUT, max_connections, per_client: DEFAULT_PER_CLIENT }
    }
}

/// A listening socket on `addr`; for IPv6, `only_v6` decides whether IPv4 clients reach it too.
pub fn bind(addr: SocketAddr, only_v6: bool) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(only_v6)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections on `listener`, each served by its own task, with the default per-client
/// cap and I/O timeout.
pub fn serve(handler: Arc<Handler>, listener: TcpListener, idle: Duration, max_connections: usize) {
    serve_with(handler, listener, Limits::new(idle, max_connections));
}

/// Accepts connections on `listener`, each served by its own task, within `limits`.
pub fn serve_with(handler: Arc<Handler>, listener: TcpListener, limits: Limits) {
    let fits = fd_budget();
    let mut max = limits.max_connections.max(1);
    if max > fits {
        tracing::warn!(requested = max, allowed = fits, "--tcp-max-connections is more than the open-file limit allows; lowered");
        max = fits;
    }
    let per_client = if limits.per_client == 0 { max } else { limits.per_client.min(max) };
    let registry = Arc::new(Registry::new(max, per_client));
    tokio::spawn(sweep(registry.clone(), limits.idle.min(PRESSURE_IDLE)));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors: make room by closing the longest-waiting
                    // connection. Anything else: back off instead of spinning.
                    let fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    if fds {
                        registry.close_longest_waiting();
                    }
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(if fds { 10 } else { 50 })).await;
                    continue;
                }
            };
            let client = peer.ip().to_canonical();
            let Some((id, close, since)) = registry.admit(client) else {
                continue; // dropping the stream closes it
            };
            let conn = Registered { registry: registry.clone(), id };
            let handler = handler.clone();
            tokio::spawn(async move {
                if let Err(e) = connection(handler, stream, peer, conn, close, since, limits).await {
                    tracing::debug!(%peer, error = %e, "tcp connection ended");
                }
            });
        }
    });
}

/// While more than half the budget is open, closes connections idle for longer than `idle`.
async fn sweep(registry: Arc<Registry>, idle: Duration) {
    loop {
        if !registry.under_pressure() {
            registry.pressure.notified().await;
            continue;
        }
        tokio::time::sleep(SWEEP_EVERY).await;
        if let Some(cutoff) = Instant::now().checked_sub(idle) {
            registry.close_idle_since(cutoff);
        }
    }
}

/// What a connection is waiting on its client for (the order is the order of eviction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wait {
    /// The next query.
    Idle,
    /// The rest of a message.
    Message,
}

struct Entry {
    client: IpAddr,
    /// What it waits for and since when; None while a query is being answered.
    waiting: Option<(Wait, Instant)>,
    close: Arc<Notify>,
}

/// The open connections of one listener.
struct Registry {
    inner: Mutex<Inner>,
    max: usize,
    per_client: usize,
    /// Woken when the open connections pass half the budget.
    pressure: Notify,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, Entry>,
    /// The connections waiting on their clients, longest-waiting idle ones first.
    waiting: BTreeSet<(Wait, Instant, u64)>,
    clients: HashMap<IpAddr, usize>,
    next_id: u64,
    counts: Counts,
}

/// What happened since the last warning.
#[derive(Default)]
struct Counts {
    evicted: u64,
    swept: u64,
    refused_busy: u64,
    refused_client: u64,
    reported: Option<Instant>,
}

impl Registry {
    fn new(max: usize, per_client: usize) -> Registry {
        Registry { inner: Mutex::new(Inner::default()), max, per_client, pressure: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a new connection from `client`: its id, the signal to close it and when it was
    /// admitted; or None when it must be closed (its client holds its share, or every open
    /// connection is busy). A full server closes its longest-waiting connection for it.
    fn admit(&self, client: IpAddr) -> Option<(u64, Arc<Notify>, Instant)> {
        let now = Instant::now();
        let mut g = self.lock();
        let admitted = if g.clients.get(&client).copied().unwrap_or(0) >= self.per_client {
            g.counts.refused_client += 1;
            None
        } else if g.conns.len() >= self.max && !g.close_first() {
            g.counts.refused_busy += 1;
            None
        } else {
            let id = g.next_id;
            g.next_id += 1;
            let close = Arc::new(Notify::new());
            g.conns.insert(id, Entry { client, waiting: Some((Wait::Idle, now)), close: close.clone() });
            g.waiting.insert((Wait::Idle, now, id));
            *g.clients.entry(client).or_insert(0) += 1;
            Some((id, close, now))
        };
        let pressure = g.conns.len() * 2 > self.max;
        let report = g.report(now, self);
        drop(g);
        if pressure {
            self.pressure.notify_one();
        }
        if let Some(r) = report {
            tracing::warn!("{r}");
        }
        admitted
    }

    fn under_pressure(&self) -> bool {
        self.lock().conns.len() * 2 > self.max
    }

    /// Records what connection `id` now waits for (None: a query is being answered).
    fn set(&self, id: u64, waiting: Option<(Wait, Instant)>) {
        let mut g = self.lock();
        let Inner { conns, waiting: queue, .. } = &mut *g;
        let Some(entry) = conns.get_mut(&id) else { return };
        if let Some((w, since)) = entry.waiting {
            queue.remove(&(w, since, id));
        }
        if let Some((w, since)) = waiting {
            queue.insert((w, since, id));
        }
        entry.waiting = waiting;
    }

    fn remove(&self, id: u64) {
        self.lock().remove(id);
    }

    /// Closes every connection idle since before `cutoff`.
    fn close_idle_since(&self, cutoff: Instant) {
        loop {
            // In batches, so that accepting is not held up for long.
            let mut g = self.lock();
            let mut closed = 0;
            while let Some(&(Wait::Idle, since, id)) = g.waiting.first() {
                if since >= cutoff || closed == 512 {
                    break;
                }
                g.close(id);
                closed += 1;
            }
            g.counts.swept += closed;
            if closed < 512 {
                return;
            }
        }
    }

    fn close_longest_waiting(&self) {
        let mut g = self.lock();
        if g.close_first() {
            g.counts.evicted += 1;
        }
    }
}

impl Inner {
    /// Forgets connection `id` (it ended or is being closed).
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.conns.remove(&id)?;
        if let Some((w, since)) = entry.waiting {
            self.waiting.remove(&(w, since, id));
        }
        match self.clients.get_mut(&entry.client) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                self.clients.remove(&entry.client);
            }
        }
        Some(entry)
    }

    /// Tells connection `id` to close, and forgets it.
    fn close(&mut self, id: u64) {
        if let Some(entry) = self.remove(id) {
            entry.close.notify_one();
        }
    }

    /// Closes the connection that has waited longest on its client, idle ones first; false
    /// when every connection is busy answering.
    fn close_first(&mut self) -> bool {
        let Some(&(_, _, id)) = self.waiting.first() else { return false };
        self.close(id);
        self.counts.evicted += 1;
        true
    }

    /// A warning about what was refused or closed, at most once per [`REPORT_EVERY`].
    fn report(&mut self, now: Instant, r: &Registry) -> Option<String> {
        let c = &mut self.counts;
        if c.evicted + c.refused_busy + c.refused_client == 0 || c.reported.is_some_and(|t| now.duration_since(t) < REPORT_EVERY) {
            return None;
        }
        let text = format!(
            "tcp under pressure: {} of {} connections open; closed {} waiting connections for new ones and {} idle ones, refused {} new ones (all busy) and {} over the {} per client",
            self.conns.len(),
            r.max,
            c.evicted,
            c.swept,
            c.refused_busy,
            c.refused_client,
            r.per_client
        );
        *c = Counts { reported: Some(now), ..Counts::default() };
        Some(text)
    }
}

/// A connection's place in the registry, given up when its task ends.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// The length of the message at the start of `buf`, if all of it is there.
fn complete(buf: &[u8]) -> Option<usize> {
    let len = u16::from_be_bytes([*buf.first()?, *buf.get(1)?]) as usize;
    (buf.len() >= 2 + len).then_some(len)
}

/// Bytes still missing from the message at the start of `buf` (at least of its length).
fn missing(buf: &[u8]) -> usize {
    match buf {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]) as usize).saturating_sub(rest.len()),
        _ => 2 - buf.len(),
    }
}

async fn connection(
    handler: Arc<Handler>,
    mut stream: TcpStream,
    peer: SocketAddr,
    conn: Registered,
    close: Arc<Notify>,
    admitted: Instant,
    limits: Limits,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    // What arrived and is not answered yet; grown only as bytes arrive, so that a length
    // announcing 64 KiB costs nothing until the bytes come.
    let mut buf: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut waiting = Some((Wait::Idle, admitted));
    loop {
        // Answer every complete message, in order.
        let mut at = 0;
        while let Some(len) = complete(&buf[at..]) {
            if len == 0 {
                return Ok(());
            }
            if waiting.take().is_some() {
                conn.registry.set(conn.id, None);
            }
            let message = &buf[at + 2..at + 2 + len];
            at += 2 + len;
            let responses = match handler.handle(message, kdns_core::STREAM, "tcp", peer) {
                Reply::None => continue,
                Reply::One(r) => vec![r],
                Reply::Many(rs) => rs,
                Reply::Upstream(job) => {
                    // Answers already made go out before waiting on an upstream.
                    if !flush(&mut stream, &mut out, limits.io).await? {
                        return Ok(());
                    }
                    // Boxed: the upstream exchange is a large future, and every idle
                    // connection would carry its space.
                    match Box::pin(handler.finish(job)).await {
                        Some(r) => vec![r],
                        None => continue,
                    }
                }
            };
            for response in responses {
                out.extend_from_slice(&(response.len() as u16).to_be_bytes());
                out.extend_from_slice(&response);
            }
        }
        if !flush(&mut stream, &mut out, limits.io).await? {
            return Ok(()); // the client stopped reading
        }
        let answered = at > 0;
        buf.drain(..at);
        if buf.is_empty() && buf.capacity() > 4096 {
            buf = Vec::new();
        }

        // Wait for more: the next query up to the idle timeout, the rest of a message up to
        // the I/O timeout. Either way the registry may close the connection first.
        let now = Instant::now();
        let want = match (buf.is_empty(), waiting) {
            (true, Some((Wait::Idle, since))) => (Wait::Idle, since),
            (true, _) => (Wait::Idle, now),
            // A message started before anything was answered in this round keeps its start.
            (false, Some((Wait::Message, since))) if !answered => (Wait::Message, since),
            (false, _) => (Wait::Message, now),
        };
        if waiting != Some(want) {
            conn.registry.set(conn.id, Some(want));
            waiting = Some(want);
        }
        let deadline = want.1 + if want.0 == Wait::Idle { limits.idle } else { limits.io };
        loop {
            tokio::select! {
                biased;
                _ = close.notified() => return Ok(()),
                r = stream.readable() => r?,
                _ = tokio::time::sleep_until(deadline.into()) => return Ok(()),
            }
            // Room for what is missing, but never more than what arrived so far: the buffer
            // doubles as bytes come, whatever length was announced.
            buf.reserve(missing(&buf).clamp(512, buf.len().max(512)));
            match stream.try_read_buf(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes `out` and empties it; false when the client takes none of it for `io`.
async fn flush(stream: &mut TcpStream, out: &mut Vec<u8>, io: Duration) -> std::io::Result<bool> {
    let mut sent = 0;
    while sent < out.len() {
        match timeout(io, stream.write(&out[sent..])).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => sent += n,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(false),
        }
    }
    out.clear();
    if out.capacity() > 64 * 1024 {
        *out = Vec::new();
    }
    Ok(true)
}

/// The connections that fit in this process's open-file limit, after raising its soft limit to
/// the hard one (kdns uses epoll, never select, so a high limit costs nothing), leaving a
/// quarter of it (at least 256) for everything else.
fn fd_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        #[cfg(unix)]
        {
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit and setrlimit only read and write the struct given.
            if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
                return usize::MAX;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
                if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                    tracing::debug!(from = lim.rlim_cur, to = lim.rlim_max, "raised the open-file limit");
                    lim.rlim_cur = lim.rlim_max;
                }
            }
            if lim.rlim_cur == libc::RLIM_INFINITY {
                return usize::MAX;
            }
            let n = usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX);
            (n - (n / 4).max(256).min(n / 2)).max(1)
        }
        #[cfg(not(unix))]
        usize::MAX
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_client_gets_its_share_and_no_more() {
        let r = Registry::new(10, 3);
        let ids: Vec<u64> = (0..3).map(|_| r.admit(ip(1)).unwrap().0).collect();
        assert!(r.admit(ip(1)).is_none());
        assert!(r.admit(ip(2)).is_some());
        r.remove(ids[0]);
        assert!(r.admit(ip(1)).is_some(), "a closed connection gives its slot back");
    }

    #[test]
    fn a_full_registry_closes_the_longest_idle_then_the_longest_mid_message() {
        let r = Registry::new(3, 3);
        let a = r.admit(ip(1)).unwrap();
        let b = r.admit(ip(2)).unwrap();
        let c = r.admit(ip(3)).unwrap();
        r.set(a.0, Some((Wait::Message, Instant::now())));
        r.set(b.0, None); // busy answering
        // c is idle: it goes first, though a has waited longer.
        let d = r.admit(ip(4)).unwrap();
        assert!(futures::FutureExt::now_or_never(c.1.notified()).is_some(), "c told to close");
        assert!(futures::FutureExt::now_or_never(a.1.notified()).is_none());
        r.set(d.0, None);
        // Then a, waiting on the rest of a message; b is busy and stays.
        let e = r.admit(ip(5)).unwrap();
        assert!(futures::FutureExt::now_or_never(a.1.notified()).is_some(), "a told to close");
        r.set(e.0, None);
        assert!(r.admit(ip(6)).is_none(), "everyone busy: refused");
        assert!(futures::FutureExt::now_or_never(b.1.notified()).is_none());
        assert_eq!(r.lock().conns.len(), 3);
        assert!(r.lock().clients.len() == 3 && !r.lock().clients.contains_key(&ip(1)));
    }

    #[test]
    fn sweeping_closes_only_connections_idle_before_the_cutoff() {
        let r = Registry::new(1000, 1000);
        let old: Vec<_> = (0..600).map(|i| r.admit(ip(i as u8)).unwrap()).collect();
        let cutoff = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        let new = r.admit(ip(1)).unwrap();
        r.close_idle_since(cutoff);
        assert!(futures::FutureExt::now_or_never(new.1.notified()).is_none());
        assert!(old.iter().all(|c| futures::FutureExt::now_or_never(c.1.notified()).is_some()));
        assert_eq!(r.lock().conns.len(), 1);
    }

    #[test]
    fn message_lengths() {
        assert_eq!(complete(&[0]), None);
        assert_eq!(complete(&[0, 2, 1]), None);
        assert_eq!(complete(&[0, 2, 1, 2, 9]), Some(2));
        assert_eq!(missing(&[]), 2);
        assert_eq!(missing(&[0]), 1);
        assert_eq!(missing(&[0xff, 0xff, 1]), 65534);
        assert_eq!(missing(&[0, 2, 1, 2, 3]), 0);
    }
}
