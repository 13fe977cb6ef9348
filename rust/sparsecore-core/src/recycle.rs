//! Recycled large output buffers.
//!
//! A large allocation is a fresh `mmap` each time and its pages are faulted in one by one when first written,
//! and freeing it hands them back to the OS. On this project's test VM, first touching a fresh 40 MB buffer of
//! 4 KiB pages took ~15 ms and rewriting one already in use ~6 ms (a 10,000 x 1,024 float32 numpy array with
//! numpy's huge pages switched off: one element written per page, then the whole array); a caller that encodes
//! batch after batch into dense arrays paid the faults on every call. (Huge pages cut the faults, but after
//! other libraries' large allocations their first touch stalled on memory compaction: see the binding's
//! `shaped`.)
//!
//! So buffers of at least 1 MiB, once their owner is done with them ([`give_back`]), are kept here, at most
//! [`MAX_KEPT`] of them and [`MAX_KEPT_BYTES`] in all (the most recently returned are kept), and [`take`]
//! hands out a kept buffer that fits (at least the length asked for and at most twice it) before it allocates
//! a new one. Its contents are whatever its last owner left: the caller overwrites every element it uses (a
//! dense output writes each row whole, zeros and codes in one pass, rather than zeroing 40 MB first and then
//! scattering codes into it). [`release`] frees everything kept.
//!
//! Buffers are `Vec<u64>` (8-byte aligned, so any `Pod` float type can be laid over them with [`as_elems`]).

use std::sync::Mutex;

use crate::SparseError;

/// Buffers below this size are not kept (the allocator reuses small blocks by itself).
pub const MIN_KEPT_BYTES: usize = 1 << 20;
/// Most bytes kept in all.
pub const MAX_KEPT_BYTES: usize = 256 << 20;
/// Most buffers kept.
pub const MAX_KEPT: usize = 4;

static KEPT: Mutex<Vec<Vec<u64>>> = Mutex::new(Vec::new());

fn kept() -> std::sync::MutexGuard<'static, Vec<Vec<u64>>> {
    // A panic while the lock was held cannot leave the list inconsistent (each operation is one push or
    // remove), so a poisoned lock is still usable.
    KEPT.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bytes_of(v: &[u64]) -> usize {
    std::mem::size_of_val(v)
}

/// Words (`u64`) needed for `n` elements of `T`, or [`SparseError::TooLarge`] on overflow.
fn words_for<T>(what: &'static str, n: usize) -> Result<usize, SparseError> {
    n.checked_mul(std::mem::size_of::<T>())
        .map(|b| b.div_ceil(8))
        .ok_or(SparseError::TooLarge { what, bytes: u64::MAX })
}

/// A buffer with room for `n` elements of `T` (possibly more: use `as_elems(..)[..n]`), of unspecified contents:
/// a kept one that fits, else a new zeroed allocation.
///
/// Errors: [`SparseError::TooLarge`] when the allocation fails or its size overflows.
pub fn take<T: bytemuck::Pod>(what: &'static str, n: usize) -> Result<Vec<u64>, SparseError> {
    let words = words_for::<T>(what, n)?;
    let taken = {
        let mut list = kept();
        // The smallest kept buffer that holds `words` without wasting more than half of itself.
        let best = list
            .iter()
            .enumerate()
            .filter(|(_, v)| v.len() >= words && v.len() / 2 <= words)
            .min_by_key(|(_, v)| v.len())
            .map(|(i, _)| i);
        best.map(|i| list.swap_remove(i))
    };
    match taken {
        Some(v) => Ok(v),
        None => SparseError::try_zeroed::<u64>(what, words),
    }
}

/// Hand a buffer back for reuse (its contents are never read again). Kept when it is at least
/// [`MIN_KEPT_BYTES`] and at most [`MAX_KEPT_BYTES`]; the oldest kept buffers are freed to make room.
pub fn give_back(v: Vec<u64>) {
    let size = bytes_of(&v);
    if !(MIN_KEPT_BYTES..=MAX_KEPT_BYTES).contains(&size) {
        return;
    }
    let evicted: Vec<Vec<u64>> = {
        let mut list = kept();
        list.push(v);
        let mut total: usize = list.iter().map(|b| bytes_of(b)).sum();
        let mut n_drop = 0;
        while list.len() - n_drop > MAX_KEPT || total > MAX_KEPT_BYTES {
            total -= bytes_of(&list[n_drop]);
            n_drop += 1;
        }
        list.drain(..n_drop).collect()
    };
    drop(evicted); // freed outside the lock
}

