//! The module's allocator: dlmalloc, plus a bump arena that serves the allocations made while
//! one query is answered.
//!
//! Answering allocates a few short-lived blocks (the parsed question, the answer's record
//! lists, the response) that are all dead, or handed to the host, when the call returns. A
//! bump pointer reset at the start of the next call serves them for a few instructions each,
//! where dlmalloc under wasm costs tens of nanoseconds per allocation and free.
//!
//! What may be allocated during a call: anything that does not outlive the next call. The
//! resolver is borrowed immutably while it answers, so only the response survives, and
//! `kdns_resolve` drops the previous one before it starts. Blocks that do not fit the arena
//! come from dlmalloc as usual, and blocks dlmalloc gave before the call are freed to it.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

/// Room for the largest TCP response (64 KiB) and the records behind it; a larger answer
/// spills to dlmalloc.
const ARENA_BYTES: usize = 128 * 1024;

pub struct Arena {
    /// Start of the arena's block (0 until the first call reserves it).
    base: Cell<usize>,
    /// First free byte.
    next: Cell<usize>,
    /// Whether a call is under way (allocations go to the arena).
    active: Cell<bool>,
}

impl Arena {
    pub const fn new() -> Arena {
        Arena { base: Cell::new(0), next: Cell::new(0), active: Cell::new(false) }
    }

    fn owns(&self, p: *mut u8) -> bool {
        let (base, p) = (self.base.get(), p as usize);
        base != 0 && p >= base && p < base + ARENA_BYTES
    }

    fn bump(&self, l: Layout) -> Option<*mut u8> {
        if !self.active.get() || self.base.get() == 0 {
            return None;
        }
        let start = self.next.get().checked_add(l.align() - 1)? & !(l.align() - 1);
        let end = start.checked_add(l.size())?;
        if end > self.base.get() + ARENA_BYTES {
            return None;
        }
        self.next.set(end);
        Some(start as *mut u8)
    }

    /// Starts a call: later allocations come from the (emptied) arena.
    ///
    /// # Safety
    /// No block from the arena may be in use any more: whatever the previous call left must
    /// have been dropped.
    pub unsafe fn begin(&self, backing: &impl GlobalAlloc) {
        if self.base.get() == 0 {
            // SAFETY: a non-zero size. On failure the arena stays unused and dlmalloc serves.
            let block = unsafe { backing.alloc(Layout::from_size_align_unchecked(ARENA_BYTES, 16)) };
            self.base.set(block as usize);
        }
        self.next.set(self.base.get());
        self.active.set(self.base.get() != 0);
    }

    /// Ends a call: later allocations come from `backing` again. Arena blocks stay readable
    /// until the next [`Arena::begin`].
    pub fn end(&self) {
        self.active.set(false);
    }

    /// # Safety
    /// As [`GlobalAlloc::alloc`].
    pub unsafe fn alloc(&self, backing: &impl GlobalAlloc, l: Layout) -> *mut u8 {
        match self.bump(l) {
            Some(p) => p,
            // SAFETY: forwarded from our caller.
            None => unsafe { backing.alloc(l) },
        }
    }

    /// # Safety
    /// As [`GlobalAlloc::dealloc`].
    pub unsafe fn dealloc(&self, backing: &impl GlobalAlloc, p: *mut u8, l: Layout) {
        if self.owns(p) {
            // The newest block gives its room back (a vector grown and dropped in turn).
            if self.active.get() && p as usize + l.size() == self.next.get() {
                self.next.set(p as usize);
            }
            return;
        }
        // SAFETY: a block `backing` gave, forwarded from our caller.
        unsafe { backing.dealloc(p, l) }
    }

    /// # Safety
    /// As [`GlobalAlloc::realloc`].
    pub unsafe fn realloc(&self, backing: &impl GlobalAlloc, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        if !self.owns(p) {
            // SAFETY: a block `backing` gave, forwarded from our caller.
            return unsafe { backing.realloc(p, l, new_size) };
        }
        if self.active.get() {
            let end = (p as usize).checked_add(new_size);
            if p as usize + l.size() == self.next.get() && end.is_some_and(|e| e <= self.base.get() + ARENA_BYTES) {
                // The newest block grows or shrinks in place.
                self.next.set(p as usize + new_size);
                return p;
            }
            if new_size <= l.size() {
                return p;
            }
        }
        // SAFETY: `GlobalAlloc::realloc` guarantees a valid layout for `new_size`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, l.align()) };
        // SAFETY: a non-zero size (as our caller's).
        let q = unsafe { self.alloc(backing, new_layout) };
        if !q.is_null() {
            // SAFETY: both blocks hold at least min(old, new) bytes and do not overlap.
            unsafe { core::ptr::copy_nonoverlapping(p, q, l.size().min(new_size)) };
        }
        q
    }
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

#[cfg(target_arch = "wasm32")]
mod global {
    use super::*;

