//! Conformance vectors: loading, query construction, and answer comparison.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use kdns_host::cluster::{BuildOptions, ClusterState};
use kdns_proto::v1;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Vector {
    pub description: String,
    #[serde(default)]
    pub config: VectorConfig,
    pub cluster: String,
    pub cases: Vec<Case>,
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
pub struct VectorConfig {
    pub zone: Option<String>,
    pub ttl: Option<u32>,
    pub pods: Option<String>,
    pub endpoint_pod_names: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub query: String,
    pub rcode: String,
    pub answer: Option<Vec<String>>,
    pub authority: Option<Vec<String>>,
    pub additional: Option<Vec<String>>,
    pub flags: Option<Vec<String>>,
    pub truncated: Option<bool>,
    pub tcp: Option<bool>,
    pub edns: Option<u16>,
    pub note: Option<String>,
}

/// `../shared/conformance` from the workspace root (override with KDNS_CONFORMANCE_DIR).
pub fn conformance_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KDNS_CONFORMANCE_DIR") {
        return dir.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
}

/// Every vector file, in name order. Panics with a clear message when the folder is missing.
pub fn load_all() -> Vec<Vector> {
    let dir = conformance_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("conformance vectors at {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no conformance vectors in {}", dir.display());
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            let mut v: Vector = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            v.file = f;
            v
        })
        .collect()
}

impl Vector {
    pub fn name(&self) -> String {
        self.file.file_stem().unwrap().to_string_lossy().into_owned()
    }

    /// The engine config the vector asks for.
    pub fn config(&self) -> v1::Config {
        let c = &self.config;
        v1::Config {
            zones: c.zone.iter().cloned().collect(),
            ttl: c.ttl,
            pod_mode: match c.pods.as_deref() {
                None | Some("disabled") => v1::PodMode::Disabled,
                Some("insecure") => v1::PodMode::Insecure,
                Some("verified") => v1::PodMode::Verified,
                Some(other) => panic!("{}: unknown pods mode {other}", self.file.display()),
            } as i32,
            endpoint_pod_names: c.endpoint_pod_names.unwrap_or(false),
            ..Default::default()
        }
    }

    /// Command-line flags of `kdns serve`/`kdns query` for the vector's config.
    pub fn flags(&self) -> Vec<String> {
        let c = &self.config;
        let mut f = Vec::new();
        if let Some(z) = &c.zone {
            f.extend(["--zone".into(), z.clone()]);
        }
        if let Some(t) = c.ttl {
            f.extend(["--ttl".into(), t.to_string()]);
        }
        if let Some(p) = &c.pods {
            f.extend(["--pods".into(), p.clone()]);
        }
        if c.endpoint_pod_names == Some(true) {
            f.push("--endpoint-pod-names".into());
        }
        f
    }

    /// The cluster as a snapshot, built by the host's manifest reader and snapshot builder.
    pub fn snapshot(&self) -> v1::Snapshot {
        let mut state = ClusterState::default();
        kdns_host::source::manifest::read_text(&self.cluster, Path::new("cluster.yaml"), &mut state)
            .unwrap_or_else(|e| panic!("{}: cluster: {e}", self.file.display()));
        state.snapshot(BuildOptions { derive_endpoints: true, include_pods: true, serial: 1 })
    }
}

impl Case {
    pub fn name_and_type(&self) -> (Name, RecordType) {
        let mut parts = self.query.split_whitespace();
        let name = Name::from_ascii(parts.next().expect("query name")).expect("query name parses");
        let rtype: RecordType = parts.next().unwrap_or("A").parse().expect("query type parses");
        (name, rtype)
    }

    pub fn is_tcp(&self) -> bool {
        self.tcp.unwrap_or(false)
    }

    /// The query message: RD=1, an OPT only when the case gives `edns`.
    pub fn message(&self, id: u16) -> Vec<u8> {
        let (name, rtype) = self.name_and_type();
        query_message(id, &name.to_ascii(), &rtype.to_string(), self.edns)
    }

    /// Compares a response message with the case; the error lists every mismatch.
    pub fn check(&self, id: u16, response: &[u8]) -> Result<(), String> {
        let m = Message::from_vec(response).map_err(|e| format!("response does not parse: {e}"))?;
        let mut errs = Vec::new();
        if m.id != id {
            errs.push(format!("id {} != {id}", m.id));
        }
        if m.message_type != MessageType::Response {
            errs.push("QR not set".into());
        }
        self.compare(&Observed::from_message(&m), &mut errs);
        if errs.is_empty() { Ok(()) } else { Err(errs.join("; ")) }
    }

    /// Compares what a client saw with the case.
    pub fn compare(&self, seen: &Observed, errs: &mut Vec<String>) {
        if !seen.rcode.eq_ignore_ascii_case(&self.rcode) {
            errs.push(format!("rcode {}, want {}", seen.rcode, self.rcode));
        }
        for flag in self.flags.iter().flatten() {
            if !seen.flags.iter().any(|f| f == flag) {
                errs.push(format!("flag {flag} not set (flags: {:?})", seen.flags));
            }
        }
        if let Some(tc) = self.truncated {
            let got = seen.flags.iter().any(|f| f == "tc");
            if got != tc {
                errs.push(format!("TC={got}, want {tc}"));
            }
        }
        compare_section("answer", &self.answer, &seen.answer, errs);
        compare_section("authority", &self.authority, &seen.authority, errs);
        compare_section("additional", &self.additional, &seen.additional, errs);
    }
}

