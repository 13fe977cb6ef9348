//! Cache hints: bring the lines a loop reads next into L1 before it gets there.

/// Ask the CPU to bring the cache line holding `x[i]` into L1 ahead of a later read: a hint that never faults,
/// and does nothing when `i` is past the end or the CPU is not x86-64.
#[inline]
pub fn prefetch<T>(x: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if i < x.len() {
            // SAFETY: a prefetch only hints the cache and cannot fault; the address is inside `x`; SSE, the
            // instruction's one requirement, is part of the x86-64 baseline.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(x.as_ptr().add(i).cast());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, i);
}

/// [`prefetch`] every cache line holding `x[lo..hi]` (clipped to `x`).
#[inline]
pub fn prefetch_range<T>(x: &[T], lo: usize, hi: usize) {
    let hi = hi.min(x.len());
    let step = (64 / std::mem::size_of::<T>().max(1)).max(1);
    let mut i = lo;
    while i < hi {
        prefetch(x, i);
        i += step;
    }
    if lo < hi {
        prefetch(x, hi - 1);
    }
}