/// Free every kept buffer; returns the bytes released.
pub fn release() -> usize {
    let all = std::mem::take(&mut *kept());
    all.iter().map(|b| bytes_of(b)).sum()
}

/// Bytes held by kept buffers now.
pub fn kept_bytes() -> usize {
    kept().iter().map(|b| bytes_of(b)).sum()
}

/// The buffer's memory as elements of `T` (all of it; a buffer from [`take`] for `n` elements has at least `n`).
pub fn as_elems<T: bytemuck::Pod>(v: &[u64]) -> &[T] {
    bytemuck::cast_slice(v)
}

/// Mutable form of [`as_elems`].
pub fn as_elems_mut<T: bytemuck::Pod>(v: &mut [u64]) -> &mut [T] {
    bytemuck::cast_slice_mut(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool is process-wide; tests that use it run under this lock.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn a_returned_buffer_is_reused_only_when_it_fits() {
        let _g = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        release();
        let n = 1 << 20; // f32 elements: 4 MiB
        let mut a = take::<f32>("t", n).expect("alloc");
        assert!(as_elems::<f32>(&a)[..n].iter().all(|&x| x == 0.0)); // a new allocation is zeroed
        let ptr = a.as_ptr();
        as_elems_mut::<f32>(&mut a)[..n].fill(7.0);
        give_back(a);
        assert_eq!(kept_bytes(), 4 << 20);
        // Too small a request for it (would waste more than half): a new allocation, the buffer stays kept.
        let small = take::<f32>("t", n / 4).expect("alloc");
        assert_ne!(small.as_ptr(), ptr);
        assert_eq!(kept_bytes(), 4 << 20);
        // A fitting request (f64, 3/4 of the bytes) gets the same memory back, as it was left.
        let b = take::<f64>("t", (n / 2) * 3 / 4).expect("alloc");
        assert_eq!(b.as_ptr(), ptr);
        assert!(as_elems::<f32>(&b).iter().all(|&x| x.to_bits() == 7.0f32.to_bits()));
        assert_eq!(kept_bytes(), 0);
        give_back(b);
        assert_eq!(release(), 4 << 20);
        assert_eq!(kept_bytes(), 0);
    }

    #[test]
    fn the_pool_keeps_the_newest_within_its_bounds() {
        let _g = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        release();
        give_back(vec![0u64; 1000]); // under MIN_KEPT_BYTES: freed
        assert_eq!(kept_bytes(), 0);
        let words = MIN_KEPT_BYTES / 8;
        let bufs: Vec<Vec<u64>> = (0..MAX_KEPT + 2).map(|_| vec![0u64; words]).collect();
        let ptrs: Vec<*const u64> = bufs.iter().map(Vec::as_ptr).collect();
        for b in bufs {
            give_back(b);
        }
        assert_eq!(kept_bytes(), MAX_KEPT * MIN_KEPT_BYTES);
        let held: Vec<*const u64> = kept().iter().map(Vec::as_ptr).collect();
        assert_eq!(held, ptrs[2..].to_vec());
        // One buffer of MAX_KEPT_BYTES pushes every other out.
        give_back(vec![0u64; MAX_KEPT_BYTES / 8]);
        assert_eq!(kept().len(), 1);
        assert_eq!(release(), MAX_KEPT_BYTES);
        give_back(vec![0u64; MAX_KEPT_BYTES / 8 + 1]); // over the bound: freed
        assert_eq!(kept_bytes(), 0);
    }

    #[test]
    fn sizes_that_overflow_are_errors() {
        assert!(matches!(take::<f64>("t", usize::MAX / 4), Err(SparseError::TooLarge { .. })));
    }
}
