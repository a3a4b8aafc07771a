//! Heap used by the core's index: bytes per endpoint at a given cluster size, measured with a
//! counting allocator around `Resolver::load`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use clap::Parser;
use kdns_bench::{Shape, snapshot};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
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
    let snap = snapshot(&shape);
    let mut resolver = kdns_core::Resolver::new(Default::default()).unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    let started = std::time::Instant::now();
    resolver.load(snap).unwrap();
    let took = started.elapsed();
    let index = LIVE.load(Ordering::Relaxed) - before;
    // The snapshot was consumed by load: what remains is the index alone.
    println!(
        "services={} endpoints={} index_bytes={} bytes_per_endpoint={:.1} load_ms={:.1}",
        a.services,
        a.endpoints,
        index,
        index as f64 / a.endpoints as f64,
        took.as_secs_f64() * 1e3
    );
}
