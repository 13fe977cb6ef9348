//! The rows of `A`: one per feature ever active, sparse (column-value pairs) or dense by its fill, and the
//! single pass in which a sample updates a row and sums the row's entries against the weights.

use super::dot;
use crate::kernels;

/// A sparse row turns dense once `DENSIFY_NUM / DENSIFY_DEN` of all rows' columns are filled: a sparse entry
/// costs 12 bytes (column, value), a dense column 8, so from two thirds on the dense row is also the smaller one
/// and its sweep streams less memory.
const DENSIFY_NUM: usize = 2;
const DENSIFY_DEN: usize = 3;
/// A dense row that must grow turns sparse again if it holds fewer than `1/SPARSIFY` of the columns (the gap
/// between the two thresholds keeps rows from flipping back and forth).
const SPARSIFY: usize = 3;
/// Marks a row that is not in the current sample's block (see [`Block::pos`]).
pub(super) const NOT_IN_BLOCK: u32 = u32::MAX;

/// One row of `A`, in one of two layouts chosen by its density.
#[derive(Debug, Clone)]
pub(super) enum Row {
    /// Entries `(cols[i], vals[i])`, distinct columns; the first `sorted` are sorted by column (a row read from
    /// a checkpoint), the rest are in the order they were inserted. An update streams the row once, summing
    /// the sweep and finding the block's columns through [`Block::member`] without a branch per entry, then
    /// appends the columns the row lacked: no merge with the sample's active set (its branches cost more than
    /// the streaming) and no rewriting of the row to insert.
    Sparse { cols: Vec<u32>, vals: Vec<f64>, sorted: usize },
    /// Values indexed by column (`vals.len()` may lag behind the number of rows: missing columns are 0); `nnz`
    /// counts the entries that became non-zero.
    Dense { vals: Vec<f64>, nnz: usize },
}

impl Default for Row {
    fn default() -> Self {
        Row::Sparse { cols: Vec::new(), vals: Vec::new(), sorted: 0 }
    }
}

/// A sample's active set, as each of its rows sees it.
pub(super) struct Block<'a> {
    /// Positions of `keys` by increasing key.
    pub(super) order: &'a [u32],
    /// Compact ids of the active rows (distinct).
    pub(super) keys: &'a [u32],
    /// The sample's values at `keys`.
    pub(super) x: &'a [f64],
    /// Row id → its position in `keys`, [`NOT_IN_BLOCK`] for the rows outside the block (one entry per row).
    pub(super) pos: &'a [u32],
    /// Bit `k` set when row `k` is in the block (the same as `pos`, 32 times smaller: it stays in L1 while a
    /// row update tests every entry).
    pub(super) member: &'a [u64],
    /// Current number of rows (= columns).
    pub(super) n_rows: usize,
}

/// Accumulates `Σ_k A[row, k] W[k, :]` over the entries a row update visits.
pub(super) trait Sweep {
    /// All entries of a dense row.
    fn dense(&mut self, vals: &[f64]);
    /// Entries `(cols[i], vals[i])` of a sparse row; also writes the positions `i` of the entries whose column
    /// is set in `member` to the front of `hits` (longer than `cols`) and returns their number. `next` is the
    /// row to be updated after this one, prefetched on the way.
    fn sparse(&mut self, cols: &[u32], vals: &[f64], member: &[u64], hits: &mut [u32], next: Next<'_>) -> usize;
}

/// The arrays of the row updated next (empty when unknown), to prefetch.
pub(super) type Next<'a> = (&'a [u32], &'a [f64]);

/// Bit `k` of a bitset, as 0 or 1.
#[inline]
fn bit(set: &[u64], k: u32) -> usize {
    ((set[(k >> 6) as usize] >> (k & 63)) & 1) as usize
}

/// [`Sweep`] for a single output.
pub(super) struct SweepOne<'a> {
    pub(super) w: &'a [f64],
    pub(super) acc: f64,
}

impl Sweep for SweepOne<'_> {
    fn dense(&mut self, vals: &[f64]) {
        self.acc += dot(vals, &self.w[..vals.len()]);
    }

    fn sparse(&mut self, cols: &[u32], vals: &[f64], member: &[u64], hits: &mut [u32], next: Next<'_>) -> usize {
        let (sum, nh) = gather_dot::<true>(cols, vals, self.w, next, member, hits);
        self.acc += sum;
        nh
    }
}