    /// A wasm instance runs one thread, so the arena's cells are never shared.
    struct Shared(Arena);
    // SAFETY: wasm32-unknown-unknown without the threads proposal runs one thread per instance.
    unsafe impl Sync for Shared {}

    static ARENA: Shared = Shared(Arena::new());
    static BACKING: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

    /// The global allocator: [`Arena`] in front of dlmalloc.
    pub struct CallArena;

    // SAFETY: forwards to `Arena`, which upholds the contract with dlmalloc behind it.
    unsafe impl GlobalAlloc for CallArena {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            unsafe { ARENA.0.alloc(&BACKING, l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            unsafe { ARENA.0.dealloc(&BACKING, p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
            unsafe { ARENA.0.realloc(&BACKING, p, l, new_size) }
        }
    }

    /// Runs `f` with its allocations in the arena. The caller must have dropped every block
    /// the previous call left in it.
    pub fn during_call<T>(f: impl FnOnce() -> T) -> T {
        // SAFETY: `kdns_resolve`, the only caller, drops the previous response first.
        unsafe { ARENA.0.begin(&BACKING) };
        let out = f();
        ARENA.0.end();
        out
    }
}

#[cfg(target_arch = "wasm32")]
pub use global::{CallArena, during_call};

/// Off wasm (the crate's unit tests) the system allocator is in place: no arena.
#[cfg(not(target_arch = "wasm32"))]
pub fn during_call<T>(f: impl FnOnce() -> T) -> T {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn a_call_is_served_from_the_arena_and_the_next_call_reuses_it() {
        let arena = Arena::new();
        unsafe {
            arena.begin(&System);
            let a = arena.alloc(&System, layout(10, 1));
            let b = arena.alloc(&System, layout(8, 8));
            assert!(arena.owns(a) && arena.owns(b));
            assert_eq!(b as usize % 8, 0);
            assert!(b as usize >= a as usize + 10);
            arena.end();
            // Outside a call, blocks come from the system and go back to it.
            let c = arena.alloc(&System, layout(16, 8));
            assert!(!arena.owns(c));
            arena.dealloc(&System, c, layout(16, 8));
            arena.begin(&System);
            assert_eq!(arena.alloc(&System, layout(10, 1)), a);
            arena.end();
        }
    }

    #[test]
    fn the_newest_block_grows_in_place_and_others_move_with_their_bytes() {
        let arena = Arena::new();
        unsafe {
            arena.begin(&System);
            let a = arena.alloc(&System, layout(4, 1));
            a.copy_from(b"abcd".as_ptr(), 4);
            assert_eq!(arena.realloc(&System, a, layout(4, 1), 64), a);
            let b = arena.alloc(&System, layout(4, 1));
            let moved = arena.realloc(&System, a, layout(64, 1), 128);
            assert_ne!(moved, a);
            assert!(moved as usize > b as usize);
            assert_eq!(core::slice::from_raw_parts(moved, 4), b"abcd");
            // Freeing the newest block gives its room back.
            arena.dealloc(&System, moved, layout(128, 1));
            assert_eq!(arena.alloc(&System, layout(1, 1)), moved);
            arena.end();
        }
    }

    #[test]
    fn what_does_not_fit_comes_from_the_system_and_goes_back_to_it() {
        let arena = Arena::new();
        unsafe {
            arena.begin(&System);
            let big = arena.alloc(&System, layout(ARENA_BYTES + 1, 1));
            assert!(!big.is_null() && !arena.owns(big));
            let small = arena.alloc(&System, layout(ARENA_BYTES - 8, 1));
            assert!(arena.owns(small));
            // Growing past the end moves the block out of the arena, bytes kept.
            small.write(7);
            let grown = arena.realloc(&System, small, layout(ARENA_BYTES - 8, 1), ARENA_BYTES * 2);
            assert!(!arena.owns(grown));
            assert_eq!(grown.read(), 7);
            arena.dealloc(&System, grown, layout(ARENA_BYTES * 2, 1));
            arena.dealloc(&System, big, layout(ARENA_BYTES + 1, 1));
            arena.end();
        }
    }
}
