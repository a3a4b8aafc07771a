//! CoreDNS's own test cases for its `kubernetes` plugin, asked of kdns and of stock CoreDNS.
//!
//! `coredns_cases/cases.yaml` is every table case of CoreDNS v1.15.0's plugin/kubernetes tests
//! that builds a DNS message (handler, pod modes, case, empty service, apex, reverse, zonal,
//! transfers; not multicluster), generated from its source by `coredns_cases/gen`; the objects
//! behind its mocks are manifests in `coredns_cases/clusters/`. For each suite (one CoreDNS
//! test function) this starts `kdns serve --manifests` with a Corefile giving the function's
//! settings, and stock CoreDNS with the same Corefile, its kubernetes plugin watching the test
//! API server (`src/apiserver.rs`) loaded with the same manifests; asks every case over UDP
//! (transfers over TCP) of each; and compares as CoreDNS's test does (`test.SortAndCheck`, see
//! the top of cases.yaml). It prints a table and fails if kdns fails a case that
//! docs/coredns-cases.md does not list as a known difference; a listed case that passes gets
//! a note (take it off the list).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use kdns_tests::apiserver::ApiServer;
use kdns_tests::server::{CoreDns, Kdns, TempDir, kdns_bin};
use serde::Deserialize;

#[derive(Deserialize)]
struct Data {
    suites: Vec<Suite>,
    transfers: Vec<TransferSuite>,
    expected_zone: Vec<String>,
}

#[derive(Deserialize)]
struct Suite {
    name: String,
    test: String,
    mock: String,
    zones: Vec<String>,
    #[serde(default)]
    options: Vec<String>,
    #[serde(default)]
    local_ips: Vec<String>,
    #[serde(default)]
    not_synced: bool,
    #[serde(default)]
    checks: Vec<String>,
    unchecked: Option<String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    origin: String,
    qname: String,
    qtype: String,
    rcode: String,
    #[serde(default)]
    truncated: bool,
    #[serde(default)]
    answer: Vec<String>,
    #[serde(default)]
    ns: Vec<String>,
    #[serde(default)]
    extra: Vec<String>,
    upstream: Option<Upstream>,
}

#[derive(Deserialize, Clone)]
struct Upstream {
    truncated: bool,
    answer: Vec<String>,
}

#[derive(Deserialize)]
struct TransferSuite {
    name: String,
    mock: String,
    zones: Vec<String>,
    options: Vec<String>,
    local_ips: Vec<String>,
    cases: Vec<TransferCase>,
}

#[derive(Deserialize)]
struct TransferCase {
    origin: String,
    qname: String,
    qtype: String,
    serial: Option<String>,
    expect: String,
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("coredns_cases")
}

// ---------------------------------------------------------------------------------------------
// Records, compared as test.SortAndCheck (plugin/test/helpers.go) compares them.

/// A record as text fields: owner, TTL, type, RDATA fields.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rr {
    name: String,
    ttl: u32,
    rtype: String,
    rdata: Vec<String>,
}

impl std::fmt::Display for Rr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} {}", self.name, self.ttl, self.rtype, self.rdata.join(" "))
    }
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') { name.to_string() } else { format!("{name}.") }
}

/// A record string as dns.NewRR reads it: `owner [ttl] [class] TYPE rdata` (no origin: names
/// are made fully qualified).
fn parse_rr(text: &str) -> Rr {
    let f: Vec<&str> = text.split_whitespace().collect();
    let (mut ttl, mut i) = (3600, 1);
    while i < f.len() {
        if let Ok(t) = f[i].parse::<u32>() {
            ttl = t;
        } else if f[i] != "IN" {
            break;
        }
        i += 1;
    }
    let rtype = f[i].to_ascii_uppercase();
    let rd = &f[i + 1..];
    let rdata = match rtype.as_str() {
        "A" | "AAAA" => vec![rd[0].parse::<IpAddr>().expect("address").to_string()],
        "CNAME" | "PTR" | "NS" => vec![fqdn(rd[0])],
        "SRV" => vec![rd[0].into(), rd[1].into(), rd[2].into(), fqdn(rd[3])],
        "SOA" => {
            let mut v = vec![fqdn(rd[0]), fqdn(rd[1])];
            v.extend(rd[2..7].iter().map(|s| s.to_string()));
            v
        }
        "TXT" => vec![rd.iter().map(|s| s.trim_matches('"')).collect::<Vec<_>>().join("")],
        _ => rd.iter().map(|s| s.to_string()).collect(),
    };
    Rr { name: fqdn(f[0]), ttl, rtype, rdata }
}

