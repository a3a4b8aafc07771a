//! DNS over TCP under pressure (RFC 7766 §6.2.3, issue 22), through the real binary: thousands
//! of idle or slow-loris connections must not lock out a new client, one source address gets
//! only its share of connections, and a half-sent message or an unread answer holds its
//! connection for a short I/O timeout, not the idle timeout.
//!
//! The tests here open thousands of sockets and measure latencies, so they run one at a time.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kdns_tests::server::Kdns;

/// What kdns serves by default per client (`--tcp-max-connections-per-client`).
const PER_CLIENT: usize = 256;
/// A fresh client must be answered within this, whatever the other connections do.
const FRESH_LIMIT: Duration = Duration::from_millis(100);
const NAME: &str = "catalog.shop.svc.cluster.local.";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn examples() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples").display().to_string()
}

fn start(extra: &[&str]) -> Kdns {
    raise_open_files(12_000);
    let mut args = vec!["--manifests".to_string(), examples()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Kdns::start(&args)
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (kdns, spawned after, inherits
/// it) and checks that `need` descriptors fit. Declared here, not through the libc crate: std
/// links the C library anyway.
fn raise_open_files(need: u64) {
    #[repr(C)]
    struct Rlimit {
        cur: u64,
        max: u64,
    }
    unsafe extern "C" {
        fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
        fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7;
    let mut lim = Rlimit { cur: 0, max: 0 };
    assert_eq!(unsafe { getrlimit(RLIMIT_NOFILE, &mut lim) }, 0, "getrlimit");
    if lim.cur < lim.max {
        let raised = Rlimit { cur: lim.max, max: lim.max };
        if unsafe { setrlimit(RLIMIT_NOFILE, &raised) } == 0 {
            lim.cur = lim.max;
        }
    }
    assert!(lim.cur >= need, "these tests need {need} open files; the hard limit is {} (raise it: ulimit -Hn)", lim.max);
}

fn query(id: u16) -> Vec<u8> {
    let q = kdns_tests::vectors::query_message(id, NAME, "A", None);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    framed
}

/// Reads one framed response to query `id` and checks it answers it.
fn read_answer(s: &mut TcpStream, id: u16) -> std::io::Result<()> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)?;
    let ok = buf.len() >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id && buf[2] & 0x80 != 0 && buf[3] & 0x0f == 0 && u16::from_be_bytes([buf[6], buf[7]]) >= 1;
    if ok { Ok(()) } else { Err(std::io::Error::other(format!("not an answer to {id}: {buf:?}"))) }
}

/// A TCP connection to `to` from the local address `from` (any of 127/8 works on Linux).
fn connect_from(rt: &tokio::runtime::Runtime, from: IpAddr, to: SocketAddr, recv_buffer: Option<u32>) -> std::io::Result<TcpStream> {
    let s = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4()?;
        if let Some(size) = recv_buffer {
            s.set_recv_buffer_size(size)?;
        }
        s.bind(SocketAddr::new(from, 0))?;
        s.connect(to).await?.into_std()
    })?;
    s.set_nonblocking(false)?;
    Ok(s)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// `n` connections spread over 100 source addresses (127.0.1.1-100), each sent `first` (if
/// anything) and then left alone. Connections refused on the way are not kept.
fn open_many(rt: &tokio::runtime::Runtime, to: SocketAddr, n: usize, first: &[u8]) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + (i % 100) as u8));
        let Ok(mut s) = connect_from(rt, from, to, None) else { continue };
        if !first.is_empty() && s.write_all(first).is_err() {
            continue;
        }
        conns.push(s);
    }
    conns
}

