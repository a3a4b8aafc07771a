//! Per-query resolve time at 10k services / 100k endpoints for the native and wasm engines,
//! snapshot load, and delta apply.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kdns_bench::{Shape, message, queries, snapshot};
use kdns_host::engine::wasm::EMBEDDED_MODULE;
use kdns_host::engine::{Engine, NativeEngine, WasmEngine, WasmLimits};
use kdns_proto::v1;

const SHAPE: Shape = Shape { services: 10_000, endpoints: 100_000, namespaces: 100 };

fn query_mix() -> Vec<Vec<u8>> {
    queries(&SHAPE, 1000).iter().enumerate().map(|(i, (n, t))| message(i as u16, n, t)).collect()
}

fn resolve(c: &mut Criterion) {
    let snap = snapshot(&SHAPE);
    let qs = query_mix();
    let native = NativeEngine::new(v1::Config::default()).unwrap();
    native.load(snap.clone()).unwrap();
    let wasm = WasmEngine::new(EMBEDDED_MODULE, v1::Config::default(), WasmLimits { instances: 1, ..Default::default() }).unwrap();
    wasm.load(snap.clone()).unwrap();
    // As `--wasm-no-timeouts` runs it: no interruption checks compiled in.
    let wasm_fast = WasmEngine::new(EMBEDDED_MODULE, v1::Config::default(), WasmLimits { instances: 1, timeouts: false, ..Default::default() }).unwrap();
    wasm_fast.load(snap).unwrap();
    let mut g = c.benchmark_group("resolve_100k_endpoints");
    g.throughput(Throughput::Elements(qs.len() as u64));
    g.bench_function("native", |b| {
        b.iter(|| {
            for q in &qs {
                black_box(native.resolve(black_box(q), 1232));
            }
        })
    });
    g.bench_function("wasm", |b| {
        b.iter(|| {
            for q in &qs {
                black_box(wasm.resolve(black_box(q), 1232));
            }
        })
    });
    g.bench_function("wasm_no_timeouts", |b| {
        b.iter(|| {
            for q in &qs {
                black_box(wasm_fast.resolve(black_box(q), 1232));
            }
        })
    });
    g.finish();
}

fn load_and_apply(c: &mut Criterion) {
    let snap = snapshot(&SHAPE);
    let mut g = c.benchmark_group("cluster_view_100k_endpoints");
    g.sample_size(10);
    g.bench_function("snapshot_load", |b| {
        b.iter(|| {
            let mut r = kdns_core::Resolver::new(Default::default()).unwrap();
            r.load(black_box(snap.clone())).unwrap();
            r
        })
    });
    let mut resolver = kdns_core::Resolver::new(Default::default()).unwrap();
    resolver.load(snap.clone()).unwrap();
    // Replace one service with 10 endpoints, as a watch event would.
    let mut changed = snap.services[1].clone();
    changed.endpoint_groups[0].endpoints.truncate(5);
    let delta = v1::Delta { serial: 2, upsert_services: vec![changed], ..Default::default() };
    g.sample_size(100);
    g.bench_function("delta_apply_one_service", |b| b.iter(|| resolver.apply(black_box(delta.clone())).unwrap()));
    g.finish();
}

criterion_group!(benches, resolve, load_and_apply);
criterion_main!(benches);
