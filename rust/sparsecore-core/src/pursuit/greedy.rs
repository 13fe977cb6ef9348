//! Greedy pursuits: orthogonal matching pursuit (OMP), matching pursuit (MP) and gradient pursuit (GP).
//!
//! All three pick, at every step, the atom most correlated with the current residual, using the residual's
//! correlations `alpha = c − G z` kept in atom space (no residual in feature space is ever formed):
//! - OMP (Pati et al. 1993) re-fits all selected coefficients by least squares. The Cholesky factor of
//!   `G[I, I]` grows by one row per step and the forward-substituted right-hand side never changes for old rows,
//!   so a step costs O(t²) for the factor plus O(n_atoms · t) to refresh `alpha` (Batch-OMP, Rubinstein,
//!   Zibulevsky & Elad 2008). The result matches scikit-learn's `orthogonal_mp_gram`.
//! - MP (Mallat & Zhang 1993) moves only the chosen coefficient: O(n_atoms) per step.
//! - GP (Blumensath & Davies 2008) moves all selected coefficients along the gradient restricted to the
//!   support, with the exact line-search step: O(n_atoms · t) per step.
//!
//! Non-negative variants select only positive correlations; OMP then solves a non-negative least squares on the
//! support (Lawson–Hanson active set on the small Gram block), GP limits its step so no coefficient turns
//! negative. The squared residual norm never increases, and a tolerance on it can stop early.

use ndarray::{ArrayView1, ArrayView2, CowArray, Ix2};

use super::{argmax, argmax_of, axpy_neg, check_gram, gram, run_batched, validate, Aligned, Codes, Real};
use crate::SparseError;

/// Stopping rule and sign constraint of a greedy pursuit.
#[derive(Debug, Clone, Copy)]
pub struct GreedyParams<T> {
    /// OMP: at most `k` atoms. MP and GP: at most `k` steps (so at most `k` atoms).
    pub k: usize,
    /// Stop once the squared residual norm `||x − Dᵀz||²` is `<= tol`.
    pub tol: Option<T>,
    /// Only non-negative coefficients.
    pub nonneg: bool,
}

fn check_params<T: Real>(p: &GreedyParams<T>, n_atoms: usize) -> Result<(), SparseError> {
    if p.k == 0 {
        return Err(SparseError::invalid("k", "must be >= 1"));
    }
    if p.k > n_atoms {
        return Err(SparseError::invalid("k", format!("is {} but the dictionary has only {n_atoms} atoms", p.k)));
    }
    if let Some(t) = p.tol {
        if !t.is_finite() || t < T::zero() {
            return Err(SparseError::invalid("tol", format!("must be a finite number >= 0, got {t}")));
        }
    }
    Ok(())
}

/// Validate the inputs and return the Gram matrix to use: the given one (checked; copied only when it is not
/// C-contiguous) or a fresh `D Dᵀ`.
fn prepare<'a, T: Real>(
    x: ArrayView2<'_, T>,
    d: ArrayView2<'_, T>,
    gram_in: Option<ArrayView2<'a, T>>,
    p: &GreedyParams<T>,
) -> Result<CowArray<'a, T, Ix2>, SparseError> {
    validate(x, d)?;
    check_params(p, d.nrows())?;
    match gram_in {
        Some(g) => {
            check_gram(g, d)?;
            Ok(if g.is_standard_layout() {
                CowArray::from(g)
            } else {
                CowArray::from(g.as_standard_layout().into_owned())
            })
        }
        None => Ok(CowArray::from(gram(d)?)),
    }
}

fn as_slice<'b, T: Real>(g: &'b CowArray<'_, T, Ix2>) -> Result<&'b [T], SparseError> {
    g.as_slice().ok_or_else(|| SparseError::invalid("gram", "must be C-contiguous"))
}

