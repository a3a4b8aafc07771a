//! kdns-core as a WebAssembly module: the ABI v1 of shared/DESIGN.md, documented for host
//! writers in docs/abi.md. No imports; all logic is in kdns-core, this file only moves bytes.
//!
//! Memory ownership: the host asks `kdns_alloc` for a buffer, writes a message into it, passes
//! it to a call, and gives it back with `kdns_free`. A response from `kdns_resolve` belongs to
//! the module and stays valid until the next call into the module.
//!
//! `no_std` (dlmalloc as the allocator, with a per-query arena in front of it: `arena.rs`)
//! keeps std's formatting and panic machinery out of the module: a panic is a bug, and it
//! becomes a trap the host survives.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::alloc::{Layout, alloc, dealloc};
use alloc::vec::Vec;
use core::cell::RefCell;

use kdns_core::Resolver;

mod arena;

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: arena::CallArena = arena::CallArena;

#[cfg(all(target_arch = "wasm32", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// The ABI version this module implements.
const ABI_VERSION: i32 = 1;
/// A pointer or length the host passed is unusable (negative, null, out of range).
const ERR_ARGUMENT: i32 = -1;

struct State {
    resolver: Resolver,
    /// The last response, kept alive for the host to read.
    response: Vec<u8>,
}

/// The module's state. A wasm instance is single-threaded, so a `RefCell` in a static suffices.
struct Global(RefCell<Option<State>>);

// SAFETY: wasm32-unknown-unknown without the threads proposal runs one thread per instance.
unsafe impl Sync for Global {}

static STATE: Global = Global(RefCell::new(None));

fn with_state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut slot = STATE.0.borrow_mut();
    let state = slot.get_or_insert_with(|| State { resolver: Resolver::default(), response: Vec::new() });
    f(state)
}

fn layout(len: i32) -> Option<Layout> {
    let len = usize::try_from(len).ok()?;
    Layout::from_size_align(len.max(1), 1).ok()
}

/// Borrows the host's buffer `[ptr, ptr + len)`.
fn input<'a>(ptr: i32, len: i32) -> Option<&'a [u8]> {
    let len = usize::try_from(len).ok()?;
    if len == 0 {
        return Some(&[]);
    }
    if ptr <= 0 {
        return None;
    }
    // SAFETY: the host wrote `len` bytes at `ptr` inside this module's memory (a buffer from
    // `kdns_alloc`); wasm memory accesses are bounds-checked, so a lie traps instead of reading
    // out of the sandbox.
    Some(unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len) })
}

#[unsafe(no_mangle)]
pub extern "C" fn kdns_abi_version() -> i32 {
    ABI_VERSION
}

/// A buffer of `len` bytes for the host to write into; 0 when `len` is negative or memory is
/// exhausted.
#[unsafe(no_mangle)]
pub extern "C" fn kdns_alloc(len: i32) -> i32 {
    let Some(layout) = layout(len) else { return 0 };
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { alloc(layout) };
    ptr as usize as i32
}

/// Gives back a buffer from `kdns_alloc` with the same `len`.
#[unsafe(no_mangle)]
pub extern "C" fn kdns_free(ptr: i32, len: i32) {
    let Some(layout) = layout(len) else { return };
    if ptr <= 0 {
        return;
    }
    // SAFETY: the ABI requires `ptr`/`len` to come from `kdns_alloc`.
    unsafe { dealloc(ptr as usize as *mut u8, layout) }
}

fn with_input(ptr: i32, len: i32, f: impl FnOnce(&mut Resolver, &[u8]) -> Result<(), kdns_core::InputError>) -> i32 {
    let Some(bytes) = input(ptr, len) else { return ERR_ARGUMENT };
    with_state(|s| match f(&mut s.resolver, bytes) {
        Ok(()) => 0,
        Err(e) => e.code(),
    })
}

/// Replaces the settings with a `kdns.v1.Config`; the cluster view is kept. 0 = ok.
#[unsafe(no_mangle)]
pub extern "C" fn kdns_configure(ptr: i32, len: i32) -> i32 {
    with_input(ptr, len, |r, b| r.configure_bytes(b))
}

/// Replaces the cluster view with a `kdns.v1.Snapshot`. 0 = ok; on error the old view stays.
#[unsafe(no_mangle)]
pub extern "C" fn kdns_load(ptr: i32, len: i32) -> i32 {
    with_input(ptr, len, |r, b| r.load_bytes(b))
}

/// Applies a `kdns.v1.Delta`. 0 = ok; on error nothing changes.
#[unsafe(no_mangle)]
pub extern "C" fn kdns_apply(ptr: i32, len: i32) -> i32 {
    with_input(ptr, len, |r, b| r.apply_bytes(b))
}

/// Answers a DNS query message. `max_udp` is the UDP response limit, or 0 over TCP. Returns
/// `(ptr << 32) | len` of the response, valid until the next call; 0 when nothing is to be
/// sent (not a query, shorter than a header) or the arguments are unusable.
#[unsafe(no_mangle)]
pub extern "C" fn kdns_resolve(ptr: i32, len: i32, max_udp: i32) -> i64 {
    let Some(query) = input(ptr, len) else { return 0 };
    let max_udp = u16::try_from(max_udp.max(0)).unwrap_or(u16::MAX);
    with_state(|s| {
        // The previous response may live in the arena, which this call reuses.
        s.response = Vec::new();
        let Some(response) = arena::during_call(|| s.resolver.resolve(query, max_udp)) else { return 0 };
        s.response = response;
        ((s.response.as_ptr() as usize as i64) << 32) | s.response.len() as i64
    })
}
