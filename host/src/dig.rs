//! Prints a DNS response the way dig does, for `kdns query`.

use std::fmt::Write;

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, Record};

pub fn format(m: &Message, command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "; <<>> kdns query <<>> {command}");
    let _ = writeln!(out, ";; ->>HEADER<<- opcode: {}, status: {}, id: {}", format!("{:?}", m.op_code).to_uppercase(), rcode_name(m.response_code), m.id);
    let flags = header_flags(m);
    let _ = writeln!(
        out,
        ";; flags: {}; QUERY: {}, ANSWER: {}, AUTHORITY: {}, ADDITIONAL: {}",
        flags.join(" "),
        m.queries.len(),
        m.answers.len(),
        m.authorities.len(),
        m.additionals.len() + usize::from(m.edns.is_some())
    );
    if let Some(edns) = &m.edns {
        let _ = writeln!(out, "\n;; OPT PSEUDOSECTION:\n; EDNS: version: {}, flags:; udp: {}", edns.version(), edns.max_payload());
    }
    let _ = writeln!(out, "\n;; QUESTION SECTION:");
    for q in &m.queries {
        let _ = writeln!(out, ";{}\t\t{}\t{}", q.name(), q.query_class(), q.query_type());
    }
    for (title, records) in [("ANSWER", &m.answers), ("AUTHORITY", &m.authorities), ("ADDITIONAL", &m.additionals)] {
        if records.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n;; {title} SECTION:");
        for r in records {
            let _ = writeln!(out, "{}", record_line(r));
        }
    }
    let _ = writeln!(out, "\n;; MSG SIZE  rcvd: {}", m.to_vec().map(|b| b.len()).unwrap_or(0));
    out
}

/// One record in zone-file presentation: `owner TTL class type rdata`.
pub fn record_line(r: &Record) -> String {
    let rdata = match &r.data {
        // Character strings are quoted in presentation format (RFC 1035 §5.1).
        RData::TXT(txt) => txt.txt_data.iter().map(|s| format!("\"{}\"", escape(s))).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    };
    format!("{}\t{}\t{}\t{}\t{rdata}", r.name, r.ttl, r.dns_class, r.record_type())
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(*b as char);
            }
            0x20..=0x7e => out.push(*b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out
}

/// The header flags that are set, in dig's order and spelling.
pub fn header_flags(m: &Message) -> Vec<&'static str> {
    [
        (m.message_type == hickory_proto::op::MessageType::Response, "qr"),
        (m.authoritative, "aa"),
        (m.truncation, "tc"),
        (m.recursion_desired, "rd"),
        (m.recursion_available, "ra"),
        (m.authentic_data, "ad"),
        (m.checking_disabled, "cd"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect()
}

/// An rcode as dig prints it (NOERROR, NXDOMAIN, ...).
pub fn rcode_name(code: hickory_proto::op::ResponseCode) -> String {
    use hickory_proto::op::ResponseCode::*;
    match code {
        NoError => "NOERROR".into(),
        FormErr => "FORMERR".into(),
        ServFail => "SERVFAIL".into(),
        NXDomain => "NXDOMAIN".into(),
        NotImp => "NOTIMP".into(),
        Refused => "REFUSED".into(),
        other => format!("{other:?}").to_uppercase(),
    }
}
