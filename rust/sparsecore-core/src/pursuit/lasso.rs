//! The Lasso over a dictionary: cyclic coordinate descent, ISTA and FISTA in Gram form.
//!
//! Every signal `x` gets the code `z` minimising scikit-learn's `Lasso` objective with the design matrix `Dᵀ`
//! (one row per feature, `m = n_features` rows):
//!
//! ```text
//! P(z) = 1/(2m) ||x − Dᵀz||² + alpha ||z||₁        (and z ≥ 0 when nonneg)
//! ```
//!
//! The solvers see `x` only through `c = D x` and `||x||²`, and the dictionary only through rows of `G = D Dᵀ`:
//! `||x − Dᵀz||² = ||x||² − 2 cᵀz + zᵀ G z` and `D (x − Dᵀz) = c − G z`. With `λ = alpha·m` the problem is
//! `Q(z) = m P(z) = ½||x − Dᵀz||² + λ||z||₁`, which is what the code minimises.
//!
//! Stopping is on the duality gap of `Q` (scikit-learn's rule): with `r = x − Dᵀz` and the dual point `θ = s r`,
//! `s = min(1, λ / ||D r||_∞)` (`max_j (D r)_j` instead of the ∞-norm when nonneg), the gap is
//! `½||r||²(1 + s²) + λ||z||₁ − s xᵀr` with `xᵀr = ||x||² − cᵀz`. A signal is converged when
//! `gap(P) ≤ tol · P(0)`, i.e. `gap(Q) ≤ tol ||x||² / 2`.

use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView1, ArrayView2, CowArray, Ix2};
use rayon::prelude::*;

use super::{axpy_neg, check_gram, gram, run_batched, soft, validate, Codes, Real};
use crate::SparseError;

/// Power-iteration steps for the largest eigenvalue of `G` (ISTA/FISTA step size); the Rayleigh quotient of a
/// 1024-atom Gaussian dictionary is within 0.1% of the top eigenvalue after 100 steps.
const POWER_ITERS: usize = 100;
/// Safety factor on the power-iteration estimate, which approaches the top eigenvalue from below.
const LIPSCHITZ_MARGIN: f64 = 1.01;
/// ISTA/FISTA check the duality gap every this many iterations (it costs about one iteration's work).
const GAP_EVERY: usize = 10;

/// The Lasso solver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LassoMethod {
    /// Cyclic coordinate descent with covariance updates (scikit-learn's `lasso_cd` with a precomputed Gram).
    Cd,
    /// Proximal gradient with step `1/L`.
    Ista,
    /// Accelerated proximal gradient (Beck & Teboulle 2009).
    Fista,
}

/// Parameters of [`lasso`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LassoParams<T> {
    /// Weight of the L1 penalty in `1/(2m) ||x − Dᵀz||² + alpha ||z||₁`; finite and `> 0`.
    pub alpha: T,
    /// The solver.
    pub method: LassoMethod,
    /// Iteration limit per signal (sweeps over all atoms for `Cd`); `>= 1`.
    pub max_iter: usize,
    /// Relative duality-gap tolerance: stop when `gap ≤ tol · ||x||² / (2m)`; finite and `> 0`.
    pub tol: T,
    /// Constrain the codes to be non-negative.
    pub nonneg: bool,
}

impl<T: Real> Default for LassoParams<T> {
    /// scikit-learn's `Lasso` defaults: `alpha = 1`, coordinate descent, `max_iter = 1000`, `tol = 1e-4`.
    fn default() -> Self {
        Self { alpha: T::one(), method: LassoMethod::Cd, max_iter: 1000, tol: T::of(1e-4), nonneg: false }
    }
}

/// Result of [`lasso`].
#[derive(Debug, Clone, PartialEq)]
pub struct LassoOutput<T> {
    /// The codes, one CSR row per signal.
    pub codes: Codes<T>,
    /// Largest iteration count over the signals (0 when every code is zero by the `alpha ≥ ||D x||_∞ / m` test).
    pub n_iter_max: usize,
    /// Signals that reached `max_iter` with the duality gap above the tolerance.
    pub n_not_converged: usize,
}

