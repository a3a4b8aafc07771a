//! The wasm engine: the same core, compiled to the kdns ABI v1 module (docs/abi.md), run by
//! wasmtime. The module is compiled once; each slot is one instance holding its own copy of the
//! cluster view, so queries on different cores never share an instance. Every call is bounded
//! by epoch interruption (time, unless [`WasmLimits::timeouts`] is off) and a memory limit. A
//! trap or a timeout answers SERVFAIL for that query only; the instance is rebuilt from the last
//! snapshot and the deltas since.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use kdns_proto::{Message as _, v1};
use wasmtime::{Config, Engine as Runtime, Instance, Memory, Module, Store, StoreLimits, StoreLimitsBuilder, TypedFunc};

use super::{Engine, servfail};

/// The module built from plugin-wasm, embedded at build time.
pub const EMBEDDED_MODULE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kdns_plugin.wasm"));

/// The ABI version this host speaks.
pub const ABI_VERSION: i32 = 1;

/// The largest DNS message (TCP's 16-bit length).
const QUERY_BUFFER: usize = 65535;

/// How often the epoch advances; call deadlines are counted in these ticks.
const TICK: Duration = Duration::from_millis(5);

#[derive(Debug, Clone)]
pub struct WasmLimits {
    /// Longest a query may run before it is interrupted.
    pub query_timeout: Duration,
    /// Longest a snapshot load or delta may run.
    pub load_timeout: Duration,
    /// Largest linear memory an instance may grow to.
    pub memory_bytes: usize,
    /// Instances (each holds a copy of the cluster view); 0 = one per core.
    pub instances: usize,
    /// Whether the timeouts apply. They need interruption checks compiled into every function
    /// and loop of the module, which cost about a sixth of the time per query (measured at 100k
    /// endpoints: 1.85 against 1.53 µs). Without them a module that loops holds its thread, as
    /// the native engine would.
    pub timeouts: bool,
}

impl Default for WasmLimits {
    fn default() -> Self {
        WasmLimits { query_timeout: Duration::from_millis(250), load_timeout: Duration::from_secs(60), memory_bytes: 1 << 30, instances: 0, timeouts: true }
    }
}

/// What it takes to rebuild an instance: the config, the last snapshot, the deltas since.
#[derive(Default)]
struct Recovery {
    config: Vec<u8>,
    snapshot: Option<Vec<u8>>,
    deltas: Vec<Vec<u8>>,
}

struct Slot {
    store: Store<StoreLimits>,
    memory: Memory,
    /// A buffer allocated once in the module for queries (at most 64 KiB), so a query costs
    /// one call into the module rather than three (alloc, resolve, free).
    query_buf: i32,
    alloc: TypedFunc<i32, i32>,
    free: TypedFunc<(i32, i32), ()>,
    configure: TypedFunc<(i32, i32), i32>,
    load: TypedFunc<(i32, i32), i32>,
    apply: TypedFunc<(i32, i32), i32>,
    resolve: TypedFunc<(i32, i32, i32), i64>,
    /// Whether calls get deadlines ([`WasmLimits::timeouts`]).
    timeouts: bool,
}

/// A call that did not complete: the instance is unusable afterwards.
#[derive(Debug)]
struct Trapped(anyhow::Error);

impl From<wasmtime::Error> for Trapped {
    fn from(e: wasmtime::Error) -> Self {
        Trapped(e.into())
    }
}

/// wasmtime's error type into ours.
fn wt<T>(r: wasmtime::Result<T>) -> anyhow::Result<T> {
    r.map_err(anyhow::Error::from)
}

