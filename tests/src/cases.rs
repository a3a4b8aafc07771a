//! Asking a server one conformance case: with dig over UDP or TCP, or over a raw socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use crate::server::dig;
use crate::vectors::{Case, Observed};

/// Asks one case with dig over UDP or TCP and compares.
pub fn run_case_with_dig(udp: SocketAddr, tcp_addr: SocketAddr, case: &Case, tcp: bool) -> Result<(), String> {
    let (name, rtype) = case.name_and_type();
    let mut opts: Vec<String> = vec!["+nocookie".into()];
    match case.edns {
        Some(size) => opts.push(format!("+bufsize={size}")),
        None => opts.push("+noedns".into()),
    }
    let addr = if tcp {
        opts.push("+tcp".into());
        tcp_addr
    } else {
        // Report TC as received instead of retrying over TCP.
        opts.push("+ignore".into());
        udp
    };
    let opt_refs: Vec<&str> = opts.iter().map(String::as_str).collect();
    let out = dig(addr, &name.to_ascii(), &rtype.to_string(), &opt_refs);
    let seen = Observed::from_dig(&out)?;
    let mut errs = Vec::new();
    case.compare(&seen, &mut errs);
    if errs.is_empty() { Ok(()) } else { Err(format!("{}\n--- dig output ---\n{out}", errs.join("; "))) }
}

/// Asks one case over a raw TCP socket (for zone transfers, which dig reports differently).
pub fn run_case_raw_tcp(addr: SocketAddr, case: &Case) -> Result<(), String> {
    let id = 0x5151;
    let resp = tcp_exchange(addr, &case.message(id)).map_err(|e| e.to_string())?;
    case.check(id, &resp)
}

pub fn tcp_exchange(addr: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    s.write_all(&framed)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

pub fn udp_exchange(addr: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.send_to(query, addr)?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = s.recv_from(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

