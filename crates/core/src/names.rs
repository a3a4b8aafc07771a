//! Name helpers: dashed-IP labels (`10-244-1-7`, `fd00-10-244--1`), reverse names, labels.

use core::fmt::Write;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The label that names an endpoint: its hostname or pod name, or its IP with dashes.
/// Dashed labels are formatted on a stack buffer so comparisons allocate nothing.
#[derive(Clone, Copy)]
pub enum EndpointLabel<'a> {
    Text(&'a str),
    Dashed { buf: [u8; 48], len: u8 },
}

impl EndpointLabel<'_> {
    /// The dashed form of an IP (CoreDNS `endpointHostname`): dots or colons become dashes, and
    /// an IPv6 label that would start or end with a dash gets a `0` there.
    pub fn dashed(ip: IpAddr) -> Self {
        let mut w = StackWriter { buf: [0; 48], len: 0 };
        let _ = write!(w, "{ip}");
        let (mut buf, len) = (w.buf, w.len);
        for b in &mut buf[..len] {
            if *b == b'.' || *b == b':' {
                *b = b'-';
            }
        }
        let mut out = [0u8; 48];
        let mut n = 0;
        if buf[0] == b'-' {
            out[0] = b'0';
            n = 1;
        }
        out[n..n + len].copy_from_slice(&buf[..len]);
        n += len;
        if out[n - 1] == b'-' {
            out[n] = b'0';
            n += 1;
        }
        EndpointLabel::Dashed { buf: out, len: n as u8 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            EndpointLabel::Text(s) => s.as_bytes(),
            EndpointLabel::Dashed { buf, len } => &buf[..*len as usize],
        }
    }
}

/// Labels are equal when their bytes are: a hostname `10-0-0-1` and the dashed IP 10.0.0.1
/// name the same target.
impl PartialEq for EndpointLabel<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for EndpointLabel<'_> {}

impl PartialOrd for EndpointLabel<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EndpointLabel<'_> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

struct StackWriter {
    buf: [u8; 48],
    len: usize,
}

