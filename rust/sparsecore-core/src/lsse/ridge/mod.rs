//! Follow-the-leader ridge regression on sparse features, storing only co-active pairs.
//!
//! The model after `t` samples is the ridge solution on all of them, `W = (A + λI)⁻¹ B` with `A = Σ φφᵀ` and
//! `B = Σ φ yᵀ` (`λ` = `ridge`). `A` is kept as one row per feature that has ever been active, holding only the
//! features it was active together with (column-value pairs in insertion order, or dense once two thirds of the
//! columns are filled), so memory grows with the number of co-active pairs, not with `dim²` (the paper's
//! reference keeps `A` dense).
//! Features never seen have weight 0 and cost nothing.
//!
//! Two update rules:
//! - [`UpdateRule::Block`] (the paper's): a sample with active set `S` adds its outer product to `A_SS` and
//!   `φ_S yᵀ` to `B_S`, then re-solves the active weights exactly with the rest fixed,
//!   `W_S = (A_SS + λI)⁻¹ (B_S − A_{S,S̄} W_S̄)` — one block Gauss–Seidel step, by a dense Cholesky of the
//!   `|S| × |S|` block. The cost depends on `|S|` and on how many features the active ones were ever co-active
//!   with, never on `dim`.
//! - [`UpdateRule::Exact`]: the follow-the-leader solution after every step. While the dense inverse
//!   `P = (A + λI)⁻¹` over the features seen so far fits [`DENSE_INVERSE_MAX_BYTES`], it is kept and updated by
//!   Sherman–Morrison (recursive least squares): `u = Pφ`, `W += u (y − Wᵀφ)ᵀ / (1 + φᵀu)`,
//!   `P −= u uᵀ / (1 + φᵀu)` — `O(n² )` per sample for `n` features seen, in one fused pass over `P` (rows on
//!   the rayon pool). Past that size it falls back to the block step followed by conjugate gradients on the
//!   whole system (Jacobi preconditioner, warm start) down to a relative residual of [`EXACT_TOL`].
//!
//! [`OnlineRidge::solve_exact`] runs the same conjugate gradients on demand.
//!
//! Files: `table` maps feature ids to rows, `row` stores the rows of `A`, `block` applies a sample (the block
//! step, factored by `cholesky`), `inverse` keeps the exact rule's dense inverse, `cg` runs conjugate gradients.

mod block;
mod cg;
mod cholesky;
mod inverse;
mod row;
mod table;

use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::sparse::CsrView;
use crate::SparseError;
use inverse::DenseInverse;
use row::Row;
use table::Table;

/// Relative residual `‖B − (A + λI)W‖ / ‖B‖` at which [`UpdateRule::Exact`] stops its conjugate gradients.
pub const EXACT_TOL: f64 = 1e-10;

/// The exact rule keeps the dense inverse `(A + λI)⁻¹` while it takes at most this many bytes (5,792 features
/// seen); a dense `n × n` matrix is also what recursive least squares, the usual exact online ridge, keeps.
pub const DENSE_INVERSE_MAX_BYTES: usize = 256 << 20;

/// How [`OnlineRidge::partial_fit`] updates the weights after each sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateRule {
    /// Re-solve the active block exactly (block Gauss–Seidel); cost independent of `dim`.
    Block,
    /// Block step, then conjugate gradients on the whole system: the follow-the-leader solution every step.
    Exact,
}

/// What a conjugate-gradient solve did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SolveReport {
    /// Iterations, the most over outputs.
    pub iterations: usize,
    /// Final `‖B − (A + λI)W‖ / ‖B‖`, the largest over outputs (0 when `B = 0`).
    pub rel_residual: f64,
}

