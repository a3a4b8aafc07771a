//! `--upstream`: resolvers for names outside the served zones, for ExternalName targets
//! outside them, and for `fallthrough` zones, so kdns can be a pod's only resolver.
//! UDP first, TCP when the answer is truncated; a failing upstream is skipped for a while.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// How long one try may take.
const TRY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a failed upstream is skipped.
const HOLD_DOWN: Duration = Duration::from_secs(10);

pub struct Upstreams {
    servers: Vec<Server>,
    started: Instant,
}

struct Server {
    addr: SocketAddr,
    /// Milliseconds since `started` until which this server is skipped (0 = healthy).
    down_until: AtomicU64,
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

impl Upstreams {
    pub fn new(addrs: Vec<SocketAddr>) -> Upstreams {
        Upstreams { servers: addrs.into_iter().map(|addr| Server { addr, down_until: AtomicU64::new(0) }).collect(), started: Instant::now() }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Sends `query` to the healthy upstreams in order (then the others), returning the first
    /// answer. The answer carries the query's ID.
    pub async fn exchange(&self, query: &[u8]) -> anyhow::Result<Vec<u8>> {
        let now = self.now_ms();
        let (healthy, down): (Vec<&Server>, Vec<&Server>) = self.servers.iter().partition(|s| s.down_until.load(Ordering::Relaxed) <= now);
        let mut last = None;
        for server in healthy.into_iter().chain(down) {
            match exchange_one(server.addr, query).await {
                Ok(answer) => {
                    server.down_until.store(0, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(e) => {
                    tracing::warn!(upstream = %server.addr, error = %format!("{e:#}"), "upstream failed; trying the next");
                    server.down_until.store(self.now_ms() + HOLD_DOWN.as_millis() as u64, Ordering::Relaxed);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no upstream configured")))
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
        let bytes = m.to_vec().ok()?;
        (bytes.len() <= max_size).then_some(bytes)
    }
}

async fn exchange_one(addr: SocketAddr, query: &[u8]) -> anyhow::Result<Vec<u8>> {
    let id = query.get(..2).context("query shorter than a header")?;
    let bind: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(addr).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    let deadline = Instant::now() + TRY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = timeout(left, socket.recv(&mut buf)).await.context("no answer over UDP")??;
        let answer = &buf[..n];
        // Ignore stray datagrams that are not the answer to this query.
        if n < 12 || &answer[..2] != id || answer[2] & 0x80 == 0 {
            continue;
        }
        if answer[2] & 0x02 != 0 {
            return exchange_tcp(addr, query).await; // truncated: ask again over TCP
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