/// [`Sweep`] for `acc.len()` outputs (`w` row-major, one row per feature).
pub(super) struct SweepMany<'a> {
    pub(super) w: &'a [f64],
    pub(super) acc: &'a mut [f64],
}

impl Sweep for SweepMany<'_> {
    fn dense(&mut self, vals: &[f64]) {
        match self.acc.len() {
            2 => self.dense_n::<2>(vals),
            3 => self.dense_n::<3>(vals),
            4 => self.dense_n::<4>(vals),
            _ => {
                for (k, &v) in vals.iter().enumerate() {
                    if v != 0.0 {
                        self.entry(k as u32, v);
                    }
                }
            }
        }
    }

    fn sparse(&mut self, cols: &[u32], vals: &[f64], member: &[u64], hits: &mut [u32], next: Next<'_>) -> usize {
        match self.acc.len() {
            2 => self.sparse_n::<2>(cols, vals, member, hits, next),
            3 => self.sparse_n::<3>(cols, vals, member, hits, next),
            4 => self.sparse_n::<4>(cols, vals, member, hits, next),
            _ => {
                let mut nh = 0;
                for (i, (&k, &v)) in cols.iter().zip(vals).enumerate() {
                    self.entry(k, v);
                    hits[nh] = i as u32;
                    nh += bit(member, k);
                }
                nh
            }
        }
    }
}

impl SweepMany<'_> {
    /// Entry `(k, v)`, for any number of outputs.
    #[inline]
    fn entry(&mut self, k: u32, v: f64) {
        let (k, no) = (k as usize, self.acc.len());
        for (o, wk) in self.acc.iter_mut().zip(&self.w[k * no..(k + 1) * no]) {
            *o += v * wk;
        }
    }

    /// [`Sweep::dense`] for `N` outputs, summed in locals (through `acc` every entry waited on the previous
    /// entry's store).
    fn dense_n<const N: usize>(&mut self, vals: &[f64]) {
        let mut a = [0.0f64; N];
        for (v, wk) in vals.iter().zip(self.w.chunks_exact(N)) {
            for o in 0..N {
                a[o] += v * wk[o];
            }
        }
        self.acc.iter_mut().zip(a).for_each(|(o, v)| *o += v);
    }

    /// [`Sweep::sparse`] for `N` outputs: one pass, sums in locals, block positions to `hits` without a branch
    /// per entry, the next row prefetched (as [`SweepOne`] does for one output).
    fn sparse_n<const N: usize>(
        &mut self,
        cols: &[u32],
        vals: &[f64],
        member: &[u64],
        hits: &mut [u32],
        next: Next<'_>,
    ) -> usize {
        let mut a = [0.0f64; N];
        let mut nh = 0;
        for (i, (&k, &v)) in cols.iter().zip(vals).enumerate() {
            prefetch_next(next, i);
            let wk = &self.w[k as usize * N..(k as usize + 1) * N];
            for o in 0..N {
                a[o] += v * wk[o];
            }
            hits[nh] = i as u32;
            nh += bit(member, k);
        }
        self.acc.iter_mut().zip(a).for_each(|(o, v)| *o += v);
        nh
    }
}

impl Row {
    /// An empty sparse row with room for `n` entries (a new feature gets its whole active set at once).
    pub(super) fn with_capacity(n: usize) -> Self {
        Row::Sparse { cols: Vec::with_capacity(n), vals: Vec::with_capacity(n), sorted: 0 }
    }

    /// A row from entries sorted by column (dense if that is the smaller layout).
    pub(super) fn from_sorted(cols: Vec<u32>, vals: Vec<f64>, n_rows: usize) -> Self {
        let sorted = cols.len();
        let mut row = Row::Sparse { cols, vals, sorted };
        row.maybe_densify(n_rows);
        row
    }

    /// `A[row, col] += delta`, returning the new value; `n_rows` is the current number of rows (columns).
    pub(super) fn add(&mut self, col: u32, delta: f64, n_rows: usize) -> f64 {
        let at = self.position(col);
        let v = match self {
            Row::Dense { vals, nnz } => {
                let k = col as usize;
                if k >= vals.len() {
                    vals.resize(n_rows.max(k + 1), 0.0);
                }
                let old = vals[k];
                vals[k] += delta;
                *nnz += usize::from(old == 0.0 && vals[k] != 0.0);
                vals[k]
            }
            Row::Sparse { cols, vals, .. } => {
                if let Some(i) = at {
                    vals[i] += delta;
                    vals[i]
                } else {
                    cols.push(col);
                    vals.push(delta);
                    delta
                }
            }
        };
        self.maybe_densify(n_rows);
        v
    }

