//! Drives the real `kdns` binary: start it, find its port, read its logs, stop it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `kdns` binary: $KDNS_BIN, else `kdns` next to the test executable's target directory.
pub fn kdns_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KDNS_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let bin = dir.join("kdns");
    assert!(bin.exists(), "{} not found: build it first (cargo build -p kdns-host), or set KDNS_BIN", bin.display());
    bin
}

/// A running `kdns serve`; killed on drop.
pub struct Kdns {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// The ops endpoint, when started with --http-listen.
    pub http: Option<SocketAddr>,
    /// The gRPC endpoint, when started with --grpc-listen.
    pub grpc: Option<SocketAddr>,
}

impl Kdns {
    /// Starts `kdns serve --listen 127.0.0.1:0 ARGS...` and waits until it serves.
    pub fn start(args: &[String]) -> Kdns {
        Self::start_on("127.0.0.1:0", args)
    }

    pub fn start_on(listen: &str, args: &[String]) -> Kdns {
        Self::spawn(listen, args, None)
    }

    /// Like [`Kdns::start`], run from `cwd` (for relative paths).
    pub fn start_in(cwd: &Path, args: &[String]) -> Kdns {
        Self::spawn("127.0.0.1:0", args, Some(cwd))
    }

    fn spawn(listen: &str, args: &[String], cwd: Option<&Path>) -> Kdns {
        let mut cmd = Command::new(kdns_bin());
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .arg("serve")
            .args(["--listen", listen])
            .args(args)
            .env("KDNS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kdns starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let serving = logs.lock().unwrap().iter().find(|l| l.contains("kdns serving")).cloned();
            if let Some(line) = serving {
                let field = |name: &str| -> Option<SocketAddr> {
                    let start = line.find(&format!(" {name}="))? + name.len() + 2;
                    line[start..].split_whitespace().next()?.parse().ok()
                };
                let (udp, tcp) = (field("udp").expect("udp address in log"), field("tcp").expect("tcp address in log"));
                return Kdns { child, logs, udp, tcp, http: field("http"), grpc: field("grpc") };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("kdns exited with {status} before serving:\n{}", logs.lock().unwrap().join("\n"));
            }
            assert!(Instant::now() < deadline, "kdns did not start in time:\n{}", logs.lock().unwrap().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(l) = self.logs().into_iter().find(|l| l.contains(needle)) {
                return Some(l);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The process ID (to read its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit by itself (after a signal the test sent).
    pub fn wait_for_exit(mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(Instant::now() < deadline, "kdns did not exit in {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(Instant::now() < deadline, "kdns did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Kdns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs dig against `server` and returns its output. `extra` are dig options (`+tcp`, ...).
pub fn dig(server: SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> String {
    let run = || {
        let out = Command::new("dig")
            .arg(format!("@{}", server.ip()))
            .args(["-p", &server.port().to_string()])
            .args([name, rtype])
            .args(["+nocmd", "+comments", "+question", "+answer", "+authority", "+additional", "+time=2", "+tries=2"])
            .args(extra)
            .output()
            .expect("dig runs (apt-get install dnsutils)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // dig binds its UDP socket to port 0 with SO_REUSEPORT and connects it. Running as the same
    // user as the server, it can be given the server's own port (a reuse-port group admits it),
    // and then its query is delivered to itself: dig prints its own question back with this
    // warning. That is the harness, not the server: ask again from another port.
    let mut out = run();
    for _ in 0..3 {
        if !out.contains("Warning: query response not set") {
            break;
        }
        out = run();
    }
    out
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kdns-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A plain HTTP/1.1 GET; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("http connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The value of the Prometheus sample whose name and labels contain all of `needles`.
pub fn metric(text: &str, name: &str, needles: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// A file the build or tests/setup puts under the target directory (`rel`), or the path in
/// the environment variable `env`; `hint` says how to get it when it is missing.
fn built_file(env: &str, rel: &str, hint: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let path = exe.ancestors().nth(3).expect("target directory").join(rel);
    assert!(path.exists(), "{} not found: {hint}, or set {env}", path.display());
    path
}

/// The CoreDNS binary tests/setup builds (or $KDNS_COREDNS).
pub fn coredns_bin() -> PathBuf {
    built_file("KDNS_COREDNS", "tools/bin/coredns", "run tests/setup (it builds CoreDNS)")
}

/// CoreDNS with the kdns wasm plugin compiled in (tests/setup builds it from
/// plugin-wasm/coredns), or $KDNS_COREDNS_KDNS.
pub fn coredns_kdns_bin() -> PathBuf {
    built_file("KDNS_COREDNS_KDNS", "tools/bin/coredns-kdns", "run tests/setup (it builds CoreDNS with the kdns plugin)")
}

/// The kdns ABI v1 module the build embeds in `kdns` (host/build.rs), or $KDNS_PLUGIN_WASM.
pub fn plugin_wasm() -> PathBuf {
    built_file("KDNS_PLUGIN_WASM", "wasm-embed/wasm32-unknown-unknown/wasm-release/kdns_plugin.wasm", "build kdns first (cargo build -p kdns-host)")
}

/// A free loopback port for both UDP and TCP (for programs that cannot report theirs).
pub fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running CoreDNS with the given Corefile; killed on drop.
pub struct CoreDns {
    child: Child,
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl CoreDns {
    /// Starts CoreDNS with `corefile` (where `{PORT}` is replaced by a free port) and waits
    /// until it answers over UDP.
    pub fn start(corefile: &str) -> CoreDns {
        Self::start_with(&coredns_bin(), corefile)
    }

    /// Like [`CoreDns::start`] with another CoreDNS binary (e.g. [`coredns_kdns_bin`]).
    pub fn start_with(bin: &Path, corefile: &str) -> CoreDns {
        let port = free_port();
        let dir = TempDir::new("coredns");
        std::fs::write(dir.path("Corefile"), corefile.replace("{PORT}", &port.to_string())).unwrap();
        let child = Command::new(bin)
            .args(["-conf", "Corefile", "-quiet"])
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("coredns starts");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut c = CoreDns { child, addr, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dig(addr, ".", "NS", &["+time=1", "+tries=1"]).contains("->>HEADER<<-") {
            if let Ok(Some(s)) = c.child.try_wait() {
                panic!("coredns exited with {s}");
            }
            assert!(Instant::now() < deadline, "coredns did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }
}

impl Drop for CoreDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