impl Slot {
    fn new(runtime: &Runtime, module: &Module, limits: &WasmLimits) -> anyhow::Result<Slot> {
        let store_limits = StoreLimitsBuilder::new().memory_size(limits.memory_bytes).instances(1).build();
        let mut store = Store::new(runtime, store_limits);
        store.limiter(|l| l);
        if limits.timeouts {
            store.set_epoch_deadline(ticks(limits.load_timeout));
        }
        // No imports: the module must be self-contained.
        let instance = wt(Instance::new(&mut store, module, &[])).context("instantiating the wasm module")?;
        let version: TypedFunc<(), i32> = wt(instance.get_typed_func(&mut store, "kdns_abi_version")).context("export kdns_abi_version")?;
        let got = wt(version.call(&mut store, ()))?;
        if got != ABI_VERSION {
            bail!("the wasm module speaks kdns ABI version {got}; this host speaks {ABI_VERSION}");
        }
        let memory = instance.get_memory(&mut store, "memory").context("export memory")?;
        let alloc: TypedFunc<i32, i32> = wt(instance.get_typed_func(&mut store, "kdns_alloc")).context("export kdns_alloc")?;
        let query_buf = wt(alloc.call(&mut store, QUERY_BUFFER as i32))?;
        if query_buf == 0 {
            bail!("the wasm module could not allocate a {QUERY_BUFFER}-byte query buffer");
        }
        Ok(Slot {
            query_buf,
            alloc,
            free: wt(instance.get_typed_func(&mut store, "kdns_free")).context("export kdns_free")?,
            configure: wt(instance.get_typed_func(&mut store, "kdns_configure")).context("export kdns_configure")?,
            load: wt(instance.get_typed_func(&mut store, "kdns_load")).context("export kdns_load")?,
            apply: wt(instance.get_typed_func(&mut store, "kdns_apply")).context("export kdns_apply")?,
            resolve: wt(instance.get_typed_func(&mut store, "kdns_resolve")).context("export kdns_resolve")?,
            store,
            memory,
            timeouts: limits.timeouts,
        })
    }

    /// Copies `bytes` into a module buffer, runs `f` on it, and gives the buffer back.
    fn with_buffer<T>(&mut self, bytes: &[u8], f: impl FnOnce(&mut Slot, i32, i32) -> wasmtime::Result<T>) -> Result<T, Trapped> {
        let len = i32::try_from(bytes.len()).map_err(|_| Trapped(anyhow::anyhow!("message of {} bytes is too large", bytes.len())))?;
        let ptr = self.alloc.call(&mut self.store, len).map_err(Trapped::from)?;
        if ptr == 0 {
            return Err(Trapped(anyhow::anyhow!("the module could not allocate {len} bytes")));
        }
        self.memory.write(&mut self.store, ptr as u32 as usize, bytes).map_err(|e| Trapped(anyhow::Error::from(e)))?;
        let result = f(self, ptr, len).map_err(Trapped::from)?;
        self.free.call(&mut self.store, (ptr, len)).map_err(Trapped::from)?;
        Ok(result)
    }

    /// Runs configure/load/apply; `Ok(code)` is the module's return code.
    fn input(&mut self, which: Input, bytes: &[u8], deadline: Duration) -> Result<i32, Trapped> {
        self.set_deadline(deadline);
        let func = match which {
            Input::Configure => self.configure.clone(),
            Input::Load => self.load.clone(),
            Input::Apply => self.apply.clone(),
        };
        self.with_buffer(bytes, |s, ptr, len| func.call(&mut s.store, (ptr, len)))
    }

    /// The next call's time limit, when limits apply.
    fn set_deadline(&mut self, deadline: Duration) {
        if self.timeouts {
            self.store.set_epoch_deadline(ticks(deadline));
        }
    }

    fn resolve(&mut self, query: &[u8], max_udp: u16, deadline: Duration) -> Result<Option<Vec<u8>>, Trapped> {
        self.set_deadline(deadline);
        let query = &query[..query.len().min(QUERY_BUFFER)];
        self.memory.write(&mut self.store, self.query_buf as u32 as usize, query).map_err(|e| Trapped(anyhow::Error::from(e)))?;
        let packed = self.resolve.call(&mut self.store, (self.query_buf, query.len() as i32, i32::from(max_udp)))?;
        if packed == 0 {
            return Ok(None);
        }
        let (ptr, len) = ((packed as u64 >> 32) as usize, (packed as u64 & 0xffff_ffff) as usize);
        let data = self.memory.data(&self.store);
        let response = data.get(ptr..ptr.saturating_add(len)).ok_or_else(|| Trapped(anyhow::anyhow!("response outside the module's memory")))?;
        Ok(Some(response.to_vec()))
    }
}

#[derive(Clone, Copy)]
enum Input {
    Configure,
    Load,
    Apply,
}

fn ticks(d: Duration) -> u64 {
    (d.as_millis() / TICK.as_millis()).max(2) as u64
}

