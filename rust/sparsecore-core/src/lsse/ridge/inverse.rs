//! The exact rule's dense inverse `P = (A + λI)⁻¹`, updated by Sherman–Morrison (recursive least squares) while
//! it fits [`DENSE_INVERSE_MAX_BYTES`].

use rayon::prelude::*;

use super::cg::PAR_MATVEC;
use super::cholesky::{cholesky, solve_cholesky};
use super::{dot, OnlineRidge, UpdateRule, DENSE_INVERSE_MAX_BYTES, EXACT_TOL};
use crate::kernels;
use crate::SparseError;

/// Most refinement steps at the end of a `partial_fit` of the exact rule (each gains several digits).
const REFINE_STEPS: usize = 4;

/// Inverses with at least this many rows update on the rayon pool (a 512 × 512 rank-one update is ~50 µs).
const PAR_INVERSE_ROWS: usize = 512;

/// The dense inverse `P = (A + λI)⁻¹` over the first `n` rows of the model, row-major with row stride `stride`
/// (room to grow without a copy per new feature); entries past `n` are zero.
#[derive(Debug, Clone, Default)]
pub(super) struct DenseInverse {
    n: usize,
    stride: usize,
    pub(super) p: Vec<f64>,
}

/// The largest `n` whose dense inverse fits [`DENSE_INVERSE_MAX_BYTES`].
pub(super) fn dense_inverse_max_rows() -> usize {
    ((DENSE_INVERSE_MAX_BYTES / 8) as f64).sqrt() as usize
}

impl DenseInverse {
    /// Extend to `n` rows: a feature seen for the first time has no entry in `A` yet, so its row and column of
    /// `P` are `1/λ` on the diagonal and zero elsewhere.
    fn grow(&mut self, n: usize, ridge: f64) {
        if n <= self.n {
            return;
        }
        if n > self.stride {
            let stride = (2 * self.stride).max(n).max(64).min(dense_inverse_max_rows().max(n));
            let mut p = vec![0.0; stride * stride];
            for i in 0..self.n {
                p[i * stride..i * stride + self.n].copy_from_slice(&self.p[i * self.stride..i * self.stride + self.n]);
            }
            self.p = p;
            self.stride = stride;
        }
        for i in self.n..n {
            self.p[i * self.stride + i] = 1.0 / ridge;
        }
        self.n = n;
    }

    /// Row `i` (= column `i`), first `n` entries.
    fn row(&self, i: usize) -> &[f64] {
        &self.p[i * self.stride..i * self.stride + self.n]
    }
}

impl OnlineRidge {
    /// Whether the exact rule can update by the dense inverse: builds it from `A` (dense Cholesky, `O(n³)`) and
    /// sets `W = P B` when it is missing (a new, loaded or re-penalised model) and `n` rows fit the budget.
    pub(super) fn dense_inverse_ready(&mut self) -> Result<bool, SparseError> {
        let n = self.features.len();
        if self.rule != UpdateRule::Exact || n > dense_inverse_max_rows() {
            self.inverse = None;
            return Ok(false);
        }
        if self.inverse.is_some() {
            return Ok(true);
        }
        let mut inv = DenseInverse::default();
        if n > 0 {
            let mut m = vec![0.0; n * n];
            for (r, row) in self.rows.iter().enumerate() {
                row.for_each(|c, v| m[r * n + c as usize] = v);
                m[r * n + r] += self.ridge;
            }
            cholesky(&mut m, n)?;
            let mut eye = vec![0.0; n * n];
            for i in 0..n {
                eye[i * n + i] = 1.0;
            }
            let mut y = Vec::new();
            for o in 0..n {
                solve_cholesky(&m, n, &mut eye, o, n, &mut y);
            }
            inv.p = eye;
            inv.n = n;
            inv.stride = n;
            // W = P B, the exact solution for the samples so far.
            let no = self.n_out;
            let mut w = vec![0.0; n * no];
            for i in 0..n {
                for (k, &pik) in inv.row(i).iter().enumerate() {
                    for o in 0..no {
                        w[i * no + o] += pik * self.b[k * no + o];
                    }
                }
            }
            self.w = w;
        }
        self.inverse = Some(inv);
        Ok(true)
    }

