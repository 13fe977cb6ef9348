//! Sparse coding over a dictionary: matching pursuit, orthogonal matching pursuit, gradient pursuit, the Lasso
//! (coordinate descent, ISTA, FISTA) and thresholding.
//!
//! Layout follows scikit-learn: signals `x` are the rows of an `(n_signals, n_features)` array and the dictionary
//! `d` holds one atom per row, `(n_atoms, n_features)`. Every solver works in "Gram form": the correlations
//! `c = D x` of a chunk of signals come from one matrix product, the Gram matrix `G = D Dᵀ` is computed once per
//! call (or passed in), and the per-signal iterations touch only `c`, rows of `G` and small buffers allocated
//! once per chunk (Batch-OMP, Rubinstein, Zibulevsky & Elad 2008). Signals are independent, so chunks run in
//! parallel and the codes never depend on the thread count.
//!
//! Generic over `f32` and `f64` ([`Real`]); no conversion between them happens here.

pub mod greedy;
pub mod lasso;

use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis};
use num_traits::Float;
use rayon::prelude::*;

use crate::kernels;
use crate::SparseError;

/// Most signals per chunk: one `(chunk, n_atoms)` product of correlations, then the per-signal solvers
/// (256 halved the packing overhead of the product against 64 on 256 x 1024 dictionaries).
const CHUNK: usize = 256;
/// Fewest signals per chunk.
const MIN_CHUNK: usize = 16;
/// Side of the square tiles of the Gram matrix, one product each.
const GRAM_TILE: usize = 256;
/// Side of the blocks in which a Gram matrix is transposed or compared with its transpose.
const SQ: usize = 16;
/// Rows of a dense output per parallel task.
const DENSE_ROWS: usize = 64;

/// The float types the solvers run on natively.
pub trait Real:
    Float
    + ndarray::LinalgScalar
    + bytemuck::Pod
    + Send
    + Sync
    + Default
    + std::fmt::Debug
    + std::fmt::Display
    + std::iter::Sum
{
    /// Conversion from an `f64` constant or user parameter.
    fn of(v: f64) -> Self;
    /// Conversion to `f64` for messages and accumulations.
    fn to_f64_lossy(self) -> f64;
    /// `y -= a * x`, with FMA where the CPU has it.
    fn axpy_neg_k(y: &mut [Self], a: Self, x: &[Self]);
    /// Largest `|v_i|` (or `v_i` when `signed`), at least 0.
    fn max_key_k(v: &[Self], signed: bool) -> Self;
    /// `out = (base − Σ_s coefs[s] · rows[s]) · scale`, then `alpha −= vt · out`; returns the largest `|alpha_i|`.
    fn omp_step_k(
        out: &mut [Self],
        base: &[Self],
        coefs: &[Self],
        rows: &[Self],
        scale: Self,
        alpha: &mut [Self],
        vt: Self,
    ) -> Self;
}

impl Real for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn to_f64_lossy(self) -> f64 {
        f64::from(self)
    }
    fn axpy_neg_k(y: &mut [Self], a: Self, x: &[Self]) {
        kernels::axpy_neg_f32(y, a, x);
    }
    fn max_key_k(v: &[Self], signed: bool) -> Self {
        kernels::max_key_f32(v, signed)
    }
    fn omp_step_k(
        out: &mut [Self],
        base: &[Self],
        coefs: &[Self],
        rows: &[Self],
        scale: Self,
        alpha: &mut [Self],
        vt: Self,
    ) -> Self {
        kernels::omp_step_f32(out, base, coefs, rows, scale, alpha, vt)
    }
}

impl Real for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn to_f64_lossy(self) -> f64 {
        self
    }
    fn axpy_neg_k(y: &mut [Self], a: Self, x: &[Self]) {
        kernels::axpy_neg_f64(y, a, x);
    }
    fn max_key_k(v: &[Self], signed: bool) -> Self {
        kernels::max_key_f64(v, signed)
    }
    fn omp_step_k(
        out: &mut [Self],
        base: &[Self],
        coefs: &[Self],
        rows: &[Self],
        scale: Self,
        alpha: &mut [Self],
        vt: Self,
    ) -> Self {
        kernels::omp_step_f64(out, base, coefs, rows, scale, alpha, vt)
    }
}