pub struct WasmEngine {
    runtime: Runtime,
    /// The compiled module new instances come from; replaced by [`WasmEngine::replace_module`].
    module: Mutex<Module>,
    /// Serializes writers (load, apply, module replacement); queries never take it.
    writer: Mutex<()>,
    limits: WasmLimits,
    slots: Vec<Mutex<Option<Slot>>>,
    next: AtomicUsize,
    recovery: Mutex<Recovery>,
    /// Queries that trapped or timed out (answered SERVFAIL).
    pub traps: AtomicU64,
    /// Instances rebuilt after a trap.
    pub rebuilds: AtomicU64,
    stop_ticker: Arc<AtomicBool>,
}

impl WasmEngine {
    /// Compiles `module_bytes` once and starts the instances with `config`.
    pub fn new(module_bytes: &[u8], config: v1::Config, limits: WasmLimits) -> anyhow::Result<WasmEngine> {
        let mut cfg = Config::new();
        cfg.epoch_interruption(limits.timeouts);
        let runtime = wt(Runtime::new(&cfg))?;
        let module = wt(Module::new(&runtime, module_bytes)).context("compiling the wasm module")?;
        let n = if limits.instances == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { limits.instances };
        let stop_ticker = Arc::new(AtomicBool::new(false));
        if limits.timeouts {
            let (runtime, stop) = (runtime.clone(), stop_ticker.clone());
            std::thread::Builder::new().name("kdns-wasm-epoch".into()).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    runtime.increment_epoch();
                }
            })?;
        }
        let recovery = Recovery { config: config.encode_to_vec(), ..Default::default() };
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            slots.push(Mutex::new(Some(build_slot(&runtime, &module, &limits, &recovery)?)));
        }
        Ok(WasmEngine {
            runtime,
            module: Mutex::new(module),
            writer: Mutex::new(()),
            limits,
            slots,
            next: AtomicUsize::new(0),
            recovery: Mutex::new(recovery),
            traps: AtomicU64::new(0),
            rebuilds: AtomicU64::new(0),
            stop_ticker,
        })
    }

    /// A new instance brought to the current state.
    fn build_slot(&self) -> anyhow::Result<Slot> {
        let module = self.module.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let recovery = self.recovery.lock().unwrap_or_else(|e| e.into_inner());
        build_slot(&self.runtime, &module, &self.limits, &recovery)
    }

    /// Swaps in another module without dropping queries: it is compiled and checked (ABI
    /// version, the current config and snapshot load) before any instance changes; then each
    /// instance is replaced in turn, a query in flight finishing on the old one. On error the
    /// old module keeps serving.
    pub fn replace_module(&self, module_bytes: &[u8]) -> anyhow::Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let module = wt(Module::new(&self.runtime, module_bytes)).context("compiling the wasm module")?;
        let mut fresh = Vec::with_capacity(self.slots.len());
        {
            let recovery = self.recovery.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..self.slots.len() {
                fresh.push(build_slot(&self.runtime, &module, &self.limits, &recovery)?);
            }
        }
        *self.module.lock().unwrap_or_else(|e| e.into_inner()) = module;
        for (slot, new) in self.slots.iter().zip(fresh) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(new);
        }
        Ok(())
    }

    /// Sends an input to every instance. The first instance's verdict decides: a rejected input
    /// changes nothing anywhere (the module validates before it changes state).
    fn broadcast(&self, which: Input, bytes: &[u8]) -> anyhow::Result<()> {
        let mut first = true;
        for slot in &self.slots {
            let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
            let Some(instance) = guard.as_mut() else { continue }; // rebuilt later from recovery
            match instance.input(which, bytes, self.limits.load_timeout) {
                Ok(0) => {}
                Ok(code) if first => bail!("the wasm module rejected the input (code {code}, see docs/abi.md)"),
                Ok(code) => {
                    tracing::error!(code, "wasm instance disagreed with the first; rebuilding it");
                    *guard = None;
                }
                Err(Trapped(e)) => {
                    tracing::error!(error = %format!("{e:#}"), "wasm instance trapped on input; rebuilding it");
                    self.traps.fetch_add(1, Ordering::Relaxed);
                    *guard = None;
                    if first {
                        return Err(e.context("the wasm module trapped on the input"));
                    }
                }
            }
            first = false;
        }
        Ok(())
    }

    fn rebuild(&self, guard: &mut Option<Slot>) -> Option<()> {
        match self.build_slot() {
            Ok(slot) => {
                *guard = Some(slot);
                self.rebuilds.fetch_add(1, Ordering::Relaxed);
                Some(())
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "rebuilding a wasm instance failed");
                None
            }
        }
    }
}