/// Solve the Lasso `min_z 1/(2m) ||x − Dᵀz||² + alpha ||z||₁` (`z ≥ 0` when nonneg) for every signal.
///
/// Errors: the checks of [`validate`] and [`check_gram`]; [`SparseError::InvalidArgument`] naming `alpha`,
/// `max_iter` or `tol` when out of range.
///
/// Parameters: `x` is `(n_signals, n_features)`, `d` is `(n_atoms, n_features)` with one atom per row, `gram`
/// an optional precomputed `D Dᵀ` (computed here when `None`).
///
/// Returns: the codes in CSR form with the iteration statistics.
pub fn lasso<T: Real>(
    x: ArrayView2<'_, T>,
    d: ArrayView2<'_, T>,
    gram: Option<ArrayView2<'_, T>>,
    p: &LassoParams<T>,
) -> Result<LassoOutput<T>, SparseError> {
    validate(x, d)?;
    if !(p.alpha.is_finite() && p.alpha > T::zero()) {
        return Err(SparseError::invalid("alpha", format!("must be a finite number > 0, got {}", p.alpha)));
    }
    if p.max_iter == 0 {
        return Err(SparseError::invalid("max_iter", "must be >= 1, got 0"));
    }
    if !(p.tol.is_finite() && p.tol > T::zero()) {
        return Err(SparseError::invalid("tol", format!("must be a finite number > 0, got {}", p.tol)));
    }
    let g: CowArray<'_, T, Ix2> = match gram {
        Some(g) => {
            check_gram(g, d)?;
            if g.is_standard_layout() {
                CowArray::from(g)
            } else {
                CowArray::from(g.as_standard_layout().into_owned())
            }
        }
        None => CowArray::from(self::gram(d)?),
    };
    let n = d.nrows();
    let g = g.as_slice().ok_or_else(|| SparseError::ShapeMismatch("gram is not contiguous".into()))?;
    let diag: Vec<T> = (0..n).map(|j| g[j * n + j]).collect();
    let m = d.ncols();
    let lam = p.alpha * T::of(m as f64);
    let lipschitz = match p.method {
        LassoMethod::Cd => T::one(),
        LassoMethod::Ista | LassoMethod::Fista => lipschitz(d, g, &diag)?,
    };
    let prob = Problem {
        g,
        diag: &diag,
        n,
        lam,
        nonneg: p.nonneg,
        max_iter: p.max_iter,
        tol: p.tol.to_f64_lossy(),
        inv_l: T::one() / lipschitz,
    };
    let n_iter_max = AtomicUsize::new(0);
    let n_not_converged = AtomicUsize::new(0);
    let codes = run_batched(
        x,
        d,
        || Workspace::new(n),
        |ws, c, xx, out| {
            let (iters, converged) = prob.solve(p.method, ws, c, xx, out);
            n_iter_max.fetch_max(iters, Ordering::Relaxed);
            if !converged {
                n_not_converged.fetch_add(1, Ordering::Relaxed);
            }
        },
    )?;
    Ok(LassoOutput { codes, n_iter_max: n_iter_max.into_inner(), n_not_converged: n_not_converged.into_inner() })
}

/// An upper estimate of the largest eigenvalue of `G = D Dᵀ`, the Lipschitz constant of the gradient of
/// `½||x − Dᵀz||²`: power iteration on the smaller of `G` (`n_atoms²`) and `Dᵀ D` (`n_features²`, same non-zero
/// spectrum), at least the largest diagonal entry of `G`, times [`LIPSCHITZ_MARGIN`].
fn lipschitz<T: Real>(d: ArrayView2<'_, T>, g: &[T], diag: &[T]) -> Result<T, SparseError> {
    let (n, m) = d.dim();
    let estimate = if m < n {
        let mut h = Array2::<T>::zeros((m, m));
        general_mat_mul(T::one(), &d.t(), &d, T::zero(), &mut h);
        let h = h.as_slice().ok_or_else(|| SparseError::ShapeMismatch("D^T D is not contiguous".into()))?;
        top_eigenvalue(h, m)
    } else {
        top_eigenvalue(g, n)
    };
    let max_diag = diag.iter().fold(T::zero(), |a, &b| a.max(b));
    Ok(estimate.max(max_diag) * T::of(LIPSCHITZ_MARGIN))
}