/// The whole state of an [`OnlineRidge`], in a canonical order (rows by increasing feature id).
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeState {
    /// Feature dimension.
    pub dim: u64,
    /// Outputs per sample.
    pub n_outputs: usize,
    /// Ridge penalty `λ > 0`.
    pub ridge: f64,
    /// Update rule.
    pub rule: UpdateRule,
    /// Samples seen.
    pub n_seen: u64,
    /// Features ever active, strictly increasing (`n_rows` of them).
    pub features: Vec<u32>,
    /// CSR offsets of `A` over `features` (`n_rows + 1`).
    pub a_indptr: Vec<i64>,
    /// Column feature ids of `A`, strictly increasing within a row, each one of `features`.
    pub a_indices: Vec<u32>,
    /// Values of `A` (symmetric).
    pub a_data: Vec<f64>,
    /// `B`, `n_rows × n_outputs` row-major.
    pub b: Vec<f64>,
    /// Weights, `n_rows × n_outputs` row-major.
    pub w: Vec<f64>,
}

/// Online ridge regression on sparse features with co-active-pair storage (see the module docs).
#[derive(Debug, Clone)]
pub struct OnlineRidge {
    dim: u64,
    n_out: usize,
    ridge: f64,
    rule: UpdateRule,
    n_seen: u64,
    /// Feature id → compact row id.
    index: Table<u32>,
    /// Compact row id → feature id.
    features: Vec<u32>,
    /// Row `r` of `A`: compact column id → value.
    rows: Vec<Row>,
    b: Vec<f64>,
    w: Vec<f64>,
    /// Updates of the [`UpdateRule::Exact`] rule whose conjugate gradients stopped above [`EXACT_TOL`].
    n_unconverged: u64,
    /// The exact rule's dense inverse, when it is current (built lazily; dropped when the ridge changes or the
    /// features outgrow [`DENSE_INVERSE_MAX_BYTES`]).
    inverse: Option<DenseInverse>,
    scratch: Scratch,
}

#[derive(Debug, Clone, Default)]
struct Scratch {
    act: Vec<u32>,
    /// Positions of `act` by increasing row id (the order in which a row merges them).
    order: Vec<u32>,
    val: Vec<f64>,
    m: Vec<f64>,
    rhs: Vec<f64>,
    y: Vec<f64>,
    /// Row id → position in `act`, [`NOT_IN_BLOCK`](row::NOT_IN_BLOCK) outside it (reset after every update).
    pos: Vec<u32>,
    /// Bit per row, set for the rows in `act` (reset after every update).
    member: Vec<u64>,
    /// The weights of the rows in `act` before the update.
    w_old: Vec<f64>,
    /// [`Row::update`]'s scratch on the calling thread.
    hits: Vec<u32>,
}

impl Scratch {
    /// Fill `order` with the positions of `act` by increasing row id.
    fn sort_active(&mut self) {
        self.order.clear();
        self.order.extend(0..self.act.len() as u32);
        let act = &self.act;
        self.order.sort_unstable_by_key(|&c| act[c as usize]);
    }
}

fn check_ridge(ridge: f64) -> Result<(), SparseError> {
    if ridge.is_finite() && ridge > 0.0 {
        Ok(())
    } else {
        Err(SparseError::invalid("ridge", format!("must be a finite number > 0, got {ridge}")))
    }
}

impl OnlineRidge {
    /// An empty model: no samples, all weights 0.
    ///
    /// Errors: `dim` outside `1..=2**32 - 1`, `n_outputs == 0`, `ridge` not finite and positive.
    pub fn new(dim: u64, n_outputs: usize, ridge: f64, rule: UpdateRule) -> Result<Self, SparseError> {
        if dim == 0 || dim > u64::from(u32::MAX) {
            return Err(SparseError::invalid("dim", format!("must be between 1 and 2**32 - 1, got {dim}")));
        }
        if n_outputs == 0 {
            return Err(SparseError::invalid("n_outputs", "must be >= 1, got 0"));
        }
        check_ridge(ridge)?;
        Ok(Self {
            dim,
            n_out: n_outputs,
            ridge,
            rule,
            n_seen: 0,
            index: Table::default(),
            features: Vec::new(),
            rows: Vec::new(),
            b: Vec::new(),
            w: Vec::new(),
            n_unconverged: 0,
            inverse: None,
            scratch: Scratch::default(),
        })
    }

