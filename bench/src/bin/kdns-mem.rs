//! Heap used by the core's index: bytes per endpoint at a given cluster size, measured with a
//! counting allocator around `Resolver::load`; and heap allocations per answered query over the
//! benchmark query mix (each one costs tens of nanoseconds, more under wasm's dlmalloc).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use clap::Parser;
use kdns_bench::{Shape, snapshot};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Allocation calls (alloc and realloc) since start.
static CALLS: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10000)]
    services: usize,
    #[arg(long, default_value_t = 100000)]
    endpoints: usize,
    #[arg(long, default_value_t = 100)]
    namespaces: usize,
}

fn main() {
    let a = Args::parse();
    let shape = Shape { services: a.services, endpoints: a.endpoints, namespaces: a.namespaces };
    let mut resolver = kdns_core::Resolver::new(Default::default()).unwrap();
    // Counted from before the snapshot exists: load consumes and frees it, so what remains
    // is the index alone.
    let before = LIVE.load(Ordering::Relaxed);
    let snap = snapshot(&shape);
    let started = std::time::Instant::now();
    resolver.load(snap).unwrap();
    let took = started.elapsed();
    let index = LIVE.load(Ordering::Relaxed) - before;
    report_allocations_per_query(&shape, &resolver);
    report_live_state(&shape);
    println!(
        "services={} endpoints={} index_bytes={} bytes_per_endpoint={:.1} load_ms={:.1}",
        a.services,
        a.endpoints,
        index,
        index as f64 / a.endpoints as f64,
        took.as_secs_f64() * 1e3
    );
}

/// Allocation calls per query over the mix the benchmarks send, as a UDP server resolves it
/// (1232-byte limit), response buffer included.
fn report_allocations_per_query(shape: &Shape, resolver: &kdns_core::Resolver) {
    let queries: Vec<Vec<u8>> = kdns_bench::queries(shape, 1000).iter().enumerate().map(|(i, (n, t))| kdns_bench::message(i as u16, n, t)).collect();
    let before = CALLS.load(Ordering::Relaxed);
    for q in &queries {
        std::hint::black_box(resolver.resolve(q, 1232));
    }
    let calls = CALLS.load(Ordering::Relaxed) - before;
    println!("allocations_per_query={:.2} (over {} queries)", calls as f64 / queries.len() as f64, queries.len());
}

/// Heap held by the API source's trimmed objects (`LiveState`), and by an index built through
/// deltas the way the API source fills it.
fn report_live_state(shape: &Shape) {
    use kdns_host::cluster::live::{LiveState, Object};
    let dir = std::env::temp_dir().join(format!("kdns-mem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in kdns_bench::manifests(shape) {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let (state, _) = kdns_host::source::manifest::load(std::slice::from_ref(&dir)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let before = LIVE.load(Ordering::Relaxed);
    let mut live = LiveState::new(false);
    for ns in &state.namespaces {
        live.upsert(Object::Namespace(kdns_host::cluster::ObjectKey { namespace: String::new(), name: ns.clone() }));
    }
    for svc in state.services.values() {
        live.upsert(Object::Service(svc.clone()));
    }
    for slice in state.slices.values() {
        live.upsert(Object::Slice(slice.clone()));
    }
    let live_bytes = LIVE.load(Ordering::Relaxed) - before;
    drop(state);
    // The deltas are taken first and kept encoded while they are applied, so that neither the
    // live state's pending set emptying nor the deltas being freed is counted as the index.
    use kdns_proto::Message as _;
    let mut deltas = Vec::new();
    while let Some(delta) = live.next_delta(1, 512) {
        deltas.push(delta.encode_to_vec());
    }
    let mut resolver = kdns_core::Resolver::new(Default::default()).unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    resolver.load(Default::default()).unwrap();
    for delta in &deltas {
        resolver.apply_bytes(delta).unwrap();
    }
    let index = LIVE.load(Ordering::Relaxed) - before;
    println!("live_state_bytes={live_bytes} ({:.1}/endpoint) index_from_deltas_bytes={index} ({:.1}/endpoint)", live_bytes as f64 / shape.endpoints as f64, index as f64 / shape.endpoints as f64);
}