/// Rayleigh quotient after [`POWER_ITERS`] steps of power iteration on the symmetric positive semi-definite
/// row-major `n × n` matrix `a`, from a fixed pseudo-random start; approaches the top eigenvalue from below.
fn top_eigenvalue<T: Real>(a: &[T], n: usize) -> T {
    // A fixed pseudo-random start (splitmix64) is almost surely not orthogonal to the top eigenvector, unlike
    // a constant vector (e.g. atoms `a` and `−a`).
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut v: Vec<T> = (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut h = state;
            h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            h ^= h >> 31;
            T::of((h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        })
        .collect();
    let mut w = vec![T::zero(); n];
    let mut estimate = T::zero();
    for _ in 0..POWER_ITERS {
        let norm = dot(&v, &v).sqrt();
        if norm == T::zero() {
            break;
        }
        for vi in &mut v {
            *vi = *vi / norm;
        }
        w.par_iter_mut().zip(a.par_chunks(n)).for_each(|(wi, row)| *wi = dot(row, &v));
        estimate = dot(&v, &w);
        std::mem::swap(&mut v, &mut w);
    }
    estimate
}

/// `Σ a_i b_i` over equal-length slices, in eight independent lanes so that it vectorises.
#[inline]
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    const LANES: usize = 8;
    let mut acc = [T::zero(); LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = ca.remainder().iter().zip(cb.remainder()).fold(T::zero(), |s, (&x, &y)| s + x * y);
    for (x, y) in ca.zip(cb) {
        for k in 0..LANES {
            acc[k] = acc[k] + x[k] * y[k];
        }
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

/// Buffers of one chunk, `n_atoms` long each.
struct Workspace<T> {
    /// The code.
    z: Vec<T>,
    /// `G z`.
    gz: Vec<T>,
    /// Previous code (FISTA).
    z_prev: Vec<T>,
    /// `G z_prev` (FISTA).
    gz_prev: Vec<T>,
    /// Momentum point (FISTA).
    y: Vec<T>,
    /// `G y` (FISTA).
    gy: Vec<T>,
    /// Non-zeros of `z` (ISTA/FISTA).
    support: Vec<usize>,
}

impl<T: Real> Workspace<T> {
    fn new(n: usize) -> Self {
        let zeros = || vec![T::zero(); n];
        Self {
            z: zeros(),
            gz: zeros(),
            z_prev: zeros(),
            gz_prev: zeros(),
            y: zeros(),
            gy: zeros(),
            support: Vec::with_capacity(n),
        }
    }
}

/// Everything shared by the signals of one call.
struct Problem<'a, T> {
    /// `G`, row-major `n × n`.
    g: &'a [T],
    /// Diagonal of `G`.
    diag: &'a [T],
    /// Number of atoms.
    n: usize,
    /// `λ = alpha · n_features`.
    lam: T,
    nonneg: bool,
    max_iter: usize,
    /// Relative gap tolerance.
    tol: f64,
    /// `1 / L` with `L ≥ λ_max(G)` (ISTA/FISTA).
    inv_l: T,
}

impl<T: Real> Problem<'_, T> {
    /// Row `j` of `G`.
    #[inline]
    fn row(&self, j: usize) -> &[T] {
        &self.g[j * self.n..(j + 1) * self.n]
    }

    /// Solve one signal with correlations `c` and squared norm `xx`; push the non-zeros to `out`. Returns the
    /// iteration count and whether the gap tolerance was met.
    fn solve(
        &self,
        method: LassoMethod,
        ws: &mut Workspace<T>,
        c: ArrayView1<'_, T>,
        xx: T,
        out: &mut Vec<(u32, T)>,
    ) -> (usize, bool) {
        let c_owned: Vec<T>;
        let c = if let Some(s) = c.as_slice() {
            s
        } else {
            c_owned = c.to_vec();
            &c_owned
        };
        // z = 0 is optimal iff ||c||_∞ ≤ λ (max_j c_j ≤ λ when nonneg); this covers x = 0.
        let c_max = c.iter().fold(T::zero(), |a, &v| a.max(if self.nonneg { v } else { v.abs() }));
        if xx == T::zero() || c_max <= self.lam {
            return (0, true);
        }
        let xx = xx.to_f64_lossy();
        let tol_gap = self.tol * xx / 2.0;
        let res = match method {
            LassoMethod::Cd => self.cd(ws, c, xx, tol_gap),
            LassoMethod::Ista => self.ista(ws, c, xx, tol_gap),
            LassoMethod::Fista => self.fista(ws, c, xx, tol_gap),
        };
        out.extend(ws.z.iter().enumerate().filter(|(_, &v)| v != T::zero()).map(|(j, &v)| (j as u32, v)));
        res
    }

    /// Duality gap of `Q(z) = ½||x − Dᵀz||² + λ||z||₁` from `c`, `z`, `gz = G z` and `xx = ||x||²`.
    fn gap(&self, c: &[T], z: &[T], gz: &[T], xx: f64) -> f64 {
        let (mut cz, mut zgz, mut l1, mut dual_norm) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for ((&cj, &zj), &gj) in c.iter().zip(z).zip(gz) {
            let (cj, zj, gj) = (cj.to_f64_lossy(), zj.to_f64_lossy(), gj.to_f64_lossy());
            cz += cj * zj;
            zgz += zj * gj;
            l1 += zj.abs();
            // (D r)_j = c_j − (G z)_j
            let drj = cj - gj;
            dual_norm = dual_norm.max(if self.nonneg { drj } else { drj.abs() });
        }
        let lam = self.lam.to_f64_lossy();
        let rr = (xx - 2.0 * cz + zgz).max(0.0);
        let s = if dual_norm > lam { lam / dual_norm } else { 1.0 };
        0.5 * rr * (1.0 + s * s) + lam * l1 - s * (xx - cz)
    }

    /// Cyclic coordinate descent keeping `gz = G z` up to date with one row of `G` per changed coordinate.
    fn cd(&self, ws: &mut Workspace<T>, c: &[T], xx: f64, tol_gap: f64) -> (usize, bool) {
        let n = self.n;
        let z = &mut ws.z[..n];
        let gz = &mut ws.gz[..n];
        let (c, diag) = (&c[..n], &self.diag[..n]);
        z.fill(T::zero());
        gz.fill(T::zero());
        for it in 1..=self.max_iter {
            for j in 0..n {
                let gjj = diag[j];
                if gjj <= T::zero() {
                    continue;
                }
                let old = z[j];
                let rho = c[j] - gz[j] + gjj * old;
                let new = soft(rho, self.lam, self.nonneg) / gjj;
                if new != old {
                    z[j] = new;
                    // gz += (new − old) · G_j
                    axpy_neg(gz, old - new, self.row(j));
                }
            }
            if self.gap(c, z, gz, xx) <= tol_gap {
                return (it, true);
            }
        }
        (self.max_iter, false)
    }

    /// `gz = G z` as a sum of rows of `G` over `support`, the non-zeros of `z`.
    fn gram_times_sparse(&self, z: &[T], support: &[usize], gz: &mut [T]) {
        gz.fill(T::zero());
        for &j in support {
            axpy_neg(gz, -z[j], self.row(j));
        }
    }

    /// Proximal gradient: `z ← soft(z + (c − G z)/L, λ/L)`.
    fn ista(&self, ws: &mut Workspace<T>, c: &[T], xx: f64, tol_gap: f64) -> (usize, bool) {
        let n = self.n;
        let (inv_l, thr) = (self.inv_l, self.lam * self.inv_l);
        let Workspace { z, gz, support, .. } = ws;
        let (z, gz, c) = (&mut z[..n], &mut gz[..n], &c[..n]);
        z.fill(T::zero());
        gz.fill(T::zero());
        for it in 1..=self.max_iter {
            support.clear();
            for (j, ((zj, &gj), &cj)) in z.iter_mut().zip(gz.iter()).zip(c).enumerate() {
                *zj = soft(*zj + (cj - gj) * inv_l, thr, self.nonneg);
                if *zj != T::zero() {
                    support.push(j);
                }
            }
            self.gram_times_sparse(z, support, gz);
            if (it % GAP_EVERY == 0 || it == self.max_iter) && self.gap(c, z, gz, xx) <= tol_gap {
                return (it, true);
            }
        }
        (self.max_iter, false)
    }

    /// FISTA: the proximal step from the momentum point `y = z + β (z − z_prev)`, with `G y` formed from `G z`
    /// and `G z_prev` (no extra product), and adaptive restart of the momentum.
    fn fista(&self, ws: &mut Workspace<T>, c: &[T], xx: f64, tol_gap: f64) -> (usize, bool) {
        let n = self.n;
        let (inv_l, thr) = (self.inv_l, self.lam * self.inv_l);
        let Workspace { z, gz, z_prev, gz_prev, y, gy, support } = ws;
        for v in [&mut *z, &mut *gz, &mut *y, &mut *gy] {
            v[..n].fill(T::zero());
        }
        let c = &c[..n];
        let mut t = T::one();
        let (half, four) = (T::of(0.5), T::of(4.0));
        for it in 1..=self.max_iter {
            std::mem::swap(z, z_prev);
            std::mem::swap(gz, gz_prev);
            support.clear();
            for (j, ((zj, (&yj, &gyj)), &cj)) in z[..n].iter_mut().zip(y.iter().zip(gy.iter())).zip(c).enumerate() {
                *zj = soft(yj + (cj - gyj) * inv_l, thr, self.nonneg);
                if *zj != T::zero() {
                    support.push(j);
                }
            }
            self.gram_times_sparse(&z[..n], support, &mut gz[..n]);
            if (it % GAP_EVERY == 0 || it == self.max_iter) && self.gap(c, &z[..n], &gz[..n], xx) <= tol_gap {
                return (it, true);
            }
            // Adaptive restart (O'Donoghue & Candès 2015, gradient scheme): when the step from y went against
            // the last move, (y − z)·(z − z_prev) > 0, momentum is hurting; drop it.
            let against: T = (0..n).map(|j| (y[j] - z[j]) * (z[j] - z_prev[j])).sum();
            if against > T::zero() {
                t = T::one();
            }
            let t_next = half * (T::one() + (T::one() + four * t * t).sqrt());
            let beta = (t - T::one()) / t_next;
            t = t_next;
            let momentum = |dst: &mut [T], cur: &[T], prev: &[T]| {
                for ((d, &a), &b) in dst.iter_mut().zip(cur).zip(prev) {
                    *d = a + beta * (a - b);
                }
            };
            momentum(&mut y[..n], &z[..n], &z_prev[..n]);
            momentum(&mut gy[..n], &gz[..n], &gz_prev[..n]);
        }
        (self.max_iter, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, ShapeBuilder};
    use proptest::prelude::*;

    /// splitmix64: a tiny deterministic generator for test problems.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut h = self.0;
            h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            h ^ (h >> 31)
        }
        fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let u = 1.0 - self.uniform();
            let v = self.uniform();
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
    }

    /// Unit-norm Gaussian dictionary `(n_atoms, m)` and `k`-sparse signals with N(0, 1) coefficients plus
    /// N(0, noise²) per feature.
    fn problem(
        n_signals: usize,
        n_atoms: usize,
        m: usize,
        k: usize,
        noise: f64,
        seed: u64,
    ) -> (Array2<f64>, Array2<f64>) {
        let mut rng = Rng(seed);
        let mut d = Array2::from_shape_fn((n_atoms, m), |_| rng.normal());
        for mut row in d.outer_iter_mut() {
            let norm = row.dot(&row).sqrt();
            row.mapv_inplace(|v| v / norm);
        }
        let mut x = Array2::from_shape_fn((n_signals, m), |_| noise * rng.normal());
        for mut xr in x.outer_iter_mut() {
            for _ in 0..k {
                let a = (rng.next_u64() % n_atoms as u64) as usize;
                xr.scaled_add(rng.normal(), &d.row(a));
            }
        }
        (x, d)
    }

    fn params(alpha: f64, method: LassoMethod, nonneg: bool) -> LassoParams<f64> {
        LassoParams { alpha, method, max_iter: 100_000, tol: 1e-12, nonneg }
    }

    /// Naive `1/(2m) ||x − Dᵀz||² + alpha ||z||₁`.
    fn objective(x: ArrayView1<'_, f64>, d: &Array2<f64>, z: ArrayView1<'_, f64>, alpha: f64) -> f64 {
        let r = &x - &d.t().dot(&z);
        r.dot(&r) / (2.0 * x.len() as f64) + alpha * z.iter().map(|v| v.abs()).sum::<f64>()
    }

    /// `alpha_max = ||D x||_∞ / m` (`max_j (D x)_j / m` when nonneg) of every signal.
    fn alpha_max(x: &Array2<f64>, d: &Array2<f64>, nonneg: bool) -> Vec<f64> {
        let c = x.dot(&d.t());
        c.outer_iter()
            .map(|row| row.iter().fold(0.0f64, |a, &v| a.max(if nonneg { v } else { v.abs() })) / d.ncols() as f64)
            .collect()
    }

    const METHODS: [LassoMethod; 3] = [LassoMethod::Cd, LassoMethod::Ista, LassoMethod::Fista];

    #[test]
    fn kkt_conditions_hold_at_the_solution() {
        for nonneg in [false, true] {
            let (x, d) = problem(12, 40, 20, 5, 0.05, 7);
            let amax = alpha_max(&x, &d, nonneg);
            let alpha = 0.1 * amax.iter().fold(f64::INFINITY, |a, &b| a.min(b));
            let m = d.ncols() as f64;
            for method in METHODS {
                let out = lasso(x.view(), d.view(), None, &params(alpha, method, nonneg)).unwrap();
                assert_eq!(out.n_not_converged, 0, "{method:?} nonneg={nonneg}");
                let z = out.codes.to_dense().unwrap();
                let mut worst = 0.0f64;
                for (i, &scale) in amax.iter().enumerate() {
                    let r = &x.row(i) - &d.t().dot(&z.row(i));
                    let dr = d.dot(&r) / m;
                    assert!(z.row(i).iter().any(|&v| v != 0.0));
                    for (j, &zj) in z.row(i).iter().enumerate() {
                        let v = if zj != 0.0 {
                            assert!(!nonneg || zj > 0.0);
                            (dr[j] - alpha * zj.signum()).abs()
                        } else if nonneg {
                            (dr[j] - alpha).max(0.0)
                        } else {
                            (dr[j].abs() - alpha).max(0.0)
                        };
                        worst = worst.max(v / scale);
                    }
                }
                assert!(worst <= 1e-6, "{method:?} nonneg={nonneg}: KKT violation {worst:e} x alpha_max");
            }
        }
    }

    #[test]
    fn methods_reach_the_same_objective() {
        for nonneg in [false, true] {
            let (x, d) = problem(10, 60, 25, 6, 0.02, 11);
            let alpha = 0.02;
            let objs: Vec<Vec<f64>> = METHODS
                .iter()
                .map(|&method| {
                    let p = LassoParams { tol: 1e-10, ..params(alpha, method, nonneg) };
                    let out = lasso(x.view(), d.view(), None, &p).unwrap();
                    assert_eq!(out.n_not_converged, 0);
                    let z = out.codes.to_dense().unwrap();
                    (0..x.nrows()).map(|i| objective(x.row(i), &d, z.row(i), alpha)).collect()
                })
                .collect();
            for i in 0..x.nrows() {
                for o in &objs[1..] {
                    let rel = (o[i] - objs[0][i]).abs() / objs[0][i];
                    assert!(rel <= 1e-7, "signal {i}: {} vs {} (nonneg={nonneg})", o[i], objs[0][i]);
                }
            }
        }
    }

    #[test]
    fn orthonormal_dictionary_gives_soft_thresholded_correlations() {
        // Sylvester-Hadamard 8 × 8 / sqrt(8): orthonormal rows, so G = I and z = soft(D x, alpha·m).
        let n = 8;
        let d = Array2::from_shape_fn((n, n), |(i, j)| {
            if (i & j).count_ones() % 2 == 0 {
                1.0 / (n as f64).sqrt()
            } else {
                -1.0 / (n as f64).sqrt()
            }
        });
        let mut rng = Rng(3);
        let x = Array2::from_shape_fn((5, n), |_| rng.normal());
        let c = x.dot(&d.t());
        let alpha = 0.05;
        for nonneg in [false, true] {
            for method in METHODS {
                let out = lasso(x.view(), d.view(), None, &params(alpha, method, nonneg)).unwrap();
                let z = out.codes.to_dense().unwrap();
                let want = c.mapv(|v| soft(v, alpha * n as f64, nonneg));
                assert!(want.iter().any(|&v| v != 0.0) && want.iter().any(|&v| v == 0.0));
                for (a, b) in z.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-9, "{method:?} nonneg={nonneg}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn f32_agrees_with_f64() {
        // Same method and tolerance in both precisions, so the difference is the rounding, not the stopping rule.
        let (x, d) = problem(20, 64, 32, 4, 0.01, 5);
        let (x32, d32) = (x.mapv(|v| v as f32), d.mapv(|v| v as f32));
        for nonneg in [false, true] {
            for method in METHODS {
                let p64 = LassoParams { tol: 1e-6, ..params(0.01, method, nonneg) };
                let p32 = LassoParams { alpha: 0.01f32, method, max_iter: 100_000, tol: 1e-6, nonneg };
                let z64 = lasso(x.view(), d.view(), None, &p64).unwrap().codes.to_dense().unwrap();
                let out32 = lasso(x32.view(), d32.view(), None, &p32).unwrap();
                assert_eq!(out32.n_not_converged, 0, "{method:?}");
                let z32 = out32.codes.to_dense().unwrap();
                let scale = z64.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
                for (a, b) in z32.iter().zip(&z64) {
                    assert!((f64::from(*a) - b).abs() <= 1e-4 * scale, "{method:?} nonneg={nonneg}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn bad_arguments_name_the_argument() {
        let (x, d) = problem(2, 6, 4, 2, 0.0, 1);
        let arg_of = |p: LassoParams<f64>| match lasso(x.view(), d.view(), None, &p) {
            Err(SparseError::InvalidArgument { arg, .. }) => arg,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        let ok = params(0.1, LassoMethod::Cd, false);
        for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(arg_of(LassoParams { alpha, ..ok }), "alpha");
        }
        assert_eq!(arg_of(LassoParams { max_iter: 0, ..ok }), "max_iter");
        for tol in [0.0, -1e-4, f64::NAN, f64::INFINITY] {
            assert_eq!(arg_of(LassoParams { tol, ..ok }), "tol");
        }
        let g_bad = Array2::<f64>::eye(6) * 2.0;
        assert!(matches!(
            lasso(x.view(), d.view(), Some(g_bad.view()), &ok),
            Err(SparseError::InvalidArgument { arg: "gram", .. })
        ));
        let g_shape = Array2::<f64>::eye(5);
        assert!(matches!(lasso(x.view(), d.view(), Some(g_shape.view()), &ok), Err(SparseError::ShapeMismatch(_))));
        let mut d_zero = d.clone();
        d_zero.row_mut(2).fill(0.0);
        assert!(matches!(
            lasso(x.view(), d_zero.view(), None, &ok),
            Err(SparseError::InvalidArgument { arg: "D", .. })
        ));
    }

    #[test]
    fn zero_signal_and_huge_alpha_give_empty_rows() {
        let (mut x, d) = problem(3, 10, 6, 2, 0.01, 2);
        x.row_mut(1).fill(0.0);
        for method in METHODS {
            for nonneg in [false, true] {
                let out = lasso(x.view(), d.view(), None, &params(0.01, method, nonneg)).unwrap();
                assert_eq!(out.codes.indptr[2] - out.codes.indptr[1], 0);
                assert!(out.codes.indptr[1] > 0 && out.codes.indptr[3] > out.codes.indptr[2]);
                let amax = alpha_max(&x, &d, nonneg).into_iter().fold(0.0, f64::max);
                let out = lasso(x.view(), d.view(), None, &params(amax * 1.000_001, method, nonneg)).unwrap();
                assert_eq!(out.codes.indptr, vec![0, 0, 0, 0]);
                assert_eq!((out.n_iter_max, out.n_not_converged), (0, 0));
                assert_eq!(out.codes.n_atoms, 10);
            }
        }
    }

    #[test]
    fn given_gram_in_any_layout_and_thread_count_do_not_change_the_codes() {
        let (x, d) = problem(150, 50, 20, 4, 0.05, 9);
        let g = gram(d.view()).unwrap();
        let mut g_fortran = Array2::zeros(g.raw_dim().f());
        g_fortran.assign(&g);
        assert!(!g_fortran.is_standard_layout());
        for method in METHODS {
            let p = LassoParams { tol: 1e-6, ..params(0.01, method, true) };
            let base = crate::parallel::install(Some(1), || lasso(x.view(), d.view(), None, &p)).unwrap().unwrap();
            let many = crate::parallel::install(Some(4), || lasso(x.view(), d.view(), None, &p)).unwrap().unwrap();
            let given = lasso(x.view(), d.view(), Some(g.view()), &p).unwrap();
            let fortran = lasso(x.view(), d.view(), Some(g_fortran.view()), &p).unwrap();
            assert_eq!(base, many);
            assert_eq!(base, given);
            assert_eq!(base, fortran);
            assert!(base.n_iter_max > 0);
        }
    }

    #[test]
    fn max_iter_counts_unconverged_signals() {
        let (x, d) = problem(5, 40, 20, 5, 0.05, 4);
        for method in METHODS {
            let p = LassoParams { max_iter: 2, ..params(0.001, method, false) };
            let out = lasso(x.view(), d.view(), None, &p).unwrap();
            assert_eq!((out.n_iter_max, out.n_not_converged), (2, 5), "{method:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn coordinate_descent_finds_a_minimum(
            n_atoms in 1usize..20,
            m in 1usize..10,
            seed in any::<u64>(),
            alpha_frac in 0.01f64..1.2,
            nonneg in any::<bool>(),
        ) {
            let mut rng = Rng(seed);
            let mut d = Array2::from_shape_fn((n_atoms, m), |_| rng.uniform() * 2.0 - 1.0);
            for mut row in d.outer_iter_mut() {
                if row.iter().all(|&v| v.abs() < 1e-3) {
                    row[0] = 1.0;
                }
            }
            let x = Array2::from_shape_fn((3, m), |_| rng.normal());
            let amax = alpha_max(&x, &d, nonneg).into_iter().fold(0.0, f64::max);
            let alpha = (alpha_frac * amax).max(1e-6);
            let tol = 1e-10;
            let p = LassoParams { alpha, method: LassoMethod::Cd, max_iter: 1_000_000, tol, nonneg };
            let out = lasso(x.view(), d.view(), None, &p).unwrap();
            prop_assert_eq!(out.n_not_converged, 0);
            let z = out.codes.to_dense().unwrap();
            for i in 0..x.nrows() {
                let zi = z.row(i);
                prop_assert!(!nonneg || zi.iter().all(|&v| v >= 0.0));
                let p0 = objective(x.row(i), &d, Array1::zeros(n_atoms).view(), alpha);
                let best = objective(x.row(i), &d, zi, alpha);
                // Gap ≤ tol · P(0) bounds the suboptimality of the returned code.
                let slack = tol * p0 + 1e-14;
                prop_assert!(best <= p0 + slack, "P(z) = {} > P(0) = {}", best, p0);
                for _ in 0..8 {
                    let step = 10f64.powf(-1.0 - 4.0 * rng.uniform());
                    let mut zp = zi.to_owned();
                    for v in &mut zp {
                        *v += step * rng.normal();
                        if nonneg {
                            *v = v.max(0.0);
                        }
                    }
                    let other = objective(x.row(i), &d, zp.view(), alpha);
                    prop_assert!(best <= other + slack, "P(z) = {} > P(z + e) = {}", best, other);
                }
            }
        }
    }

    /// Release-mode timing: `cargo test -p sparsecore-core --release lasso_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, run by hand in release mode"]
    fn lasso_timing() {
        let (x, d) = problem(1000, 1024, 256, 16, 0.01, 42);
        let g = gram(d.view()).unwrap();
        let t = std::time::Instant::now();
        let th = super::super::threshold(x.view(), d.view(), 0.5, false).unwrap();
        println!("threshold (GEMM + soft): {:.1} ms, nnz {}", t.elapsed().as_secs_f64() * 1e3, th.indices.len());
        let t = std::time::Instant::now();
        let diag: Vec<f64> = (0..1024).map(|j| g[[j, j]]).collect();
        let l = lipschitz(d.view(), g.as_slice().unwrap(), &diag).unwrap();
        println!("Lipschitz constant {l} (D^T D): {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        let t = std::time::Instant::now();
        let l = top_eigenvalue(g.as_slice().unwrap(), 1024);
        println!("power iteration on G: {l}, {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        for alpha in [0.01, 0.001] {
            for method in METHODS {
                let p = LassoParams { alpha, method, max_iter: 1000, tol: 1e-4, nonneg: false };
                let t = std::time::Instant::now();
                let out = lasso(x.view(), d.view(), Some(g.view()), &p).unwrap();
                let dt = t.elapsed();
                let nnz = out.codes.indices.len() as f64 / x.nrows() as f64;
                let t1 = std::time::Instant::now();
                let out1 = crate::parallel::install(Some(1), || lasso(x.view(), d.view(), Some(g.view()), &p))
                    .unwrap()
                    .unwrap();
                let dt1 = t1.elapsed();
                assert_eq!(out, out1);
                println!(
                    "alpha={alpha} {method:?}: {:.1} ms ({} threads), {:.1} ms (1 thread), n_iter_max={}, \
                     not converged={}, mean nnz={nnz:.1}",
                    dt.as_secs_f64() * 1e3,
                    rayon::current_num_threads(),
                    dt1.as_secs_f64() * 1e3,
                    out.n_iter_max,
                    out.n_not_converged,
                );
            }
        }
    }
}