    /// Feature dimension.
    pub fn dim(&self) -> u64 {
        self.dim
    }

    /// Outputs per sample.
    pub fn n_outputs(&self) -> usize {
        self.n_out
    }

    /// Ridge penalty.
    pub fn ridge(&self) -> f64 {
        self.ridge
    }

    /// Update rule.
    pub fn rule(&self) -> UpdateRule {
        self.rule
    }

    /// Samples seen.
    pub fn n_seen(&self) -> u64 {
        self.n_seen
    }

    /// Updates of the exact rule whose solve stopped at its iteration limit above [`EXACT_TOL`] (0 when every
    /// prediction so far was the follow-the-leader solution to that tolerance).
    pub fn n_unconverged(&self) -> u64 {
        self.n_unconverged
    }

    /// Features that have been active at least once.
    pub fn n_active_features(&self) -> usize {
        self.features.len()
    }

    /// Stored entries of `A` (co-active ordered pairs, the diagonal included).
    pub fn nnz(&self) -> usize {
        self.rows.iter().map(Row::len).sum()
    }

    /// Bytes held, by component: `index` (feature → row), `A`, `B`, `W`, `scratch`.
    pub fn memory_usage(&self) -> Vec<(&'static str, usize)> {
        let rows: usize =
            self.rows.iter().map(Row::bytes).sum::<usize>() + self.rows.capacity() * std::mem::size_of::<Row>();
        let s = &self.scratch;
        vec![
            ("index", self.index.bytes() + self.features.capacity() * 4),
            ("A", rows),
            ("B", self.b.capacity() * 8),
            ("W", self.w.capacity() * 8),
            ("inverse", self.inverse.as_ref().map_or(0, |i| i.p.capacity() * 8)),
            (
                "scratch",
                (s.act.capacity() + s.order.capacity() + s.pos.capacity() + s.hits.capacity()) * 4
                    + (s.val.capacity()
                        + s.m.capacity()
                        + s.rhs.capacity()
                        + s.y.capacity()
                        + s.member.capacity()
                        + s.w_old.capacity())
                        * 8,
            ),
        ]
    }

    /// Change the ridge penalty; the weights are stale until the next update or [`Self::solve_exact`].
    pub fn set_ridge(&mut self, ridge: f64) -> Result<(), SparseError> {
        check_ridge(ridge)?;
        if ridge.to_bits() != self.ridge.to_bits() {
            self.inverse = None;
        }
        self.ridge = ridge;
        Ok(())
    }

    /// The compact id of `feature`, creating its row (sized for `expect` entries) on first sight.
    fn row_id(&mut self, feature: u32, expect: usize) -> u32 {
        let next = self.features.len() as u32;
        let (slot, inserted) = self.index.entry(feature);
        if !inserted {
            return *slot;
        }
        *slot = next;
        self.features.push(feature);
        self.rows.push(Row::with_capacity(expect));
        self.b.resize(self.b.len() + self.n_out, 0.0);
        self.w.resize(self.w.len() + self.n_out, 0.0);
        next
    }

