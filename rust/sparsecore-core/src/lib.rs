//! Pure-Rust core of sparsecore: validated CSR batches and parallel sparse operations.
//!
//! Everything here is independent of Python; the `sparsecore-py` crate is a thin binding over it.
//! Parallel entry points take `num_threads: Option<usize>` and run inside a cached rayon pool
//! (see [`parallel`]); their results never depend on the thread count.

pub mod container;
pub mod error;
pub mod index;
pub(crate) mod kernels;
pub mod lsse;
pub mod parallel;
pub mod pursuit;
pub mod recycle;
pub mod sae;
pub mod sdr;
pub mod sparse;

pub use error::SparseError;
pub use kernels::{simd_level, SIMD_ENV};