impl Write for StackWriter {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        // Leave room for the `0` padding of dashed IPv6 labels (at most 39 + 2 bytes).
        if end > self.buf.len() - 2 {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Parses a dashed pod label the way CoreDNS does: three dashes and no `--` is IPv4,
/// anything else is tried as IPv6.
pub fn parse_dashed_ip(label: &[u8]) -> Option<IpAddr> {
    if label.is_empty() || label.len() > 45 {
        return None;
    }
    let dashes = label.iter().filter(|b| **b == b'-').count();
    let v4 = dashes == 3 && !label.windows(2).any(|w| w == b"--");
    let mut buf = [0u8; 45];
    for (o, b) in buf.iter_mut().zip(label) {
        *o = if *b == b'-' { if v4 { b'.' } else { b':' } } else { *b };
    }
    let text = core::str::from_utf8(&buf[..label.len()]).ok()?;
    if v4 {
        text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

/// The address named by a full reverse name (labels lowercase, leftmost first, without the
/// root): four decimal octets under `in-addr.arpa`, or 32 nibbles under `ip6.arpa`.
/// Partial names (a network, not a host) give `None`.
pub fn parse_reverse(labels: &[&[u8]]) -> Option<IpAddr> {
    let n = labels.len();
    if n == 6 && labels[4] == b"in-addr" && labels[5] == b"arpa" {
        let mut octets = [0u8; 4];
        for (i, label) in labels[..4].iter().enumerate() {
            octets[3 - i] = parse_octet(label)?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if n == 34 && labels[32] == b"ip6" && labels[33] == b"arpa" {
        let mut bytes = [0u8; 16];
        for (i, label) in labels[..32].iter().enumerate() {
            let [c] = label else { return None };
            let nibble = (*c as char).to_digit(16)? as u8;
            let pos = 31 - i;
            bytes[pos / 2] |= if pos % 2 == 0 { nibble << 4 } else { nibble };
        }
        return Some(IpAddr::V6(Ipv6Addr::from(bytes)));
    }
    None
}

/// A reverse name above an address: the first `len` octets (IPv4) or nibbles (IPv6), the
/// rest zero. `len` may be 0 (`in-addr.arpa` itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReversePrefix {
    V4 { octets: [u8; 4], len: u8 },
    V6 { bytes: [u8; 16], nibbles: u8 },
}

impl ReversePrefix {
    /// The lowest and highest address in the network.
    pub fn range(self) -> (IpAddr, IpAddr) {
        match self {
            ReversePrefix::V4 { octets, len } => {
                let low = u32::from_be_bytes(octets);
                let high = low | u32::MAX.checked_shr(8 * u32::from(len)).unwrap_or(0);
                (IpAddr::V4(Ipv4Addr::from(low)), IpAddr::V4(Ipv4Addr::from(high)))
            }
            ReversePrefix::V6 { bytes, nibbles } => {
                let low = u128::from_be_bytes(bytes);
                let high = low | u128::MAX.checked_shr(4 * u32::from(nibbles)).unwrap_or(0);
                (IpAddr::V6(Ipv6Addr::from(low)), IpAddr::V6(Ipv6Addr::from(high)))
            }
        }
    }
}

/// The network named by a partial reverse name (labels lowercase, leftmost first, without the
/// root): 0 to 3 decimal octets under `in-addr.arpa`, or 0 to 31 nibbles under `ip6.arpa`.
/// `None` for a full address (see [`parse_reverse`]) or anything else.
#[cold]
#[inline(never)]
pub fn parse_reverse_prefix(labels: &[&[u8]]) -> Option<ReversePrefix> {
    let n = labels.len();
    if (2..6).contains(&n) && labels[n - 2] == b"in-addr" && labels[n - 1] == b"arpa" {
        let len = n - 2;
        let mut octets = [0u8; 4];
        for (i, label) in labels[..len].iter().enumerate() {
            octets[len - 1 - i] = parse_octet(label)?;
        }
        return Some(ReversePrefix::V4 { octets, len: len as u8 });
    }
    if (2..34).contains(&n) && labels[n - 2] == b"ip6" && labels[n - 1] == b"arpa" {
        let nibbles = n - 2;
        let mut bytes = [0u8; 16];
        for (i, label) in labels[..nibbles].iter().enumerate() {
            let [c] = label else { return None };
            let nibble = (*c as char).to_digit(16)? as u8;
            let pos = nibbles - 1 - i;
            bytes[pos / 2] |= if pos % 2 == 0 { nibble << 4 } else { nibble };
        }
        return Some(ReversePrefix::V6 { bytes, nibbles: nibbles as u8 });
    }
    None
}

#[inline]
fn parse_octet(label: &[u8]) -> Option<u8> {
    if label.is_empty() || label.len() > 3 || (label.len() > 1 && label[0] == b'0') {
        return None;
    }
    core::str::from_utf8(label).ok()?.parse().ok()
}

/// Whether `s` can stand as one DNS label.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63
}

/// Strips one leading underscore (CoreDNS accepts `_http` and `http` alike for port names).
pub fn strip_underscore(label: &[u8]) -> &[u8] {
    label.strip_prefix(b"_").unwrap_or(label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    #[test]
    fn labels_compare_by_their_bytes() {
        let dashed = EndpointLabel::dashed("10.0.0.1".parse().unwrap());
        assert!(dashed == EndpointLabel::Text("10-0-0-1"));
        assert!(EndpointLabel::Text("10-0-0-1") < EndpointLabel::Text("web-0"));
        assert!(dashed != EndpointLabel::Text("10-0-0-2"));
    }

    fn dashed(ip: &str) -> alloc::string::String {
        let l = EndpointLabel::dashed(ip.parse().unwrap());
        alloc::string::String::from_utf8(l.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn dashed_labels() {
        assert_eq!(dashed("10.244.1.7"), "10-244-1-7");
        assert_eq!(dashed("fd00:10:244:6::1"), "fd00-10-244-6--1");
        assert_eq!(dashed("::1"), "0--1");
        assert_eq!(dashed("fd00::"), "fd00--0");
        assert_eq!(dashed("1111:2222:3333:4444:5555:6666:7777:8888"), "1111-2222-3333-4444-5555-6666-7777-8888");
    }

    #[test]
    fn dashed_round_trip() {
        for ip in ["10.244.1.7", "fd00:10:244:6::1", "::1", "fd00::", "0.0.0.0"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(parse_dashed_ip(dashed(&ip.to_string()).as_bytes()), Some(ip));
        }
        assert_eq!(parse_dashed_ip(b"foo"), None);
        assert_eq!(parse_dashed_ip(b"10-244-1"), None);
        assert_eq!(parse_dashed_ip(b"10-244-1-256"), None);
        assert_eq!(parse_dashed_ip(b""), None);
    }

    #[test]
    fn reverse_prefixes() {
        let split = |s: &'static str| -> Vec<&'static [u8]> { s.split('.').map(str::as_bytes).collect() };
        let p = parse_reverse_prefix(&split("244.10.in-addr.arpa")).unwrap();
        assert_eq!(p.range(), ("10.244.0.0".parse().unwrap(), "10.244.255.255".parse().unwrap()));
        let p = parse_reverse_prefix(&split("in-addr.arpa")).unwrap();
        assert_eq!(p.range(), ("0.0.0.0".parse().unwrap(), "255.255.255.255".parse().unwrap()));
        let p = parse_reverse_prefix(&split("1.244.10.in-addr.arpa")).unwrap();
        assert_eq!(p.range(), ("10.244.1.0".parse().unwrap(), "10.244.1.255".parse().unwrap()));
        assert_eq!(parse_reverse_prefix(&split("7.1.244.10.in-addr.arpa")), None, "a full address");
        assert_eq!(parse_reverse_prefix(&split("010.in-addr.arpa")), None);
        assert_eq!(parse_reverse_prefix(&split("256.in-addr.arpa")), None);
        let p = parse_reverse_prefix(&split("0.0.d.f.ip6.arpa")).unwrap();
        assert_eq!(p.range(), ("fd00::".parse().unwrap(), "fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()));
        let p = parse_reverse_prefix(&split("1.0.0.d.f.ip6.arpa")).unwrap();
        assert_eq!(p.range(), ("fd00:1000::".parse().unwrap(), "fd00:1fff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()));
        let p = parse_reverse_prefix(&split("ip6.arpa")).unwrap();
        assert_eq!(p.range().0, "::".parse::<IpAddr>().unwrap());
        assert_eq!(parse_reverse_prefix(&split("10.0.d.f.ip6.arpa")), None, "a label of two nibbles");
        assert_eq!(parse_reverse_prefix(&split("x.ip6.arpa")), None);
    }

    #[test]
    fn reverse_names() {
        let v4: Vec<&[u8]> = alloc::vec![b"7", b"1", b"244", b"10", b"in-addr", b"arpa"];
        assert_eq!(parse_reverse(&v4), Some("10.244.1.7".parse().unwrap()));
        let partial: Vec<&[u8]> = alloc::vec![b"1", b"244", b"10", b"in-addr", b"arpa"];
        assert_eq!(parse_reverse(&partial), None);
        let bad: Vec<&[u8]> = alloc::vec![b"07", b"1", b"244", b"10", b"in-addr", b"arpa"];
        assert_eq!(parse_reverse(&bad), None);
        let name = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.0.0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa";
        let v6: Vec<&[u8]> = name.split('.').map(str::as_bytes).collect();
        assert_eq!(parse_reverse(&v6), Some("fd00:10:244:6::1".parse().unwrap()));
    }
}