/// Copy a signal's correlations (a row view, contiguous in practice) into a work buffer.
#[inline]
fn copy_row<T: Real>(dst: &mut [T], c: ArrayView1<'_, T>) {
    match c.as_slice() {
        Some(cs) => dst.copy_from_slice(cs),
        None => dst.iter_mut().zip(c.iter()).for_each(|(a, &v)| *a = v),
    }
}

/// Row `j` of a row-major Gram matrix as a slice.
#[inline]
fn grow<T: Real>(g: &[T], n: usize, j: usize) -> &[T] {
    &g[j * n..(j + 1) * n]
}

/// An atom whose squared distance to the span of the support is below this many machine epsilons of its own
/// squared norm is treated as dependent (OMP stops): beyond `n_features` atoms, or for near-duplicates, the
/// Cholesky factor would otherwise be built from rounding noise.
const DEPENDENT: f64 = 1e3;

/// Per-chunk buffers of OMP.
struct OmpWs<T> {
    alpha: Aligned<T>,
    /// Correlations of every atom with the orthonormalised support directions, one row of `n` per step.
    wrows: Aligned<T>,
    cbuf: Aligned<T>,
    sel: Vec<usize>,
    chol: Vec<T>, // k x k, lower triangular, row-major
    v: Vec<T>,
    gamma: Vec<T>,
    w: Vec<T>,
    b: Vec<T>,
}

/// Orthogonal matching pursuit of every row of `x` over the atoms (rows) of `d`.
///
/// Errors: shape mismatch, non-finite input, zero-norm atoms, `k` outside `1..=n_atoms`, bad `tol`, a Gram
/// matrix that does not match `d`.
pub fn omp<T: Real>(
    x: ArrayView2<'_, T>,
    d: ArrayView2<'_, T>,
    gram_in: Option<ArrayView2<'_, T>>,
    p: &GreedyParams<T>,
) -> Result<Codes<T>, SparseError> {
    let g_arr = prepare(x, d, gram_in, p)?;
    let g = as_slice(&g_arr)?;
    let n = d.nrows();
    let k = p.k.min(n);
    let p = *p;
    run_batched(
        x,
        d,
        || OmpWs {
            alpha: Aligned::zeroed(n),
            wrows: Aligned::zeroed(if p.nonneg { 0 } else { k * n }),
            cbuf: Aligned::zeroed(n),
            sel: Vec::with_capacity(k),
            chol: vec![T::zero(); k * k],
            v: vec![T::zero(); k],
            gamma: vec![T::zero(); k],
            w: vec![T::zero(); k],
            b: vec![T::zero(); k],
        },
        |ws, c, xx, out| {
            if p.nonneg {
                omp_one(ws, g, n, k, &p, c, xx, out);
            } else {
                omp_ls_one(ws, g, n, k, &p, c, xx, out);
            }
        },
    )
}

