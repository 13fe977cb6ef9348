//! Batched SDR utilities: set operations, noise, random SDRs and encoders (scalar, category, grid).
//!
//! A batch of SDRs is CSR without values: `indptr` (`n + 1` offsets) and `indices` (the active bits of each row,
//! strictly increasing, below `dim`). Every function is parallel over rows and deterministic for any thread
//! count (random ones draw from a stream keyed by `(seed, row)`).

use rayon::prelude::*;

use super::rng::Stream;
use crate::SparseError;

/// A validated borrowed batch of SDRs.
#[derive(Debug, Clone, Copy)]
pub struct SdrView<'a> {
    indptr: &'a [i64],
    indices: &'a [u32],
    dim: usize,
}

/// An owned batch of SDRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdrs {
    /// Row offsets, `n + 1` entries.
    pub indptr: Vec<i64>,
    /// Active bits, strictly increasing within a row.
    pub indices: Vec<u32>,
    /// Number of bits per SDR.
    pub dim: usize,
}

impl<'a> SdrView<'a> {
    /// Check `indptr` and that every row is strictly increasing and below `dim`.
    ///
    /// Errors: `arg` names the batch in the message.
    pub fn new(arg: &'static str, indptr: &'a [i64], indices: &'a [u32], dim: usize) -> Result<Self, SparseError> {
        if indptr.first() != Some(&0) {
            return Err(SparseError::invalid(arg, "indptr must start with 0"));
        }
        if indptr.last().copied() != Some(indices.len() as i64) {
            return Err(SparseError::invalid(arg, "indptr must end at len(indices)"));
        }
        if indptr.windows(2).any(|w| w[1] < w[0]) {
            return Err(SparseError::invalid(arg, "indptr must not decrease"));
        }
        let bad = (0..indptr.len() - 1).into_par_iter().find_first(|&r| {
            let row = &indices[indptr[r] as usize..indptr[r + 1] as usize];
            row.windows(2).any(|w| w[1] <= w[0]) || row.last().is_some_and(|&v| v as usize >= dim)
        });
        if let Some(r) = bad {
            return Err(SparseError::invalid(
                arg,
                format!("row {r}: active bits must be strictly increasing and below dim = {dim}"),
            ));
        }
        Ok(Self { indptr, indices, dim })
    }

    /// Number of SDRs.
    pub fn n_rows(&self) -> usize {
        self.indptr.len() - 1
    }

    /// Bits per SDR.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Active bits of row `r`.
    pub fn row(&self, r: usize) -> &'a [u32] {
        &self.indices[self.indptr[r] as usize..self.indptr[r + 1] as usize]
    }
}

impl Sdrs {
    /// Assemble from per-row active bits (each already sorted and unique).
    pub fn from_rows(rows: Vec<Vec<u32>>, dim: usize) -> Self {
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        indptr.push(0i64);
        let mut indices = Vec::with_capacity(rows.iter().map(Vec::len).sum());
        for r in rows {
            indices.extend_from_slice(&r);
            indptr.push(indices.len() as i64);
        }
        Self { indptr, indices, dim }
    }
}

fn pair_rows(a: &SdrView<'_>, b: &SdrView<'_>) -> Result<usize, SparseError> {
    if a.dim != b.dim {
        return Err(SparseError::ShapeMismatch(format!("a has dim {} but b has dim {}", a.dim, b.dim)));
    }
    let (na, nb) = (a.n_rows(), b.n_rows());
    if na != nb && nb != 1 {
        return Err(SparseError::ShapeMismatch(format!(
            "a has {na} rows but b has {nb}; b must have as many rows as a, or one row (broadcast)"
        )));
    }
    Ok(na)
}

fn b_row<'a>(b: &SdrView<'a>, r: usize) -> &'a [u32] {
    if b.n_rows() == 1 {
        b.row(0)
    } else {
        b.row(r)
    }
}