    /// Apply a sample to this row: `A[row, keys[c]] += scale * x[c]` for every `c` of the block, new values to
    /// `out[c]`, and the row's entries to `sweep`. The entries at the block's columns reach `sweep` too (with
    /// their old or new value): the caller zeroes the block's weights, so that the sweep sums exactly the
    /// entries outside the block (one multiply-add by 0 per block column, against a take-back per column).
    ///
    /// `out` has one entry per key of the block; `hits` is scratch; `next` is the row updated after this one
    /// (prefetched).
    pub(super) fn update(
        &mut self,
        blk: &Block<'_>,
        scale: f64,
        out: &mut [f64],
        sweep: &mut impl Sweep,
        hits: &mut Vec<u32>,
        next: Option<&Row>,
    ) {
        match self {
            Row::Dense { vals, nnz } => {
                let top = blk.order.last().map_or(0, |&c| blk.keys[c as usize] as usize + 1);
                if top > vals.len() {
                    if *nnz * SPARSIFY < blk.n_rows {
                        self.sparsify();
                        return self.update(blk, scale, out, sweep, hits, next);
                    }
                    vals.resize(blk.n_rows.max(top), 0.0);
                }
                // The count lives in a register in the loop (through the reference, every entry waited on the
                // previous entry's store; 7 % of an update at dim 800).
                let mut filled = 0;
                for &c in blk.order {
                    let c = c as usize;
                    let k = blk.keys[c] as usize;
                    let old = vals[k];
                    let v = old + scale * blk.x[c];
                    vals[k] = v;
                    filled += usize::from(old == 0.0 && v != 0.0);
                    out[c] = v;
                }
                *nnz += filled;
                sweep.dense(vals);
            }
            Row::Sparse { cols, vals, .. } => {
                // One pass: the sweep over every entry and the positions of the block's columns in the row.
                let n_keys = blk.keys.len();
                if hits.len() <= cols.len() {
                    hits.resize(cols.len() + 1, 0);
                }
                let nh = sweep.sparse(cols, vals, blk.member, hits, Row::arrays(next));
                out.fill(f64::NAN);
                for &i in &hits[..nh] {
                    let i = i as usize;
                    let k = cols[i];
                    let c = blk.pos[k as usize] as usize;
                    let v = vals[i] + scale * blk.x[c];
                    vals[i] = v;
                    out[c] = v;
                }
                // The block's columns the row lacked (still NaN in `out`: every stored value is finite).
                if nh < n_keys {
                    for &c in blk.order {
                        let c = c as usize;
                        if out[c].is_nan() {
                            let v = scale * blk.x[c];
                            cols.push(blk.keys[c]);
                            vals.push(v);
                            out[c] = v;
                        }
                    }
                }
                self.maybe_densify(blk.n_rows);
            }
        }
    }

    fn maybe_densify(&mut self, n_rows: usize) {
        if let Row::Sparse { cols, vals, .. } = self {
            if cols.len() * DENSIFY_DEN >= n_rows * DENSIFY_NUM {
                let mut dense = vec![0.0; n_rows];
                let mut nnz = 0;
                for (&c, &v) in cols.iter().zip(vals.iter()) {
                    dense[c as usize] = v;
                    nnz += usize::from(v != 0.0);
                }
                *self = Row::Dense { vals: dense, nnz };
            }
        }
    }

    fn sparsify(&mut self) {
        if let Row::Dense { vals, nnz } = self {
            let (mut cols, mut sv) = (Vec::with_capacity(*nnz), Vec::with_capacity(*nnz));
            for (c, &v) in vals.iter().enumerate() {
                if v != 0.0 {
                    cols.push(c as u32);
                    sv.push(v);
                }
            }
            let sorted = cols.len();
            *self = Row::Sparse { cols, vals: sv, sorted };
        }
    }

    /// Where a sparse row stores `col` (a binary search of the sorted prefix, then a scan of the rest).
    fn position(&self, col: u32) -> Option<usize> {
        match self {
            Row::Sparse { cols, sorted, .. } => {
                let (a, b) = cols.split_at(*sorted);
                a.binary_search(&col).ok().or_else(|| b.iter().position(|&c| c == col).map(|p| p + sorted))
            }
            Row::Dense { .. } => None,
        }
    }

