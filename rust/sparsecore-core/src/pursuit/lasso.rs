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

use ndarray::{ArrayView1, ArrayView2, CowArray, Ix2};

use super::{axpy_neg, check_gram, gram, run_batched, soft, validate, Codes, Real};
use crate::SparseError;

/// Coordinate descent recomputes `G z` from scratch every this many sweeps.
const CD_REFRESH: usize = 16;
/// Atoms in the first working set (at most; the violators of `z = 0` with the largest correlations).
const FIRST_SET: usize = 8;

/// The Lasso solver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LassoMethod {
    /// Cyclic coordinate descent with covariance updates (scikit-learn's `lasso_cd` with a precomputed Gram).
    Cd,
    /// Proximal gradient with backtracking, on a working set of atoms that grows with the violators of the
    /// optimality conditions (see `Problem::prox_ws`).
    Ista,
    /// Accelerated proximal gradient (Beck & Teboulle 2009) with adaptive restart, on the same working sets.
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
    let prob = Problem { g, diag: &diag, n, lam, nonneg: p.nonneg, max_iter: p.max_iter, tol: p.tol.to_f64_lossy() };
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

/// Buffers of one chunk: `n_atoms` long for the full code, working-set long for the rest.
struct Workspace<T> {
    /// The code over all atoms.
    z: Vec<T>,
    /// `G z` (coordinate descent) or the gradient `c − G z` (ISTA/FISTA) over all atoms.
    gz: Vec<T>,
    /// Working set (ISTA/FISTA): atom indices; position `a` in the vectors below is atom `set[a]`.
    set: Vec<usize>,
    /// Membership of each atom in `set`.
    in_set: Vec<bool>,
    /// Correlations `c` on the working set.
    cs: Vec<T>,
    /// Code on the working set.
    zs: Vec<T>,
    /// `G_SS zs`.
    gzs: Vec<T>,
    /// Previous code (FISTA).
    zs_prev: Vec<T>,
    /// `G_SS zs_prev`.
    gzs_prev: Vec<T>,
    /// Momentum point (FISTA).
    ys: Vec<T>,
    /// `G_SS ys`.
    gys: Vec<T>,
    /// Positions in `set` where `zs` is non-zero.
    support: Vec<usize>,
    /// Atoms outside the set that violate the optimality conditions, with their margin.
    cand: Vec<(f64, usize)>,
}

impl<T: Real> Workspace<T> {
    fn new(n: usize) -> Self {
        Self {
            z: vec![T::zero(); n],
            gz: vec![T::zero(); n],
            set: Vec::new(),
            in_set: vec![false; n],
            cs: Vec::new(),
            zs: Vec::new(),
            gzs: Vec::new(),
            zs_prev: Vec::new(),
            gzs_prev: Vec::new(),
            ys: Vec::new(),
            gys: Vec::new(),
            support: Vec::new(),
            cand: Vec::new(),
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
            LassoMethod::Ista => self.prox_ws(ws, c, xx, tol_gap, false),
            LassoMethod::Fista => self.prox_ws(ws, c, xx, tol_gap, true),
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
        self.gap_from(cz, zgz, l1, dual_norm, xx)
    }

    /// The duality gap from `cᵀz`, `zᵀG z`, `||z||₁`, `||D r||_∞` (`max_j (D r)_j` when nonneg) and `||x||²`.
    fn gap_from(&self, cz: f64, zgz: f64, l1: f64, dual_norm: f64, xx: f64) -> f64 {
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
            if it % CD_REFRESH == 0 {
                // Recompute G z from the code: the running sum drifts by rounding (in float32 enough to keep
                // the duality gap above a tight tolerance forever).
                gz.fill(T::zero());
                for (j, &zj) in z.iter().enumerate() {
                    if zj != T::zero() {
                        axpy_neg(gz, -zj, self.row(j));
                    }
                }
            }
            if self.gap(c, z, gz, xx) <= tol_gap {
                return (it, true);
            }
        }
        (self.max_iter, false)
    }

