//! Locality-sensitive sparse encoding (Losse) and follow-the-leader ridge regression on its features.
//!
//! After Liu, Du, Lee and Lin, "Locality Sensitive Sparse Encoding for Learning World Models Online" (ICLR 2024).
//! [`encoder`] maps dense inputs to very wide, very sparse non-negative features: a fixed random projection, a
//! sigmoid, and multilinear soft-binning of groups of `b` projected values on a `(B+1)^b` grid, so every group
//! has exactly `2^b` active cells whose weights sum to 1. [`ridge`] fits a linear model on such features online,
//! keeping the normal equations `A = Σ φφᵀ`, `b = Σ φ yᵀ` over co-active pairs only, so memory grows with the
//! number of co-active pairs and never with `dim²`.

pub mod encoder;
pub mod ridge;

pub use encoder::{encode, LsseParams};
pub use ridge::{OnlineRidge, RidgeState, SolveReport, UpdateRule};