/// What a client saw: rcode, header flags, and each section in comparison form.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub rcode: String,
    pub flags: Vec<String>,
    pub answer: Vec<String>,
    pub authority: Vec<String>,
    pub additional: Vec<String>,
}

impl Observed {
    pub fn from_message(m: &Message) -> Observed {
        Observed {
            rcode: kdns_host::dig::rcode_name(m.response_code),
            flags: kdns_host::dig::header_flags(m).into_iter().map(String::from).collect(),
            answer: m.answers.iter().map(canonical_record).collect(),
            authority: m.authorities.iter().map(canonical_record).collect(),
            additional: m.additionals.iter().map(canonical_record).collect(),
        }
    }

    /// Parses dig's output (`+nocmd +comments +question +answer +authority +additional`).
    pub fn from_dig(text: &str) -> Result<Observed, String> {
        let mut seen = Observed::default();
        let mut section: Option<&str> = None;
        for line in text.lines() {
            let line = line.trim_end();
            if let Some(rest) = line.strip_prefix(";; ->>HEADER<<- ") {
                let status = rest.split(", ").find_map(|p| p.strip_prefix("status: ")).ok_or("no status in dig output")?;
                seen.rcode = status.to_string();
            } else if let Some(rest) = line.strip_prefix(";; flags:") {
                let flags = rest.split(';').next().unwrap_or("");
                seen.flags = flags.split_whitespace().map(str::to_string).collect();
            } else if let Some(name) = line.strip_prefix(";; ").and_then(|l| l.strip_suffix(" SECTION:")) {
                section = Some(match name {
                    "ANSWER" => "answer",
                    "AUTHORITY" => "authority",
                    "ADDITIONAL" => "additional",
                    _ => "other",
                });
            } else if line.is_empty() || line.starts_with(';') {
                if line.is_empty() {
                    section = None;
                }
            } else if let Some(sec) = section {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() >= 4 && f[3] == "OPT" {
                    continue;
                }
                let rec = canonical_text(line);
                match sec {
                    "answer" => seen.answer.push(rec),
                    "authority" => seen.authority.push(rec),
                    "additional" => seen.additional.push(rec),
                    _ => {}
                }
            }
        }
        if seen.rcode.is_empty() {
            return Err(format!("no DNS header in dig output:\n{text}"));
        }
        Ok(seen)
    }
}

/// A query message with RD=1 and, when `edns` is given, an OPT with that UDP size.
pub fn query_message(id: u16, name: &str, rtype: &str, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype.parse().expect("type")));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn compare_section(section: &str, want: &Option<Vec<String>>, got: &[String], errs: &mut Vec<String>) {
    let Some(want) = want else { return };
    let mut want: Vec<String> = want.iter().map(|r| canonical_text(r)).collect();
    let mut got: Vec<String> = got.to_vec();
    want.sort();
    got.sort();
    if want != got {
        errs.push(format!("{section}:\n    got  {got:?}\n    want {want:?}"));
    }
}

fn lower_fqdn(name: &str) -> String {
    let mut n = name.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// A record of the response in the comparison form: `owner ttl TYPE rdata`, owner lowercased,
/// names in RDATA lowercased, addresses canonical, the SOA serial as `*`.
pub fn canonical_record(r: &Record) -> String {
    let owner = lower_fqdn(&r.name.to_ascii());
    let rdata = match &r.data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(n) => lower_fqdn(&n.0.to_ascii()),
        RData::PTR(n) => lower_fqdn(&n.0.to_ascii()),
        RData::NS(n) => lower_fqdn(&n.0.to_ascii()),
        RData::SRV(s) => format!("{} {} {} {}", s.priority, s.weight, s.port, lower_fqdn(&s.target.to_ascii())),
        RData::SOA(s) => format!(
            "{} {} * {} {} {} {}",
            lower_fqdn(&s.mname.to_ascii()),
            lower_fqdn(&s.rname.to_ascii()),
            s.refresh,
            s.retry,
            s.expire,
            s.minimum
        ),
        RData::TXT(t) => t.txt_data.iter().map(|d| format!("\"{}\"", String::from_utf8_lossy(d))).collect::<Vec<_>>().join(" "),
        other => format!("{other}"),
    };
    format!("{owner} {} {} {rdata}", r.ttl, r.record_type())
}

/// An expected record line of a vector in the same comparison form.
pub fn canonical_text(line: &str) -> String {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert!(f.len() >= 5 && f[2] == "IN", "vector record not in `owner ttl IN TYPE rdata` form: {line}");
    let (owner, ttl, rtype, rd) = (lower_fqdn(f[0]), f[1], f[3].to_ascii_uppercase(), &f[4..]);
    let rdata = match rtype.as_str() {
        "A" | "AAAA" => rd[0].parse::<IpAddr>().expect("address").to_string(),
        "CNAME" | "PTR" | "NS" => lower_fqdn(rd[0]),
        "SRV" => format!("{} {} {} {}", rd[0], rd[1], rd[2], lower_fqdn(rd[3])),
        "SOA" => format!("{} {} * {} {} {} {}", lower_fqdn(rd[0]), lower_fqdn(rd[1]), rd[3], rd[4], rd[5], rd[6]),
        _ => rd.join(" "),
    };
    format!("{owner} {ttl} {rtype} {rdata}")
}
