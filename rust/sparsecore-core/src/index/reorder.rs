//! Document reordering by recursive graph bisection (BP).
//!
//! Block-max indexes group documents into blocks of consecutive positions and keep one upper bound per
//! (term, block) pair; the fewer such pairs, the tighter the bounds and the more blocks a query can skip.
//! [`bisect_order`] computes a document order that places documents sharing terms next to each other, following
//! the recursive graph bisection of Dhulipala et al. (KDD 2016, "Compressing graphs and indexes with recursive
//! graph bisection"); [`term_block_pairs`] measures the result.
//!
//! # Algorithm
//!
//! A part (a set of documents) of more than `min_part` documents is split in two halves of sizes `n1` and
//! `n2`. The cost of a term occurring in `d1` documents of the left half and `d2` of the right one is the
//! log-gap estimate `d1 * log2(n1 / (d1 + 1)) + d2 * log2(n2 / (d2 + 1))`. For up to `iterations` rounds,
//! every document gets a move gain (the cost decrease if it alone moved to the other half); each half is
//! sorted by gain, descending, and the `i`-th documents of both halves swap places while the sum of their
//! gains is positive. A round without swaps ends the loop. Both halves are then bisected recursively (with
//! `rayon::join`) until parts have at most `min_part` documents or `max_depth` levels are reached.
//!
//! Details that define the exact output:
//! - Initial split: the documents of a part are kept in increasing row order, and the first `n1` of them
//!   form the initial left half. At the top level this is the input order.
//! - Split size: `n1` is a multiple of `min_part` (half the part's `ceil(n / min_part)` leaves, rounded down),
//!   so every part starts at a multiple of `min_part` and, with `min_part` equal to the block size of the
//!   index, every leaf is exactly one block.
//! - Terms occurring in fewer than two documents of a part are ignored in it: no split can group them, and
//!   their cost depends only on the (fixed) half sizes. A part without a shared term is not split further.
//! - Ties in gain are broken by row id (lower first). Gains are computed per document in a fixed order, and
//!   every sort key is unique, so the order is identical for any thread count.
//! - Rows are treated as sets of term ids: ids need not be sorted, duplicates count once, values are ignored,
//!   and ids are used only as labels (they are not checked against `dim`).
//!
//! # Cost
//!
//! Each level costs `O(iterations * nnz)` for the gains plus `O(iterations * n log n)` for the sorts, over
//! about `log2(n_rows / min_part)` levels. Every part works on its own copy of its documents' terms, renumbered
//! to the compact range of terms that occur at least twice in it, so degree and gain tables shrink with the
//! parts and stay in cache at the deeper levels. Peak extra memory is about twice the input's `indices` (the
//! top part and its two children) plus `O(n_rows + distinct terms)`.

use rayon::prelude::*;

use crate::parallel::Progress;
use crate::sparse::CsrView;

/// Parameters of recursive graph bisection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BisectParams {
    /// Swap rounds per bisection (default 20); a round without swaps ends the loop early.
    pub iterations: usize,
    /// Leaf size (default 32): parts of at most this many documents are not split. Splits put a multiple of
    /// `min_part` documents in the left half, so leaves align with blocks of `min_part` positions. 0 acts as 1.
    pub min_part: usize,
    /// Maximum recursion depth (default 32); the top-level split is depth 0.
    pub max_depth: usize,
}

impl Default for BisectParams {
    fn default() -> Self {
        Self { iterations: 20, min_part: 32, max_depth: 32 }
    }
}

/// Marks a term that is dropped from a part (it occurs in fewer than two of its documents).
const NONE: u32 = u32::MAX;
/// Parts with at least this many documents use parallel iterators inside one bisection; smaller ones run
/// sequentially (the recursion runs sibling parts in parallel).
const PAR_DOCS: usize = 4096;
/// Documents per rayon task in the parallel loops.
const CHUNK: usize = 1024;