/// Size of the intersection of two sorted sets.
pub fn overlap_sorted(a: &[u32], b: &[u32]) -> u32 {
    let (mut i, mut j, mut n) = (0, 0, 0u32);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

fn merge(a: &[u32], b: &[u32], keep_both_only: bool) -> Vec<u32> {
    let mut out = Vec::with_capacity(if keep_both_only { a.len().min(b.len()) } else { a.len() + b.len() });
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                if !keep_both_only {
                    out.push(a[i]);
                }
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                if !keep_both_only {
                    out.push(b[j]);
                }
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    if !keep_both_only {
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
    }
    out
}

/// Row-wise overlap `|a_r ∩ b_r|` (`b` may have one row, broadcast against every row of `a`).
pub fn overlap(a: &SdrView<'_>, b: &SdrView<'_>) -> Result<Vec<u32>, SparseError> {
    let n = pair_rows(a, b)?;
    Ok((0..n).into_par_iter().map(|r| overlap_sorted(a.row(r), b_row(b, r))).collect())
}

/// Row-wise union.
pub fn union(a: &SdrView<'_>, b: &SdrView<'_>) -> Result<Sdrs, SparseError> {
    let n = pair_rows(a, b)?;
    let rows = (0..n).into_par_iter().map(|r| merge(a.row(r), b_row(b, r), false)).collect();
    Ok(Sdrs::from_rows(rows, a.dim))
}

/// Row-wise intersection.
pub fn intersection(a: &SdrView<'_>, b: &SdrView<'_>) -> Result<Sdrs, SparseError> {
    let n = pair_rows(a, b)?;
    let rows = (0..n).into_par_iter().map(|r| merge(a.row(r), b_row(b, r), true)).collect();
    Ok(Sdrs::from_rows(rows, a.dim))
}

/// `k` distinct values of `[0, n)` in increasing order (Floyd's algorithm), drawn from `s`.
fn sample_distinct(s: &mut Stream, n: usize, k: usize) -> Vec<u32> {
    let mut chosen = std::collections::HashSet::with_capacity(k);
    for j in (n - k)..n {
        let t = s.below(j as u64 + 1) as usize;
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    let mut v: Vec<u32> = chosen.into_iter().map(|x| x as u32).collect();
    v.sort_unstable();
    v
}

/// Move `round(fraction · |a_r|)` active bits of each row to inactive positions (sparsity is kept), like
/// htm.core's `addNoise`. Row `r` draws from the stream `(seed, r)`.
///
/// Errors: `fraction` outside `[0, 1]`, or a row with too few inactive bits to move to.
pub fn add_noise(a: &SdrView<'_>, fraction: f64, seed: u64) -> Result<Sdrs, SparseError> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(SparseError::invalid("fraction", format!("must be in [0, 1], got {fraction}")));
    }
    let dim = a.dim;
    let rows: Result<Vec<Vec<u32>>, SparseError> = (0..a.n_rows())
        .into_par_iter()
        .map(|r| {
            let row = a.row(r);
            let n_move = (fraction * row.len() as f64).round() as usize;
            if n_move == 0 {
                return Ok(row.to_vec());
            }
            if dim - row.len() < n_move {
                return Err(SparseError::invalid(
                    "fraction",
                    format!("row {r} has {} active of {dim} bits, too few inactive bits to move {n_move}", row.len()),
                ));
            }
            let mut s = Stream::new(seed, &[r as u64]);
            let off = sample_distinct(&mut s, row.len(), n_move); // positions within the row to turn off
            let inactive = dim - row.len();
            let on_rank = sample_distinct(&mut s, inactive, n_move); // ranks among inactive bits to turn on
                                                                     // map ranks of inactive bits to bit ids with one merge pass over the sorted active list
            let mut on = Vec::with_capacity(n_move);
            let (mut bit, mut rank, mut ai) = (0u32, 0usize, 0usize);
            for &target in &on_rank {
                loop {
                    if ai < row.len() && row[ai] == bit {
                        ai += 1;
                    } else if rank == target as usize {
                        on.push(bit);
                        rank += 1;
                        bit += 1;
                        break;
                    } else {
                        rank += 1;
                    }
                    bit += 1;
                }
            }
            let mut keep: Vec<u32> = Vec::with_capacity(row.len());
            let mut oi = 0;
            for (i, &v) in row.iter().enumerate() {
                if oi < off.len() && off[oi] as usize == i {
                    oi += 1;
                } else {
                    keep.push(v);
                }
            }
            Ok(merge(&keep, &on, false))
        })
        .collect();
    Ok(Sdrs::from_rows(rows?, dim))
}

/// `n` random SDRs of `n_active` bits out of `dim`; row `r` draws from the stream `(seed, r)`.
pub fn random(n: usize, dim: usize, n_active: usize, seed: u64) -> Result<Sdrs, SparseError> {
    if dim == 0 || dim > u32::MAX as usize {
        return Err(SparseError::invalid("dim", format!("must be between 1 and 2**32 - 1, got {dim}")));
    }
    if n_active > dim {
        return Err(SparseError::invalid("n_active", format!("must be at most dim = {dim}, got {n_active}")));
    }
    let rows =
        (0..n).into_par_iter().map(|r| sample_distinct(&mut Stream::new(seed, &[r as u64]), dim, n_active)).collect();
    Ok(Sdrs::from_rows(rows, dim))
}

/// Scalar encoder: each value becomes a contiguous run of `n_active` bits out of `size`; nearby values share
/// bits. Non-periodic: the run starts at `round((v - min) / (max - min) · (size - n_active))`, values outside
/// `[min, max]` are clipped when `clip` (an error otherwise). Periodic: the run starts at
/// `floor((v - min) / (max - min) · size) mod size` and wraps around.
pub fn scalar_encode(
    values: &[f64],
    min: f64,
    max: f64,
    size: usize,
    n_active: usize,
    periodic: bool,
    clip: bool,
) -> Result<Sdrs, SparseError> {
    if !(min.is_finite() && max.is_finite() && min < max) {
        return Err(SparseError::invalid("maximum", format!("need finite minimum < maximum, got [{min}, {max}]")));
    }
    if size == 0 || size > u32::MAX as usize {
        return Err(SparseError::invalid("size", format!("must be between 1 and 2**32 - 1, got {size}")));
    }
    if n_active == 0 || n_active > size {
        return Err(SparseError::invalid("n_active", format!("must be between 1 and size = {size}, got {n_active}")));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(SparseError::NonFiniteDense { row: i, col: 0, value: values[i] as f32 });
    }
    if !periodic && !clip {
        if let Some(i) = values.iter().position(|&v| v < min || v > max) {
            return Err(SparseError::invalid(
                "values",
                format!("values[{i}] = {} is outside [{min}, {max}]; pass clip=True to clip", values[i]),
            ));
        }
    }
    let rows = values
        .par_iter()
        .map(|&v| {
            let t = (v - min) / (max - min);
            if periodic {
                let start = ((t * size as f64).floor() as i64).rem_euclid(size as i64) as usize;
                let mut bits: Vec<u32> = (0..n_active).map(|j| ((start + j) % size) as u32).collect();
                bits.sort_unstable();
                bits
            } else {
                let start = (t.clamp(0.0, 1.0) * (size - n_active) as f64).round() as usize;
                (start..start + n_active).map(|b| b as u32).collect()
            }
        })
        .collect();
    Ok(Sdrs::from_rows(rows, size))
}

/// Category encoder: category `c` of `n_categories` is the block of bits `c·n_active .. (c+1)·n_active`
/// (categories share no bits). Errors: a label outside `[0, n_categories)`.
pub fn category_encode(labels: &[i64], n_categories: usize, n_active: usize) -> Result<Sdrs, SparseError> {
    if n_categories == 0 || n_active == 0 {
        return Err(SparseError::invalid("n_categories", "n_categories and n_active must be positive"));
    }
    let dim = n_categories
        .checked_mul(n_active)
        .filter(|&d| u32::try_from(d).is_ok())
        .ok_or_else(|| SparseError::invalid("n_active", "n_categories * n_active must be below 2**32"))?;
    if let Some(i) = labels.iter().position(|&c| c < 0 || c as usize >= n_categories) {
        return Err(SparseError::invalid(
            "labels",
            format!("labels[{i}] = {} is outside [0, {n_categories})", labels[i]),
        ));
    }
    let rows = labels
        .par_iter()
        .map(|&c| {
            let s = c as usize * n_active;
            (s..s + n_active).map(|b| b as u32).collect()
        })
        .collect();
    Ok(Sdrs::from_rows(rows, dim))
}

/// Grid-cell encoder of 2-D positions: one module per entry of `periods`; module `m` rotates the position by an
/// angle drawn from the stream `(seed, m)`, takes its phase modulo `periods[m]` in both axes and activates the
/// one cell of its `side × side` tile that holds the phase. `dim = len(periods) · side²`, one bit per module.
/// Nearby positions share most bits; far positions share about `1 / side²` of them.
pub fn grid_encode(positions: &[f64], periods: &[f64], side: usize, seed: u64) -> Result<Sdrs, SparseError> {
    if !positions.len().is_multiple_of(2) {
        return Err(SparseError::ShapeMismatch("positions must have shape (n, 2)".into()));
    }
    if periods.is_empty() || periods.iter().any(|p| !(p.is_finite() && *p > 0.0)) {
        return Err(SparseError::invalid("periods", "must be a non-empty list of finite positive numbers"));
    }
    let cells =
        side.checked_mul(side).filter(|&c| c > 0).ok_or_else(|| SparseError::invalid("side", "must be >= 1"))?;
    let dim = cells
        .checked_mul(periods.len())
        .filter(|&d| u32::try_from(d).is_ok())
        .ok_or_else(|| SparseError::invalid("side", "len(periods) * side**2 must be below 2**32"))?;
    if let Some(i) = positions.iter().position(|v| !v.is_finite()) {
        return Err(SparseError::NonFiniteDense { row: i / 2, col: i % 2, value: positions[i] as f32 });
    }
    let angles: Vec<(f64, f64)> = (0..periods.len())
        .map(|m| {
            let a = Stream::new(seed, &[m as u64]).next_f64() * std::f64::consts::FRAC_PI_2;
            (a.cos(), a.sin())
        })
        .collect();
    let rows = positions
        .par_chunks_exact(2)
        .map(|p| {
            periods
                .iter()
                .zip(&angles)
                .enumerate()
                .map(|(m, (&per, &(c, s)))| {
                    let u = (c * p[0] - s * p[1]) / per;
                    let v = (s * p[0] + c * p[1]) / per;
                    let iu = ((u - u.floor()) * side as f64) as usize % side;
                    let iv = ((v - v.floor()) * side as f64) as usize % side;
                    (m * cells + iu * side + iv) as u32
                })
                .collect()
        })
        .collect();
    Ok(Sdrs::from_rows(rows, dim))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sorted_set(v: Vec<u32>) -> Vec<u32> {
        let mut v = v;
        v.sort_unstable();
        v.dedup();
        v
    }

    proptest! {
        #[test]
        fn set_ops_match_naive(a in prop::collection::vec(0u32..64, 0..30), b in prop::collection::vec(0u32..64, 0..30)) {
            let (a, b) = (sorted_set(a), sorted_set(b));
            let ip_a = [0i64, a.len() as i64];
            let ip_b = [0i64, b.len() as i64];
            let va = SdrView::new("a", &ip_a, &a, 64).unwrap();
            let vb = SdrView::new("b", &ip_b, &b, 64).unwrap();
            let naive_i: Vec<u32> = a.iter().copied().filter(|x| b.contains(x)).collect();
            let naive_u = sorted_set(a.iter().chain(&b).copied().collect());
            prop_assert_eq!(overlap(&va, &vb).unwrap(), vec![naive_i.len() as u32]);
            prop_assert_eq!(intersection(&va, &vb).unwrap().indices, naive_i);
            prop_assert_eq!(union(&va, &vb).unwrap().indices, naive_u);
        }

        #[test]
        fn noise_keeps_sparsity(a in prop::collection::vec(0u32..100, 0..40), f in 0.0f64..=1.0, seed in 0u64..1000) {
            let a = sorted_set(a);
            let ip = [0i64, a.len() as i64];
            let v = SdrView::new("a", &ip, &a, 100).unwrap();
            let out = add_noise(&v, f, seed).unwrap();
            let n_move = (f * a.len() as f64).round() as usize;
            prop_assert_eq!(out.indices.len(), a.len());
            prop_assert!(out.indices.windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(overlap_sorted(&out.indices, &a) as usize, a.len() - n_move);
        }
    }

    #[test]
    fn random_is_deterministic_and_sized() {
        let a = random(50, 200, 10, 3).unwrap();
        let b = random(50, 200, 10, 3).unwrap();
        assert_eq!(a, b);
        assert!(a.indptr.windows(2).all(|w| w[1] - w[0] == 10));
    }

    #[test]
    fn scalar_neighbours_overlap() {
        let e = scalar_encode(&[0.0, 0.05, 1.0], 0.0, 1.0, 100, 10, false, false).unwrap();
        let r = |i: usize| &e.indices[e.indptr[i] as usize..e.indptr[i + 1] as usize];
        assert!(overlap_sorted(r(0), r(1)) > 0);
        assert_eq!(overlap_sorted(r(0), r(2)), 0);
        assert!(scalar_encode(&[2.0], 0.0, 1.0, 100, 10, false, false).is_err());
    }
}