/// A received record in the same form; names exactly as they came (case kept).
fn rr_of(r: &Record) -> Rr {
    let n = |n: &Name| fqdn(&n.to_ascii());
    let rdata = match &r.data {
        RData::A(a) => vec![a.0.to_string()],
        RData::AAAA(a) => vec![a.0.to_string()],
        RData::CNAME(t) => vec![n(&t.0)],
        RData::PTR(t) => vec![n(&t.0)],
        RData::NS(t) => vec![n(&t.0)],
        RData::SRV(s) => vec![s.priority.to_string(), s.weight.to_string(), s.port.to_string(), n(&s.target)],
        RData::SOA(s) => vec![n(&s.mname), n(&s.rname), s.serial.to_string(), s.refresh.to_string(), s.retry.to_string(), s.expire.to_string(), s.minimum.to_string()],
        RData::TXT(t) => vec![t.txt_data.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect::<Vec<_>>().join("")],
        other => vec![format!("{other}")],
    };
    Rr { name: n(&r.name), ttl: r.ttl, rtype: r.record_type().to_string(), rdata }
}

/// test.Section's rule for one record: owner name exactly (Go `!=`), the TTL unless the
/// expected one is 303, the type, and per type only these fields: A/AAAA address; SRV
/// priority, weight, port, target; SOA primary server name; PTR, CNAME, NS target; TXT text.
fn section_match(want: &Rr, got: &Rr) -> bool {
    if want.name != got.name || (want.ttl != 303 && want.ttl != got.ttl) || want.rtype != got.rtype {
        return false;
    }
    match want.rtype.as_str() {
        "SRV" => want.rdata == got.rdata,
        "SOA" | "PTR" | "CNAME" | "NS" | "A" | "AAAA" | "TXT" => want.rdata[0] == got.rdata[0],
        _ => true,
    }
}

/// dns.IsDuplicate (used by xfr_test.go's validateAXFR): everything but the TTL, names without
/// regard to case. The SOA serial is left out (see [`compare_zone`]).
fn duplicate(want: &Rr, got: &Rr) -> bool {
    let lower = |r: &Rr| {
        let mut r = r.clone();
        r.name = r.name.to_ascii_lowercase();
        r.rdata = r.rdata.iter().map(|s| s.to_ascii_lowercase()).collect();
        if r.rtype == "SOA" {
            r.rdata[2] = "*".into();
        }
        r.ttl = 0;
        r
    };
    lower(want) == lower(got)
}

/// Pairs expected with received records under `same`; returns (missing, unexpected).
fn pair(want: &[Rr], got: &[Rr], same: fn(&Rr, &Rr) -> bool) -> (Vec<Rr>, Vec<Rr>) {
    let mut left: Vec<Option<&Rr>> = got.iter().map(Some).collect();
    let mut missing = Vec::new();
    for w in want {
        match left.iter_mut().find(|g| g.is_some_and(|g| same(w, g))) {
            Some(slot) => *slot = None,
            None => missing.push(w.clone()),
        }
    }
    (missing, left.into_iter().flatten().cloned().collect())
}