/// Least-squares OMP of one signal in "orthogonalised correlation" form.
///
/// With `q_s` the Gram–Schmidt directions of the selected atoms, `w_s = D q_s` holds every atom's correlation
/// with `q_s`. Then the new Cholesky row is `L[t, s] = w_s[j]`, `w_t = (G[j] − Σ L[t, s] w_s) / L[t, t]`, the
/// projection coefficient is `v_t = alpha_j / L[t, t]`, and `alpha −= v_t w_t`: one row of `G` per step and
/// `t` passes over cache-resident rows of `w`, the same arithmetic as Batch-OMP. The coefficients come from
/// one back substitution `Lᵀ γ = v` at the end; `||r||² = ||x||² − Σ v²`.
fn omp_ls_one<T: Real>(
    ws: &mut OmpWs<T>,
    g: &[T],
    n: usize,
    k: usize,
    p: &GreedyParams<T>,
    c: ArrayView1<'_, T>,
    xx: T,
    out: &mut Vec<(u32, T)>,
) {
    copy_row(&mut ws.alpha, c);
    ws.sel.clear();
    if p.tol.is_some_and(|tol| xx <= tol) {
        return;
    }
    // The residual's squared norm, accumulated in f64: in float32 a running difference would lose ~eps·||x||².
    let mut err = xx.to_f64_lossy();
    let eps = T::epsilon();
    // A correlation below ~100 eps·||x|| is rounding noise: the signal is explained (scikit-learn stops on
    // alpha² < eps in absolute terms; relative to ||x|| the rule holds for signals of any scale and dtype).
    let floor = T::of(1e4) * eps * eps * xx;
    let mut m = 0;
    // The largest |alpha_i| when the previous step found it while updating alpha.
    let mut known_best: Option<T> = None;
    while m < k {
        let found = match known_best.take() {
            Some(best) => argmax_of(&ws.alpha, false, best),
            None => argmax(&ws.alpha, false),
        };
        let Some(j) = found else { break };
        if ws.sel.contains(&j) || ws.alpha[j] * ws.alpha[j] <= floor {
            break; // numerically the residual is already orthogonal to the support
        }
        let (done, rest) = ws.wrows.split_at_mut(m * n);
        let wt = &mut rest[..n];
        let mut dsq = grow(g, n, j)[j];
        for s in 0..m {
            let l = done[s * n + j];
            ws.chol[m * k + s] = l;
            dsq = dsq - l * l;
        }
        if dsq <= T::of(DEPENDENT) * eps * grow(g, n, j)[j] {
            break; // the atom is (numerically) in the span of the support
        }
        let ltt = dsq.sqrt();
        ws.chol[m * k + m] = ltt;
        let inv = T::one() / ltt;
        let vt = ws.alpha[j] * inv;
        ws.v[m] = vt;
        ws.sel.push(j);
        m += 1;
        err -= vt.to_f64_lossy() * vt.to_f64_lossy();
        if m == k || p.tol.is_some_and(|tol| err <= tol.to_f64_lossy()) {
            // The last atom: no later step reads w_t or the updated correlations, so neither is computed (the
            // longest step of the signal, t passes over the rows of w).
            break;
        }
        // wt = (G[j] − Σ L[t, s] w_s) / L[t, t] and alpha −= vt · wt in one kernel, which also returns the
        // largest |alpha_i|; alpha[j] is then set to exactly zero (orthogonal in exact arithmetic), so the
        // maximum stays valid unless it was alpha[j]'s rounding residue.
        let t = m - 1;
        let best = T::omp_step_k(wt, grow(g, n, j), &ws.chol[t * k..t * k + t], &done[..t * n], inv, &mut ws.alpha, vt);
        let residue = ws.alpha[j].abs();
        ws.alpha[j] = T::zero();
        if residue < best {
            known_best = Some(best);
        }
    }
    for i in (0..m).rev() {
        let mut s = ws.v[i];
        for q in i + 1..m {
            s = s - ws.chol[q * k + i] * ws.gamma[q];
        }
        ws.gamma[i] = s / ws.chol[i * k + i];
    }
    out.extend(ws.sel.iter().zip(&ws.gamma[..m]).map(|(&a, &v)| (a as u32, v)));
}

/// Non-negative OMP of one signal: selection by the largest positive correlation, coefficients by NNLS on the
/// support, correlations refreshed from rows of `G`.
#[allow(clippy::too_many_lines)]
fn omp_one<T: Real>(
    ws: &mut OmpWs<T>,
    g: &[T],
    n: usize,
    k: usize,
    p: &GreedyParams<T>,
    c: ArrayView1<'_, T>,
    xx: T,
    out: &mut Vec<(u32, T)>,
) {
    copy_row(&mut ws.cbuf, c);
    let c = std::mem::take(&mut ws.cbuf);
    ws.alpha.copy_from_slice(&c);
    ws.sel.clear();
    omp_nonneg_loop(ws, g, n, k, p, &c, xx, out);
    ws.cbuf = c;
}