/// Sparse codes in CSR form: row `i` holds the non-zero coefficients of signal `i`, atoms in increasing order.
#[derive(Debug, Clone, PartialEq)]
pub struct Codes<T> {
    /// `n_signals + 1` offsets.
    pub indptr: Vec<i64>,
    /// Atom ids.
    pub indices: Vec<u32>,
    /// Coefficients.
    pub data: Vec<T>,
    /// Number of atoms (the codes' dimension).
    pub n_atoms: usize,
}

impl<T: Real> Codes<T> {
    /// Number of signals.
    pub fn n_rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// The codes as a dense `(n_signals, n_atoms)` array (see [`Self::fill_dense`]).
    pub fn to_dense(&self) -> Result<Array2<T>, SparseError> {
        let (n, width) = (self.n_rows(), self.n_atoms);
        let mut out = SparseError::try_zeroed::<T>("dense codes", SparseError::checked_area("dense codes", n, width)?)?;
        self.fill_dense(&mut out)?;
        Array2::from_shape_vec((n, width), out).map_err(|e| SparseError::ShapeMismatch(e.to_string()))
    }

    /// Write the codes into a row-major `(n_signals, n_atoms)` buffer of any contents: every row whole, zeros
    /// and then its codes, by blocks of rows in parallel (so a row is written while it is in cache, and the pages
    /// of a fresh buffer are faulted in by the threads that fill them).
    ///
    /// Errors: `out` of another length.
    pub fn fill_dense(&self, out: &mut [T]) -> Result<(), SparseError> {
        let width = self.n_atoms;
        if Some(out.len()) != self.n_rows().checked_mul(width) {
            return Err(SparseError::ShapeMismatch(format!(
                "the dense output has {} elements, expected {} x {}",
                out.len(),
                self.n_rows(),
                width
            )));
        }
        if width > 0 {
            out.par_chunks_mut(DENSE_ROWS * width).enumerate().for_each(|(b, block)| {
                for (i, row) in block.chunks_exact_mut(width).enumerate() {
                    let r = b * DENSE_ROWS + i;
                    row.fill(T::zero());
                    for p in self.indptr[r] as usize..self.indptr[r + 1] as usize {
                        row[self.indices[p] as usize] = self.data[p];
                    }
                }
            });
        }
        Ok(())
    }
}

/// A zeroed work array whose first element sits on a cache-line (64-byte) boundary. The OMP kernel streams its
/// arrays with 32-byte loads; from the allocator's 16-byte-aligned start every other load straddles two lines, and
/// whether a buffer landed aligned depended on the heap's state: one build spent 24 % more time in the same
/// kernel than another (OMP float32 k=16, 10 % slower in all).
#[derive(Debug, Default, Clone)]
pub(crate) struct Aligned<T> {
    buf: Vec<T>,
    off: usize,
    len: usize,
}

impl<T: Real> Aligned<T> {
    /// `len` zeros.
    pub(crate) fn zeroed(len: usize) -> Self {
        let extra = 64 / std::mem::size_of::<T>();
        let buf = vec![T::zero(); len + extra];
        // `align_offset` may answer "impossible" (usize::MAX); the array then starts unaligned but in bounds.
        let off = buf.as_ptr().align_offset(64).min(extra);
        Self { buf, off, len }
    }
}

impl<T> std::ops::Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl<T> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// Check that `x` and `d` are finite, agree in `n_features`, and that no atom has zero norm.
pub fn validate<T: Real>(x: ArrayView2<'_, T>, d: ArrayView2<'_, T>) -> Result<(), SparseError> {
    if d.nrows() == 0 {
        return Err(SparseError::invalid("D", "has no atoms"));
    }
    if d.nrows() > u32::MAX as usize {
        return Err(SparseError::invalid("D", "has more than 2**32 - 1 atoms"));
    }
    if x.ncols() != d.ncols() {
        return Err(SparseError::ShapeMismatch(format!(
            "X has {} features per signal but D's atoms have {} (X is (n_signals, n_features), \
             D is (n_atoms, n_features))",
            x.ncols(),
            d.ncols()
        )));
    }
    check_finite(x, "X")?;
    check_finite(d, "D")?;
    for (a, row) in d.outer_iter().enumerate() {
        if row.iter().all(|v| *v == T::zero()) {
            return Err(SparseError::invalid("D", format!("atom {a} has zero norm; remove it or pass normalize=True")));
        }
    }
    Ok(())
}

