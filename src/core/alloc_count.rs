//! Counting allocations, for the `count-allocations` build (`cargo build --release --features
//! count-allocations`): the binary's global allocator is [`Counting`], and `/metrics` shows the
//! allocations made through it as `zoomhook_allocations_total`. `bench/deliver` divides it by
//! the deliveries it drained. Allocations per unit of work is a measure this shared machine's
//! noise does not move, unlike a rate, so work on allocations can be shown and reviewed with it.
//!
//! What it counts: Rust's allocations (zoomhook and every Rust crate, `tokio-postgres` included).
//! Not the bundled SQLite's, which calls the C library's `malloc` directly — so the counts of the
//! two backends are not like for like, and work inside SQLite does not show here.
//!
//! One relaxed atomic add per allocation, on a counter all threads share: a little slower than
//! the default build, which is why it is a build of its own.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};

/// Allocations (and reallocations) made through a [`Counting`] allocator in this process.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// A global allocator that counts the allocations and reallocations it passes on to `A`.
pub struct Counting<A>(pub A);

// SAFETY: every call is passed on unchanged to `A`, which upholds `GlobalAlloc`'s contract.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's guarantees for `layout` are `A::alloc`'s.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `A` (through this wrapper) with `layout`.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `A` with `layout`; the caller guarantees `new_size`.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// The allocations counted so far, in a `count-allocations` build; `None` in any other.
pub fn allocations() -> Option<u64> {
    cfg!(feature = "count-allocations").then(|| ALLOCATIONS.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    #[test]
    fn every_allocation_and_reallocation_is_counted_and_frees_are_not() {
        // The test binary's global allocator is the system's: only the calls below count.
        let counting = Counting(System);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let layout = Layout::from_size_align(64, 8).unwrap();
        unsafe {
            let a = counting.alloc(layout);
            let b = counting.alloc_zeroed(layout);
            assert!(!a.is_null() && !b.is_null());
            assert_eq!(std::slice::from_raw_parts(b, 64), &[0u8; 64][..]);
            let a = counting.realloc(a, layout, 4096);
            assert!(!a.is_null());
            counting.dealloc(a, Layout::from_size_align(4096, 8).unwrap());
            counting.dealloc(b, layout);
        }
        assert_eq!(ALLOCATIONS.load(Ordering::Relaxed) - before, 3);
    }
}