/// A new instance brought to `recovery`'s state (config, snapshot, deltas).
fn build_slot(runtime: &Runtime, module: &Module, limits: &WasmLimits, recovery: &Recovery) -> anyhow::Result<Slot> {
    let mut slot = Slot::new(runtime, module, limits)?;
    let load = limits.load_timeout;
    check(slot.input(Input::Configure, &recovery.config, load), "config")?;
    if let Some(snapshot) = &recovery.snapshot {
        check(slot.input(Input::Load, snapshot, load), "snapshot")?;
    }
    for delta in &recovery.deltas {
        check(slot.input(Input::Apply, delta, load), "delta")?;
    }
    Ok(slot)
}

fn check(r: Result<i32, Trapped>, what: &str) -> anyhow::Result<()> {
    match r {
        Ok(0) => Ok(()),
        Ok(code) => bail!("replaying the {what} into a new instance failed (code {code})"),
        Err(Trapped(e)) => Err(e.context(format!("replaying the {what} into a new instance trapped"))),
    }
}

impl Engine for WasmEngine {
    fn load(&self, snapshot: v1::Snapshot) -> anyhow::Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = snapshot.encode_to_vec();
        // Hold the recovery lock across the broadcast so a concurrent rebuild cannot replay a
        // half-updated state.
        let mut recovery = self.recovery.lock().unwrap_or_else(|e| e.into_inner());
        let previous = (recovery.snapshot.take(), std::mem::take(&mut recovery.deltas));
        recovery.snapshot = Some(bytes.clone());
        drop(recovery);
        let result = self.broadcast(Input::Load, &bytes);
        if result.is_err() {
            let mut recovery = self.recovery.lock().unwrap_or_else(|e| e.into_inner());
            (recovery.snapshot, recovery.deltas) = previous;
        }
        result
    }

    fn apply(&self, delta: v1::Delta) -> anyhow::Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = delta.encode_to_vec();
        self.recovery.lock().unwrap_or_else(|e| e.into_inner()).deltas.push(bytes.clone());
        let result = self.broadcast(Input::Apply, &bytes);
        let mut recovery = self.recovery.lock().unwrap_or_else(|e| e.into_inner());
        if result.is_err() {
            recovery.deltas.pop();
        }
        // A watched cluster sends deltas for ever: keep what a rebuild replays bounded.
        let (snapshot_len, delta_len) = (recovery.snapshot.as_ref().map_or(0, Vec::len), recovery.deltas.iter().map(Vec::len).sum());
        if super::time_to_fold(snapshot_len, delta_len)
            && let Some(folded) = recovery.snapshot.as_deref().and_then(|s| super::fold_deltas(s, recovery.deltas.iter().map(Vec::as_slice)))
        {
            recovery.snapshot = Some(folded);
            recovery.deltas.clear();
        }
        result
    }

    fn configure(&self, config: v1::Config) -> anyhow::Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = config.encode_to_vec();
        // As in load: an instance rebuilt meanwhile starts from the new settings.
        let previous = std::mem::replace(&mut self.recovery.lock().unwrap_or_else(|e| e.into_inner()).config, bytes.clone());
        let result = self.broadcast(Input::Configure, &bytes);
        if result.is_err() {
            self.recovery.lock().unwrap_or_else(|e| e.into_inner()).config = previous;
        }
        result
    }

    fn resolve(&self, query: &[u8], max_udp: u16) -> Option<Vec<u8>> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        // Take a free instance if there is one; otherwise wait for ours.
        let mut guard = (0..n)
            .find_map(|i| self.slots[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| self.slots[start].lock().unwrap_or_else(|e| e.into_inner()));
        if guard.is_none() {
            self.rebuild(&mut guard)?;
        }
        let slot = guard.as_mut()?;
        match slot.resolve(query, max_udp, self.limits.query_timeout) {
            Ok(Some(response)) => Some(response),
            // The module sends nothing for non-queries; anything else it did not answer fails.
            Ok(None) => servfail(query),
            Err(Trapped(e)) => {
                self.traps.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %format!("{e:#}"), "wasm query trapped; answering SERVFAIL and rebuilding the instance");
                *guard = None;
                self.rebuild(&mut guard);
                servfail(query)
            }
        }
    }

    fn kind(&self) -> &'static str {
        "wasm"
    }

    fn trap_counts(&self) -> Option<(u64, u64)> {
        Some((self.traps.load(Ordering::Relaxed), self.rebuilds.load(Ordering::Relaxed)))
    }
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}