/// An error naming the first non-finite element of `a` (row-major) as `name[r, c]`.
fn check_finite<T: Real>(a: ArrayView2<'_, T>, name: &'static str) -> Result<(), SparseError> {
    if !all_finite(a) {
        if let Some(((r, c), v)) = a.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(SparseError::invalid(name, format!("{name}[{r}, {c}] = {v} is not finite")));
        }
    }
    Ok(())
}

/// Whether every element of `a` is finite: branch-free over blocks of a contiguous array, in parallel.
fn all_finite<T: Real>(a: ArrayView2<'_, T>) -> bool {
    const BLOCK: usize = 1 << 14;
    match a.as_slice() {
        Some(v) => v.par_chunks(BLOCK).all(|c| c.iter().fold(true, |ok, e| ok & e.is_finite())),
        None => a.iter().all(|e| e.is_finite()),
    }
}

/// Gram matrix `G = D Dᵀ`, by square tiles on the pool. Each tile on or above the diagonal is one product of
/// two blocks of atoms into its own part of the output (the lower half of a diagonal tile then copied from its
/// upper half); each tile below the diagonal is the transpose of its mirror tile. So the result is exactly
/// symmetric, and every operand is packed once per product (row bands against all later atoms re-packed the
/// atoms band after band, and the serial mirror pass did not scale with threads).
pub fn gram<T: Real>(d: ArrayView2<'_, T>) -> Result<Array2<T>, SparseError> {
    let n = d.nrows();
    let area = SparseError::checked_area("Gram matrix", n, n)?;
    let g = SparseError::try_zeroed::<T>("Gram matrix", area)?;
    let mut g = Array2::from_shape_vec((n, n), g).map_err(|e| SparseError::ShapeMismatch(e.to_string()))?;
    let nt = n.div_ceil(GRAM_TILE);
    // Tile (i, j) covers rows i·GRAM_TILE.. and columns j·GRAM_TILE..; disjoint views of `g`.
    let (mut upper, mut lower) = (Vec::new(), Vec::new());
    let mut at = vec![usize::MAX; nt * nt];
    let mut rest = g.view_mut();
    for i in 0..nt {
        let (mut band, below) = rest.split_at(Axis(0), GRAM_TILE.min(n - i * GRAM_TILE));
        rest = below;
        for j in 0..nt {
            let (tile, right) = band.split_at(Axis(1), GRAM_TILE.min(n - j * GRAM_TILE));
            band = right;
            if j >= i {
                at[i * nt + j] = upper.len();
                upper.push((i, j, tile));
            } else {
                lower.push((i, j, tile));
            }
        }
    }
    let atoms = |i: usize| d.slice(s![i * GRAM_TILE..((i + 1) * GRAM_TILE).min(n), ..]);
    upper.par_iter_mut().for_each(|(i, j, tile)| {
        kernels::mat_mul(T::one(), &atoms(*i), &atoms(*j).t(), T::zero(), tile);
        if i == j {
            for r in 0..tile.nrows() {
                for c in 0..r {
                    tile[[r, c]] = tile[[c, r]];
                }
            }
        }
    });
    lower.par_iter_mut().for_each(|(i, j, tile)| transpose_into(tile, upper[at[*j * nt + *i]].2.view()));
    drop((upper, lower));
    Ok(g)
}

/// `dst = srcᵀ`, by 16 × 16 blocks (a plain strided copy missed the cache on every element of one side).
fn transpose_into<T: Copy>(dst: &mut ArrayViewMut2<'_, T>, src: ArrayView2<'_, T>) {
    let (rows, cols) = dst.dim();
    for r0 in (0..rows).step_by(SQ) {
        for c0 in (0..cols).step_by(SQ) {
            for r in r0..(r0 + SQ).min(rows) {
                for c in c0..(c0 + SQ).min(cols) {
                    dst[[r, c]] = src[[c, r]];
                }
            }
        }
    }
}

