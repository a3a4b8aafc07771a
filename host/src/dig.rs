//! Prints a DNS response the way dig does, for `kdns query`, with dig's display options
//! (`+short`, `+noall +answer`, ...) and its reverse-lookup name (`-x ADDR`).

use std::fmt::Write;
use std::net::IpAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, Record};

/// What to print, as dig's `+[no]OPTION`s set it. The default prints everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `+short`: the answer records' data alone, one per line.
    pub short: bool,
    pub cmd: bool,
    pub comments: bool,
    pub question: bool,
    pub answer: bool,
    pub authority: bool,
    pub additional: bool,
    pub stats: bool,
    /// `+[no]recurse`: the RD bit of the question.
    pub recurse: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { short: false, cmd: true, comments: true, question: true, answer: true, authority: true, additional: true, stats: true, recurse: true }
    }
}

/// The `+` options [`Options::set`] reads.
pub const OPTIONS: &str = "+short, +[no]all, +[no]cmd, +[no]comments, +[no]question, +[no]answer, +[no]authority, +[no]additional, +[no]stats, +[no]recurse, +[no]tcp";

impl Options {
    /// Applies one dig option (`+short`, `+noall`, `+answer`, ...). Unique prefixes are not
    /// expanded as dig does; `+tcp` is accepted and changes nothing (the answer is never
    /// truncated offline).
    pub fn set(&mut self, option: &str) -> Result<(), String> {
        let word = option.strip_prefix('+').ok_or_else(|| format!("{option:?} is not a dig option"))?;
        let (on, name) = match word.strip_prefix("no") {
            Some(rest) if !rest.is_empty() => (false, rest),
            _ => (true, word),
        };
        match name {
            "short" => self.short = on,
            "all" => {
                let recurse = self.recurse;
                *self = Options { short: false, cmd: on, comments: on, question: on, answer: on, authority: on, additional: on, stats: on, recurse };
            }
            "cmd" => self.cmd = on,
            "comments" => self.comments = on,
            "question" => self.question = on,
            "answer" => self.answer = on,
            "authority" => self.authority = on,
            "additional" => self.additional = on,
            "stats" => self.stats = on,
            "rec" | "recurse" => self.recurse = on,
            "tcp" | "vc" => {}
            _ => return Err(format!("unknown dig option {option} (kdns query reads {OPTIONS})")),
        }
        Ok(())
    }
}

/// The name `dig -x ADDR` asks for: `7.1.244.10.in-addr.arpa.`, or the nibbles under `ip6.arpa.`.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut out = String::new();
            for b in v6.octets().iter().rev() {
                let _ = write!(out, "{:x}.{:x}.", b & 0xf, b >> 4);
            }
            out + "ip6.arpa."
        }
    }
}

/// Everything, as dig prints it by default.
pub fn format(m: &Message, command: &str) -> String {
    render(m, command, &Options::default())
}

/// As dig prints it with `opts`.
pub fn render(m: &Message, command: &str, opts: &Options) -> String {
    let mut out = String::new();
    if opts.short {
        for r in &m.answers {
            let _ = writeln!(out, "{}", rdata(r));
        }
        return out;
    }
    if opts.cmd {
        let _ = writeln!(out, "; <<>> kdns query <<>> {command}");
    }
    if opts.comments {
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
    }
    if opts.question {
        if opts.comments {
            let _ = writeln!(out, "\n;; QUESTION SECTION:");
        }
        for q in &m.queries {
            let _ = writeln!(out, ";{}\t\t{}\t{}", q.name(), q.query_class(), q.query_type());
        }
    }
    for (title, records, shown) in [("ANSWER", &m.answers, opts.answer), ("AUTHORITY", &m.authorities, opts.authority), ("ADDITIONAL", &m.additionals, opts.additional)] {
        if records.is_empty() || !shown {
            continue;
        }
        if opts.comments {
            let _ = writeln!(out, "\n;; {title} SECTION:");
        }
        for r in records {
            let _ = writeln!(out, "{}", record_line(r));
        }
    }
    if opts.stats {
        let _ = writeln!(out, "\n;; MSG SIZE  rcvd: {}", m.to_vec().map(|b| b.len()).unwrap_or(0));
    }
    out
}

/// One record in zone-file presentation: `owner TTL class type rdata`.
pub fn record_line(r: &Record) -> String {
    format!("{}\t{}\t{}\t{}\t{}", r.name, r.ttl, r.dns_class, r.record_type(), rdata(r))
}

/// A record's data in presentation format (what `+short` prints).
pub fn rdata(r: &Record) -> String {
    match &r.data {
        // Character strings are quoted in presentation format (RFC 1035 §5.1).
        RData::TXT(txt) => txt.txt_data.iter().map(|s| format!("\"{}\"", escape(s))).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dig_options() {
        let mut o = Options::default();
        o.set("+noall").unwrap();
        o.set("+answer").unwrap();
        assert!(o.answer && !o.question && !o.comments && !o.cmd && !o.stats && !o.short);
        o.set("+short").unwrap();
        assert!(o.short);
        o.set("+norecurse").unwrap();
        assert!(!o.recurse);
        o.set("+tcp").unwrap();
        assert!(o.set("+bogus").unwrap_err().contains("+short"));
        assert!(o.set("short").is_err());
    }

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_name("10.244.1.7".parse().unwrap()), "7.1.244.10.in-addr.arpa.");
        assert_eq!(reverse_name("fd00::7".parse().unwrap()), "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.");
    }
}
