//! Giving memory back: the allocator keeps what a heavy call freed for
//! later, so the resident size after a burst of heavy calls would stay at
//! its peak. After each heavy call the free pages go back to the system.

/// Returns the allocator's free memory to the system (glibc `malloc_trim`
/// over every arena); elsewhere a no-op.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's
    // arenas; it takes no pointers and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