fn omp_nonneg_loop<T: Real>(
    ws: &mut OmpWs<T>,
    g: &[T],
    n: usize,
    k: usize,
    p: &GreedyParams<T>,
    c: &[T],
    xx: T,
    out: &mut Vec<(u32, T)>,
) {
    if let Some(tol) = p.tol {
        if xx <= tol {
            return;
        }
    }
    let eps = T::epsilon();
    let floor = T::of(1e4) * eps * eps * xx;
    for t in 0..k {
        let Some(j) = argmax(&ws.alpha, p.nonneg) else { break };
        if ws.sel.contains(&j) || ws.alpha[j] * ws.alpha[j] <= floor {
            break; // numerically nothing is left to explain with a positive coefficient
        }
        let gj = grow(g, n, j);
        if t == 0 {
            ws.chol[0] = gj[j].sqrt();
        } else {
            // w = L⁻¹ G[sel, j]; the new diagonal is sqrt(G_jj − |w|²).
            for i in 0..t {
                let mut s = gj[ws.sel[i]];
                for q in 0..i {
                    s = s - ws.chol[i * k + q] * ws.w[q];
                }
                ws.w[i] = s / ws.chol[i * k + i];
            }
            let dsq = gj[j] - ws.w[..t].iter().map(|&v| v * v).sum::<T>();
            if dsq <= T::of(DEPENDENT) * eps * gj[j] {
                break; // the atom is (numerically) in the span of the support
            }
            ws.chol[t * k..t * k + t].copy_from_slice(&ws.w[..t]);
            ws.chol[t * k + t] = dsq.sqrt();
        }
        ws.sel.push(j);
        let m = t + 1;
        // Least squares on the support from the growing Cholesky factor: forward substitution gains one entry,
        // v_t = (c_j − Σ L[t, q] v_q) / L[t, t], then one back substitution into `w`.
        let mut s = c[j];
        for q in 0..t {
            s = s - ws.chol[t * k + q] * ws.v[q];
        }
        ws.v[t] = s / ws.chol[t * k + t];
        for i in (0..m).rev() {
            let mut s = ws.v[i];
            for q in i + 1..m {
                s = s - ws.chol[q * k + i] * ws.w[q];
            }
            ws.w[i] = s / ws.chol[i * k + i];
        }
        if ws.w[..m].iter().all(|&v| v >= T::zero()) {
            // A feasible least-squares solution is also the non-negative one.
            ws.gamma[..m].copy_from_slice(&ws.w[..m]);
        } else {
            nnls_support(ws, g, n, c, m); // warm-started from the previous (feasible) coefficients
        }
        ws.alpha.copy_from_slice(c);
        for i in 0..m {
            if ws.gamma[i] != T::zero() {
                axpy_neg(&mut ws.alpha, ws.gamma[i], grow(g, n, ws.sel[i]));
            }
        }
        if let Some(tol) = p.tol {
            // ||r||² = ||x||² − 2γᵀc_I + γᵀG_IIγ, and γᵀG_IIγ = γᵀ(c_I − alpha_I).
            let mut err = xx;
            for i in 0..m {
                let a = ws.sel[i];
                err = err - ws.gamma[i] * (c[a] + ws.alpha[a]);
            }
            if err <= tol {
                break;
            }
        }
    }
    out.extend(ws.sel.iter().zip(&ws.gamma).map(|(&a, &v)| (a as u32, v)));
}