    /// The exact rule's update by the dense inverse (Sherman–Morrison) for the sample `(act, val) -> y`, whose
    /// rows exist; `W` holds the solution before the sample. Returns `false`, changing nothing, when rounding
    /// has made `P` indefinite (`1 + φᵀPφ <= 0`).
    pub(super) fn update_inverse(&mut self, act: &[u32], val: &[f64], y: &[f64]) -> bool {
        let n = self.features.len();
        let no = self.n_out;
        let Some(inv) = self.inverse.as_mut() else { return false };
        inv.grow(n, self.ridge);
        // u = P φ: a sum of the active rows of the symmetric P.
        let mut u = vec![0.0; n];
        for (&r, &v) in act.iter().zip(val) {
            kernels::axpy_neg_f64(&mut u, -v, inv.row(r as usize));
        }
        let denom = 1.0 + act.iter().zip(val).map(|(&r, &v)| v * u[r as usize]).sum::<f64>();
        if !(denom >= 1.0 - 1e-9 && denom.is_finite()) {
            return false;
        }
        // The prediction error of the weights before the sample, per output.
        let mut err = y.to_vec();
        for (&r, &v) in act.iter().zip(val) {
            for (e, wo) in err.iter_mut().zip(&self.w[r as usize * no..(r as usize + 1) * no]) {
                *e -= v * wo;
            }
        }
        for e in &mut err {
            *e /= denom;
        }
        for (wi, &ui) in self.w.chunks_exact_mut(no).zip(&u) {
            for (w, e) in wi.iter_mut().zip(&err) {
                *w += ui * e;
            }
        }
        // P -= u uᵀ / denom, one row at a time (each row's arithmetic is sequential: thread-count independent).
        let scaled: Vec<f64> = u.iter().map(|x| x / denom).collect();
        let stride = inv.stride;
        let one = |(i, row): (usize, &mut [f64])| kernels::axpy_neg_f64(&mut row[..n], scaled[i], &u);
        if n >= PAR_INVERSE_ROWS && rayon::current_num_threads() > 1 {
            inv.p[..n * stride].par_chunks_mut(stride).enumerate().for_each(one);
        } else {
            inv.p[..n * stride].chunks_mut(stride).enumerate().for_each(one);
        }
        true
    }

    /// Iterative refinement of the exact rule's weights with the dense inverse as preconditioner,
    /// `W += P (B − (A + λI) W)`, until the relative residual is at most [`EXACT_TOL`] (at most
    /// [`REFINE_STEPS`] steps). A guard against the rounding drift Sherman–Morrison updates can accumulate over
    /// long streams; when there is none (the usual case) it costs one product with `A + λI` per output.
    pub(super) fn refine_with_inverse(&mut self) {
        let Some(inv) = self.inverse.as_ref() else { return };
        let (n, no) = (self.features.len(), self.n_out);
        if n == 0 || inv.n != n {
            return;
        }
        let par = self.nnz() >= PAR_MATVEC;
        let (mut x, mut ax, mut res) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        for o in 0..no {
            let bcol: Vec<f64> = (0..n).map(|r| self.b[r * no + o]).collect();
            let bnorm = dot(&bcol, &bcol).sqrt();
            if bnorm == 0.0 {
                continue;
            }
            x.iter_mut().enumerate().for_each(|(r, xr)| *xr = self.w[r * no + o]);
            for _ in 0..REFINE_STEPS {
                self.matvec(&x, &mut ax, par);
                res.iter_mut().zip(&bcol).zip(&ax).for_each(|((rr, b), a)| *rr = b - a);
                if dot(&res, &res).sqrt() <= EXACT_TOL * bnorm {
                    break;
                }
                let step = |(i, xi): (usize, &mut f64)| *xi += dot(inv.row(i), &res);
                if par {
                    x.par_iter_mut().enumerate().for_each(step);
                } else {
                    x.iter_mut().enumerate().for_each(step);
                }
            }
            x.iter().enumerate().for_each(|(r, &xr)| self.w[r * no + o] = xr);
        }
    }
}