/// Check a user-supplied Gram matrix against the dictionary (shape, symmetry and diagonal within tolerance).
pub fn check_gram<T: Real>(g: ArrayView2<'_, T>, d: ArrayView2<'_, T>) -> Result<(), SparseError> {
    let n = d.nrows();
    if g.dim() != (n, n) {
        return Err(SparseError::ShapeMismatch(format!(
            "gram has shape {:?} but the dictionary has {n} atoms, so it must be ({n}, {n})",
            g.dim()
        )));
    }
    let tol = T::of(1e-4);
    // Both checks run on the pool and report the first offending entry in row-major order.
    check_finite(g, "gram")?;
    // Below-diagonal entries against their mirrors, by bands of rows and 16 x 16 blocks (entry by entry down
    // the columns, with the error bookkeeping in the loop, this check cost more than computing the Gram matrix):
    // a branch-free pass per band, and for a failing band a row-major scan for its first bad entry.
    let gs = g.as_standard_layout();
    let flat = gs.as_slice().ok_or_else(|| SparseError::invalid("gram", "could not be read as one array"))?;
    let off = move |a: T, b: T| (a - b).abs() > tol * (T::one() + a.abs().max(b.abs()));
    let asymmetric = (0..n.div_ceil(SQ)).into_par_iter().find_map_first(|band| {
        let (r0, r1) = (band * SQ, ((band + 1) * SQ).min(n));
        let mut bad = false;
        // The mirror block, transposed: mirror[i * SQ + j] = g[c0 + j, r0 + i].
        let mut mirror = [T::zero(); SQ * SQ];
        for c0 in (0..r1).step_by(SQ) {
            let c1 = (c0 + SQ).min(n);
            for c in c0..c1 {
                for (i, &v) in flat[c * n + r0..c * n + r1].iter().enumerate() {
                    mirror[i * SQ + (c - c0)] = v;
                }
            }
            // Whole blocks, the diagonal one too (each pair is then compared twice, both ways).
            for r in r0..r1 {
                let row = &flat[r * n + c0..r * n + c1];
                bad |= row.iter().zip(&mirror[(r - r0) * SQ..]).fold(false, |acc, (&a, &b)| acc | off(a, b));
            }
        }
        bad.then(|| (r0..r1).find_map(|r| (0..r).find(|&c| off(flat[r * n + c], flat[c * n + r])).map(|c| (r, c))))
            .flatten()
    });
    if let Some((r, c)) = asymmetric {
        let (a, b) = (g[[r, c]], g[[c, r]]);
        return Err(SparseError::invalid(
            "gram",
            format!("is not symmetric: gram[{r}, {c}] = {a} but gram[{c}, {r}] = {b}; pass gram = D @ D.T"),
        ));
    }
    for a in 0..n {
        let row = d.row(a);
        let diag: T = row.iter().map(|&v| v * v).sum();
        let got = g[[a, a]];
        if !got.is_finite() || (got - diag).abs() > tol * (T::one() + diag) {
            return Err(SparseError::invalid(
                "gram",
                format!("gram[{a}, {a}] = {got} but the atom's squared norm is {diag}; pass gram = D @ D.T"),
            ));
        }
    }
    Ok(())
}

/// Scratch output of one chunk: per-row counts, atom ids, coefficients.
struct ChunkOut<T> {
    counts: Vec<i64>,
    indices: Vec<u32>,
    data: Vec<T>,
}