fn list(rrs: &[Rr]) -> String {
    format!("[{}]", rrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
}

/// What differs between a response and a case, as test.SortAndCheck and the suite's other
/// checks see it; empty when the case passes.
fn check(case: &Case, checks: &[String], m: &Message) -> Vec<String> {
    let mut diffs = Vec::new();
    let rcode = kdns_host::dig::rcode_name(m.response_code);
    if rcode != case.rcode {
        diffs.push(format!("rcode {rcode}, want {}", case.rcode));
    }
    for (section, want, got) in [("answer", &case.answer, &m.answers), ("ns", &case.ns, &m.authorities), ("extra", &case.extra, &m.additionals)] {
        let want: Vec<Rr> = want.iter().map(|t| parse_rr(t)).collect();
        let got: Vec<Rr> = got.iter().map(rr_of).collect();
        let (missing, unexpected) = pair(&want, &got, section_match);
        if !missing.is_empty() || !unexpected.is_empty() {
            diffs.push(format!("{section}: got {}, want {}", list(&got), list(&want)));
        }
    }
    if checks.iter().any(|c| c == "truncated") && m.truncation != case.truncated {
        diffs.push(format!("TC {}, want {}", m.truncation, case.truncated));
    }
    if checks.iter().any(|c| c == "cname_order") {
        for (i, r) in m.answers.iter().enumerate() {
            if let RData::CNAME(t) = &r.data {
                if m.answers[..i].iter().any(|a| fqdn(&a.name.to_ascii()) == fqdn(&t.0.to_ascii())) {
                    diffs.push("CNAME after its target record".into());
                }
            }
        }
    }
    diffs
}

// ---------------------------------------------------------------------------------------------
// Asking.

fn query(qname: &str, qtype: &str, serial: Option<u32>) -> (u16, Vec<u8>) {
    static ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0x4b00);
    let id = ID.fetch_add(1, Ordering::Relaxed);
    // test.Case.Msg(): SetQuestion (RD set), no OPT.
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    let name = Name::from_ascii(fqdn(qname)).expect("qname");
    let rtype = match qtype {
        "IXFR" => RecordType::IXFR,
        "AXFR" => RecordType::AXFR,
        other => other.parse::<RecordType>().expect("qtype"),
    };
    m.add_query(Query::query(name.clone(), rtype));
    if let Some(serial) = serial {
        let soa = SOA::new(Name::root(), Name::root(), serial, 0, 0, 0, 0);
        m.add_authority(Record::from_rdata(name, 0, RData::SOA(soa)));
    }
    (id, m.to_vec().unwrap())
}

fn ask_udp(server: SocketAddr, qname: &str, qtype: &str) -> Result<Message, String> {
    let (id, q) = query(qname, qtype, None);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for _ in 0..3 {
        s.send_to(&q, server).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 65535];
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            let m = Message::from_vec(&buf[..n]).map_err(|e| format!("response does not parse: {e}"))?;
            if m.id == id {
                return Ok(m);
            }
        }
    }
    Err("no response over UDP".into())
}

/// A zone transfer over TCP: every message until the closing SOA, an error, or silence.
fn ask_transfer(server: SocketAddr, qname: &str, qtype: &str, serial: Option<u32>) -> Result<(ResponseCode, Vec<Record>), String> {
    let (_, q) = query(qname, qtype, serial);
    let mut s = TcpStream::connect(server).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).map_err(|e| e.to_string())?;
    let (mut rcode, mut records) = (ResponseCode::NoError, Vec::new());
    loop {
        let mut len = [0u8; 2];
        if let Err(e) = s.read_exact(&mut len) {
            if records.is_empty() && rcode == ResponseCode::NoError {
                return Err(format!("no transfer response: {e}"));
            }
            break; // closed, or nothing more after a one-message answer
        }
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        let m = Message::from_vec(&buf).map_err(|e| format!("transfer message does not parse: {e}"))?;
        rcode = m.response_code;
        records.extend(m.answers.iter().cloned());
        let soas = records.iter().filter(|r| r.record_type() == RecordType::SOA).count();
        if rcode != ResponseCode::NoError || soas >= 2 {
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    }
    Ok((rcode, records))
}

// ---------------------------------------------------------------------------------------------
// Servers.