/// Non-negative least squares on the support `sel[..m]` (Lawson & Hanson 1974, active set), in Gram form:
/// minimise ½γᵀG_IIγ − c_Iᵀγ subject to γ ≥ 0. Writes `gamma[..m]`.
fn nnls_support<T: Real>(ws: &mut OmpWs<T>, g: &[T], n: usize, c: &[T], m: usize) {
    let sel = &ws.sel;
    let gamma = &mut ws.gamma;
    // Warm start from the previous solution (the new atom starts at 0), then run the active-set loop.
    gamma[m - 1] = T::zero();
    let mut passive = vec![false; m];
    for i in 0..m - 1 {
        passive[i] = gamma[i] > T::zero();
    }
    let tol = T::of(1e-12);
    for _outer in 0..3 * m + 10 {
        // Gradient of the dual: w_i = c_i − (G γ)_i.
        let mut best = tol;
        let mut enter = None;
        for i in 0..m {
            if passive[i] {
                continue;
            }
            let gi = grow(g, n, sel[i]);
            let mut wi = c[sel[i]];
            for q in 0..m {
                wi = wi - gi[sel[q]] * gamma[q];
            }
            if wi > best {
                best = wi;
                enter = Some(i);
            }
        }
        let Some(e) = enter else {
            if passive.iter().all(|&p| p) || (0..m).all(|i| passive[i] || gamma[i] == T::zero()) {
                // Also make sure the passive set is solved exactly (first pass may start warm).
                if solve_passive(&mut ws.b, g, n, sel, c, &passive, m).is_some() {
                    let z = &ws.b;
                    if (0..m).all(|i| !passive[i] || z[i] > T::zero()) {
                        for i in 0..m {
                            gamma[i] = if passive[i] { z[i] } else { T::zero() };
                        }
                    }
                }
            }
            return;
        };
        passive[e] = true;
        loop {
            let Some(()) = solve_passive(&mut ws.b, g, n, sel, c, &passive, m) else {
                passive[e] = false;
                return;
            };
            let z = &ws.b;
            if (0..m).all(|i| !passive[i] || z[i] > T::zero()) {
                for i in 0..m {
                    gamma[i] = if passive[i] { z[i] } else { T::zero() };
                }
                break;
            }
            // Step back toward the feasible point and drop the coefficients that hit zero.
            let mut step = T::one();
            for i in 0..m {
                if passive[i] && z[i] <= T::zero() {
                    let s = gamma[i] / (gamma[i] - z[i]);
                    if s < step {
                        step = s;
                    }
                }
            }
            for i in 0..m {
                if passive[i] {
                    gamma[i] = gamma[i] + step * (z[i] - gamma[i]);
                    if gamma[i] <= tol {
                        gamma[i] = T::zero();
                        passive[i] = false;
                    }
                }
            }
        }
    }
}

/// Unconstrained least squares on the passive atoms (dense Cholesky of the small Gram block) into `b`;
/// `None` when the block is singular.
#[allow(clippy::needless_range_loop)]
fn solve_passive<T: Real>(
    b: &mut [T],
    g: &[T],
    n: usize,
    sel: &[usize],
    c: &[T],
    passive: &[bool],
    m: usize,
) -> Option<()> {
    let idx: Vec<usize> = (0..m).filter(|&i| passive[i]).collect();
    let p = idx.len();
    let mut l = vec![T::zero(); p * p];
    for a in 0..p {
        let ga = grow(g, n, sel[idx[a]]);
        for bq in 0..=a {
            let mut s = ga[sel[idx[bq]]];
            for q in 0..bq {
                s = s - l[a * p + q] * l[bq * p + q];
            }
            if a == bq {
                if s <= T::epsilon() {
                    return None;
                }
                l[a * p + a] = s.sqrt();
            } else {
                l[a * p + bq] = s / l[bq * p + bq];
            }
        }
    }
    let mut y = vec![T::zero(); p];
    for a in 0..p {
        let mut s = c[sel[idx[a]]];
        for q in 0..a {
            s = s - l[a * p + q] * y[q];
        }
        y[a] = s / l[a * p + a];
    }
    let mut z = vec![T::zero(); p];
    for a in (0..p).rev() {
        let mut s = y[a];
        for q in a + 1..p {
            s = s - l[q * p + a] * z[q];
        }
        z[a] = s / l[a * p + a];
    }
    for v in b.iter_mut().take(m) {
        *v = T::zero();
    }
    for (a, &i) in idx.iter().enumerate() {
        b[i] = z[a];
    }
    Some(())
}