    /// Learn from a batch: samples in row order, each one update (follow-the-leader is sequential).
    ///
    /// Errors: `phi` of another dimension, out-of-range/unsorted/duplicate/non-finite entries, a row whose
    /// squared norm overflows; `y` not `(n_rows, n_outputs)` or not finite, or `|y|·|φ|` overflowing. Nothing is
    /// learned from a batch that fails validation. A non-positive pivot (impossible in exact arithmetic with
    /// `ridge > 0`, possible when `ridge` is negligible next to `|φ|²`) stops the batch with an error: the samples
    /// before it stay learned, the failing one is taken back out (to rounding).
    pub fn partial_fit(&mut self, phi: &CsrView<'_>, y: ArrayView2<'_, f64>) -> Result<(), SparseError> {
        self.check_batch(phi)?;
        if y.dim() != (phi.n_rows(), self.n_out) {
            return Err(SparseError::ShapeMismatch(format!(
                "Y must have shape (n_samples, n_outputs) = ({}, {}), got {:?}",
                phi.n_rows(),
                self.n_out,
                y.dim()
            )));
        }
        if let Some(((row, col), v)) = y.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(SparseError::NonFiniteDense { row, col, value: *v as f32 });
        }
        for r in 0..phi.n_rows() {
            let (_, val) = phi.row(r);
            let sq: f64 = val.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let ymax = y.row(r).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            if !(sq * (1.0 + ymax * ymax)).is_finite() {
                return Err(SparseError::invalid(
                    "phi",
                    format!("row {r}: the values are too large (their squared norm times |y|² overflows float64)"),
                ));
            }
        }
        let mut yrow = vec![0.0; self.n_out];
        for r in 0..phi.n_rows() {
            let (idx, val) = phi.row(r);
            yrow.iter_mut().zip(y.row(r)).for_each(|(d, s)| *d = *s);
            self.update_one(idx, val, &yrow)?;
        }
        self.refine_with_inverse();
        Ok(())
    }

    fn check_batch(&self, phi: &CsrView<'_>) -> Result<(), SparseError> {
        if phi.dim() != self.dim {
            return Err(SparseError::ShapeMismatch(format!(
                "phi has dim {} but the model has dim {}",
                phi.dim(),
                self.dim
            )));
        }
        phi.check(true)
    }

    /// Predictions `φ W` for a batch, `n_rows × n_outputs` row-major; features never seen contribute 0.
    ///
    /// Errors: as [`Self::partial_fit`] for `phi` (duplicates and unsorted rows are allowed here).
    pub fn predict(&self, phi: &CsrView<'_>) -> Result<Vec<f64>, SparseError> {
        if phi.dim() != self.dim {
            return Err(SparseError::ShapeMismatch(format!(
                "phi has dim {} but the model has dim {}",
                phi.dim(),
                self.dim
            )));
        }
        phi.check(false)?;
        let no = self.n_out;
        let mut out = vec![0.0; phi.n_rows() * no];
        let one = |r: usize, o: &mut [f64]| {
            let (idx, val) = phi.row(r);
            for (&f, &v) in idx.iter().zip(val) {
                if let Some(k) = self.index.get(f) {
                    let k = k as usize;
                    for (oo, wk) in o.iter_mut().zip(&self.w[k * no..(k + 1) * no]) {
                        *oo += f64::from(v) * wk;
                    }
                }
            }
        };
        if phi.nnz() <= crate::sparse::SEQUENTIAL_MAX_NNZ {
            out.chunks_mut(no).enumerate().for_each(|(r, o)| one(r, o));
        } else {
            out.par_chunks_mut(no).enumerate().for_each(|(r, o)| one(r, o));
        }
        Ok(out)
    }

    /// The state in canonical order (rows and columns by increasing feature id).
    pub fn state(&self) -> RidgeState {
        let n = self.features.len();
        let no = self.n_out;
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by_key(|&r| self.features[r as usize]);
        let mut a_indptr = Vec::with_capacity(n + 1);
        a_indptr.push(0i64);
        let (mut a_indices, mut a_data) = (Vec::with_capacity(self.nnz()), Vec::with_capacity(self.nnz()));
        let (mut b, mut w) = (Vec::with_capacity(n * no), Vec::with_capacity(n * no));
        let mut entries: Vec<(u32, f64)> = Vec::new();
        for &r in &order {
            let r = r as usize;
            entries.clear();
            self.rows[r].for_each(|k, v| entries.push((self.features[k as usize], v)));
            entries.sort_unstable_by_key(|e| e.0);
            a_indices.extend(entries.iter().map(|e| e.0));
            a_data.extend(entries.iter().map(|e| e.1));
            a_indptr.push(a_indices.len() as i64);
            b.extend_from_slice(&self.b[r * no..(r + 1) * no]);
            w.extend_from_slice(&self.w[r * no..(r + 1) * no]);
        }
        RidgeState {
            dim: self.dim,
            n_outputs: no,
            ridge: self.ridge,
            rule: self.rule,
            n_seen: self.n_seen,
            features: order.iter().map(|&r| self.features[r as usize]).collect(),
            a_indptr,
            a_indices,
            a_data,
            b,
            w,
        }
    }

    /// Rebuild a model from a [`RidgeState`], checking everything (a corrupted checkpoint is an error, never
    /// a wrong model).
    ///
    /// Errors: `InvalidArgument` naming `state` and the problem (lengths, order, ranges, finiteness, asymmetry).
    pub fn from_state(st: &RidgeState) -> Result<Self, SparseError> {
        let bad = |msg: String| SparseError::invalid("state", msg);
        let mut m = Self::new(st.dim, st.n_outputs, st.ridge, st.rule)?;
        let n = st.features.len();
        let no = st.n_outputs;
        if st.features.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("features must be strictly increasing".into()));
        }
        if let Some(&f) = st.features.last() {
            if u64::from(f) >= st.dim {
                return Err(bad(format!("feature {f} is out of range for dim {}", st.dim)));
            }
        }
        if st.a_indptr.len() != n + 1 || st.a_indptr.first() != Some(&0) {
            return Err(bad(format!("A's indptr must have {} entries starting at 0", n + 1)));
        }
        if st.a_indptr.windows(2).any(|w| w[1] < w[0])
            || usize::try_from(st.a_indptr[n]).ok() != Some(st.a_indices.len())
            || st.a_indices.len() != st.a_data.len()
        {
            return Err(bad("A's indptr, indices and data are inconsistent".into()));
        }
        if st.b.len() != n * no || st.w.len() != n * no {
            return Err(bad(format!("B and W must each hold n_features * n_outputs = {} values", n * no)));
        }
        if st.a_data.iter().chain(&st.b).chain(&st.w).any(|v| !v.is_finite()) {
            return Err(bad("A, B and W must be finite".into()));
        }
        for (r, &f) in st.features.iter().enumerate() {
            *m.index.entry(f).0 = r as u32;
        }
        m.features.clone_from(&st.features);
        m.rows = Vec::with_capacity(n);
        for r in 0..n {
            let (lo, hi) = (st.a_indptr[r] as usize, st.a_indptr[r + 1] as usize);
            let cols = &st.a_indices[lo..hi];
            if cols.windows(2).any(|w| w[0] >= w[1]) {
                return Err(bad(format!("row {r} of A is not strictly increasing")));
            }
            // Compact ids follow the (sorted) features, so the row's compact columns come out sorted too.
            let mut ks = Vec::with_capacity(cols.len());
            for &c in cols {
                let Some(k) = m.index.get(c) else {
                    return Err(bad(format!("A has an entry in column {c}, which is not one of the features")));
                };
                ks.push(k);
            }
            m.rows.push(Row::from_sorted(ks, st.a_data[lo..hi].to_vec(), n));
        }
        for r in 0..n {
            let mut asym = None;
            m.rows[r].for_each(|k, v| {
                if asym.is_none() && m.rows[k as usize].get(r as u32).unwrap_or(0.0).to_bits() != v.to_bits() {
                    asym = Some(k);
                }
            });
            if let Some(k) = asym {
                return Err(bad(format!(
                    "A is not symmetric at features ({}, {})",
                    m.features[r], m.features[k as usize]
                )));
            }
        }
        m.b.clone_from(&st.b);
        m.w.clone_from(&st.w);
        m.n_seen = st.n_seen;
        Ok(m)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..4 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparse::Csr;
    use ndarray::Array2;
    use proptest::prelude::*;

    /// Dense ridge by Gauss–Jordan elimination with partial pivoting: W = (ΦᵀΦ + λI)⁻¹ ΦᵀY.
    fn dense_ridge(phi: &[Vec<f64>], y: &[Vec<f64>], dim: usize, no: usize, lam: f64) -> Vec<Vec<f64>> {
        let mut a = vec![vec![0.0; dim + no]; dim];
        for (p, yy) in phi.iter().zip(y) {
            for i in 0..dim {
                for j in 0..dim {
                    a[i][j] += p[i] * p[j];
                }
                for o in 0..no {
                    a[i][dim + o] += p[i] * yy[o];
                }
            }
        }
        for (i, row) in a.iter_mut().enumerate() {
            row[i] += lam;
        }
        for c in 0..dim {
            let piv = (c..dim).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap_or(c);
            a.swap(c, piv);
            for r in 0..dim {
                if r != c {
                    let f = a[r][c] / a[c][c];
                    let pivot_row = a[c].clone();
                    for (v, p) in a[r].iter_mut().zip(&pivot_row).skip(c) {
                        *v -= f * p;
                    }
                }
            }
        }
        (0..dim).map(|i| (0..no).map(|o| a[i][dim + o] / a[i][i]).collect()).collect()
    }

    fn batch(rows: &[Vec<(u32, f32)>]) -> Csr {
        let mut c = Csr { indptr: vec![0], ..Csr::default() };
        for r in rows {
            c.indices.extend(r.iter().map(|e| e.0));
            c.data.extend(r.iter().map(|e| e.1));
            c.indptr.push(c.indices.len() as i64);
        }
        c
    }

    fn rows_strategy(dim: u32) -> impl Strategy<Value = Vec<Vec<(u32, f32)>>> {
        proptest::collection::vec(
            proptest::collection::btree_map(0..dim, 0.05f32..1.0, 0..6).prop_map(|m| m.into_iter().collect()),
            1..12,
        )
    }

    fn dense_rows(rows: &[Vec<(u32, f32)>], dim: usize) -> Vec<Vec<f64>> {
        rows.iter()
            .map(|r| {
                let mut d = vec![0.0; dim];
                for &(i, v) in r {
                    d[i as usize] = f64::from(v);
                }
                d
            })
            .collect()
    }

    proptest! {
        #[test]
        fn exact_rule_is_follow_the_leader_every_step(
            rows in rows_strategy(10), ys in proptest::collection::vec(-2.0f64..2.0, 24), lam in 0.05f64..2.0,
        ) {
            let dim = 10usize;
            let mut m = OnlineRidge::new(dim as u64, 2, lam, UpdateRule::Exact).expect("new");
            let dense = dense_rows(&rows, dim);
            let y: Vec<Vec<f64>> = (0..rows.len()).map(|i| vec![ys[2 * i], ys[2 * i + 1]]).collect();
            for t in 0..rows.len() {
                let one = batch(&rows[t..=t]);
                let yt = Array2::from_shape_vec((1, 2), y[t].clone()).expect("shape");
                m.partial_fit(&one.view(dim as u64).expect("view"), yt.view()).expect("fit");
                let want = dense_ridge(&dense[..=t], &y[..=t], dim, 2, lam);
                let probe = batch(&(0..dim as u32).map(|i| vec![(i, 1.0)]).collect::<Vec<_>>());
                let got = m.predict(&probe.view(dim as u64).expect("view")).expect("predict");
                for i in 0..dim {
                    for o in 0..2 {
                        prop_assert!((got[i * 2 + o] - want[i][o]).abs() <= 1e-7 * (1.0 + want[i][o].abs()),
                            "step {} w[{}][{}] = {} vs {}", t, i, o, got[i * 2 + o], want[i][o]);
                    }
                }
            }
        }

        /// The dense inverse rebuilt from `A` (after a change of ridge, and in a model restored from its state)
        /// carries on with the exact solution of the new penalty.
        #[test]
        fn exact_rule_survives_ridge_changes_and_restores(
            rows in rows_strategy(10), ys in proptest::collection::vec(-2.0f64..2.0, 12), lam in 0.05f64..2.0,
        ) {
            let dim = 10usize;
            let mut m = OnlineRidge::new(dim as u64, 1, lam, UpdateRule::Exact).expect("new");
            let half = rows.len() / 2;
            let fit = |m: &mut OnlineRidge, lo: usize, hi: usize| {
                let c = batch(&rows[lo..hi]);
                let y = Array2::from_shape_vec((hi - lo, 1), ys[lo..hi].to_vec()).expect("shape");
                m.partial_fit(&c.view(dim as u64).expect("view"), y.view()).expect("fit");
            };
            fit(&mut m, 0, half);
            m.set_ridge(lam * 3.0).expect("ridge");
            let mut restored = OnlineRidge::from_state(&m.state()).expect("state");
            fit(&mut m, half, rows.len());
            fit(&mut restored, half, rows.len());
            let yv: Vec<Vec<f64>> = ys[..rows.len()].iter().map(|&v| vec![v]).collect();
            let want = dense_ridge(&dense_rows(&rows, dim), &yv, dim, 1, lam * 3.0);
            let probe = batch(&(0..dim as u32).map(|i| vec![(i, 1.0)]).collect::<Vec<_>>());
            for model in [&m, &restored] {
                let got = model.predict(&probe.view(dim as u64).expect("view")).expect("predict");
                for i in 0..dim {
                    prop_assert!((got[i] - want[i][0]).abs() <= 1e-7 * (1.0 + want[i][0].abs()),
                        "w[{}] = {} vs {}", i, got[i], want[i][0]);
                }
            }
        }

        #[test]
        fn block_rule_then_solve_exact_is_ridge(
            rows in rows_strategy(12), ys in proptest::collection::vec(-2.0f64..2.0, 12), lam in 0.05f64..2.0,
        ) {
            let dim = 12usize;
            let mut m = OnlineRidge::new(dim as u64, 1, lam, UpdateRule::Block).expect("new");
            let c = batch(&rows);
            let y = Array2::from_shape_vec((rows.len(), 1), ys[..rows.len()].to_vec()).expect("shape");
            m.partial_fit(&c.view(dim as u64).expect("view"), y.view()).expect("fit");
            let rep = m.solve_exact(1e-12, 1000).expect("solve");
            prop_assert!(rep.rel_residual <= 1e-12);
            let yv: Vec<Vec<f64>> = ys[..rows.len()].iter().map(|&v| vec![v]).collect();
            let want = dense_ridge(&dense_rows(&rows, dim), &yv, dim, 1, lam);
            let st = m.state();
            for (r, &f) in st.features.iter().enumerate() {
                prop_assert!((st.w[r] - want[f as usize][0]).abs() <= 1e-8 * (1.0 + want[f as usize][0].abs()));
            }
            // Round trip through the state.
            let back = OnlineRidge::from_state(&st).expect("from_state");
            prop_assert_eq!(back.state(), st);
        }
    }

    /// Many samples, few features, small penalties (1e-3, 1e-6): the Sherman–Morrison updates stay within 1e-6
    /// (relative to the largest weight) of the batch ridge solution.
    #[test]
    fn exact_rule_matches_batch_ridge_at_small_penalties() {
        let (dim, n) = (60usize, 400usize);
        let mut rng = crate::sdr::rng::Stream::new(7, &[]);
        let rows: Vec<Vec<(u32, f32)>> = (0..n)
            .map(|_| {
                let mut r: Vec<(u32, f32)> = (0..8)
                    .map(|_| ((rng.next_u64() % dim as u64) as u32, (rng.next_u64() % 1000) as f32 / 1000.0))
                    .collect();
                r.sort_by_key(|e| e.0);
                r.dedup_by_key(|e| e.0);
                r
            })
            .collect();
        let ys: Vec<f64> = (0..n).map(|i| ((i * 37 % 101) as f64 / 50.0) - 1.0).collect();
        for lam in [1e-3, 1e-6] {
            let mut m = OnlineRidge::new(dim as u64, 1, lam, UpdateRule::Exact).expect("new");
            for chunk in (0..n).step_by(50) {
                let c = batch(&rows[chunk..chunk + 50]);
                let y = Array2::from_shape_vec((50, 1), ys[chunk..chunk + 50].to_vec()).expect("shape");
                m.partial_fit(&c.view(dim as u64).expect("view"), y.view()).expect("fit");
            }
            let yv: Vec<Vec<f64>> = ys.iter().map(|&v| vec![v]).collect();
            let want = dense_ridge(&dense_rows(&rows, dim), &yv, dim, 1, lam);
            let probe = batch(&(0..dim as u32).map(|i| vec![(i, 1.0)]).collect::<Vec<_>>());
            let got = m.predict(&probe.view(dim as u64).expect("view")).expect("predict");
            let scale = want.iter().fold(0.0f64, |a, w| a.max(w[0].abs()));
            for i in 0..dim {
                assert!(
                    (got[i] - want[i][0]).abs() <= 1e-6 * scale,
                    "lam {lam}: w[{i}] = {} vs {}",
                    got[i],
                    want[i][0]
                );
            }
            assert!(m.memory_usage().iter().any(|&(c, b)| c == "inverse" && b >= dim * dim * 8));
        }
    }

    #[test]
    fn single_sample_block_step_is_exact() {
        // With one sample, the block step solves the whole (active) system.
        let mut m = OnlineRidge::new(5, 1, 0.5, UpdateRule::Block).expect("new");
        let c = batch(&[vec![(1, 1.0), (3, 2.0)]]);
        let y = Array2::from_elem((1, 1), 3.0);
        m.partial_fit(&c.view(5).expect("view"), y.view()).expect("fit");
        // W = φ y / (|φ|² + λ) along φ: w1 = 3/(5.5), w3 = 6/5.5.
        let st = m.state();
        assert_eq!(st.features, vec![1, 3]);
        assert!((st.w[0] - 3.0 / 5.5).abs() < 1e-12 && (st.w[1] - 6.0 / 5.5).abs() < 1e-12);
        assert_eq!(m.nnz(), 4);
    }

    #[test]
    fn bad_input_is_an_error_and_learns_nothing() {
        let mut m = OnlineRidge::new(5, 1, 1.0, UpdateRule::Block).expect("new");
        let y = Array2::from_elem((1, 1), 1.0);
        let oob = batch(&[vec![(7, 1.0)]]);
        assert!(matches!(
            m.partial_fit(&oob.view(5).expect("view"), y.view()),
            Err(SparseError::IndexOutOfRange { .. })
        ));
        let c = batch(&[vec![(1, 1.0)]]);
        let y2 = Array2::from_elem((2, 1), 1.0);
        assert!(matches!(m.partial_fit(&c.view(5).expect("view"), y2.view()), Err(SparseError::ShapeMismatch(_))));
        let ynan = Array2::from_elem((1, 1), f64::NAN);
        assert!(m.partial_fit(&c.view(5).expect("view"), ynan.view()).is_err());
        assert_eq!(m.n_seen(), 0);
        assert!(OnlineRidge::new(5, 1, 0.0, UpdateRule::Block).is_err());
        assert!(OnlineRidge::new(0, 1, 1.0, UpdateRule::Block).is_err());
        let mut st = m.state();
        st.features = vec![3, 1];
        st.a_indptr = vec![0, 0, 0];
        assert!(OnlineRidge::from_state(&st).is_err());
    }

    #[test]
    fn asymmetric_state_is_rejected() {
        let mut m = OnlineRidge::new(5, 1, 1.0, UpdateRule::Block).expect("new");
        let c = batch(&[vec![(1, 1.0), (2, 0.5)]]);
        m.partial_fit(&c.view(5).expect("view"), Array2::from_elem((1, 1), 1.0).view()).expect("fit");
        let mut st = m.state();
        st.a_data[1] += 1.0;
        assert!(matches!(OnlineRidge::from_state(&st), Err(SparseError::InvalidArgument { arg: "state", .. })));
    }
}
