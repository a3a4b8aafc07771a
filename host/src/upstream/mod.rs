//! `--upstream`: resolvers for names outside the served zones, for ExternalName targets
//! outside them, and for `fallthrough` zones, so kdns can be a pod's only resolver.
//!
//! Bounded, so that a slow, dead or looping upstream cannot take the cluster zones down with it:
//! - answers are cached ([`cache`], CoreDNS `cache` semantics), and a question already on its
//!   way upstream is not sent again: later askers wait for the same answer;
//! - at most `max_concurrent` queries wait on upstreams; beyond that kdns answers REFUSED at
//!   once, as CoreDNS's `forward` does with `max_concurrent`;
//! - a forwarding loop (an upstream that sends kdns's own queries back to it) is found at start
//!   by a probe query for a random name, as CoreDNS's `loop` plugin does; forwarding is then
//!   turned off (and said so) instead of multiplying every query;
//! - a failing upstream is skipped for a while and reported once, then every 30 s while it
//!   fails, not once per query.
//!
//! UDP first, TCP when the answer is truncated.

pub mod cache;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::time::timeout;

use cache::{Cache, Key};

/// How long one try may take.
const TRY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a failed upstream is skipped.
const HOLD_DOWN: Duration = Duration::from_secs(10);
/// How often a failing upstream is reported again while it keeps failing.
const REPORT_EVERY: Duration = Duration::from_secs(30);
/// The largest UDP answer read; a fuller datagram may have been cut, so it is asked over TCP.
const UDP_ANSWER_BUFFER: usize = 4096;
/// CoreDNS `forward`'s advice for `max_concurrent` (each waiting query costs a few KiB here).
pub const DEFAULT_MAX_CONCURRENT: usize = 1000;
/// kubeadm's Corefile has `cache 30`.
pub const DEFAULT_CACHE_TTL: u32 = 30;

/// How forwarding is bounded (`--upstream-*` flags).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_concurrent: usize,
    /// Longest time an answer is cached; 0 = no cache.
    pub cache_ttl: u32,
    pub cache_capacity: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_concurrent: DEFAULT_MAX_CONCURRENT, cache_ttl: DEFAULT_CACHE_TTL, cache_capacity: cache::DEFAULT_CAPACITY }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToLabels {
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToRcodeLabels {
    pub rcode: String,
    pub to: String,
}

/// CoreDNS cache's labels: `type` is `success` or `denial`; `zones` what the cache serves
/// (here `.`: answers of upstreams).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub server: String,
    pub r#type: &'static str,
    pub zones: &'static str,
    pub view: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheZoneLabels {
    pub server: String,
    pub zones: &'static str,
    pub view: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Counters exported on /metrics (clones of the registry's), in CoreDNS's forward and cache
/// plugins' names and labels.
#[derive(Clone)]
pub struct Counters {
    /// Queries sent to an upstream (each try).
    pub requests: Family<ToLabels, Counter>,
    pub responses: Family<ToRcodeLabels, Counter>,
    pub duration: Histograms<ToRcodeLabels>,
    /// Tries that failed (no answer, refused, timed out).
    pub failures: Family<ToLabels, Counter>,
    /// Queries for which every upstream failed.
    pub broken: Counter,
    /// Queries answered REFUSED because `max_concurrent` were already waiting.
    pub rejects: Counter,
    /// Queries that waited for the same question already sent upstream.
    pub coalesced: Counter,
    /// 1 once a forwarding loop was found.
    pub loop_detected: Gauge,
    pub cache_hits: Family<CacheLabels, Counter>,
    pub cache_misses: Family<CacheZoneLabels, Counter>,
    pub cache_requests: Family<CacheZoneLabels, Counter>,
    pub cache_entries: Family<CacheLabels, Gauge>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests: Family::default(),
            responses: Family::default(),
            duration: Family::new_with_constructor(crate::metrics::time_buckets),
            failures: Family::default(),
            broken: Counter::default(),
            rejects: Counter::default(),
            coalesced: Counter::default(),
            loop_detected: Gauge::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            cache_requests: Family::default(),
            cache_entries: Family::default(),
        }
    }
}

/// Why no upstream answer came.
#[derive(Debug, Clone)]
pub enum Failure {
    /// `max_concurrent` queries are already waiting: REFUSED.
    Busy,
    /// Forwarding is off since a loop was found: SERVFAIL.
    Loop,
    /// Every upstream failed or timed out: SERVFAIL.
    Failed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Busy => write!(f, "too many queries waiting on upstreams"),
            Failure::Loop => write!(f, "forwarding is off: a forwarding loop was detected"),
            Failure::Failed(e) => write!(f, "{e}"),
        }
    }
}

