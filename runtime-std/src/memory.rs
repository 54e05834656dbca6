//! How freed memory goes back to the system.
//!
//! glibc serves a large allocation with a mapping of its own, but after
//! such a buffer is freed it raises its threshold for that to the buffer's
//! size (up to 32 MiB), so the buffers of the next large messages come from
//! the heap and stay resident once freed; with one heap per thread, the
//! resident size after a few 10 MiB messages grows to several times what
//! the gateway holds. A fixed threshold keeps every large buffer in its own
//! mapping, returned to the system when freed, at the price of the kernel
//! zeroing fresh pages for each large message.

/// Allocations at least this large get a mapping of their own.
pub const LARGE_ALLOCATION: usize = 256 * 1024;

/// Fixes the allocator's threshold at [`LARGE_ALLOCATION`]. Call it before
/// any thread starts. Does nothing where the allocator is not glibc's.
#[allow(unsafe_code)]
pub fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tuning parameter of the allocator; it
    // is called before the runtime starts its threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_ALLOCATION as libc::c_int);
    }
}