/// An upstream resolver for the CNAME targets of ExternalName services: answers the suite's
/// Upstub records (with TC when the stub is truncated) over UDP, NXDOMAIN for anything else,
/// and has no TCP listener, so a retry over TCP fails.
struct FakeUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FakeUpstream {
    fn start(stubs: Vec<Upstream>) -> FakeUpstream {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let records: Vec<(bool, Rr)> = stubs.iter().flat_map(|s| s.answer.iter().map(|a| (s.truncated, parse_rr(a)))).collect();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !done.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else { continue };
                let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
                let Some(question) = q.queries.first().cloned() else { continue };
                let mut r = Message::new(q.id, MessageType::Response, OpCode::Query);
                r.metadata.recursion_desired = q.recursion_desired;
                r.metadata.recursion_available = true;
                r.add_query(question.clone());
                let qname = fqdn(&question.name().to_ascii()).to_ascii_lowercase();
                let qtype = question.query_type().to_string();
                let hits: Vec<&(bool, Rr)> = records.iter().filter(|(_, rr)| rr.name.to_ascii_lowercase() == qname && rr.rtype == qtype).collect();
                if hits.is_empty() {
                    r.metadata.response_code = ResponseCode::NXDomain;
                }
                for (truncated, rr) in hits {
                    r.metadata.truncation |= *truncated;
                    let name = Name::from_ascii(&rr.name).unwrap();
                    let data = match rr.rtype.as_str() {
                        "A" => RData::A(A(rr.rdata[0].parse().unwrap())),
                        "AAAA" => RData::AAAA(AAAA(rr.rdata[0].parse().unwrap())),
                        "CNAME" => RData::CNAME(CNAME(Name::from_ascii(&rr.rdata[0]).unwrap())),
                        other => panic!("upstream stub record type {other}"),
                    };
                    r.add_answer(Record::from_rdata(name, rr.ttl, data));
                }
                let _ = socket.send_to(&r.to_vec().unwrap(), peer);
            }
        });
        FakeUpstream { addr, stop }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What one suite's servers are started with.
struct Setup<'a> {
    name: &'a str,
    mock: &'a str,
    zones: &'a [String],
    options: Vec<String>,
    local_ips: &'a [String],
    not_synced: bool,
    upstream: Vec<Upstream>,
    transfer: bool,
}

struct Servers {
    kdns: Kdns,
    coredns: CoreDns,
    /// What had to differ from the suite's settings, said in the table.
    notes: Vec<String>,
    _api: Option<ApiServer>,
    _blackhole: Option<TcpListener>,
    _upstream: Option<FakeUpstream>,
}

fn kubernetes_block(zones: &[String], options: &[String], kubeconfig: Option<&Path>) -> String {
    let zones: Vec<&str> = zones.iter().map(|z| z.trim_end_matches('.')).collect();
    let mut block = format!("    kubernetes {} {{\n", zones.join(" "));
    if let Some(k) = kubeconfig {
        block += &format!("        kubeconfig {} test\n", k.display());
    }
    for o in options {
        block += &format!("        {o}\n");
    }
    block + "    }\n"
}

fn write_kubeconfig(path: &Path, server: SocketAddr) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: \"http://{server}\"}}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test}}\ncurrent-context: test\n"
    );
    std::fs::write(path, text).unwrap();
}

/// Options kdns refuses (as `kdns query --config` says, naming them) are left out of its
/// Corefile, each with a note; the others are kept.
fn kdns_options(dir: &TempDir, s: &Setup, manifests: &Path, notes: &mut Vec<String>) -> Vec<String> {
    let mut options = s.options.clone();
    for _ in 0..s.options.len() {
        let file = dir.path(&format!("{}-probe.Corefile", s.name));
        std::fs::write(&file, format!(". {{\n{}}}\n", kubernetes_block(s.zones, &options, None))).unwrap();
        let out = Command::new(kdns_bin())
            .args(["query", "--config"])
            .arg(&file)
            .arg("--manifests")
            .arg(manifests)
            .args([s.zones[0].as_str(), "SOA"])
            .output()
            .expect("kdns query runs");
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let Some(i) = options.iter().position(|o| err.contains(&format!("`{}`", o.split_whitespace().next().unwrap())) || err.contains(o.split_whitespace().next().unwrap())) else {
            panic!("kdns refuses the {} suite's Corefile:\n{err}", s.name);
        };
        let word = options[i].split_whitespace().next().unwrap();
        let line = err.lines().find(|l| l.contains(word)).unwrap_or("").trim();
        let line = line.find(&format!("`{word}`")).map_or(line, |at| &line[at..]).to_string();
        notes.push(format!("kdns refuses `{}` ({line}): served without it", options[i]));
        options.remove(i);
    }
    options
}

