//! Giving request bodies' memory back to the operating system.
//!
//! glibc's malloc serves a large allocation (a webhook body buffer of up to `max_body_bytes`)
//! with its own `mmap` — until the first such block is freed: then it raises its "mmap
//! threshold" to that size, and later bodies come from the heap arenas, which keep freed memory
//! for reuse. Measured on this server: a flood of forged 2 MB bodies left resident memory at the
//! flood's peak (≈100 MiB with a 64 MiB body budget) after every connection had closed. Fixing
//! the threshold keeps large buffers in their own mappings, unmapped as soon as they are freed;
//! the cost is one `mmap`/`munmap` pair per large body, nothing for ordinary (small) webhooks.

/// Allocations at least this large get their own mapping (glibc's initial default).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;

/// Makes the allocator return large freed buffers to the OS at once. Process-wide and idempotent;
/// a no-op where the allocator is not glibc's.
pub fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        let applied = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) };
        if applied != 1 {
            tracing::debug!("glibc did not accept M_MMAP_THRESHOLD; large buffers may be retained");
        }
    }
}

/// How many malloc arenas glibc may create.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// glibc gives each thread that allocates under contention an arena of its own (up to 8 per
/// core), and memory freed into one arena is not reused by another: with the runtime's workers,
/// the blocking pool, the committer and the SQLite threads, that showed as tens of MB of resident
/// size under load (`bench/ingest`). Two arenas keep it bounded. Call before threads start.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        let applied = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
        if applied != 1 {
            tracing::debug!("glibc did not accept M_ARENA_MAX");
        }
    }
}