/// Whether the server still holds `s` open (no EOF or reset waiting to be read).
fn is_open(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let open = match s.peek(&mut b) {
        Ok(n) => n > 0,
        Err(e) => e.kind() == ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    open
}

/// How long until the server holds at most `most` of `conns` open, or, if it still holds more
/// after `limit`, how many.
fn open_at_most_within(conns: &[TcpStream], most: usize, limit: Duration) -> Result<Duration, usize> {
    let started = Instant::now();
    loop {
        let open = conns.iter().filter(|s| is_open(s)).count();
        if open <= most {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(open);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A new client from `from`: connect, ask, read the answer. The time it took, or what failed.
fn fresh_client(rt: &tokio::runtime::Runtime, from: IpAddr, to: SocketAddr, id: u16) -> Result<Duration, String> {
    let started = Instant::now();
    let mut s = connect_from(rt, from, to, None).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
    s.write_all(&query(id)).map_err(|e| format!("write: {e}"))?;
    read_answer(&mut s, id).map_err(|e| format!("no answer after {:?}: {e}", started.elapsed()))?;
    Ok(started.elapsed())
}

/// Five fresh clients one after another; prints and returns their latencies (min, median, max).
fn fresh_clients(rt: &tokio::runtime::Runtime, to: SocketAddr, what: &str) -> Vec<Duration> {
    let mut times = Vec::new();
    for id in 0..5u16 {
        match fresh_client(rt, IpAddr::V4(Ipv4Addr::LOCALHOST), to, 0x1000 + id) {
            Ok(t) => times.push(t),
            Err(e) => panic!("{what}: a fresh client was not answered: {e}"),
        }
    }
    let mut sorted = times.clone();
    sorted.sort();
    eprintln!("{what}: fresh client answered in min {:?} / median {:?} / max {:?}", sorted[0], sorted[2], sorted[4]);
    sorted
}

/// Before: with 1,024 connections open kdns closed every new one, so a fresh client got no
/// answer until an idle connection timed out 10 s later; idle connections were kept 10 s
/// whatever the pressure. Now a full server closes its oldest idle connection for the new one,
/// and while more than half its budget is open, idle connections are closed after 1 s (down to
/// half the budget; the rest keep the idle timeout).
#[test]
fn five_thousand_idle_connections_leave_room_for_a_fresh_client() {
    let _one = one_at_a_time();
    let rt = runtime();
    // 1,024: full, the oldest idle connections make room; 8,000: within the budget, over half.
    for budget in ["1024", "8000"] {
        let server = start(&["--tcp-max-connections", budget]);
        let started = Instant::now();
        let conns = open_many(&rt, server.tcp, 5000, &[]);
        eprintln!("budget {budget}: {} idle connections opened in {:?}", conns.len(), started.elapsed());
        std::thread::sleep(Duration::from_millis(200)); // kdns accepts what is queued
        let times = fresh_clients(&rt, server.tcp, &format!("budget {budget}, 5,000 idle"));
        assert!(times[4] < FRESH_LIMIT, "budget {budget}: a fresh client took {:?}", times[4]);
        let half = budget.parse::<usize>().unwrap() / 2;
        match open_at_most_within(&conns, half, Duration::from_secs(3)) {
            Ok(t) => eprintln!("budget {budget}: idle connections down to half the budget {t:?} after the fresh clients"),
            Err(open) => panic!("budget {budget}: {open} idle connections still open 3 s on, over half the budget"),
        }
        drop(conns);
    }
}

/// Before: 5,000 connections each sent a length and one byte held kdns's 1,024 slots for the
/// whole idle timeout (10 s) and every new client was refused meanwhile. Now a message must
/// complete within the I/O timeout (1 s), and a full server closes the longest-waiting one.
#[test]
fn five_thousand_slow_loris_connections_leave_room_for_a_fresh_client() {
    let _one = one_at_a_time();
    let rt = runtime();
    let q = query(7);
    let half = &q[..3]; // the length and one byte of the message
    for budget in ["1024", "8000"] {
        let server = start(&["--tcp-max-connections", budget]);
        let started = Instant::now();
        let conns = open_many(&rt, server.tcp, 5000, half);
        eprintln!("budget {budget}: {} slow-loris connections opened in {:?}", conns.len(), started.elapsed());
        std::thread::sleep(Duration::from_millis(200));
        let times = fresh_clients(&rt, server.tcp, &format!("budget {budget}, 5,000 slow-loris"));
        assert!(times[4] < FRESH_LIMIT, "budget {budget}: a fresh client took {:?}", times[4]);
        match open_at_most_within(&conns, 0, Duration::from_secs(3)) {
            Ok(t) => eprintln!("budget {budget}: every slow-loris connection closed {t:?} after the fresh clients"),
            Err(open) => panic!("budget {budget}: {open} slow-loris connections still open 4 s on"),
        }
        drop(conns);
    }
}

/// Before: one source address could take all 1,024 connections. Now it gets 256 (the
/// default `--tcp-max-connections-per-client`), the excess is closed at once, and another
/// address is still answered; a closed connection gives its slot back.
#[test]
fn one_source_gets_only_its_share_of_connections() {
    let _one = one_at_a_time();
    let rt = runtime();
    let server = start(&[]);
    let greedy = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut answered = Vec::new();
    let mut refused = 0;
    for i in 0..(PER_CLIENT + 44) {
        let id = i as u16;
        let Ok(mut s) = connect_from(&rt, greedy, server.tcp, None) else {
            refused += 1;
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        match s.write_all(&query(id)).and_then(|_| read_answer(&mut s, id)) {
            Ok(()) => answered.push(s),
            Err(_) => refused += 1,
        }
    }
    eprintln!("one source, {} connections: {} answered, {refused} closed", PER_CLIENT + 44, answered.len());
    assert_eq!(answered.len(), PER_CLIENT, "one source address gets {PER_CLIENT} connections");
    assert!(answered.iter().all(is_open), "the connections within the share stay open");

    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let t = fresh_client(&rt, other, server.tcp, 0x2000).unwrap_or_else(|e| panic!("127.0.0.2 not answered: {e}"));
    eprintln!("another source answered in {t:?}");
    assert!(t < FRESH_LIMIT, "another source took {t:?}");

    // Slots come back as the greedy source closes connections.
    answered.truncate(PER_CLIENT - 10);
    std::thread::sleep(Duration::from_millis(100));
    let t = fresh_client(&rt, greedy, server.tcp, 0x2001).unwrap_or_else(|e| panic!("a freed slot was not reused: {e}"));
    assert!(t < FRESH_LIMIT, "a freed slot took {t:?}");
    drop(answered);
}

/// Before: a message that stopped half-way held its connection for the idle timeout (10 s).
/// Now it must complete within the I/O timeout (1 s); a slow but steady one is still answered.
#[test]
fn a_half_sent_message_is_dropped_after_the_io_timeout() {
    let _one = one_at_a_time();
    let rt = runtime();
    let server = start(&[]);
    let q = query(9);
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);

    let mut s = connect_from(&rt, local, server.tcp, None).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
    s.write_all(&q[..q.len() / 2]).unwrap();
    let started = Instant::now();
    let mut b = [0u8; 1];
    let r = s.read(&mut b);
    let took = started.elapsed();
    eprintln!("a half-sent message's connection was closed after {took:?} ({r:?})");
    assert!(matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset), "closed, not answered: {r:?}");
    assert!(took > Duration::from_millis(700) && took < Duration::from_millis(1600), "closed after {took:?}, not the 1 s I/O timeout");

    // A message sent in pieces within the I/O timeout is answered.
    let mut s = connect_from(&rt, local, server.tcp, None).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.set_nodelay(true).unwrap();
    for chunk in q.chunks(8) {
        s.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
    read_answer(&mut s, 9).expect("a message sent in pieces is answered");
    // And the connection then waits for the next query for the idle timeout, not 1 s.
    std::thread::sleep(Duration::from_millis(1500));
    s.write_all(&query(10)).unwrap();
    read_answer(&mut s, 10).expect("an idle connection is kept for the idle timeout");
}

/// Before: a client that sent queries but never read the answers held its connection for the
/// idle timeout (10 s) once kdns's writes blocked. Now the write must progress within the I/O
/// timeout (1 s).
#[test]
fn a_client_not_reading_its_answers_is_dropped_after_the_write_timeout() {
    let _one = one_at_a_time();
    let rt = runtime();
    let server = start(&[]);
    let mut s = connect_from(&rt, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)), server.tcp, Some(4096)).unwrap();
    s.set_nonblocking(true).unwrap();
    let batch: Vec<u8> = (0..64u16).flat_map(query).collect();
    let mut at = 0;
    let mut stalled: Option<Instant> = None;
    let started = Instant::now();
    let took = loop {
        assert!(started.elapsed() < Duration::from_secs(20), "kdns kept a client that does not read for 20 s");
        match s.write(&batch[at..]) {
            Ok(n) => {
                at = (at + n) % batch.len();
                stalled = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                stalled.get_or_insert_with(Instant::now);
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break (stalled.map(|t| t.elapsed()), e),
        }
    };
    eprintln!("a client not reading was dropped {:?} after its writes stalled ({})", took.0, took.1);
    let stalled_for = took.0.expect("writes stalled before the connection was closed");
    assert!(stalled_for < Duration::from_secs(3), "dropped {stalled_for:?} after stalling, not within the 1 s write timeout");
}