fn start(dir: &TempDir, s: &Setup) -> Servers {
    let manifests_text = std::fs::read_to_string(cases_dir().join("clusters").join(format!("{}.yaml", s.mock))).expect("cluster manifests");
    let manifests = dir.path(&format!("{}.yaml", s.name));
    std::fs::write(&manifests, &manifests_text).unwrap();
    let mut notes = Vec::new();
    let upstream = (!s.upstream.is_empty()).then(|| FakeUpstream::start(s.upstream.clone()));
    let forward = upstream.as_ref().map(|u| format!("    forward . {}\n", u.addr)).unwrap_or_default();

    // A server that accepts connections and never answers: an API server before its first list.
    let blackhole = s.not_synced.then(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let (api, kubeconfig) = {
        let kubeconfig = dir.path(&format!("{}.kubeconfig", s.name));
        match &blackhole {
            Some(b) => {
                write_kubeconfig(&kubeconfig, b.local_addr().unwrap());
                (None, kubeconfig)
            }
            None => {
                let api = ApiServer::start(&manifests_text);
                api.write_kubeconfig(&kubeconfig);
                (Some(api), kubeconfig)
            }
        }
    };

    // kdns: the objects from the manifests (or, not synced, the silent API server).
    let options = kdns_options(dir, s, &manifests, &mut notes);
    let corefile = dir.path(&format!("{}.Corefile", s.name));
    std::fs::write(&corefile, format!(". {{\n{}{forward}}}\n", kubernetes_block(s.zones, &options, None))).unwrap();
    let mut args = vec!["--config".to_string(), corefile.display().to_string()];
    if s.not_synced {
        args.extend(["--kubeconfig".into(), kubeconfig.display().to_string()]);
    } else {
        args.extend(["--manifests".into(), manifests.display().to_string()]);
    }
    if s.transfer {
        args.extend(["--transfer-to".into(), "127.0.0.1/32".into()]);
    }
    let kdns = Kdns::start(&args);

    // CoreDNS: its kubernetes plugin watching the API server, on loopback. The mock's
    // k.localIPs (the apex and transfer suites) cannot be given to it: its boundIPs (local.go)
    // takes the `bind` addresses, or without `bind` every interface address, and leaves out
    // loopback ones (and a plain `bind` address, which it parses as a CIDR, yields none).
    if !s.local_ips.is_empty() {
        notes.push(format!("the mock's local IPs {:?} are not reproduced: CoreDNS on 127.0.0.1 has none", s.local_ips));
    }
    let bind = "127.0.0.1";
    let transfer = if s.transfer { "    transfer {\n        to *\n    }\n" } else { "" };
    let coredns = CoreDns::start(&format!(".:{{PORT}} {{\n    bind {bind}\n{}{forward}{transfer}}}\n", kubernetes_block(s.zones, &s.options, Some(&kubeconfig))));
    if !s.not_synced {
        // SERVFAIL until its informers have synced.
        let zone = s.zones[0].trim_end_matches('.');
        let deadline = Instant::now() + Duration::from_secs(30);
        while ask_udp(coredns.addr, &format!("sync-probe.testns.svc.{zone}."), "A").map(|m| m.response_code == ResponseCode::ServFail).unwrap_or(true) {
            assert!(Instant::now() < deadline, "CoreDNS did not sync from the test API server");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Servers { kdns, coredns, notes, _api: api, _blackhole: blackhole, _upstream: upstream }
}

// ---------------------------------------------------------------------------------------------
// Transfers.

/// A transfer against its case. The expected zone is compared as a set of records (its order is
/// CoreDNS's service order; validateAXFR compares in order) between the first and last SOA; the
/// SOA serial is not compared (the mock's Modified() is 3; a real server's is its own).
fn check_transfer(c: &TransferCase, expected_zone: &[String], got: Result<(ResponseCode, Vec<Record>), String>) -> Vec<String> {
    let (rcode, records) = match got {
        Ok(x) => x,
        Err(e) => return vec![e],
    };
    let got: Vec<Rr> = records.iter().map(rr_of).collect();
    let soa_at = |i: Option<&Rr>| i.is_some_and(|r| r.rtype == "SOA");
    let mut diffs = Vec::new();
    match c.expect.as_str() {
        "not_authoritative" => {
            if rcode == ResponseCode::NoError || !got.is_empty() {
                diffs.push(format!("transferred: rcode {}, {} records", kdns_host::dig::rcode_name(rcode), got.len()));
            }
        }
        "soa" => {
            if got.len() != 1 || !soa_at(got.first()) {
                diffs.push(format!("{} records ({}), want only the SOA", got.len(), summary(&got)));
            }
        }
        "ns_glue" => {
            if !soa_at(got.first()) || !soa_at(got.last()) {
                diffs.push("does not start and end with the SOA".into());
            }
            let count = |t: &str, name: &str| got.iter().filter(|r| r.rtype == t && (name.is_empty() || r.name.eq_ignore_ascii_case(name))).count();
            let (ns, a, aaaa) = (count("NS", ""), count("A", "ns.dns.cluster.local."), count("AAAA", "ns.dns.cluster.local."));
            if (ns, a, aaaa) != (1, 1, 1) {
                let ns_rrs: Vec<Rr> = got.iter().filter(|r| r.rtype == "NS" || r.name.eq_ignore_ascii_case("ns.dns.cluster.local.")).cloned().collect();
                diffs.push(format!("{ns} NS, {a} A and {aaaa} AAAA for ns.dns.cluster.local. {}, want 1, 1, 1", list(&ns_rrs)));
            }
        }
        "zone" => {
            if rcode != ResponseCode::NoError {
                diffs.push(format!("rcode {}", kdns_host::dig::rcode_name(rcode)));
            }
            if !soa_at(got.first()) || !soa_at(got.last()) || got.len() < 2 {
                diffs.push("does not start and end with the SOA".into());
                return diffs;
            }
            let want: Vec<Rr> = expected_zone.iter().map(|t| parse_rr(t)).collect();
            if !duplicate(&want[0], &got[0]) {
                diffs.push(format!("SOA {}, want {}", got[0], want[0]));
            }
            let (missing, unexpected) = pair(&want[1..want.len() - 1], &got[1..got.len() - 1], duplicate);
            if !missing.is_empty() {
                diffs.push(format!("missing {}", list(&missing)));
            }
            if !unexpected.is_empty() {
                diffs.push(format!("not in CoreDNS's zone {}", list(&unexpected)));
            }
        }
        other => panic!("transfer expectation {other}"),
    }
    diffs
}

fn summary(rrs: &[Rr]) -> String {
    rrs.iter().take(3).map(ToString::to_string).collect::<Vec<_>>().join(", ") + if rrs.len() > 3 { ", ..." } else { "" }
}

// ---------------------------------------------------------------------------------------------

/// The cases docs/coredns-cases.md lists as known differences: every `origin` in backquotes
/// under its "## Known differences" heading.
fn known_differences(origins: &BTreeSet<String>) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/coredns-cases.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut known = BTreeSet::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("## ") {
            inside = line.starts_with("## Known differences");
            continue;
        }
        if !inside {
            continue;
        }
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 1 && origins.contains(part) {
                known.insert(part.to_string());
            }
        }
    }
    known
}