    /// ISTA (`accelerate = false`) or FISTA (Beck & Teboulle 2009) on a growing working set of atoms.
    ///
    /// Each round runs proximal gradient on the Lasso restricted to the atoms in `set` (every other code held
    /// at 0) until the restricted duality gap is at most `tol_gap / 2`: steps on the small set are cheap next to
    /// a pass over all atoms. Then the gradient `c − G z` is formed over all atoms. The solve ends when the full
    /// duality gap meets `tol_gap`; otherwise the atoms violating the optimality conditions most
    /// (`|c_j − (G z)_j| > λ`) join the set, at most as many as it already holds. The set only grows, so the
    /// solver ends at the solution of the full problem.
    ///
    /// While the code is sparse the set is small, so a step costs `O(|S|·nnz)` instead of `O(n_atoms·nnz)`, and
    /// the step `1/L` may use `L` near `λ_max(G_SS)`, much smaller than `λ_max(G)`. `L` starts at the largest
    /// diagonal entry of `G_SS` and is raised by backtracking (Beck & Teboulle's condition, which for the
    /// quadratic loss reads `(z − y)ᵀG(z − y) ≤ L ||z − y||²`).
    ///
    /// The iteration count is the number of proximal steps over all rounds.
    fn prox_ws(&self, ws: &mut Workspace<T>, c: &[T], xx: f64, tol_gap: f64, accelerate: bool) -> (usize, bool) {
        let n = self.n;
        for &j in &ws.set {
            ws.in_set[j] = false;
        }
        for v in [&mut ws.set, &mut ws.support] {
            v.clear();
        }
        ws.cs.clear();
        ws.zs.clear();
        // `gz` holds the gradient D r = c − G z over all atoms.
        ws.gz[..n].copy_from_slice(&c[..n]);
        let (mut iters, mut converged) = (0, false);
        let mut l = T::zero();
        loop {
            let dual_norm = T::max_key_k(&ws.gz[..n], self.nonneg).to_f64_lossy();
            let (mut cz, mut zgz, mut l1) = (0.0f64, 0.0f64, 0.0f64);
            for &a in &ws.support {
                let (zj, j) = (ws.zs[a].to_f64_lossy(), ws.set[a]);
                let cj = c[j].to_f64_lossy();
                cz += cj * zj;
                zgz += (cj - ws.gz[j].to_f64_lossy()) * zj;
                l1 += zj.abs();
            }
            if self.gap_from(cz, zgz, l1, dual_norm, xx) <= tol_gap {
                converged = true;
                break;
            }
            if iters >= self.max_iter {
                break;
            }
            self.grow(ws, c);
            // The curvature bound starts at the largest diagonal entry and grows when a step shows more; λ_max
            // can only grow with the set (eigenvalue interlacing), so the last bound is a valid start.
            l = ws.set.iter().fold(l, |a, &j| a.max(self.diag[j]));
            let (it, l_used) = self.prox_set(ws, xx, 0.5 * tol_gap, l, accelerate, self.max_iter - iters);
            l = l_used;
            iters += it;
            ws.gz[..n].copy_from_slice(&c[..n]);
            for &a in &ws.support {
                axpy_neg(&mut ws.gz[..n], ws.zs[a], self.row(ws.set[a]));
            }
        }
        ws.z[..n].fill(T::zero());
        for (&j, &v) in ws.set.iter().zip(&ws.zs) {
            ws.z[j] = v;
        }
        (iters, converged)
    }