type Outcome = Result<Arc<Vec<u8>>, Failure>;

pub struct Upstreams {
    servers: Vec<Server>,
    started: Instant,
    cache: Cache,
    /// Questions on their way upstream, with whoever else waits for their answer.
    in_flight: Mutex<HashMap<Key, Vec<oneshot::Sender<Outcome>>>>,
    waiting: AtomicUsize,
    max_concurrent: usize,
    /// The random name of the loop probe, once sent.
    probe: OnceLock<String>,
    looped: AtomicBool,
    counters: Counters,
    /// The `server` label of the cache metrics.
    server: String,
}

struct Server {
    addr: SocketAddr,
    /// Milliseconds since `started` until which this server is skipped (0 = healthy).
    down_until: AtomicU64,
    /// Failures since it last answered; non-zero means it has been reported as failing.
    failures: AtomicU64,
    /// Milliseconds since `started` of the last report about it.
    reported_at: AtomicU64,
}

/// Parses `IP` or `IP:PORT` (port 53 by default; `[v6]:port` for IPv6 with a port).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)).map_err(|_| format!("{s:?} is not IP, IP:PORT or a resolv.conf path"))
}

/// The upstream addresses of `--upstream` values: each an address, or (starting with `/`) a
/// resolv.conf whose `nameserver` lines are used, as CoreDNS's `forward . /etc/resolv.conf`.
pub fn resolve_args(values: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for v in values {
        if v.starts_with('/') {
            let text = std::fs::read_to_string(v).with_context(|| format!("--upstream {v}"))?;
            let found: Vec<SocketAddr> = text
                .lines()
                .filter_map(|l| l.split_whitespace().collect::<Vec<_>>().get(..2).map(|w| (w[0], w[1])))
                .filter(|(k, _)| *k == "nameserver")
                .filter_map(|(_, a)| parse_addr(a.split('%').next().unwrap_or(a)).ok())
                .collect();
            if found.is_empty() {
                bail!("--upstream {v}: no nameserver lines");
            }
            out.extend(found);
        } else {
            out.push(parse_addr(v).map_err(|e| anyhow::anyhow!("--upstream {e}"))?);
        }
    }
    Ok(out)
}

/// Removes a leader's question from the in-flight table however its work ends, handing its
/// outcome (or, if it was dropped, a failure) to everyone who waited for it.
struct Lead<'a> {
    upstreams: &'a Upstreams,
    key: Option<Key>,
    outcome: Option<Outcome>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.upstreams.waiting.fetch_sub(1, Ordering::Relaxed);
        let Some(key) = self.key.take() else { return };
        let waiters = self.upstreams.in_flight.lock().ok().and_then(|mut m| m.remove(&key)).unwrap_or_default();
        let outcome = self.outcome.take().unwrap_or_else(|| Err(Failure::Failed("the query was abandoned".into())));
        for w in waiters {
            let _ = w.send(outcome.clone());
        }
    }
}