    pub(super) fn get(&self, col: u32) -> Option<f64> {
        match self {
            Row::Sparse { vals, .. } => self.position(col).map(|p| vals[p]),
            Row::Dense { vals, .. } => vals.get(col as usize).copied().filter(|v| *v != 0.0),
        }
    }

    /// Stored entries (a dense row's zeros are not entries), in no particular order.
    pub(super) fn for_each(&self, mut f: impl FnMut(u32, f64)) {
        match self {
            Row::Sparse { cols, vals, .. } => cols.iter().zip(vals).for_each(|(&c, &v)| f(c, v)),
            Row::Dense { vals, .. } => {
                for (c, &v) in vals.iter().enumerate() {
                    if v != 0.0 {
                        f(c as u32, v);
                    }
                }
            }
        }
    }

    /// `Σ_k A[row, k] p[k]` for a vector `p` with one entry per row; `next` (the row read after this one) is
    /// prefetched on the way.
    pub(super) fn dot(&self, p: &[f64], next: Option<&Row>) -> f64 {
        match self {
            Row::Sparse { cols, vals, .. } => gather_dot::<false>(cols, vals, p, Row::arrays(next), &[], &mut []).0,
            Row::Dense { vals, .. } => dot(vals, &p[..vals.len()]),
        }
    }

    /// The arrays of a row (empty for none), to prefetch.
    fn arrays(row: Option<&Row>) -> Next<'_> {
        match row {
            Some(Row::Sparse { cols, vals, .. }) => (cols, vals),
            Some(Row::Dense { vals, .. }) => (&[], vals),
            None => (&[], &[]),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Row::Sparse { cols, .. } => cols.len(),
            Row::Dense { nnz, .. } => *nnz,
        }
    }

    pub(super) fn bytes(&self) -> usize {
        match self {
            Row::Sparse { cols, vals, .. } => cols.capacity() * 4 + vals.capacity() * 8,
            Row::Dense { vals, .. } => vals.capacity() * 8,
        }
    }
}

/// At entry `i` of a row, prefetch the next row's arrays at the same offset, a cache line at a time: rows are
/// scattered over the heap, and without it every row starts on cache misses (measured: 25 % of a sweep at
/// dim ~10^4, 29 % of a conjugate-gradient product at dim 3,200).
#[inline]
fn prefetch_next(next: Next<'_>, i: usize) {
    if i.is_multiple_of(8) {
        kernels::prefetch(next.1, i);
        if i.is_multiple_of(16) {
            kernels::prefetch(next.0, i);
        }
    }
}