    /// Add to the working set the atoms outside it with `|(D r)_j| > λ` (`(D r)_j > λ` when nonneg; `gz` holds
    /// `D r`), largest first, at most `max(set size, FIRST_SET)` of them.
    fn grow(&self, ws: &mut Workspace<T>, c: &[T]) {
        ws.cand.clear();
        for (j, (&grad, &inside)) in ws.gz.iter().zip(&ws.in_set).enumerate() {
            let v = if self.nonneg { grad } else { grad.abs() };
            if v > self.lam && !inside {
                ws.cand.push((v.to_f64_lossy(), j));
            }
        }
        let room = ws.set.len().max(FIRST_SET);
        if ws.cand.len() > room {
            ws.cand.select_nth_unstable_by(room - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            ws.cand.truncate(room);
        }
        for &(_, j) in &ws.cand {
            ws.in_set[j] = true;
            ws.set.push(j);
            ws.cs.push(c[j]);
            ws.zs.push(T::zero());
        }
    }

    /// `out = G_SS v` from the rows of `G` of the non-zeros of `v`, whose positions go to `support`.
    fn set_times(&self, set: &[usize], v: &[T], support: &mut Vec<usize>, out: &mut [T]) {
        support.clear();
        out.fill(T::zero());
        for (b, (&vb, &jb)) in v.iter().zip(set).enumerate() {
            if vb != T::zero() {
                support.push(b);
                let row = self.row(jb);
                for (o, &ja) in out.iter_mut().zip(set) {
                    *o = *o + vb * row[ja];
                }
            }
        }
    }

    /// Proximal gradient (with momentum and adaptive restart when `accelerate`) on the working set, from the
    /// code in `zs`, for at most `budget` steps and at least one, until the restricted duality gap is at most
    /// `inner_tol`. `l` is the current curvature bound, raised (to 1.1 times what a step showed) whenever a step
    /// breaks the backtracking condition; the step is then taken again. Returns the steps taken and the bound.
    fn prox_set(
        &self,
        ws: &mut Workspace<T>,
        xx: f64,
        inner_tol: f64,
        mut l: T,
        accelerate: bool,
        budget: usize,
    ) -> (usize, T) {
        let w = ws.set.len();
        let Workspace { set, cs, zs, gzs, zs_prev, gzs_prev, ys, gys, support, .. } = ws;
        for v in [&mut *gzs, &mut *zs_prev, &mut *gzs_prev, &mut *ys, &mut *gys] {
            v.resize(w, T::zero());
        }
        self.set_times(set, zs, support, gzs);
        ys.copy_from_slice(zs);
        gys.copy_from_slice(gzs);
        // Below this squared step length the curvature check is left out: rounding in `G y` (kept up to date
        // from `G z` and `G z_prev`) would dominate it.
        let tiny = T::epsilon().to_f64_lossy().sqrt();
        let mut t = T::one();
        let (half, four) = (T::of(0.5), T::of(4.0));
        for it in 1..=budget {
            std::mem::swap(zs, zs_prev);
            std::mem::swap(gzs, gzs_prev);
            loop {
                let (inv_l, thr) = (T::one() / l, self.lam / l);
                for ((zj, &yj), (&gyj, &cj)) in zs.iter_mut().zip(ys.iter()).zip(gys.iter().zip(cs.iter())) {
                    *zj = soft(yj + (cj - gyj) * inv_l, thr, self.nonneg);
                }
                self.set_times(set, zs, support, gzs);
                // Backtracking: (z − y)ᵀ G (z − y) ≤ L ||z − y||² must hold (with room for rounding).
                let (mut curv, mut len2) = (0.0f64, 0.0f64);
                for a in 0..w {
                    let d = (zs[a] - ys[a]).to_f64_lossy();
                    curv += d * (gzs[a] - gys[a]).to_f64_lossy();
                    len2 += d * d;
                }
                // Written so that a NaN (overflow on extreme inputs) ends the loop instead of raising L forever.
                let too_curved = curv > l.to_f64_lossy() * len2 * (1.0 + 1e-3);
                if !too_curved {
                    break;
                }
                // Only now is ||y||² needed (for the rounding floor): most steps pass the check.
                let yy: f64 = ys.iter().map(|&v| v.to_f64_lossy().powi(2)).sum();
                if len2 <= tiny * tiny * yy.max(f64::MIN_POSITIVE) {
                    break;
                }
                l = T::of(1.1 * curv / len2);
            }
            if self.gap(cs, zs, gzs, xx) <= inner_tol {
                return (it, l);
            }
            if !accelerate {
                ys.copy_from_slice(zs);
                gys.copy_from_slice(gzs);
                continue;
            }
            // Adaptive restart (O'Donoghue & Candès 2015, gradient scheme): when the step from y went against
            // the last move, (y − z)·(z − z_prev) > 0, momentum is hurting; drop it.
            let against: T = (0..w).map(|a| (ys[a] - zs[a]) * (zs[a] - zs_prev[a])).sum();
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
            momentum(ys, zs, zs_prev);
            momentum(gys, gzs, gzs_prev);
        }
        (budget, l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2, ShapeBuilder};
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
    fn working_sets_grow_to_large_supports() {
        // Dense codes: the working set (8 atoms at first) must grow over several rounds to hold them.
        for nonneg in [false, true] {
            let (x, d) = problem(4, 80, 100, 60, 0.01, 23);
            let alpha = 1e-3 * alpha_max(&x, &d, nonneg).into_iter().fold(f64::INFINITY, f64::min);
            let solve = |method| {
                let out = lasso(x.view(), d.view(), None, &LassoParams { tol: 1e-12, ..params(alpha, method, nonneg) })
                    .unwrap();
                assert_eq!(out.n_not_converged, 0, "{method:?}");
                out.codes.to_dense().unwrap()
            };
            let z_cd = solve(LassoMethod::Cd);
            for method in [LassoMethod::Ista, LassoMethod::Fista] {
                let z = solve(method);
                for i in 0..x.nrows() {
                    let nnz = z.row(i).iter().filter(|&&v| v != 0.0).count();
                    assert!(nnz > 4 * FIRST_SET, "{method:?} signal {i}: only {nnz} non-zeros");
                    let (a, b) =
                        (objective(x.row(i), &d, z.row(i), alpha), objective(x.row(i), &d, z_cd.row(i), alpha));
                    assert!((a - b).abs() <= 1e-9 * b, "{method:?} signal {i}: {a} vs {b} (nonneg={nonneg})");
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
        fn every_method_finds_a_minimum(
            method_index in 0usize..3,
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
            let method = METHODS[method_index];
            let p = LassoParams { alpha, method, max_iter: 1_000_000, tol, nonneg };
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
        let g2 = gram(d.view()).unwrap();
        println!("Gram matrix: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(g, g2);
        let t = std::time::Instant::now();
        let mut full = Array2::<f64>::zeros((1024, 1024));
        ndarray::linalg::general_mat_mul(1.0, &d, &d.t(), 0.0, &mut full);
        println!("full product D D^T (what gram() halves): {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        assert!(g.iter().zip(&full).all(|(a, b)| (a - b).abs() <= 1e-12));
        for (alpha, tol) in [(0.01, 1e-4), (0.001, 1e-4), (0.002, 1e-6)] {
            for method in METHODS {
                let p = LassoParams { alpha, method, max_iter: 10_000, tol, nonneg: false };
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
                    "alpha={alpha} tol={tol} {method:?}: {:.1} ms ({} threads), {:.1} ms (1 thread), n_iter_max={}, \
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