struct Row {
    suite: String,
    origin: String,
    question: String,
    kdns: Vec<String>,
    coredns: Vec<String>,
}

#[test]
fn coredns_own_kubernetes_cases_against_kdns_and_coredns() {
    let data: Data = serde_norway::from_str(&std::fs::read_to_string(cases_dir().join("cases.yaml")).expect("cases.yaml")).expect("cases.yaml parses");
    let dir = TempDir::new("coredns-cases");
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    for s in &data.suites {
        let setup = Setup {
            name: &s.name,
            mock: &s.mock,
            zones: &s.zones,
            options: s.options.clone(),
            local_ips: &s.local_ips,
            not_synced: s.not_synced,
            upstream: s.cases.iter().filter_map(|c| c.upstream.clone()).collect(),
            transfer: false,
        };
        let servers = start(&dir, &setup);
        notes.extend(servers.notes.iter().map(|n| format!("{} ({}): {n}", s.name, s.test)));
        if let Some(why) = &s.unchecked {
            notes.push(format!("{} ({}): {why}", s.name, s.test));
        }
        for c in &s.cases {
            let run = |addr| match ask_udp(addr, &c.qname, &c.qtype) {
                Ok(m) => check(c, &s.checks, &m),
                Err(e) => vec![e],
            };
            rows.push(Row {
                suite: s.name.clone(),
                origin: c.origin.clone(),
                question: format!("{} {}", c.qname, c.qtype),
                kdns: run(servers.kdns.udp),
                coredns: run(servers.coredns.addr),
            });
        }
    }

    for t in &data.transfers {
        let setup = Setup { name: &t.name, mock: &t.mock, zones: &t.zones, options: t.options.clone(), local_ips: &t.local_ips, not_synced: false, upstream: Vec::new(), transfer: true };
        let servers = start(&dir, &setup);
        notes.extend(servers.notes.iter().map(|n| format!("{}: {n}", t.name)));
        for c in &t.cases {
            let run = |udp: SocketAddr, tcp: SocketAddr| {
                let serial = match c.serial.as_deref() {
                    None => None,
                    Some("current") => match ask_udp(udp, &c.qname, "SOA").ok().and_then(|m| m.answers.first().cloned()) {
                        Some(Record { data: RData::SOA(soa), .. }) => Some(soa.serial),
                        _ => return vec!["no SOA to take the current serial from".to_string()],
                    },
                    Some(n) => Some(n.parse().expect("serial")),
                };
                check_transfer(c, &data.expected_zone, ask_transfer(tcp, &c.qname, &c.qtype, serial))
            };
            rows.push(Row {
                suite: t.name.clone(),
                origin: c.origin.clone(),
                question: format!("{} {}{}", c.qname, c.qtype, c.serial.as_ref().map(|s| format!(" serial {s}")).unwrap_or_default()),
                kdns: run(servers.kdns.udp, servers.kdns.tcp),
                coredns: run(servers.coredns.addr, servers.coredns.addr),
            });
        }
    }

    let origins: BTreeSet<String> = rows.iter().map(|r| r.origin.clone()).collect();
    assert_eq!(origins.len(), rows.len(), "case origins are unique");
    let known = known_differences(&origins);
    let verdict = |d: &[String]| if d.is_empty() { "pass" } else { "FAIL" };
    println!("\n{:<15} {:<48} {:<62} {:<7} {}", "suite", "CoreDNS case", "question", "kdns", "CoreDNS");
    for r in &rows {
        let k = match (r.kdns.is_empty(), known.contains(&r.origin)) {
            (true, true) => "pass*",
            (true, false) => "pass",
            (false, true) => "known",
            (false, false) => "FAIL",
        };
        println!("{:<15} {:<48} {:<62} {:<7} {}", r.suite, r.origin, r.question, k, verdict(&r.coredns));
    }
    println!("\n(known: failing and listed in docs/coredns-cases.md; pass*: listed there but passing now)\n");
    for r in rows.iter().filter(|r| !r.kdns.is_empty() || !r.coredns.is_empty()) {
        println!("{} `{}` ({})", r.suite, r.origin, r.question);
        if !r.kdns.is_empty() {
            println!("    kdns:    {}", r.kdns.join("; "));
        }
        if !r.coredns.is_empty() {
            println!("    CoreDNS: {}", r.coredns.join("; "));
        }
    }
    for n in &notes {
        println!("note: {n}");
    }
    let total = rows.len();
    let kdns_pass = rows.iter().filter(|r| r.kdns.is_empty()).count();
    let coredns_pass = rows.iter().filter(|r| r.coredns.is_empty()).count();
    println!("\nCoreDNS v1.15.0's own kubernetes plugin cases (multicluster skipped): kdns {kdns_pass} of {total}, CoreDNS {coredns_pass} of {total}");

    let now_passing: Vec<&Row> = rows.iter().filter(|r| r.kdns.is_empty() && known.contains(&r.origin)).collect();
    for r in &now_passing {
        println!("note: `{}` is listed in docs/coredns-cases.md as a known difference but kdns passes it now: take it off the list", r.origin);
    }
    let unlisted: Vec<String> = rows.iter().filter(|r| !r.kdns.is_empty() && !known.contains(&r.origin)).map(|r| format!("{} `{}` ({}): {}", r.suite, r.origin, r.question, r.kdns.join("; "))).collect();
    assert!(unlisted.is_empty(), "{} CoreDNS cases kdns fails that docs/coredns-cases.md does not list:\n{}", unlisted.len(), unlisted.join("\n"));
}
