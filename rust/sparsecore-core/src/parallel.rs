//! Explicit thread control: every parallel entry point runs inside a rayon pool of the requested size.
//!
//! Pools are created once per size and cached, so asking for `num_threads = 2` on every call costs a mutex
//! lock, not a thread spawn. `None` means the `SPARSECORE_NUM_THREADS` environment variable if set, else the
//! number of available cores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::SparseError;

/// Environment variable that sets the default thread count.
pub const THREADS_ENV: &str = "SPARSECORE_NUM_THREADS";

/// Upper bound on a requested thread count; far above any sane machine, it stops a typo from spawning millions.
const MAX_THREADS: usize = 4096;

fn pools() -> &'static Mutex<HashMap<usize, Arc<ThreadPool>>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    POOLS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Resolve a requested thread count to a concrete one.
///
/// Errors: `num_threads` is 0 or above 4096, or `SPARSECORE_NUM_THREADS` is not a positive integer.
pub fn resolve_threads(num_threads: Option<usize>) -> Result<usize, SparseError> {
    let n = match num_threads {
        Some(n) => n,
        None => match std::env::var(THREADS_ENV) {
            Ok(s) => s
                .trim()
                .parse::<usize>()
                .map_err(|_| SparseError::invalid(THREADS_ENV, format!("must be a positive integer, got {s:?}")))?,
            Err(_) => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        },
    };
    if n == 0 || n > MAX_THREADS {
        return Err(SparseError::invalid("num_threads", format!("must be between 1 and {MAX_THREADS}, got {n}")));
    }
    Ok(n)
}

/// Run `f` inside a rayon pool with the resolved number of threads.
pub fn install<R: Send>(num_threads: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<R, SparseError> {
    let n = resolve_threads(num_threads)?;
    let pool = {
        let mut map = pools().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = map.get(&n) {
            Arc::clone(p)
        } else {
            let p = Arc::new(
                ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("sparsecore-{i}"))
                    .build()
                    .map_err(|e| SparseError::ThreadPool(e.to_string()))?,
            );
            map.insert(n, Arc::clone(&p));
            p
        }
    };
    Ok(pool.install(f))
}

/// Progress of a long operation, readable from another thread while the work runs: `done` of `total` units.
#[derive(Debug, Default)]
pub struct Progress {
    done: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
}

impl Progress {
    /// A fresh counter at 0 of 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the number of units the work will report.
    pub fn set_total(&self, total: u64) {
        self.total.store(total, std::sync::atomic::Ordering::Relaxed);
    }

    /// Report `units` more units done.
    pub fn add(&self, units: u64) {
        self.done.fetch_add(units, std::sync::atomic::Ordering::Relaxed);
    }

    /// `(done, total)`, with `done` capped at `total`.
    pub fn get(&self) -> (u64, u64) {
        let total = self.total.load(std::sync::atomic::Ordering::Relaxed);
        (self.done.load(std::sync::atomic::Ordering::Relaxed).min(total), total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_has_requested_size() {
        assert_eq!(install(Some(3), rayon::current_num_threads).unwrap(), 3);
        assert_eq!(install(Some(1), rayon::current_num_threads).unwrap(), 1);
    }

    #[test]
    fn zero_threads_is_an_error() {
        assert!(matches!(install(Some(0), || ()), Err(SparseError::InvalidArgument { arg: "num_threads", .. })));
    }
}