/// Per-chunk buffers of MP and GP.
struct StepWs<T> {
    alpha: Vec<T>,
    z: Vec<T>,
    sel: Vec<usize>,
    dir: Vec<T>,
    gdir: Vec<T>,
}

fn step_ws<T: Real>(n: usize, k: usize) -> StepWs<T> {
    StepWs {
        alpha: vec![T::zero(); n],
        z: vec![T::zero(); n],
        sel: Vec::with_capacity(k),
        dir: vec![T::zero(); k],
        gdir: vec![T::zero(); n],
    }
}

/// Shared driver of MP and GP: `k` times, pick the most correlated atom `j` and let `step` update the
/// coefficients and correlations; `step` returns the decrease of the squared residual, or `None` to stop.
fn stepwise<T, S>(
    x: ArrayView2<'_, T>,
    d: ArrayView2<'_, T>,
    gram_in: Option<ArrayView2<'_, T>>,
    p: &GreedyParams<T>,
    step: S,
) -> Result<Codes<T>, SparseError>
where
    T: Real,
    S: Fn(&mut StepWs<T>, &[T], usize, usize, &GreedyParams<T>) -> Option<T> + Sync,
{
    let g_arr = prepare(x, d, gram_in, p)?;
    let g = as_slice(&g_arr)?;
    let n = d.nrows();
    let p = *p;
    run_batched(
        x,
        d,
        || step_ws::<T>(n, p.k),
        |ws, c, xx, out| {
            copy_row(&mut ws.alpha, c);
            ws.sel.clear();
            let mut err = xx;
            if p.tol.is_some_and(|t| err <= t) {
                return;
            }
            for _ in 0..p.k {
                let Some(j) = argmax(&ws.alpha, p.nonneg) else { break };
                let Some(decrease) = step(ws, g, n, j, &p) else { break };
                err = err - decrease;
                if p.tol.is_some_and(|t| err <= t) {
                    break;
                }
            }
            for &j in &ws.sel {
                out.push((j as u32, ws.z[j]));
                ws.z[j] = T::zero();
            }
        },
    )
}

/// Matching pursuit: `k` steps, each adding `alpha_j / G_jj` to the most correlated atom `j`.
pub fn mp<T: Real>(
    x: ArrayView2<'_, T>,
    d: ArrayView2<'_, T>,
    gram_in: Option<ArrayView2<'_, T>>,
    p: &GreedyParams<T>,
) -> Result<Codes<T>, SparseError> {
    stepwise(x, d, gram_in, p, |ws, g, n, j, _p| {
        let gj = grow(g, n, j);
        let a = ws.alpha[j] / gj[j];
        if ws.z[j] == T::zero() {
            ws.sel.push(j);
        }
        ws.z[j] = ws.z[j] + a;
        let decrease = a * ws.alpha[j];
        axpy_neg(&mut ws.alpha, a, gj);
        Some(decrease)
    })
}

/// Gradient pursuit: `k` steps, each adding the most correlated atom to the support and moving all support
/// coefficients along the restricted gradient with the exact line-search step.
pub fn gradient_pursuit<T: Real>(
    x: ArrayView2<'_, T>,
    d: ArrayView2<'_, T>,
    gram_in: Option<ArrayView2<'_, T>>,
    p: &GreedyParams<T>,
) -> Result<Codes<T>, SparseError> {
    stepwise(x, d, gram_in, p, gp_step)
}