/// A permutation `order` such that `order[new_position] = old_row`, from recursive graph bisection.
///
/// See the [module documentation](self) for the algorithm and its tie-breaking rules. The result depends only
/// on the rows' term sets and `params`, never on the number of threads of the calling rayon pool.
///
/// # Panics
///
/// If `docs` has more than `u32::MAX` rows.
pub fn bisect_order(docs: &CsrView<'_>, params: &BisectParams) -> Vec<u32> {
    bisect_order_with_progress(docs, params, None)
}

/// [`bisect_order`] reporting progress in document-levels: `n_rows x levels` in all, where `levels` is the
/// depth of a full bisection down to `min_part`; each part adds its size when it is split, and a part that stops
/// early adds its size for every level it skips.
///
/// # Panics
///
/// If `docs` has more than `u32::MAX` rows.
pub fn bisect_order_with_progress(docs: &CsrView<'_>, params: &BisectParams, progress: Option<&Progress>) -> Vec<u32> {
    let n = docs.n_rows();
    assert!(u32::try_from(n).is_ok(), "bisect_order supports at most 2**32 - 1 rows, got {n}");
    let ctx = Ctx {
        iterations: params.iterations,
        min_part: params.min_part.max(1),
        max_depth: params.max_depth,
        // log2(k) for k = 0..=n + 2 (entry 0 is never used as a logarithm).
        lg: (0..n + 3).map(|k| if k == 0 { 0.0 } else { (k as f64).log2() }).collect(),
        levels: levels(n, params.min_part.max(1)).min(params.max_depth),
        progress,
    };
    if let Some(p) = progress {
        p.set_total((n * ctx.levels) as u64);
    }
    let mut out = vec![0u32; n];
    recurse(top_part(docs), &mut out, 0, &ctx);
    out
}

/// Number of distinct (term, block) pairs when rows are laid out in `order` in blocks of `block_size`
/// consecutive positions — the quantity BP should reduce.
///
/// `order` lists row ids (normally a permutation such as the output of [`bisect_order`]; a subset is fine).
///
/// # Panics
///
/// If `block_size` is 0 or an entry of `order` is not a row of `docs`.
pub fn term_block_pairs(docs: &CsrView<'_>, order: &[u32], block_size: usize) -> usize {
    assert!(block_size > 0, "block_size must be positive");
    order
        .par_chunks(block_size)
        .map_init(Vec::new, |buf: &mut Vec<u32>, block| {
            buf.clear();
            for &r in block {
                buf.extend_from_slice(docs.row(r as usize).0);
            }
            buf.sort_unstable();
            buf.dedup();
            buf.len()
        })
        .sum()
}

/// Settings shared by the whole recursion.
struct Ctx<'a> {
    iterations: usize,
    min_part: usize,
    max_depth: usize,
    /// `lg[k] = log2(k)`.
    lg: Vec<f64>,
    /// Splits from `n` documents down to parts of at most `min_part` (capped at `max_depth`).
    levels: usize,
    progress: Option<&'a Progress>,
}

/// Levels of halving needed to bring `n` documents down to parts of at most `min_part`.
fn levels(n: usize, min_part: usize) -> usize {
    let mut parts = n.div_ceil(min_part).max(1);
    let mut l = 0;
    while parts > 1 {
        parts = parts.div_ceil(2);
        l += 1;
    }
    l
}

/// Documents of one part, in increasing row order, with their terms renumbered to `0..n_terms`.
struct Part {
    /// Row ids of the documents.
    ids: Vec<u32>,
    /// `n + 1` offsets into `terms`.
    offsets: Vec<usize>,
    /// Part-local term ids of every document (distinct within a document).
    terms: Vec<u32>,
    /// Number of part-local terms.
    n_terms: usize,
}

impl Part {
    fn len(&self) -> usize {
        self.ids.len()
    }