/// Run `solve` on every signal: `solve(ws, c, xx, out)` gets the correlations `c = D x`, the squared norm of
/// `x`, and pushes `(atom, coefficient)` pairs (any order, zeros allowed) into `out`.
pub(crate) fn run_batched<T, W, M, F>(
    x: ArrayView2<'_, T>,
    d: ArrayView2<'_, T>,
    make_ws: M,
    solve: F,
) -> Result<Codes<T>, SparseError>
where
    T: Real,
    M: Fn() -> W + Sync,
    F: Fn(&mut W, ArrayView1<'_, T>, T, &mut Vec<(u32, T)>) + Sync,
{
    let n = x.nrows();
    let n_atoms = d.nrows();
    // Large chunks amortise the packing of D inside the matrix product; at least 4 chunks per thread keep the
    // threads balanced. The chunking never changes a result (signals are independent).
    let chunk = (n / (4 * rayon::current_num_threads()).max(1)).clamp(MIN_CHUNK, CHUNK);
    SparseError::checked_area("correlations", chunk, n_atoms)?;
    let starts: Vec<usize> = (0..n).step_by(chunk).collect();
    let parts: Vec<ChunkOut<T>> = starts
        .par_iter()
        // Work buffers (the pursuit's and the chunk's correlations, 2 MB in f64) are reused across the chunks a
        // worker takes: a fresh zeroed buffer per chunk cost page faults.
        .map_init(
            || (make_ws(), Vec::<T>::new()),
            |(ws, cbuf), &lo| {
                let hi = (lo + chunk).min(n);
                let xs = x.slice(s![lo..hi, ..]);
                cbuf.resize((hi - lo) * n_atoms, T::zero());
                let mut c = ArrayViewMut2::from_shape((hi - lo, n_atoms), &mut cbuf[..])
                    .map_err(|e| SparseError::invalid("correlations", e.to_string()))?;
                // beta = 0: the product overwrites whatever the reused buffer held.
                kernels::mat_mul(T::one(), &xs, &d.t(), T::zero(), &mut c);
                let mut pairs: Vec<(u32, T)> = Vec::new();
                let mut out = ChunkOut { counts: Vec::with_capacity(hi - lo), indices: Vec::new(), data: Vec::new() };
                for (r, xr) in xs.outer_iter().enumerate() {
                    let xx: T = xr.iter().map(|&v| v * v).sum();
                    pairs.clear();
                    solve(ws, c.row(r), xx, &mut pairs);
                    pairs.retain(|&(_, v)| v != T::zero());
                    pairs.sort_unstable_by_key(|&(a, _)| a);
                    out.counts.push(pairs.len() as i64);
                    out.indices.extend(pairs.iter().map(|&(a, _)| a));
                    out.data.extend(pairs.iter().map(|&(_, v)| v));
                }
                Ok(out)
            },
        )
        .collect::<Result<_, SparseError>>()?;
    let total: usize = parts.iter().map(|p| p.indices.len()).sum();
    let mut codes = Codes {
        indptr: Vec::with_capacity(n + 1),
        indices: Vec::with_capacity(total),
        data: Vec::with_capacity(total),
        n_atoms,
    };
    codes.indptr.push(0);
    let mut acc = 0i64;
    for p in parts {
        for cnt in p.counts {
            acc += cnt;
            codes.indptr.push(acc);
        }
        codes.indices.extend(p.indices);
        codes.data.extend(p.data);
    }
    Ok(codes)
}

/// Index of the largest `|v|` (or largest `v` when `nonneg`), first on ties; `None` when that value is not
/// positive (nothing left to explain). Two passes: a lane-parallel maximum, then the first position holding it.
#[inline]
pub(crate) fn argmax<T: Real>(v: &[T], nonneg: bool) -> Option<usize> {
    argmax_of(v, nonneg, T::max_key_k(v, nonneg))
}

/// [`argmax`] when the largest key `best` is already known.
pub(crate) fn argmax_of<T: Real>(v: &[T], nonneg: bool, best: T) -> Option<usize> {
    if best <= T::zero() {
        return None;
    }
    // The first block of 16 holding the maximum (branch-free test per block), then the position inside it.
    let key = |a: T| if nonneg { a } else { a.abs() };
    let block = v.chunks(16).position(|ch| ch.iter().fold(false, |hit, &a| hit | (key(a) == best)))?;
    v[block * 16..].iter().position(|&a| key(a) == best).map(|p| block * 16 + p)
}

/// `y -= a * x` over equal-length slices.
#[inline]
pub(crate) fn axpy_neg<T: Real>(y: &mut [T], a: T, x: &[T]) {
    T::axpy_neg_k(y, a, x);
}

/// Soft thresholding `sign(v) max(|v| - t, 0)`, one-sided when `nonneg`.
#[inline]
pub(crate) fn soft<T: Real>(v: T, t: T, nonneg: bool) -> T {
    if v > t {
        v - t
    } else if !nonneg && v < -t {
        v + t
    } else {
        T::zero()
    }
}

/// The thresholding encoder: `soft(D x, alpha)` for every signal (scikit-learn's `SparseCoder` "threshold").
pub fn threshold<T: Real>(
    x: ArrayView2<'_, T>,
    d: ArrayView2<'_, T>,
    alpha: T,
    nonneg: bool,
) -> Result<Codes<T>, SparseError> {
    validate(x, d)?;
    if alpha.is_nan() || alpha < T::zero() || !alpha.is_finite() {
        return Err(SparseError::invalid("alpha", format!("must be a finite number >= 0, got {alpha}")));
    }
    run_batched(
        x,
        d,
        || (),
        |(), c, _xx, out| {
            for (a, &v) in c.iter().enumerate() {
                let z = soft(v, alpha, nonneg);
                if z != T::zero() {
                    out.push((a as u32, z));
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn gram_matches_naive_product() {
        // Sizes around the tiles (256), including partial ones.
        for n in [0, 1, 31, 255, 256, 257, 600] {
            let d = Array2::from_shape_fn((n, 7), |(i, j)| ((i * 7 + j) as f64 * 0.37).sin());
            let g = gram(d.view()).unwrap();
            for i in 0..n {
                for j in 0..n {
                    let want: f64 = (0..7).map(|f| d[[i, f]] * d[[j, f]]).sum();
                    assert!((g[[i, j]] - want).abs() < 1e-12, "n={n} ({i}, {j})");
                    assert_eq!(g[[i, j]].to_bits(), g[[j, i]].to_bits(), "n={n}: not exactly symmetric");
                }
            }
        }
    }

    #[test]
    fn check_gram_reports_the_first_bad_entry_in_row_major_order() {
        // Sizes around the 16 x 16 blocks; bad entries in one block, in two bands, on both sides of the diagonal.
        for n in [3, 16, 17, 40] {
            let d = Array2::from_shape_fn((n, 5), |(i, j)| ((i * 5 + j) as f64 * 0.61).cos() + 2.0);
            let g = gram(d.view()).unwrap();
            assert!(check_gram(g.view(), d.view()).is_ok());
            let picks = [(n - 1, 0), (1, 0), (n - 1, n - 2), (n / 2, 1), (0, n - 1)];
            for (k, &first) in picks.iter().enumerate() {
                for &second in &picks[k..] {
                    let mut bad = g.clone();
                    bad[first] += 1.0;
                    bad[second] += 1.0;
                    // The naive scan: row-major over the lower triangle (an entry above the diagonal shows at
                    // its mirror).
                    let want = (0..n)
                        .flat_map(|r| (0..r).map(move |c| (r, c)))
                        .find(|&(r, c)| (bad[[r, c]] - bad[[c, r]]).abs() > 0.5);
                    let got = check_gram(bad.view(), d.view());
                    match want {
                        Some((r, c)) => {
                            let msg = got.unwrap_err().to_string();
                            assert!(msg.contains(&format!("not symmetric: gram[{r}, {c}]")), "n={n}: {msg}");
                        }
                        // Mirrored or diagonal changes: symmetric (the diagonal check may still object).
                        None => assert!(got.map_or_else(|e| !e.to_string().contains("symmetric"), |()| true)),
                    }
                    let mut nan = g.clone();
                    nan[first] = f64::NAN;
                    nan[second] = f64::INFINITY;
                    let (r, c) = first.min(second);
                    let msg = check_gram(nan.view(), d.view()).unwrap_err().to_string();
                    assert!(msg.contains(&format!("gram[{r}, {c}] = ")) && msg.contains("not finite"), "{msg}");
                }
            }
        }
    }

    #[test]
    fn aligned_buffers_start_on_a_cache_line() {
        for len in [0, 1, 15, 16, 17, 1024, 16 * 1024 + 3] {
            let mut a = Aligned::<f32>::zeroed(len);
            let b = Aligned::<f64>::zeroed(len);
            assert_eq!((a.len(), b.len()), (len, len));
            if len > 0 {
                assert_eq!(a.as_ptr() as usize % 64, 0, "f32, len {len}");
                assert_eq!(b.as_ptr() as usize % 64, 0, "f64, len {len}");
            }
            assert!(a.iter().all(|&v| v.to_bits() == 0) && b.iter().all(|&v| v.to_bits() == 0));
            a.iter_mut().enumerate().for_each(|(i, v)| *v = i as f32);
            assert!(a.iter().enumerate().all(|(i, &v)| v.to_bits() == (i as f32).to_bits()));
        }
    }

    #[test]
    fn threshold_is_soft_thresholded_correlations() {
        let d = array![[1.0f32, 0.0], [0.0, 1.0], [0.6, 0.8]];
        let x = array![[2.0f32, -0.5], [0.1, 0.1]];
        let codes = threshold(x.view(), d.view(), 0.6, false).unwrap();
        let dense = codes.to_dense().unwrap();
        // c = [2, -0.5, 0.8], [0.1, 0.1, 0.14]
        assert!((dense[[0, 0]] - 1.4).abs() < 1e-6);
        assert!(dense[[0, 1]].abs() < f32::MIN_POSITIVE); // thresholded to exactly zero
        assert!((dense[[0, 2]] - 0.2).abs() < 1e-6);
        assert_eq!(codes.indptr, vec![0, 2, 2]);
    }

    #[test]
    fn validation_names_the_problem() {
        let d = array![[1.0f64, 0.0], [0.0, 0.0]];
        let x = array![[1.0f64, 2.0]];
        let e = validate(x.view(), d.view()).unwrap_err();
        assert!(e.to_string().contains("atom 1 has zero norm"));
        let x3 = array![[1.0f64, 2.0, 3.0]];
        assert!(matches!(validate(x3.view(), array![[1.0, 0.0, 0.0]].view()), Ok(())));
        assert!(matches!(validate(x3.view(), d.view()), Err(SparseError::ShapeMismatch(_))));
        let xn = array![[f64::NAN, 0.0]];
        assert!(validate(xn.view(), array![[1.0, 0.0]].view()).unwrap_err().to_string().contains("X[0, 0]"));
    }

    #[test]
    fn non_finite_values_are_found_in_any_block_and_layout() {
        // Spans several parallel blocks of the finiteness check; the bad value goes first, into a middle block
        // and last, in X and in D, and X is also checked through a non-contiguous (transposed) view.
        let (rows, cols) = (700, 50);
        let d = Array2::from_shape_fn((3, cols), |(i, j)| if i == j { 1.0f64 } else { 0.0 });
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for at in [0, rows * cols / 2 + 3, rows * cols - 1] {
                let (r, c) = (at / cols, at % cols);
                let mut x = Array2::from_elem((rows, cols), 0.5f64);
                x[[r, c]] = bad;
                let msg = validate(x.view(), d.view()).unwrap_err().to_string();
                assert!(msg.contains(&format!("X[{r}, {c}]")), "{msg}");
                let xt = x.t().to_owned();
                let dt = Array2::from_elem((3, rows), 1.0f64);
                let msg = validate(dt.view(), xt.t().t()).unwrap_err().to_string();
                assert!(msg.contains(&format!("D[{c}, {r}]")), "{msg}");
                let msg = validate(xt.t(), d.view()).unwrap_err().to_string();
                assert!(msg.contains(&format!("X[{r}, {c}]")), "{msg}");
            }
        }
    }

    #[test]
    fn dense_codes_match_the_csr_codes() {
        // More rows than one parallel block of the fill, some empty.
        let n_atoms = 9;
        let mut codes = Codes { indptr: vec![0], indices: Vec::new(), data: Vec::new(), n_atoms };
        for r in 0..150usize {
            for a in (0..n_atoms).filter(|a| (r * 7 + a * 3) % 5 == 0 && r % 11 != 0) {
                codes.indices.push(a as u32);
                codes.data.push((r * n_atoms + a) as f64 + 0.5);
            }
            codes.indptr.push(codes.indices.len() as i64);
        }
        let dense = codes.to_dense().unwrap();
        assert_eq!(dense.dim(), (150, n_atoms));
        // fill_dense overwrites whatever the buffer held (a recycled one holds an earlier output).
        let mut dirty = vec![f64::NAN; 150 * n_atoms];
        codes.fill_dense(&mut dirty).unwrap();
        for r in 0..150 {
            for a in 0..n_atoms {
                let lo = codes.indptr[r] as usize;
                let hi = codes.indptr[r + 1] as usize;
                let want = (lo..hi).find(|&p| codes.indices[p] as usize == a).map_or(0.0, |p| codes.data[p]);
                assert_eq!(dense[[r, a]].to_bits(), want.to_bits(), "({r}, {a})");
                assert_eq!(dirty[r * n_atoms + a].to_bits(), want.to_bits(), "dirty ({r}, {a})");
            }
        }
        let mut short = vec![0.0; 150 * n_atoms - 1];
        assert!(matches!(codes.fill_dense(&mut short), Err(SparseError::ShapeMismatch(_))));
    }
}
