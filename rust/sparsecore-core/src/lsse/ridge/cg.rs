//! Jacobi-preconditioned conjugate gradients on the whole system `(A + λI) W = B`: the follow-the-leader
//! solution on demand ([`OnlineRidge::solve_exact`]) and after every block step of the exact rule past the
//! dense inverse's size.

use rayon::prelude::*;

use super::{dot, OnlineRidge, SolveReport};
use crate::SparseError;

/// Models storing at least this many entries of `A` run the conjugate-gradient products on the rayon pool;
/// below it the hand-off costs more than the work. (It was a count of rows, 4096: at dim 3,200 a model of 2,656
/// rows but 3.1 million entries ran its products on one thread.)
pub(super) const PAR_MATVEC: usize = 100_000;

impl OnlineRidge {
    /// Solve `(A + λI) W = B` by Jacobi-preconditioned conjugate gradients from the current weights, until the
    /// relative residual is `<= tol` or `max_iter` iterations (per output). The follow-the-leader oracle.
    ///
    /// Errors: `tol` not finite and positive, `max_iter == 0`.
    pub fn solve_exact(&mut self, tol: f64, max_iter: usize) -> Result<SolveReport, SparseError> {
        if !(tol.is_finite() && tol > 0.0) {
            return Err(SparseError::invalid("tol", format!("must be a finite number > 0, got {tol}")));
        }
        if max_iter == 0 {
            return Err(SparseError::invalid("max_iter", "must be >= 1, got 0"));
        }
        let n = self.features.len();
        let no = self.n_out;
        let diag: Vec<f64> =
            self.rows.iter().enumerate().map(|(r, row)| row.get(r as u32).unwrap_or(0.0) + self.ridge).collect();
        let mut report = SolveReport { iterations: 0, rel_residual: 0.0 };
        let (mut x, mut bcol) = (vec![0.0; n], vec![0.0; n]);
        let par = self.nnz() >= PAR_MATVEC;
        for o in 0..no {
            for (r, (xr, br)) in x.iter_mut().zip(bcol.iter_mut()).enumerate() {
                *xr = self.w[r * no + o];
                *br = self.b[r * no + o];
            }
            let (it, res) = self.cg(&diag, &bcol, &mut x, tol, max_iter, par);
            for (r, xr) in x.iter().enumerate() {
                self.w[r * no + o] = *xr;
            }
            report.iterations = report.iterations.max(it);
            report.rel_residual = report.rel_residual.max(res);
        }
        Ok(report)
    }

    /// `out = (A + λI) p`, on the rayon pool when `par`.
    pub(super) fn matvec(&self, p: &[f64], out: &mut [f64], par: bool) {
        let one = |(r, o): (usize, &mut f64)| {
            *o = self.ridge * p[r] + self.rows[r].dot(p, self.rows.get(r + 1));
        };
        if par {
            out.par_iter_mut().enumerate().for_each(one);
        } else {
            out.iter_mut().enumerate().for_each(one);
        }
    }

    fn cg(&self, diag: &[f64], b: &[f64], x: &mut [f64], tol: f64, max_iter: usize, par: bool) -> (usize, f64) {
        let n = b.len();
        let bnorm = dot(b, b).sqrt();
        if bnorm == 0.0 {
            x.fill(0.0);
            return (0, 0.0);
        }
        let mut q = vec![0.0; n];
        self.matvec(x, &mut q, par);
        let mut r: Vec<f64> = b.iter().zip(&q).map(|(b, q)| b - q).collect();
        let mut rnorm = dot(&r, &r).sqrt();
        if rnorm <= tol * bnorm {
            return (0, rnorm / bnorm);
        }
        let mut z: Vec<f64> = r.iter().zip(diag).map(|(r, d)| r / d).collect();
        let mut p = z.clone();
        let mut rz = dot(&r, &z);
        for it in 1..=max_iter {
            self.matvec(&p, &mut q, par);
            let pq = dot(&p, &q);
            if pq <= 0.0 {
                return (it, rnorm / bnorm);
            }
            let alpha = rz / pq;
            for i in 0..n {
                x[i] += alpha * p[i];
                r[i] -= alpha * q[i];
            }
            rnorm = dot(&r, &r).sqrt();
            if rnorm <= tol * bnorm {
                return (it, rnorm / bnorm);
            }
            for i in 0..n {
                z[i] = r[i] / diag[i];
            }
            let rz_new = dot(&r, &z);
            let beta = rz_new / rz;
            rz = rz_new;
            for i in 0..n {
                p[i] = z[i] + beta * p[i];
            }
        }
        (max_iter, rnorm / bnorm)
    }
}