    #[inline]
    fn doc(&self, i: usize) -> &[u32] {
        &self.terms[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// Bisect `part` and write its final order into `out` (of the same length).
fn recurse(part: Part, out: &mut [u32], depth: usize, ctx: &Ctx<'_>) {
    let n = part.len();
    if n <= ctx.min_part || depth >= ctx.max_depth || part.n_terms == 0 {
        out.copy_from_slice(&part.ids);
        if let Some(p) = ctx.progress {
            p.add((n * ctx.levels.saturating_sub(depth)) as u64);
        }
        return;
    }
    let n1 = n.div_ceil(ctx.min_part) / 2 * ctx.min_part;
    let split = bisect(&part, n1, ctx);
    if let Some(p) = ctx.progress {
        p.add(n as u64);
    }
    let left = child(&part, &split.left, true, &split.deg_left);
    let right = child(&part, &split.left, false, &split.deg_right);
    drop(part);
    drop(split);
    let (out_left, out_right) = out.split_at_mut(n1);
    rayon::join(|| recurse(left, out_left, depth + 1, ctx), || recurse(right, out_right, depth + 1, ctx));
}

/// Final assignment of one bisection: side of every document and term degrees of both halves.
struct Split {
    /// `left[i]`: document `i` of the part ends in the left half.
    left: Vec<bool>,
    deg_left: Vec<u32>,
    deg_right: Vec<u32>,
}

/// `delta[d]` = cost(d) - cost(d - 1) for d = 1..=n + 1 in a half of `n` documents, where
/// cost(d) = `d * log2(n / (d + 1))` is the log-gap cost of a term with degree `d` (`delta[0]` is unused).
fn cost_deltas(n: usize, lg: &[f64]) -> Vec<f64> {
    let cost = |d: usize| d as f64 * (lg[n] - lg[d + 1]);
    (0..n + 2).map(|d| if d == 0 { 0.0 } else { cost(d) - cost(d - 1) }).collect()
}

/// Sort key ordering gains descending, then document index ascending (unique per document).
#[inline]
fn gain_key(gain: f32, i: usize) -> u64 {
    let b = gain.to_bits();
    // Map the float's total order onto unsigned order, then invert it for a descending sort.
    let ascending = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
    (u64::from(!ascending) << 32) | i as u64
}

/// Run the swap rounds of one bisection with the first `n1` documents as initial left half.
fn bisect(part: &Part, n1: usize, ctx: &Ctx<'_>) -> Split {
    let n = part.len();
    let nt = part.n_terms;
    let par = n >= PAR_DOCS;
    let mut left: Vec<bool> = (0..n).map(|i| i < n1).collect();
    let (mut deg_left, mut deg_right) = (vec![0u32; nt], vec![0u32; nt]);
    for i in 0..n {
        let deg = if i < n1 { &mut deg_left } else { &mut deg_right };
        for &t in part.doc(i) {
            deg[t as usize] += 1;
        }
    }
    let (delta_l, delta_r) = (cost_deltas(n1, &ctx.lg), cost_deltas(n - n1, &ctx.lg));
    let (mut gain_l, mut gain_r) = (vec![0f32; nt], vec![0f32; nt]);
    let mut gain = vec![0f32; n];
    let (mut keys_l, mut keys_r) = (Vec::with_capacity(n1), Vec::with_capacity(n - n1));
    for _ in 0..ctx.iterations {
        // Per-term gain (cost decrease) of moving one document holding the term out of the left (right) half.
        for (t, (gl, gr)) in gain_l.iter_mut().zip(gain_r.iter_mut()).enumerate() {
            let (dl, dr) = (deg_left[t] as usize, deg_right[t] as usize);
            *gl = if dl > 0 { (delta_l[dl] - delta_r[dr + 1]) as f32 } else { 0.0 };
            *gr = if dr > 0 { (delta_r[dr] - delta_l[dl + 1]) as f32 } else { 0.0 };
        }
        let doc_gains = |start: usize, out: &mut [f32]| {
            for (j, g) in out.iter_mut().enumerate() {
                let i = start + j;
                let table = if left[i] { &gain_l } else { &gain_r };
                *g = part.doc(i).iter().map(|&t| table[t as usize]).sum();
            }
        };
        if par {
            gain.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| doc_gains(c * CHUNK, out));
        } else {
            doc_gains(0, &mut gain);
        }
        // Only documents whose gain beats minus the best gain of the other half can take part in a swap.
        let (mut best_l, mut best_r) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for (i, &g) in gain.iter().enumerate() {
            let best = if left[i] { &mut best_l } else { &mut best_r };
            *best = best.max(g);
        }
        keys_l.clear();
        keys_r.clear();
        for (i, &g) in gain.iter().enumerate() {
            if left[i] {
                if g + best_r > 0.0 {
                    keys_l.push(gain_key(g, i));
                }
            } else if g + best_l > 0.0 {
                keys_r.push(gain_key(g, i));
            }
        }
        if par {
            keys_l.par_sort_unstable();
            keys_r.par_sort_unstable();
        } else {
            keys_l.sort_unstable();
            keys_r.sort_unstable();
        }
        let mut swapped = false;
        for (&kl, &kr) in keys_l.iter().zip(&keys_r) {
            let (a, b) = (kl as u32 as usize, kr as u32 as usize);
            if gain[a] + gain[b] <= 0.0 {
                break;
            }
            swapped = true;
            left[a] = false;
            left[b] = true;
            for &t in part.doc(a) {
                deg_left[t as usize] -= 1;
                deg_right[t as usize] += 1;
            }
            for &t in part.doc(b) {
                deg_right[t as usize] -= 1;
                deg_left[t as usize] += 1;
            }
        }
        if !swapped {
            break;
        }
    }
    Split { left, deg_left, deg_right }
}

/// The documents of `part` on side `side` (true: left) as a new part, keeping terms of degree >= 2 there.
fn child(part: &Part, left: &[bool], side: bool, deg: &[u32]) -> Part {
    let mut n_terms = 0u32;
    let map: Vec<u32> = deg
        .iter()
        .map(|&d| {
            if d >= 2 {
                n_terms += 1;
                n_terms - 1
            } else {
                NONE
            }
        })
        .collect();
    let pos: Vec<u32> = (0..part.len()).filter(|&i| left[i] == side).map(|i| i as u32).collect();
    let ids = pos.iter().map(|&i| part.ids[i as usize]).collect();
    build(
        ids,
        n_terms as usize,
        |j| part.doc(pos[j] as usize).iter().filter(|&&t| map[t as usize] != NONE).count(),
        |j, out| {
            let kept = part.doc(pos[j] as usize).iter().map(|&t| map[t as usize]).filter(|&t| t != NONE);
            for (o, t) in out.iter_mut().zip(kept) {
                *o = t;
            }
        },
    )
}

/// Assemble a part: `count(j)` is the number of terms of document `j`, `fill(j, out)` writes them.
fn build<C, F>(ids: Vec<u32>, n_terms: usize, count: C, fill: F) -> Part
where
    C: Fn(usize) -> usize + Sync,
    F: Fn(usize, &mut [u32]) + Sync,
{
    let n = ids.len();
    let lens: Vec<usize> =
        if n >= PAR_DOCS { (0..n).into_par_iter().map(&count).collect() } else { (0..n).map(&count).collect() };
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0);
    let mut acc = 0;
    for l in lens {
        acc += l;
        offsets.push(acc);
    }
    let mut terms = vec![0u32; acc];
    let fill_range = |docs: std::ops::Range<usize>, out: &mut [u32]| {
        let base = offsets[docs.start];
        for j in docs {
            fill(j, &mut out[offsets[j] - base..offsets[j + 1] - base]);
        }
    };
    if n >= PAR_DOCS {
        let mut chunks = Vec::with_capacity(n.div_ceil(CHUNK));
        let mut rest = terms.as_mut_slice();
        for start in (0..n).step_by(CHUNK) {
            let end = (start + CHUNK).min(n);
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(offsets[end] - offsets[start]);
            chunks.push((start..end, head));
            rest = tail;
        }
        chunks.into_par_iter().for_each(|(docs, out)| fill_range(docs, out));
    } else {
        fill_range(0..n, &mut terms);
    }
    Part { ids, offsets, terms, n_terms }
}

/// Map from input term ids to compact ids of the terms that occur in at least two rows.
enum TermMap {
    /// Indexed by term id; `NONE` for dropped terms.
    Dense(Vec<u32>),
    /// Sorted kept term ids; the compact id is the position.
    Sorted(Vec<u32>),
}

impl TermMap {
    #[inline]
    fn get(&self, t: u32) -> u32 {
        match self {
            TermMap::Dense(map) => map.get(t as usize).copied().unwrap_or(NONE),
            TermMap::Sorted(kept) => kept.binary_search(&t).map_or(NONE, |p| p as u32),
        }
    }
}

/// `row` if its ids are strictly increasing, else its distinct ids sorted into `buf`.
fn distinct<'a>(row: &'a [u32], buf: &'a mut Vec<u32>) -> &'a [u32] {
    if row.windows(2).all(|w| w[0] < w[1]) {
        row
    } else {
        buf.clear();
        buf.extend_from_slice(row);
        buf.sort_unstable();
        buf.dedup();
        buf
    }
}

/// Build the compact term map of the whole batch.
fn term_map(docs: &CsrView<'_>) -> (TermMap, usize) {
    let n = docs.n_rows();
    let Some(max) = docs.indices().par_iter().copied().max() else {
        return (TermMap::Dense(Vec::new()), 0);
    };
    let space = max as usize + 1;
    if space <= docs.nnz().max(1 << 20) {
        // Document frequencies in a table over the id space, turned in place into compact ids.
        let mut map = vec![0u32; space];
        let mut buf = Vec::new();
        for r in 0..n {
            for &t in distinct(docs.row(r).0, &mut buf) {
                map[t as usize] += 1;
            }
        }
        let mut next = 0u32;
        for m in &mut map {
            *m = if *m >= 2 {
                next += 1;
                next - 1
            } else {
                NONE
            };
        }
        (TermMap::Dense(map), next as usize)
    } else {
        // Huge, sparse id space: sort all (row-distinct) occurrences and keep ids seen at least twice.
        let mut all: Vec<u32> = (0..n)
            .into_par_iter()
            .with_min_len(CHUNK)
            .flat_map_iter(|r| {
                let mut buf = Vec::new();
                distinct(docs.row(r).0, &mut buf).to_vec()
            })
            .collect();
        all.par_sort_unstable();
        let kept: Vec<u32> = all.chunk_by(|a, b| a == b).filter(|g| g.len() >= 2).map(|g| g[0]).collect();
        let n_terms = kept.len();
        (TermMap::Sorted(kept), n_terms)
    }
}

/// The whole batch as the top-level part.
fn top_part(docs: &CsrView<'_>) -> Part {
    let (map, n_terms) = term_map(docs);
    let n = docs.n_rows();
    let sorted_row = |r: usize| docs.row(r).0.windows(2).all(|w| w[0] < w[1]);
    // Compact ids of the kept terms of row `r`, for rows that are not strictly increasing.
    let slow_row = |r: usize| {
        let mut v: Vec<u32> = docs.row(r).0.iter().map(|&t| map.get(t)).filter(|&t| t != NONE).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    build(
        (0..n as u32).collect(),
        n_terms,
        |r| {
            if sorted_row(r) {
                docs.row(r).0.iter().filter(|&&t| map.get(t) != NONE).count()
            } else {
                slow_row(r).len()
            }
        },
        |r, out| {
            if sorted_row(r) {
                let kept = docs.row(r).0.iter().map(|&t| map.get(t)).filter(|&t| t != NONE);
                for (o, t) in out.iter_mut().zip(kept) {
                    *o = t;
                }
            } else {
                out.copy_from_slice(&slow_row(r));
            }
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_counts_every_document_at_every_level() {
        let mut indptr = vec![0i64];
        let mut idx = Vec::new();
        for d in 0..1000u32 {
            for t in 0..8u32 {
                idx.push((d * 7 + t * 13) % 400);
            }
            let start = *indptr.last().unwrap() as usize;
            idx[start..].sort_unstable();
            idx.dedup();
            indptr.push(idx.len() as i64);
        }
        let val = vec![1.0f32; idx.len()];
        let docs = CsrView::new(&indptr, &idx, &val, 400).unwrap();
        let progress = Progress::new();
        let params = BisectParams { min_part: 16, ..BisectParams::default() };
        let order = bisect_order_with_progress(&docs, &params, Some(&progress));
        assert_eq!(order, bisect_order(&docs, &params));
        let (done, total) = progress.get();
        assert_eq!(total, 1000 * levels(1000, 16) as u64);
        assert_eq!(done, total);
    }

    use std::time::Instant;

    use proptest::prelude::*;

    use super::*;
    use crate::parallel::install;
    use crate::sparse::Csr;

    /// Small deterministic generator (splitmix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn csr_from_rows(rows: &[Vec<u32>]) -> Csr {
        let mut out = Csr { indptr: vec![0], ..Csr::default() };
        for row in rows {
            out.indices.extend_from_slice(row);
            out.data.extend(row.iter().map(|&t| 1.0 + (t % 7) as f32));
            out.indptr.push(out.indices.len() as i64);
        }
        out
    }

    fn is_permutation(order: &[u32], n: usize) -> bool {
        let mut sorted = order.to_vec();
        sorted.sort_unstable();
        sorted.iter().copied().eq(0..n as u32)
    }

    /// `n` documents from `topics` disjoint topics of `per_topic` terms, `terms` distinct terms each, shuffled.
    fn clustered(n: usize, topics: usize, per_topic: usize, terms: usize, seed: u64) -> Vec<Vec<u32>> {
        let mut rng = Rng(seed);
        (0..n)
            .map(|_| {
                let topic = rng.below(topics);
                let mut row = Vec::with_capacity(terms);
                while row.len() < terms {
                    let t = (topic * per_topic + rng.below(per_topic)) as u32;
                    if !row.contains(&t) {
                        row.push(t);
                    }
                }
                row.sort_unstable();
                row
            })
            .collect()
    }

    /// SPLADE-like rows: Zipf term popularity over `vocab` plus topics, about `avg_terms` distinct terms each.
    /// Also returns the topic each row was drawn from.
    fn splade_like(n: usize, vocab: usize, avg_terms: usize, seed: u64) -> (Csr, Vec<u32>) {
        let mut rng = Rng(seed);
        // Zipf (s = 1) over a random permutation of the vocabulary.
        let mut perm: Vec<u32> = (0..vocab as u32).collect();
        for i in (1..vocab).rev() {
            perm.swap(i, rng.below(i + 1));
        }
        let mut cdf = Vec::with_capacity(vocab);
        let mut acc = 0.0;
        for r in 0..vocab {
            acc += 1.0 / (r as f64 + 1.0);
            cdf.push(acc);
        }
        let zipf = |rng: &mut Rng| {
            let u = rng.unit() * acc;
            perm[cdf.partition_point(|&c| c < u).min(vocab - 1)]
        };
        // Topics: 2000 multisets of 300 terms drawn from the Zipf distribution; a row takes 60% of its terms
        // from its topic and the rest from the global distribution.
        let n_topics = 2000;
        let topics: Vec<Vec<u32>> = (0..n_topics).map(|_| (0..300).map(|_| zipf(&mut rng)).collect()).collect();
        let mut out = Csr { indptr: vec![0], ..Csr::default() };
        let mut row = Vec::new();
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let label = rng.below(n_topics);
            labels.push(label as u32);
            let topic = &topics[label];
            let len = avg_terms / 2 + rng.below(avg_terms + 1);
            row.clear();
            while row.len() < len {
                let t = if rng.unit() < 0.6 { topic[rng.below(topic.len())] } else { zipf(&mut rng) };
                if !row.contains(&t) {
                    row.push(t);
                }
            }
            row.sort_unstable();
            out.indices.extend_from_slice(&row);
            out.data.extend(row.iter().map(|_| rng.unit() as f32));
            out.indptr.push(out.indices.len() as i64);
        }
        (out, labels)
    }

    fn order(csr: &Csr, dim: u64, params: &BisectParams) -> Vec<u32> {
        bisect_order(&csr.view(dim).unwrap(), params)
    }

    #[test]
    fn tiny_inputs() {
        for rows in [vec![], vec![vec![]], vec![vec![1, 2]], vec![vec![], vec![]], vec![vec![0, 1], vec![0, 1]]] {
            let csr = csr_from_rows(&rows);
            for min_part in [0, 1, 2] {
                let params = BisectParams { min_part, ..BisectParams::default() };
                let got = order(&csr, 4, &params);
                assert!(is_permutation(&got, rows.len()), "{rows:?} -> {got:?}");
            }
        }
    }

    #[test]
    fn clustered_documents_share_blocks() {
        let rows = clustered(2000, 20, 50, 12, 7);
        let csr = csr_from_rows(&rows);
        let view = csr.view(1000).unwrap();
        let got = bisect_order(&view, &BisectParams::default());
        assert!(is_permutation(&got, rows.len()));
        let identity: Vec<u32> = (0..rows.len() as u32).collect();
        let before = term_block_pairs(&view, &identity, 32);
        let after = term_block_pairs(&view, &got, 32);
        assert!(after * 2 <= before, "term-block pairs {before} -> {after}");
        // 63 blocks, each ideally one topic of 50 terms (a few straddle two topics).
        assert!(after <= 63 * 50 * 3 / 2, "term-block pairs {before} -> {after}");
    }

    #[test]
    fn thread_count_does_not_matter() {
        let (csr, _) = splade_like(20_000, 3000, 30, 11);
        let view = csr.view(3000).unwrap();
        let params = BisectParams { iterations: 8, ..BisectParams::default() };
        let one = install(Some(1), || bisect_order(&view, &params)).unwrap();
        let three = install(Some(3), || bisect_order(&view, &params)).unwrap();
        assert!(is_permutation(&one, 20_000));
        assert_eq!(one, three);
    }

    #[test]
    fn huge_id_space_matches_dense_ids() {
        // A rank-preserving relabelling into a sparse id space takes the sorted-map path with the same result.
        let rows = clustered(3000, 30, 40, 10, 3);
        let spread: Vec<Vec<u32>> = rows.iter().map(|r| r.iter().map(|&t| t * 3_000_000 + 17).collect()).collect();
        let params = BisectParams::default();
        let dense = order(&csr_from_rows(&rows), 1200, &params);
        let sparse = order(&csr_from_rows(&spread), u64::from(u32::MAX), &params);
        assert_eq!(dense, sparse);
    }

    #[test]
    fn rows_are_term_sets() {
        // Unsorted rows with duplicates give the order of their canonical form.
        let rows = clustered(1500, 10, 30, 8, 5);
        let messy: Vec<Vec<u32>> = rows
            .iter()
            .map(|r| {
                let mut m: Vec<u32> = r.iter().rev().copied().collect();
                m.push(r[0]);
                m
            })
            .collect();
        let params = BisectParams::default();
        assert_eq!(order(&csr_from_rows(&rows), 300, &params), order(&csr_from_rows(&messy), 300, &params));
    }

    #[test]
    fn leaves_align_with_min_part() {
        // Two topics of 48 documents each, shuffled: with min_part 48 both blocks come out pure. (A perfectly
        // balanced initial split, with 24 documents of each topic in each half, is a fixed point of the swaps.)
        let mut topic: Vec<bool> = (0..96).map(|i| i < 48).collect();
        let mut rng = Rng(1);
        for i in (1..96).rev() {
            topic.swap(i, rng.below(i + 1));
        }
        let rows: Vec<Vec<u32>> = topic.iter().map(|&a| if a { vec![0, 1, 2] } else { vec![3, 4, 5] }).collect();
        let csr = csr_from_rows(&rows);
        let view = csr.view(6).unwrap();
        let got = bisect_order(&view, &BisectParams { min_part: 48, ..BisectParams::default() });
        assert_eq!(term_block_pairs(&view, &got, 48), 6);
        let identity: Vec<u32> = (0..96).collect();
        assert_eq!(term_block_pairs(&view, &identity, 48), 12);
    }

    #[test]
    fn term_block_pairs_counts_distinct_pairs() {
        let csr = csr_from_rows(&[vec![0, 1], vec![1, 2], vec![3], vec![], vec![0, 3]]);
        let view = csr.view(4).unwrap();
        assert_eq!(term_block_pairs(&view, &[0, 1, 2, 3, 4], 2), 3 + 1 + 2);
        // The last block holds only the empty row 3.
        assert_eq!(term_block_pairs(&view, &[0, 4, 1, 2, 3], 2), 3 + 3);
        assert_eq!(term_block_pairs(&view, &[0, 1, 2, 3, 4], 5), 4);
        assert_eq!(term_block_pairs(&view, &[], 5), 0);
    }

    fn messy_rows(max_rows: usize, dim: u32) -> impl Strategy<Value = Vec<Vec<u32>>> {
        proptest::collection::vec(proptest::collection::vec(0..dim, 0..8), 0..=max_rows)
    }

    proptest! {
        #[test]
        fn output_is_a_permutation(
            rows in messy_rows(150, 24),
            iterations in 0usize..6,
            min_part in 0usize..9,
            max_depth in 0usize..8,
        ) {
            let csr = csr_from_rows(&rows);
            let params = BisectParams { iterations, min_part, max_depth };
            let got = order(&csr, 24, &params);
            prop_assert!(is_permutation(&got, rows.len()));
            let view = csr.view(24).unwrap();
            let three = install(Some(3), || bisect_order(&view, &params)).unwrap();
            let one = install(Some(1), || bisect_order(&view, &params)).unwrap();
            prop_assert_eq!(&got, &one);
            prop_assert_eq!(&got, &three);
        }
    }

    /// User + system CPU seconds of this process so far (Linux), for timing on a loaded machine.
    fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

    /// Timing on SPLADE-like data: `cargo test --release -p sparsecore-core bisect_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing run"]
    fn bisect_timing() {
        for n in [11_000, 200_000] {
            let (csr, topics) = splade_like(n, 30522, 120, 42);
            let view = csr.view(30522).unwrap();
            let (t0, c0) = (Instant::now(), cpu_seconds());
            let got = bisect_order(&view, &BisectParams::default());
            let (took, c1) = (t0.elapsed(), cpu_seconds());
            assert!(is_permutation(&got, n));
            println!(
                "n = {n}, nnz = {} ({:.1}/doc), {} threads: bisect_order in {took:.2?} wall, {:.2} s CPU",
                view.nnz(),
                view.nnz() as f64 / n as f64,
                rayon::current_num_threads(),
                c1.zip(c0).map_or(f64::NAN, |(a, b)| a - b),
            );
            let identity: Vec<u32> = (0..n as u32).collect();
            let mut by_topic = identity.clone();
            by_topic.sort_by_key(|&r| topics[r as usize]);
            for block in [32, 64] {
                let before = term_block_pairs(&view, &identity, block);
                let after = term_block_pairs(&view, &got, block);
                let oracle = term_block_pairs(&view, &by_topic, block);
                println!(
                    "  block {block}: term-block pairs {before} (input order) -> {after} ({:.2}x fewer); \
                     grouped by generating topic: {oracle}",
                    before as f64 / after as f64
                );
            }
        }
    }
}
