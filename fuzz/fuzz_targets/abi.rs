//! The wasm ABI boundary: random sequences of calls into the kdns module as a host would make
//! them (buffers from kdns_alloc, any bytes in them, any lengths up to the buffer), plus hostile
//! ones (any pointer and length). Checks: a well-behaved host never sees a trap; a response
//! region always lies inside the module's memory; the host never crashes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wasmtime::{Engine, Instance, Module, Store, TypedFunc};

/// The module fuzz/run builds (KDNS_FUZZ_MODULE is set by it).
const MODULE: &[u8] = include_bytes!(env!("KDNS_FUZZ_MODULE"));

fn compiled() -> &'static (Engine, Module) {
    static M: OnceLock<(Engine, Module)> = OnceLock::new();
    M.get_or_init(|| {
        let engine = Engine::default();
        let module = Module::new(&engine, MODULE).expect("the module compiles");
        (engine, module)
    })
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_le_bytes([self.u8()?, self.u8()?, self.u8()?, self.u8()?]))
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fuzz_target!(|data: &[u8]| {
    let (engine, module) = compiled();
    let mut store = Store::new(engine, ());
    let instance = Instance::new(&mut store, module, &[]).expect("instantiates");
    let memory = instance.get_memory(&mut store, "memory").unwrap();
    let f2 = |store: &mut Store<()>, name| -> TypedFunc<(i32, i32), i32> { instance.get_typed_func(store, name).unwrap() };
    let version: TypedFunc<(), i32> = instance.get_typed_func(&mut store, "kdns_abi_version").unwrap();
    assert_eq!(version.call(&mut store, ()).unwrap(), 1);
    let alloc: TypedFunc<i32, i32> = instance.get_typed_func(&mut store, "kdns_alloc").unwrap();
    let free: TypedFunc<(i32, i32), ()> = instance.get_typed_func(&mut store, "kdns_free").unwrap();
    let resolve: TypedFunc<(i32, i32, i32), i64> = instance.get_typed_func(&mut store, "kdns_resolve").unwrap();
    let inputs = [f2(&mut store, "kdns_configure"), f2(&mut store, "kdns_load"), f2(&mut store, "kdns_apply")];

    let mut d = Bytes(data);
    let mut buffers: Vec<(i32, i32)> = Vec::new();
    while let Some(op) = d.u8() {
        let result: wasmtime::Result<()> = match op % 8 {
            // A host's buffer: allocate, fill, use, maybe free.
            0 => {
                let len = (d.u16().unwrap_or(0) % 2048) as i32;
                let ptr = alloc.call(&mut store, len).expect("a well-behaved alloc never traps");
                if ptr != 0 {
                    let bytes = d.take(len as usize).to_vec();
                    memory.write(&mut store, ptr as u32 as usize, &bytes).expect("the buffer is in memory");
                    buffers.push((ptr, len));
                }
                Ok(())
            }
            1..=3 => {
                let Some(&(ptr, len)) = buffers.last() else { continue };
                let used = d.u16().map_or(len, |n| i32::from(n) % (len + 1));
                let code = inputs[(op % 8 - 1) as usize].call(&mut store, (ptr, used)).expect("well-behaved input calls never trap");
                assert!(code <= 0 && code >= -10, "documented codes only, got {code}");
                Ok(())
            }
            4 => {
                let Some(&(ptr, len)) = buffers.last() else { continue };
                let max_udp = i32::from(d.u16().unwrap_or(0));
                let packed = resolve.call(&mut store, (ptr, len, max_udp)).expect("a well-behaved resolve never traps");
                if packed != 0 {
                    let (p, n) = ((packed as u64 >> 32) as usize, (packed as u64 & 0xffff_ffff) as usize);
                    assert!(p + n <= memory.data_size(&store), "the response lies in memory");
                }
                Ok(())
            }
            5 => {
                if let Some((ptr, len)) = buffers.pop() {
                    free.call(&mut store, (ptr, len)).expect("freeing an allocated buffer never traps");
                }
                Ok(())
            }
            // Hostile calls: any pointer and length. A trap is allowed; then the instance is done.
            6 => {
                let (ptr, len) = (d.i32().unwrap_or(0), d.i32().unwrap_or(0));
                inputs[(ptr as u32 % 3) as usize].call(&mut store, (ptr, len)).map(|_| ())
            }
            _ => {
                let (ptr, len, max) = (d.i32().unwrap_or(0), d.i32().unwrap_or(0), d.i32().unwrap_or(0));
                resolve.call(&mut store, (ptr, len, max)).map(|_| ())
            }
        };
        if result.is_err() {
            return;
        }
    }
});