impl Upstreams {
    /// `server`: the `server` label of the cache metrics (`dns://ADDR:PORT`).
    pub fn new(addrs: Vec<SocketAddr>, limits: Limits, counters: Counters, server: String) -> Upstreams {
        Upstreams {
            servers: addrs.into_iter().map(|addr| Server { addr, down_until: AtomicU64::new(0), failures: AtomicU64::new(0), reported_at: AtomicU64::new(0) }).collect(),
            started: Instant::now(),
            cache: Cache::new(limits.cache_capacity, limits.cache_ttl),
            in_flight: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
            max_concurrent: limits.max_concurrent.max(1),
            probe: OnceLock::new(),
            looped: AtomicBool::new(false),
            counters,
            server,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The answer to `query` from the cache, from the same question already on its way, or from
    /// the upstreams (healthy ones first). It carries the query's ID and question.
    pub async fn exchange(&self, query: &[u8]) -> Result<Vec<u8>, Failure> {
        if self.looped.load(Ordering::Relaxed) {
            return Err(Failure::Loop);
        }
        let key = Message::from_vec(query).ok().as_ref().and_then(Key::of);
        if query.len() < 12 {
            return Err(Failure::Failed("query shorter than a header".into()));
        }
        let id = u16::from_be_bytes([query[0], query[1]]);
        if let Some(key) = key.as_ref().filter(|_| self.cache.enabled()) {
            let zone = CacheZoneLabels { server: self.server.clone(), zones: ".", view: "" };
            self.counters.cache_requests.get_or_create(&zone).inc();
            if let Some((hit, kind)) = self.cache.get(key, id, Instant::now()) {
                self.counters.cache_hits.get_or_create(&self.cache_labels(kind)).inc();
                return Ok(as_reply_to(hit, query));
            }
            self.counters.cache_misses.get_or_create(&zone).inc();
        }
        // Lead, or wait for the leader of the same question; both count against the cap.
        let waiter = {
            let mut in_flight = self.in_flight.lock().map_err(|_| Failure::Failed("internal: lock poisoned".into()))?;
            if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.max_concurrent {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                self.counters.rejects.inc();
                return Err(Failure::Busy);
            }
            match key.as_ref().and_then(|k| in_flight.get_mut(k)) {
                Some(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Some(rx)
                }
                None => {
                    if let Some(k) = &key {
                        in_flight.insert(k.clone(), Vec::new());
                    }
                    None
                }
            }
        };
        if let Some(rx) = waiter {
            self.counters.coalesced.inc();
            let outcome = rx.await.unwrap_or_else(|_| Err(Failure::Failed("the query was abandoned".into())));
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return outcome.map(|a| as_reply_to(a.as_ref().clone(), query));
        }
        let mut lead = Lead { upstreams: self, key, outcome: None };
        let outcome = self.ask_servers(query).await.map(Arc::new);
        if let (Ok(answer), Some(key)) = (&outcome, &lead.key) {
            self.cache.put(key.clone(), answer, Instant::now());
            let (success, denial) = self.cache.counts();
            self.counters.cache_entries.get_or_create(&self.cache_labels(cache::Kind::Success)).set(success as i64);
            self.counters.cache_entries.get_or_create(&self.cache_labels(cache::Kind::Denial)).set(denial as i64);
        }
        lead.outcome = Some(outcome.clone());
        drop(lead);
        outcome.map(|a| a.as_ref().clone())
    }

    fn cache_labels(&self, kind: cache::Kind) -> CacheLabels {
        CacheLabels { server: self.server.clone(), r#type: kind.label(), zones: ".", view: "" }
    }

    async fn ask_servers(&self, query: &[u8]) -> Result<Vec<u8>, Failure> {
        let now = self.now_ms();
        let (healthy, down): (Vec<&Server>, Vec<&Server>) = self.servers.iter().partition(|s| s.down_until.load(Ordering::Relaxed) <= now);
        let mut last = None;
        for server in healthy.into_iter().chain(down) {
            let to = ToLabels { to: server.addr.to_string() };
            self.counters.requests.get_or_create(&to).inc();
            let started = Instant::now();
            match exchange_one(server.addr, query).await {
                Ok(answer) => {
                    let rcode = crate::dig::rcode_name(ResponseCode::from_low(answer[3] & 0x0f));
                    let labels = ToRcodeLabels { rcode, to: to.to };
                    self.counters.responses.get_or_create(&labels).inc();
                    self.counters.duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
                    server.down_until.store(0, Ordering::Relaxed);
                    let failures = server.failures.swap(0, Ordering::Relaxed);
                    if failures > 0 {
                        tracing::info!(upstream = %server.addr, failures, "upstream answers again");
                    }
                    return Ok(answer);
                }
                Err(e) => {
                    self.counters.failures.get_or_create(&to).inc();
                    let now = self.now_ms();
                    server.down_until.store(now + HOLD_DOWN.as_millis() as u64, Ordering::Relaxed);
                    self.report_failure(server, &e, now);
                    last = Some(e);
                }
            }
        }
        self.counters.broken.inc();
        Err(Failure::Failed(last.map_or_else(|| "no upstream configured".into(), |e| format!("{e:#}"))))
    }

    /// One line when an upstream starts failing, then one every [`REPORT_EVERY`] while it does.
    fn report_failure(&self, server: &Server, e: &anyhow::Error, now: u64) {
        let failures = server.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let last = server.reported_at.load(Ordering::Relaxed);
        let due = failures == 1 || now.saturating_sub(last) >= REPORT_EVERY.as_millis() as u64;
        if due && server.reported_at.compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            if failures == 1 {
                tracing::warn!(upstream = %server.addr, error = %format!("{e:#}"), "upstream failing; skipped for 10 s at a time, trying the others (reported every 30 s while it lasts)");
            } else {
                tracing::warn!(upstream = %server.addr, failures, error = %format!("{e:#}"), "upstream still failing");
            }
        }
    }

    /// Sends the loop probe (as CoreDNS's `loop` plugin does): a query for a random name that
    /// only comes back to kdns if an upstream forwards to kdns. See [`Upstreams::is_probe`].
    pub async fn probe_for_loop(&self) {
        let name = format!("{:016x}.{:016x}.", crate::random_u64(), crate::random_u64());
        let Ok(qname) = Name::from_ascii(&name) else { return };
        if self.probe.set(name).is_err() {
            return;
        }
        let mut q = Message::new(crate::random_u64() as u16, MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(qname, RecordType::HINFO));
        let Ok(bytes) = q.to_vec() else { return };
        // The answer does not matter (NXDOMAIN from a real resolver); only whether it came back.
        let _ = self.ask_servers(&bytes).await;
    }

    /// Whether `qname` (lowercase, trailing dot) is the loop probe coming back: then the
    /// upstreams send kdns's queries to kdns, and forwarding is turned off.
    pub fn is_probe(&self, qname: &str) -> bool {
        if self.probe.get().is_none_or(|p| p != qname) {
            return false;
        }
        if !self.looped.swap(true, Ordering::Relaxed) {
            self.counters.loop_detected.set(1);
            let upstreams: Vec<String> = self.servers.iter().map(|s| s.addr.to_string()).collect();
            tracing::error!(
                upstreams = %upstreams.join(","), probe = qname,
                "forwarding loop detected: a query kdns sent upstream came back to kdns; forwarding is off (names outside the zones get SERVFAIL) until restart. Point --upstream (or the resolv.conf it reads) at a resolver that does not forward to kdns"
            );
        }
        true
    }

    /// Follows the CNAME at the end of `response`'s answer when its target is outside the
    /// served zones: asks the upstreams for the target and appends their answer records.
    /// Returns `None` when there is nothing to follow or the upstreams fail.
    pub async fn chase_cname(&self, response: &[u8], in_zone: impl Fn(&Name) -> bool, max_size: usize) -> Option<Vec<u8>> {
        let mut m = Message::from_vec(response).ok()?;
        let qtype = m.queries.first()?.query_type();
        if !matches!(qtype, RecordType::A | RecordType::AAAA) || m.response_code != ResponseCode::NoError {
            return None;
        }
        let RData::CNAME(target) = &m.answers.last()?.data else { return None };
        let target = target.0.clone();
        if in_zone(&target) {
            return None;
        }
        let mut q = Message::new(m.id, MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(target, qtype));
        let answer = Message::from_vec(&self.exchange(&q.to_vec().ok()?).await.ok()?).ok()?;
        if answer.response_code != ResponseCode::NoError || answer.answers.is_empty() {
            return None;
        }
        m.answers.extend(answer.answers);
        m.metadata.authoritative = false;
        // A truncated upstream answer (its TCP retry failed) stays truncated: the client may
        // ask over TCP itself, as CoreDNS passes the TC bit on.
        m.metadata.truncation |= answer.metadata.truncation;
        let bytes = m.to_vec().ok()?;
        (bytes.len() <= max_size).then_some(bytes)
    }
}

/// `answer` (to the same question, maybe asked by someone else) as the reply to `query`: its ID,
/// and its question written as the query wrote it (resolvers that randomise case compare).
fn as_reply_to(mut answer: Vec<u8>, query: &[u8]) -> Vec<u8> {
    if answer.len() < 12 || query.len() < 12 {
        return answer;
    }
    answer[..2].copy_from_slice(&query[..2]);
    let qname_end = query[12..].iter().position(|&b| b == 0).map(|i| 12 + i + 1);
    if let Some(end) = qname_end
        && answer.len() >= end
        && answer[12..end].eq_ignore_ascii_case(&query[12..end])
    {
        answer[12..end].copy_from_slice(&query[12..end]);
    }
    answer
}


async fn exchange_one(addr: SocketAddr, query: &[u8]) -> anyhow::Result<Vec<u8>> {
    let id = query.get(..2).context("query shorter than a header")?;
    let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(addr).await?;
    socket.send(query).await?;
    // Read one byte more than is kept: a datagram that fills the buffer may have been cut.
    let mut buf = vec![0u8; UDP_ANSWER_BUFFER + 1];
    let deadline = Instant::now() + TRY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = timeout(left, socket.recv(&mut buf)).await.context("no answer over UDP")??;
        let answer = &buf[..n];
        // Ignore stray datagrams that are not the answer to this query.
        if n < 12 || &answer[..2] != id || answer[2] & 0x80 == 0 {
            continue;
        }
        if n > UDP_ANSWER_BUFFER {
            return exchange_tcp(addr, query).await; // maybe cut: ask again over TCP
        }
        if answer[2] & 0x02 != 0 {
            // Truncated: ask again over TCP; if TCP fails, the truncated answer is still an
            // answer (its TC bit tells the client to try TCP itself), better than SERVFAIL.
            let truncated = answer.to_vec();
            return Ok(exchange_tcp(addr, query).await.unwrap_or(truncated));
        }
        return Ok(answer.to_vec());
    }
}

async fn exchange_tcp(addr: SocketAddr, query: &[u8]) -> anyhow::Result<Vec<u8>> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        stream.write_all(&framed).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut answer).await?;
        if answer.len() < 12 || answer[..2] != query[..2] {
            bail!("TCP answer does not match the query");
        }
        Ok(answer)
    };
    timeout(TRY_TIMEOUT, work).await.context("no answer over TCP")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_values() {
        assert_eq!(parse_addr("10.0.0.1").unwrap(), "10.0.0.1:53".parse().unwrap());
        assert_eq!(parse_addr("10.0.0.1:5353").unwrap(), "10.0.0.1:5353".parse().unwrap());
        assert_eq!(parse_addr("[fd00::1]:54").unwrap(), "[fd00::1]:54".parse().unwrap());
        assert!(parse_addr("resolver.example").is_err());
        let file = std::env::temp_dir().join(format!("kdns-resolv-{}.conf", std::process::id()));
        std::fs::write(&file, "# comment\nsearch default.svc.cluster.local\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\noptions ndots:5\n").unwrap();
        let got = resolve_args(&[file.display().to_string(), "10.0.0.9".into()]).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(got, ["10.0.0.1:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap(), "10.0.0.9:53".parse().unwrap()]);
        assert!(resolve_args(&["/nonexistent/resolv.conf".into()]).is_err());
    }
}