/// `Σ_i vals[i] · p[cols[i]]` with four partial sums (one running sum waits on the adder at every entry),
/// prefetching the `next` row. With `HITS`, also writes the positions `i` whose column is set in `member` to the
/// front of `hits` (longer than `cols`) and returns their number: every position is written, only members
/// advance the count, so there is no branch per entry. Without `HITS`, `member` and `hits` are not read.
fn gather_dot<const HITS: bool>(
    cols: &[u32],
    vals: &[f64],
    p: &[f64],
    next: Next<'_>,
    member: &[u64],
    hits: &mut [u32],
) -> (f64, usize) {
    let mut acc = [0.0f64; 4];
    let mut nh = 0;
    let (cc, cv) = (cols.chunks_exact(4), vals.chunks_exact(4));
    let (rc, rv) = (cc.remainder(), cv.remainder());
    for (j, (k, v)) in cc.zip(cv).enumerate() {
        prefetch_next(next, 4 * j);
        for i in 0..4 {
            acc[i] += v[i] * p[k[i] as usize];
            if HITS {
                hits[nh] = (4 * j + i) as u32;
                nh += bit(member, k[i]);
            }
        }
    }
    let base = cols.len() - rc.len();
    for (i, (&k, &v)) in rc.iter().zip(rv).enumerate() {
        acc[i] += v * p[k as usize];
        if HITS {
            hits[nh] = (base + i) as u32;
            nh += bit(member, k);
        }
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3]), nh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Applying blocks of keys to a row (sparse from a sorted checkpoint row or empty, appending new columns,
        /// turning dense and sparse again as the row fills and the column count grows) equals a map of sums,
        /// reports each new value, and sweeps exactly the entries outside the block; so does `add`, one entry at
        /// a time. Values are multiples of 0.25, so the sums are exact.
        #[test]
        #[allow(clippy::float_cmp)]
        fn row_updates_equal_a_map_of_sums(
            blocks in proptest::collection::vec(
                (proptest::collection::btree_map(0u32..400, -4i8..=4, 0..60), -3i8..=3), 1..30),
            grow in 0usize..60,
            init in proptest::collection::btree_map(0u32..10, -4i8..=4, 0..10),
            single in (0u32..400, -4i8..=4),
        ) {
            let mut want: std::collections::BTreeMap<u32, f64> =
                init.iter().filter(|e| *e.1 != 0).map(|(&k, &v)| (k, f64::from(v))).collect();
            let mut row = Row::from_sorted(want.keys().copied().collect(), want.values().copied().collect(), 10);
            let mut hits = Vec::new();
            let mut n_rows = 10usize;
            for (block, scale) in &blocks {
                n_rows = (n_rows + grow).min(400);
                // Keys in a scrambled order, as a sample's active rows come: `order` sorts them.
                // Keys folded into the current columns, so that small rows fill up (and turn dense) early.
                let mut folded = std::collections::BTreeMap::new();
                for (&k, &v) in block {
                    folded.entry(k % n_rows as u32).or_insert(v);
                }
                let mut keys: Vec<u32> = folded.keys().copied().collect();
                keys.reverse();
                let third = keys.len() / 3;
                keys.rotate_left(third);
                let x: Vec<f64> = keys.iter().map(|k| f64::from(folded[k]) * 0.5).collect();
                let mut order: Vec<u32> = (0..keys.len() as u32).collect();
                order.sort_unstable_by_key(|&c| keys[c as usize]);
                let mut out = vec![f64::NAN; keys.len()];
                // Weights as the caller leaves them: 0 at the block's columns.
                let p: Vec<f64> = (0..n_rows as u32).map(|i| if keys.contains(&i) { 0.0 } else { f64::from(i % 7) - 3.0 }).collect();
                let mut sw = SweepOne { w: &p, acc: 0.0 };
                let mut pos = vec![NOT_IN_BLOCK; n_rows];
                let mut member = vec![0u64; n_rows.div_ceil(64)];
                for (c, &k) in keys.iter().enumerate() {
                    pos[k as usize] = c as u32;
                    member[k as usize / 64] |= 1 << (k % 64);
                }
                let blk = Block { order: &order, keys: &keys, x: &x, pos: &pos, member: &member, n_rows };
                let next = Row::from_sorted(vec![1, 3], vec![0.5, 0.25], n_rows);
                row.update(&blk, f64::from(*scale), &mut out, &mut sw, &mut hits, Some(&next));
                for (c, &k) in keys.iter().enumerate() {
                    let v = want.entry(k).or_insert(0.0);
                    *v += f64::from(*scale) * x[c];
                    prop_assert_eq!(out[c], *v);
                }
                let outside: f64 = want.iter().filter(|(k, _)| !keys.contains(k)).map(|(&k, &v)| v * p[k as usize]).sum();
                prop_assert!((sw.acc - outside).abs() <= 1e-9 * (1.0 + outside.abs()));
                let mut got = Vec::new();
                row.for_each(|k, v| got.push((k, v)));
                got.sort_by_key(|e| e.0);
                prop_assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
                let expect: Vec<(u32, f64)> = want.iter().map(|(&k, &v)| (k, v)).filter(|e| e.1 != 0.0).collect();
                let got_nz: Vec<(u32, f64)> = got.iter().copied().filter(|e| e.1 != 0.0).collect();
                prop_assert_eq!(got_nz, expect);
                for k in 0..n_rows as u32 {
                    prop_assert_eq!(row.get(k).unwrap_or(0.0), want.get(&k).copied().unwrap_or(0.0));
                }
                let dot: f64 = want.iter().map(|(&k, &v)| v * p[k as usize]).sum();
                prop_assert!((row.dot(&p, Some(&next)) - dot).abs() <= 1e-9 * (1.0 + dot.abs()));
                if let Row::Sparse { cols, sorted, .. } = &row {
                    prop_assert!(cols[..*sorted].windows(2).all(|w| w[0] < w[1]));
                }
                let (k, d) = (single.0 % n_rows as u32, f64::from(single.1) * 0.25);
                let v = want.entry(k).or_insert(0.0);
                *v += d;
                prop_assert_eq!(row.add(k, d, n_rows), *v);
                prop_assert_eq!(row.get(k).unwrap_or(0.0), *v);
            }
        }
    }
}