/// One gradient-pursuit step after selecting atom `j`; the squared-residual decrease, `None` when stuck.
fn gp_step<T: Real>(ws: &mut StepWs<T>, g: &[T], n: usize, j: usize, p: &GreedyParams<T>) -> Option<T> {
    if !ws.sel.contains(&j) {
        ws.sel.push(j);
    }
    let m = ws.sel.len();
    // Direction: the gradient restricted to the support (for nonneg, never push a zero below 0).
    let mut gg = T::zero();
    for i in 0..m {
        let a = ws.sel[i];
        let mut gi = ws.alpha[a];
        if p.nonneg && ws.z[a] <= T::zero() && gi < T::zero() {
            gi = T::zero();
        }
        ws.dir[i] = gi;
        gg = gg + gi * gi;
    }
    if gg <= T::zero() {
        return None;
    }
    ws.gdir.iter_mut().for_each(|v| *v = T::zero());
    for i in 0..m {
        if ws.dir[i] != T::zero() {
            axpy_neg(&mut ws.gdir, -ws.dir[i], grow(g, n, ws.sel[i]));
        }
    }
    let denom: T = (0..m).map(|i| ws.dir[i] * ws.gdir[ws.sel[i]]).sum();
    if denom <= T::zero() {
        return None;
    }
    let mut step = gg / denom;
    if p.nonneg {
        for i in 0..m {
            if ws.dir[i] < T::zero() {
                let limit = -ws.z[ws.sel[i]] / ws.dir[i];
                if limit < step {
                    step = limit;
                }
            }
        }
    }
    for i in 0..m {
        let a = ws.sel[i];
        ws.z[a] = ws.z[a] + step * ws.dir[i];
        if p.nonneg && ws.z[a] < T::zero() {
            ws.z[a] = T::zero();
        }
    }
    axpy_neg(&mut ws.alpha, step, &ws.gdir);
    Some(step * (T::of(2.0) * gg - step * denom))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        // Box-Muller from two uniforms
        let u1 = ((*seed >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let u2 = ((*seed >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn unit_dict(n_atoms: usize, n_features: usize, seed: u64) -> Array2<f64> {
        let mut s = seed;
        let mut d = Array2::from_shape_fn((n_atoms, n_features), |_| lcg(&mut s));
        for mut row in d.outer_iter_mut() {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            row.mapv_inplace(|v| v / norm);
        }
        d
    }

    fn residual_sq(x: &[f64], d: &Array2<f64>, codes: &Codes<f64>, r: usize) -> f64 {
        let mut res = x.to_vec();
        for p in codes.indptr[r] as usize..codes.indptr[r + 1] as usize {
            let a = codes.indices[p] as usize;
            for (f, v) in res.iter_mut().enumerate() {
                *v -= codes.data[p] * d[[a, f]];
            }
        }
        res.iter().map(|v| v * v).sum()
    }

    #[test]
    fn omp_recovers_sparse_signals_exactly() {
        let d = unit_dict(128, 64, 7);
        let mut s = 99u64;
        let mut x = Array2::zeros((20, 64));
        let mut truth = Vec::new();
        for r in 0..20 {
            let atoms = [(r * 7) % 128, (r * 13 + 5) % 128, (r * 29 + 11) % 128];
            let coefs: Vec<f64> = atoms.iter().map(|_| 1.0 + lcg(&mut s).abs()).collect();
            for (a, cf) in atoms.iter().zip(&coefs) {
                for f in 0..64 {
                    x[[r, f]] += cf * d[[*a, f]];
                }
            }
            truth.push((atoms, coefs));
        }
        let codes = omp(x.view(), d.view(), None, &GreedyParams { k: 3, tol: None, nonneg: false }).unwrap();
        for (r, (atoms, coefs)) in truth.iter().enumerate() {
            let mut want: Vec<(u32, f64)> = atoms.iter().map(|&a| a as u32).zip(coefs.iter().copied()).collect();
            want.sort_by_key(|p| p.0);
            let lo = codes.indptr[r] as usize;
            let hi = codes.indptr[r + 1] as usize;
            assert_eq!(&codes.indices[lo..hi], want.iter().map(|p| p.0).collect::<Vec<_>>().as_slice());
            for (got, w) in codes.data[lo..hi].iter().zip(&want) {
                assert!((got - w.1).abs() < 1e-9, "{got} vs {}", w.1);
            }
        }
    }

    #[test]
    fn residuals_never_increase_with_more_steps() {
        let d = unit_dict(60, 20, 3);
        let mut s = 5u64;
        let x = Array2::from_shape_fn((6, 20), |_| lcg(&mut s));
        for solver in [mp::<f64>, omp::<f64>, gradient_pursuit::<f64>] {
            for nonneg in [false, true] {
                let mut prev = [f64::INFINITY; 6];
                for k in 1..=12 {
                    let codes = solver(x.view(), d.view(), None, &GreedyParams { k, tol: None, nonneg }).unwrap();
                    for (r, p) in prev.iter_mut().enumerate() {
                        let e = residual_sq(x.row(r).as_slice().unwrap(), &d, &codes, r);
                        assert!(e <= *p + 1e-9, "k={k} row {r}: {e} > {p}");
                        *p = e;
                        if nonneg {
                            let lo = codes.indptr[r] as usize;
                            let hi = codes.indptr[r + 1] as usize;
                            assert!(codes.data[lo..hi].iter().all(|&v| v >= 0.0));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn orthonormal_dictionary_gives_projections() {
        // Identity atoms: MP, OMP and GP with k = n all return x itself.
        let d = Array2::from_shape_fn((5, 5), |(i, j)| if i == j { 1.0 } else { 0.0 });
        let x = ndarray::array![[3.0, -1.0, 0.5, 2.0, -4.0]];
        for solver in [mp::<f64>, omp::<f64>, gradient_pursuit::<f64>] {
            let codes = solver(x.view(), d.view(), None, &GreedyParams { k: 5, tol: None, nonneg: false }).unwrap();
            let dense = codes.to_dense().unwrap();
            for j in 0..5 {
                assert!((dense[[0, j]] - x[[0, j]]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn tolerance_stops_early_and_f32_agrees() {
        let d = unit_dict(40, 16, 11);
        let mut s = 8u64;
        let x = Array2::from_shape_fn((4, 16), |_| lcg(&mut s));
        let codes = omp(x.view(), d.view(), None, &GreedyParams { k: 16, tol: Some(0.5), nonneg: false }).unwrap();
        for r in 0..4 {
            let e = residual_sq(x.row(r).as_slice().unwrap(), &d, &codes, r);
            assert!(e <= 0.5 + 1e-9);
        }
        let x32 = x.mapv(|v| v as f32);
        let d32 = d.mapv(|v| v as f32);
        let c64 = omp(x.view(), d.view(), None, &GreedyParams { k: 5, tol: None, nonneg: false }).unwrap();
        let c32 = omp(x32.view(), d32.view(), None, &GreedyParams { k: 5, tol: None, nonneg: false }).unwrap();
        assert_eq!(c64.indices, c32.indices);
        for (a, b) in c64.data.iter().zip(&c32.data) {
            assert!((a - f64::from(*b)).abs() < 1e-3);
        }
    }

    #[test]
    fn bad_parameters_name_the_argument() {
        let d = unit_dict(4, 3, 1);
        let x = Array2::<f64>::zeros((1, 3));
        let e = omp(x.view(), d.view(), None, &GreedyParams { k: 5, tol: None, nonneg: false }).unwrap_err();
        assert!(e.to_string().starts_with("k:"));
        let e = mp(x.view(), d.view(), None, &GreedyParams { k: 0, tol: None, nonneg: false }).unwrap_err();
        assert!(e.to_string().starts_with("k:"));
        let e = gradient_pursuit(x.view(), d.view(), None, &GreedyParams { k: 1, tol: Some(-1.0), nonneg: false })
            .unwrap_err();
        assert!(e.to_string().starts_with("tol:"));
        let bad_gram = Array2::<f64>::zeros((4, 4));
        let e = omp(x.view(), d.view(), Some(bad_gram.view()), &GreedyParams { k: 1, tol: None, nonneg: false })
            .unwrap_err();
        assert!(e.to_string().starts_with("gram:"));
    }
}
