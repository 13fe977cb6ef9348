//! Query processing: block-max traversal of every segment with one shared top-k heap.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use crate::kernels;

use super::segment::{join_weight, DocTerms, FwdView, Postings, Segment, TermBlocks};
use super::storage::ZeroedF32;

/// Relative slack on the stopping rule so that f32 rounding of bounds never skips a block that holds a
/// document tying or beating the k-th score (bounds and scores are summed in different orders).
const BOUND_SLACK: f32 = 1e-5;

/// Blocks visited in sorted order before the rest are filtered by the heap threshold.
const FIRST_ROUND: usize = 16;

/// Approximate searches of a segment with postings run term at a time (exactly) when the query's postings there
/// number at most this: at ~1.4 ns per posting that is ~0.4 ms. On 11.6k real SPLADE passages (mean 52k
/// postings per query, p99 112k) term at a time took 0.075 ms on average, while the queries above a 100k cut that
/// took block bounds instead made the approximate p99 0.5-0.8 ms; block bounds only win on larger segments.
const TAAT_APPROX_MAX_POSTINGS: u64 = 300_000;

/// Dims up to this use a dense per-thread query array for scoring (4 MiB of f32); larger dims merge-join.
const DENSE_QUERY_MAX_DIM: u64 = 1 << 20;

/// How a search trades recall for speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchParams {
    /// Results per query.
    pub k: usize,
    /// Bounds are multiplied by `alpha` before the stopping test: 1 is exact (safe); smaller stops earlier.
    pub alpha: f32,
    /// Fraction of the query's L1 mass (heaviest terms first) used for block bounds: 1 is exact.
    pub beta: f32,
    /// Early termination on stagnation: once this fraction of a segment's blocks (rounded up, at least
    /// [`FIRST_ROUND`]) has been visited in a row without adding anything to the top k, the segment's search
    /// stops. 0 turns it off (exact).
    pub patience: f32,
}

impl SearchParams {
    /// Exact search for `k` results.
    pub fn exact(k: usize) -> Self {
        Self { k, alpha: 1.0, beta: 1.0, patience: 0.0 }
    }

    /// Whether these parameters give exact results.
    pub fn is_exact(&self) -> bool {
        self.alpha >= 1.0 && self.beta >= 1.0 && self.patience <= 0.0
    }

    /// Consecutive visited blocks without a new top-k entry after which the search of a segment with `n_blocks`
    /// blocks stops (`usize::MAX`: never).
    fn patience_blocks(&self, n_blocks: usize) -> usize {
        if self.patience > 0.0 {
            ((f64::from(self.patience) * n_blocks as f64).ceil() as usize).max(FIRST_ROUND)
        } else {
            usize::MAX
        }
    }
}

/// A candidate result: larger score first, then smaller external id.
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    /// Dot product.
    pub score: f32,
    /// External id.
    pub id: i64,
}

impl Hit {
    #[inline]
    fn better_than(&self, other: &Hit) -> bool {
        self.cmp(other) == Ordering::Less
    }
}

/// Heap order: the *worst* hit is the greatest, so `peek` is the k-th best.
impl Ord for Hit {
    fn cmp(&self, other: &Self) -> Ordering {
        other.score.total_cmp(&self.score).then(self.id.cmp(&other.id))
    }
}
impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Hit {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Hit {}

/// A heap entry: a hit whose score is exact, or a lower bound of it (`approx`: see [`TopKHeap::push_approx`]).
/// Ordered by the hit (a document's id is unique, so `approx` never decides).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    hit: Hit,
    approx: bool,
}

/// A document scored from the upper halves of its weights that may still be in the top k: its truncated score
/// and entry count (for [`ExactBound`]), its segment and layout position (to score it exactly at the end).
#[derive(Clone, Copy)]
struct Pending {
    approx: f32,
    n: u32,
    seg: u32,
    pos: u32,
}

/// Top-k accumulator.
///
/// Hits are exact or, from [`TopKHeap::push_approx`], scored from truncated weights: a lower bound of the exact
/// score (the same f32 operations in the same order on weights that are never larger, and rounding is
/// monotone). The k-th best of these lower bounds never exceeds the k-th best exact score, so it is a safe
/// threshold for pruning; [`TopKHeap::finish`] then scores exactly only the documents that may still reach it.
pub struct TopKHeap {
    k: usize,
    heap: BinaryHeap<Entry>,
    pending: Vec<Pending>,
    /// Entries that entered the heap so far.
    entered: u64,
}

impl TopKHeap {
    /// Empty heap for `k` results.
    pub fn new(k: usize) -> Self {
        Self { k, heap: BinaryHeap::with_capacity(k + 1), pending: Vec::new(), entered: 0 }
    }

    /// The score to beat once full (else `-inf`).
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |e| e.hit.score)
        }
    }

    #[inline]
    fn offer(&mut self, e: Entry) {
        if self.heap.len() < self.k {
            self.heap.push(e);
            self.entered += 1;
        } else if let Some(worst) = self.heap.peek() {
            if e.hit.better_than(&worst.hit) {
                self.heap.pop();
                self.heap.push(e);
                self.entered += 1;
            }
        }
    }

    /// Offer a hit with its exact score.
    #[inline]
    pub fn push(&mut self, hit: Hit) {
        self.offer(Entry { hit, approx: false });
    }

    /// Whether a truncated score can enter the heap as a lower bound.
    #[inline]
    fn approx_enters(&self, approx: f32) -> bool {
        approx > 0.0 && approx >= self.threshold()
    }

    /// Record a document scored from truncated weights that may reach the threshold (checked by the caller with
    /// [`ExactBound::may_reach`]); `hit` (its truncated score) enters the heap as a lower bound when it can.
    #[inline]
    fn push_approx(&mut self, pending: Pending, hit: Option<Hit>) {
        self.pending.push(pending);
        if let Some(hit) = hit {
            self.offer(Entry { hit, approx: true });
        }
    }

    /// Hits best first, all with exact scores: the exact hits kept, and every pending document that may reach
    /// the final threshold scored exactly by `rescore(segment, position)` (returning its score and external id,
    /// `None` if it no longer counts). Returns the hits and the number of documents rescored.
    fn finish(self, bound: &ExactBound, mut rescore: impl FnMut(u32, u32) -> Option<Hit>) -> (Vec<Hit>, u64) {
        let theta = self.threshold();
        let mut out = TopKHeap::new(self.k);
        for e in self.heap.into_iter().filter(|e| !e.approx) {
            out.push(e.hit);
        }
        let mut n_rescored = 0;
        for p in &self.pending {
            if bound.may_reach_theta(p.approx, p.n as usize, theta) {
                n_rescored += 1;
                if let Some(hit) = rescore(p.seg, p.pos) {
                    if hit.score > 0.0 {
                        out.push(hit);
                    }
                }
            }
        }
        (out.into_sorted(), n_rescored)
    }

    /// Hits best first (exact hits only: the searches that push truncated scores end with [`TopKHeap::finish`]).
    pub fn into_sorted(self) -> Vec<Hit> {
        let mut v: Vec<Hit> = self.heap.into_iter().filter(|e| !e.approx).map(|e| e.hit).collect();
        v.sort_unstable();
        v
    }
}

/// Per-thread scratch reused across queries.
#[derive(Default)]
pub struct Scratch {
    dense_query: ZeroedF32,
    bounds: ZeroedF32,
    touched: Vec<u32>,
    cand: Vec<(f32, u32)>,
    /// Maximum bound of each chunk of [`CHUNK`] blocks.
    chunk_max: Vec<f32>,
    /// Selection scratch over `chunk_max`.
    sel: Vec<f32>,
    /// Per-position score accumulator of term-at-a-time search.
    acc: Vec<f32>,
    /// Query terms present in a segment with postings: (term index, query weight).
    term_rows: Vec<(usize, f32)>,
    /// Work counters, accumulated across queries until reset.
    pub stats: SearchStats,
}

/// How much work searches did (for tuning and `explain`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SearchStats {
    /// Blocks whose bound was computed (non-zero bound).
    pub blocks_bounded: u64,
    /// Blocks whose documents were scored.
    pub blocks_visited: u64,
    /// Documents scored.
    pub docs_scored: u64,
    /// Documents of visited blocks scored exactly after their score from the upper weight halves (see
    /// [`FwdView::doc`]) showed that they might enter the top k.
    pub docs_rescored: u64,
}

/// What a search may return.
pub struct Visibility<'a> {
    /// Bitset over global internal ids of deleted documents (may be empty when none are).
    pub deleted: &'a [u64],
    /// Bitset over global internal ids of allowed documents (None: all).
    pub allowed: Option<&'a [u64]>,
    /// Global internal id -> external id.
    pub ext_ids: &'a [i64],
}

#[inline]
fn bit(set: &[u64], i: u32) -> bool {
    set.get((i >> 6) as usize).is_some_and(|w| (w >> (i & 63)) & 1 == 1)
}

impl Visibility<'_> {
    #[inline]
    fn visible(&self, gid: u32) -> bool {
        !bit(self.deleted, gid) && self.allowed.is_none_or(|a| bit(a, gid))
    }
}

/// A validated query: sorted distinct term ids with positive weights.
pub struct Query<'a> {
    /// Term ids, increasing.
    pub terms: &'a [u32],
    /// Weights (> 0 for terms that matter; zeros are ignored).
    pub vals: &'a [f32],
}

/// Exact score of the document at position `p` of a forward index against the query (dense query array when
/// given).
#[inline]
fn score_exact(fwd: &FwdView<'_>, p: usize, q: &Query<'_>, dense: Option<&[f32]>) -> f32 {
    let (terms, hi, lo) = fwd.doc(p);
    match (terms, dense) {
        (DocTerms::U16(terms), Some(d)) => dot_u16(d, terms, hi, Some(lo)),
        (DocTerms::U32(terms), Some(d)) => kernels::gather_dot(d, terms, hi, Some(lo)),
        (DocTerms::U16(terms), None) => {
            let wide: Vec<u32> = terms.iter().map(|&t| u32::from(t)).collect();
            merge_score(q, &wide, hi, lo)
        }
        (DocTerms::U32(terms), None) => merge_score(q, terms, hi, lo),
    }
}

/// Score of the document at position `p` from the upper halves of its weights (dense query array): never above
/// the exact score but for rounding, see [`ExactBound`].
#[inline]
fn score_hi(fwd: &FwdView<'_>, p: usize, d: &[f32]) -> (f32, usize) {
    let (terms, hi, _) = fwd.doc(p);
    match terms {
        DocTerms::U16(terms) => (dot_u16(d, terms, hi, None), terms.len()),
        DocTerms::U32(terms) => (kernels::gather_dot(d, terms, hi, None), terms.len()),
    }
}

/// Score of a document with u16 term ids from the upper halves of its weights (`lo` None) or exactly: one
/// operation order for both (see [`kernels::gather_dot_u16`]), so the first never exceeds the second. The dense
/// query array holds at least 2^16 entries (see [`load_dense_query`]), so any u16 id indexes it; a shorter one
/// takes the generic loops (again one order for both).
#[inline]
pub(super) fn dot_u16(d: &[f32], terms: &[u16], hi: &[u16], lo: Option<&[u16]>) -> f32 {
    match <&[f32; kernels::U16_IDS]>::try_from(d.get(..kernels::U16_IDS).unwrap_or(&[])) {
        Ok(d16) => kernels::gather_dot_u16(d16, terms, hi, lo),
        Err(_) => kernels::gather_dot(d, terms, hi, lo),
    }
}

/// An upper bound on a document's exact score from its score over the upper weight halves ([`score_hi`]).
///
/// A weight `w >= 0` and its truncation `h` satisfy `h <= w <= h * (1 + 2^-7) + 2^-133` (a bfloat16 keeps 7
/// of the 23 fraction bits; `2^-133` covers subnormals). The exact real score is thus at most the real
/// truncated score times `1 + 2^-7` plus `2^-133` times the query's L1 norm. Both scores are f32 sums of `n`
/// non-negative products, each within a factor `1 ± n·2^-24` (to first order) of its real value; the bound
/// allows `8·n·2^-24`, over three times that. It is computed in f64, so it cannot overflow; a bound above
/// `f32::MAX` means that the exact f32 score may overflow to infinity, so it reaches any threshold. For the
/// usual document of at most [`SHORT_DOC`] entries one comparison against a precomputed cut decides.
#[derive(Clone, Copy)]
struct ExactBound {
    /// `2^-133` times the query's L1 norm, rounded up.
    tiny: f64,
    /// A truncated score below this cannot reach the threshold it was computed for (documents of at most
    /// [`SHORT_DOC`] entries).
    cut: f32,
    /// The threshold `cut` was computed for.
    theta: f32,
}

/// Documents with at most this many entries share one bound factor, `1 + 2^-7 + 8·SHORT_DOC·2^-24`.
const SHORT_DOC: usize = 4096;

impl ExactBound {
    fn new(q: &Query<'_>) -> Self {
        let l1: f64 = q.vals.iter().map(|&v| f64::from(v.max(0.0))).sum();
        Self { tiny: l1 * 2f64.powi(-133) * (1.0 + 1e-9), cut: f32::NEG_INFINITY, theta: f32::NEG_INFINITY }
    }

    /// The bound's factor for a document of `n` entries.
    #[inline]
    fn factor(n: usize) -> f64 {
        1.0 + 2f64.powi(-7) + 8.0 * n as f64 * 2f64.powi(-24)
    }

    /// Recompute the cut when the threshold changed.
    #[inline]
    fn set_theta(&mut self, theta: f32) {
        if theta.to_bits() != self.theta.to_bits() {
            self.theta = theta;
            // Shrunk by 1e-6 so that rounding to f32 cannot move it up.
            let reach = (f64::from(theta) - self.tiny).min(f64::from(f32::MAX));
            let c = reach / Self::factor(SHORT_DOC) * (1.0 - 1e-6);
            self.cut = if c.is_nan() { f32::NEG_INFINITY } else { c as f32 };
        }
    }

    /// Whether a document with `n` entries and truncated score `approx` may score at least the threshold of the
    /// last [`ExactBound::set_theta`] exactly.
    #[inline]
    fn may_reach(&self, approx: f32, n: usize) -> bool {
        if n <= SHORT_DOC {
            return approx >= self.cut;
        }
        self.may_reach_theta(approx, n, self.theta)
    }

    /// Whether a document with `n` entries and truncated score `approx` may score at least `theta` exactly.
    fn may_reach_theta(&self, approx: f32, n: usize, theta: f32) -> bool {
        // Past 2^20 entries the first-order rounding bound above no longer holds: always score exactly.
        let b = f64::from(approx) * Self::factor(n) + self.tiny;
        n >= 1 << 20 || b >= f64::from(theta) || b > f64::from(f32::MAX)
    }
}

/// Exact score by merging sorted query and document terms (for dims too large for a dense query array).
fn merge_score(q: &Query<'_>, terms: &[u32], hi: &[u16], lo: &[u16]) -> f32 {
    let (mut i, mut j, mut s) = (0, 0, 0.0f32);
    while i < q.terms.len() && j < terms.len() {
        match q.terms[i].cmp(&terms[j]) {
            Ordering::Less => i += 1,
            Ordering::Greater => j += 1,
            Ordering::Equal => {
                s += q.vals[i] * join_weight(hi[j], lo[j]);
                i += 1;
                j += 1;
            }
        }
    }
    s
}

/// Spread the query into the per-thread dense array (when the dim allows one); returns whether it did.
fn load_dense_query(dim: u64, q: &Query<'_>, scratch: &mut Scratch) -> bool {
    if dim > DENSE_QUERY_MAX_DIM {
        return false;
    }
    // At least 2^16 entries, so that any u16 term id indexes it (see `score_hi`).
    let len = (dim as usize).max(1 << 16);
    scratch.dense_query.ensure_zeroed(len);
    for (&t, &v) in q.terms.iter().zip(q.vals) {
        scratch.dense_query[t as usize] = v;
    }
    true
}

/// Zero the query's entries of the dense array again (cheaper than clearing all `dim` entries).
fn clear_dense_query(q: &Query<'_>, scratch: &mut Scratch) {
    for &t in q.terms {
        scratch.dense_query[t as usize] = 0.0;
    }
}

/// Indices of the query terms used for bounds: the heaviest ones holding `beta` of the mass.
fn bound_terms(q: &Query<'_>, beta: f32) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..q.terms.len()).filter(|&i| q.vals[i] > 0.0).collect();
    if beta >= 1.0 {
        return idx;
    }
    idx.sort_unstable_by(|&a, &b| q.vals[b].total_cmp(&q.vals[a]).then(a.cmp(&b)));
    let total: f64 = idx.iter().map(|&i| f64::from(q.vals[i])).sum();
    let mut cum = 0.0;
    let mut keep = 0;
    for &i in &idx {
        keep += 1;
        cum += f64::from(q.vals[i]);
        if cum >= f64::from(beta) * total {
            break;
        }
    }
    idx.truncate(keep);
    idx
}

/// Top-k search of one query over `segments`.
pub fn search_query(
    segments: &[Arc<Segment>],
    dim: u64,
    q: &Query<'_>,
    params: &SearchParams,
    vis: &Visibility<'_>,
    scratch: &mut Scratch,
) -> Vec<Hit> {
    let mut heap = TopKHeap::new(params.k);
    // Both are only needed by segments searched with block bounds: set up on the first such segment.
    let mut use_dense = None;
    let mut bterms = None;
    let mut bound = ExactBound::new(q);
    for (si, seg) in segments.iter().enumerate() {
        if try_postings(seg, q, params, vis, scratch, &mut heap) {
            continue;
        }
        let dense = *use_dense.get_or_insert_with(|| load_dense_query(dim, q, scratch));
        let bt = bterms.get_or_insert_with(|| bound_terms(q, params.beta));
        search_segment(si as u32, seg, q, bt, params, vis, scratch, dense, &mut bound, &mut heap);
    }
    let dense = if use_dense == Some(true) { Some(&scratch.dense_query[..]) } else { None };
    let (hits, n_rescored) = heap.finish(&bound, |si, p| {
        let seg = &segments[si as usize];
        let s = score_exact(&seg.fwd_view(), p as usize, q, dense);
        Some(Hit { score: s, id: vis.ext_ids[seg.doc_ids[p as usize] as usize] })
    });
    scratch.stats.docs_rescored += n_rescored;
    if use_dense == Some(true) {
        clear_dense_query(q, scratch);
    }
    hits
}

/// Add the bound terms' block bounds into `bounds` (all zero on entry). Returns whether a dense term ran (then
/// every block is a candidate); otherwise `touched` lists the blocks given a bound.
fn fill_bounds(seg: &Segment, q: &Query<'_>, bterms: &[usize], bounds: &mut [f32], touched: &mut Vec<u32>) -> bool {
    touched.clear();
    // Look every term up first and ask for its listed blocks' memory: the lists are short and scattered, so
    // fetched one after another each would wait on memory at its start; requested together the waits overlap,
    // and the dense terms, added first, hide them.
    let found: Vec<(f32, TermBlocks<'_>)> =
        bterms.iter().filter_map(|&i| seg.term_blocks(q.terms[i]).map(|(scale, tb)| (q.vals[i] * scale, tb))).collect();
    for (_, tb) in &found {
        tb.prefetch();
    }
    // Dense terms first: once one has run every block is a candidate, and the listed terms that follow skip
    // the touched-block bookkeeping.
    let mut all_blocks = false;
    let (mut scales, mut rows) = ([0f32; 4], [&[][..]; 4]);
    let mut n = 0;
    for (s, tb) in &found {
        if let TermBlocks::Dense(codes) = tb {
            all_blocks = true;
            (scales[n], rows[n]) = (*s, *codes);
            n += 1;
            if n == 4 {
                kernels::add_scaled_codes(bounds, &scales, &rows);
                n = 0;
            }
        }
    }
    if n > 0 {
        kernels::add_scaled_codes(bounds, &scales[..n], &rows[..n]);
    }
    for (s, tb) in &found {
        match tb {
            TermBlocks::Sparse16(bl, codes) => add_listed(bl, codes, *s, all_blocks, bounds, touched),
            TermBlocks::Sparse32(bl, codes) => add_listed(bl, codes, *s, all_blocks, bounds, touched),
            TermBlocks::Dense(_) => {}
        }
    }
    all_blocks
}

/// Add one listed term's bounds (`s` times its codes) into `bounds`, recording newly touched blocks unless
/// every block is a candidate anyway.
#[inline]
fn add_listed<B: Copy + Into<u32>>(
    bl: &[B],
    codes: &[u8],
    s: f32,
    all_blocks: bool,
    bounds: &mut [f32],
    touched: &mut Vec<u32>,
) {
    if all_blocks {
        for (&b, &c) in bl.iter().zip(codes) {
            if let Some(u) = bounds.get_mut(b.into() as usize) {
                *u += s * f32::from(c);
            }
        }
    } else {
        for (&b, &c) in bl.iter().zip(codes) {
            let b = b.into();
            if let Some(u) = bounds.get_mut(b as usize) {
                if *u == 0.0 {
                    touched.push(b);
                }
                *u += s * f32::from(c);
            }
        }
    }
}

/// Blocks per chunk of [`chunk_maxima`].
const CHUNK: usize = 64;

/// Set `chunk_max` to the largest bound of each chunk of [`CHUNK`] blocks; returns the number of positive
/// bounds. Branch-free over eight lanes, so it vectorizes: one pass over the bounds instead of a branchy one.
fn chunk_maxima(bounds: &[f32], chunk_max: &mut Vec<f32>) -> u64 {
    chunk_max.clear();
    let mut n_pos = 0u64;
    for ch in bounds.chunks(CHUNK) {
        let mut m = [0f32; 8];
        let mut n = [0u32; 8];
        let eights = ch.chunks_exact(8);
        for &u in eights.remainder() {
            m[0] = if u > m[0] { u } else { m[0] };
            n[0] += u32::from(u > 0.0);
        }
        for e in eights {
            for l in 0..8 {
                m[l] = if e[l] > m[l] { e[l] } else { m[l] };
                n[l] += u32::from(e[l] > 0.0);
            }
        }
        chunk_max.push(m.iter().fold(0f32, |a, &b| if b > a { b } else { a }));
        n_pos += n.iter().map(|&x| u64::from(x)).sum::<u64>();
    }
    n_pos
}

/// The `k`-th largest positive value of `v` (`0` when there are at most `k`), using `sel` as scratch.
fn kth_largest(v: &[f32], k: usize, sel: &mut Vec<f32>) -> f32 {
    sel.clear();
    sel.extend(v.iter().copied().filter(|&x| x > 0.0));
    if k == 0 || sel.len() <= k {
        return 0.0;
    }
    let (_, kth, _) = sel.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth
}

/// The best positive bounds `(bound, block)` into `top`, best first (an equal bound keeps the smaller block
/// first); returns how many. Only chunks whose maximum reaches `floor` are scanned: `floor` must not exceed the
/// `top.len()`-th largest bound (0 scans every chunk).
fn best_blocks(bounds: &[f32], chunk_max: &[f32], floor: f32, top: &mut [(f32, u32)]) -> usize {
    let cap = top.len();
    let mut n_top = 0;
    for (c, &m) in chunk_max.iter().enumerate() {
        if m <= 0.0 || m < floor {
            continue;
        }
        let lo = c * CHUNK;
        for (j, &u) in bounds[lo..(lo + CHUNK).min(bounds.len())].iter().enumerate() {
            if u > 0.0 && (n_top < cap || u > top[n_top - 1].0) {
                // Sorted insertion.
                let mut i = if n_top < cap { n_top } else { cap - 1 };
                n_top = (n_top + 1).min(cap);
                while i > 0 && top[i - 1].0 < u {
                    top[i] = top[i - 1];
                    i -= 1;
                }
                top[i] = (u, (lo + j) as u32);
            }
        }
    }
    n_top
}

/// Score the visible document at position `p` (global id `gid`) of segment `si` and offer it to the heap. With a
/// dense query it is scored from the upper weight halves: a document that may reach the threshold is kept for
/// exact scoring at the end, and its truncated score (a lower bound) enters the heap when it can. Otherwise it
/// is scored exactly. The external id is a random read (positions are reordered): it is only fetched for a hit
/// that can enter the heap (`>=`: a tie with the k-th score may still enter by a smaller id).
#[inline]
fn offer_doc(
    si: u32,
    p: usize,
    gid: u32,
    fwd: &FwdView<'_>,
    q: &Query<'_>,
    dense: Option<&[f32]>,
    vis: &Visibility<'_>,
    bound: &mut ExactBound,
    heap: &mut TopKHeap,
) {
    if let Some(d) = dense {
        let (approx, n) = score_hi(fwd, p, d);
        bound.set_theta(heap.threshold());
        if bound.may_reach(approx, n) {
            let hit = heap.approx_enters(approx).then(|| Hit { score: approx, id: vis.ext_ids[gid as usize] });
            heap.push_approx(Pending { approx, n: n as u32, seg: si, pos: p as u32 }, hit);
        }
        return;
    }
    let s = score_exact(fwd, p, q, dense);
    if s > 0.0 && s >= heap.threshold() {
        heap.push(Hit { score: s, id: vis.ext_ids[gid as usize] });
    }
}

/// Block-max search of one segment (the driver first offers the segment to [`try_postings`]).
fn search_segment(
    si: u32,
    seg: &Segment,
    q: &Query<'_>,
    bterms: &[usize],
    params: &SearchParams,
    vis: &Visibility<'_>,
    scratch: &mut Scratch,
    use_dense: bool,
    exact_bound: &mut ExactBound,
    heap: &mut TopKHeap,
) {
    let nb = seg.n_blocks();
    scratch.bounds.ensure_zeroed(nb);
    let Scratch { dense_query, bounds, touched, cand, chunk_max, sel, stats, .. } = scratch;
    let bounds = &mut bounds[..nb];
    let all_blocks = fill_bounds(seg, q, bterms, bounds, touched);
    let dense = if use_dense { Some(&dense_query[..]) } else { None };
    let slack = params.alpha * (1.0 + BOUND_SLACK);
    let fwd = seg.fwd_view();
    let bs = seg.block_size;
    // `next`: the block likely visited after this one, whose documents are prefetched one per scored document.
    let mut visit = |b: u32, next: Option<&(f32, u32)>, heap: &mut TopKHeap| {
        let start = b as usize * bs;
        let end = (start + bs).min(fwd.doc_ids.len());
        let ahead = next.map(|&(_, nb)| nb as usize * bs);
        stats.blocks_visited += 1;
        stats.docs_scored += (end - start) as u64;
        for p in start..end {
            if let Some(a) = ahead {
                fwd.prefetch_doc(a + (p - start));
            }
            let gid = fwd.doc_ids[p];
            if !vis.visible(gid) {
                continue;
            }
            offer_doc(si, p, gid, &fwd, q, dense, vis, exact_bound, heap);
        }
    };
    // Visit blocks best bound first without sorting them all: the best few, then (once the heap has a
    // threshold) only those that can still beat it, in order.
    let desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    cand.clear();
    if all_blocks {
        // Every block may have a bound. One vectorizable pass takes the maximum of each chunk of blocks; the
        // branchy scans then only look at chunks that can matter: those that can hold one of the best few blocks
        // (visited first), then those that can still beat the heap.
        let n_pos = chunk_maxima(bounds, chunk_max);
        stats.blocks_bounded += n_pos;
        // The FIRST_ROUND-th largest chunk maximum is a lower bound on the FIRST_ROUND-th largest block bound (the
        // chunk maxima are bounds of distinct blocks), so the best blocks all lie in chunks reaching it.
        let floor = kth_largest(chunk_max, FIRST_ROUND, sel);
        let mut top = [(0f32, 0u32); FIRST_ROUND];
        let n_top = best_blocks(bounds, chunk_max, floor, &mut top);
        for &(_, b) in &top[..n_top] {
            bounds[b as usize] = 0.0;
        }
        for (i, &(ub, b)) in top[..n_top].iter().enumerate() {
            if ub * slack < heap.threshold() {
                bounds.fill(0.0);
                return;
            }
            visit(b, top[..n_top].get(i + 1), heap);
        }
        let theta = heap.threshold();
        for (c, &m) in chunk_max.iter().enumerate() {
            if m > 0.0 && m * slack >= theta {
                let lo = c * CHUNK;
                for (j, &u) in bounds[lo..(lo + CHUNK).min(nb)].iter().enumerate() {
                    if u > 0.0 && u * slack >= theta {
                        cand.push((u, (lo + j) as u32));
                    }
                }
            }
        }
        bounds.fill(0.0);
    } else {
        cand.extend(touched.iter().map(|&b| (bounds[b as usize], b)));
        for &b in touched.iter() {
            bounds[b as usize] = 0.0;
        }
        stats.blocks_bounded += cand.len() as u64;
        let first = FIRST_ROUND.min(cand.len());
        if first > 0 && first < cand.len() {
            cand.select_nth_unstable_by(first - 1, desc);
        }
        cand[..first].sort_unstable_by(desc);
        for (i, &(ub, b)) in cand[..first].iter().enumerate() {
            if ub * slack < heap.threshold() {
                return;
            }
            visit(b, cand[..first].get(i + 1), heap);
        }
        let theta = heap.threshold();
        let mut i = 0;
        cand.retain(|&(ub, _)| {
            i += 1;
            i > first && ub * slack >= theta
        });
    }
    cand.sort_unstable_by(desc);
    // Stagnation stop (approximate searches with `patience`): blocks visited in a row without a new entry.
    let patience = params.patience_blocks(nb);
    let mut idle = 0;
    for (i, &(ub, b)) in cand.iter().enumerate() {
        if ub * slack < heap.threshold() || idle >= patience {
            return;
        }
        let before = heap.entered;
        visit(b, cand.get(i + 1), heap);
        idle = if heap.entered == before { idle + 1 } else { 0 };
    }
}

/// Search `seg` term at a time if it has postings and the search is exact, or approximate with few enough
/// postings that term at a time is also the faster way (the results then exceed any recall target). Returns
/// whether it did.
fn try_postings(
    seg: &Segment,
    q: &Query<'_>,
    params: &SearchParams,
    vis: &Visibility<'_>,
    scratch: &mut Scratch,
    heap: &mut TopKHeap,
) -> bool {
    let Some(post) = &seg.postings else {
        return false;
    };
    scratch.term_rows.clear();
    let mut work = 0u64;
    for (&t, &qv) in q.terms.iter().zip(q.vals) {
        if let Some(i) = seg.term_index(t).filter(|_| qv > 0.0) {
            work += post.ptr[i + 1] - post.ptr[i];
            scratch.term_rows.push((i, qv));
        }
    }
    if !params.is_exact() && work > TAAT_APPROX_MAX_POSTINGS {
        return false;
    }
    search_postings(seg, post, vis, scratch, heap);
    true
}

/// Exact search of a small segment term at a time: the query terms' postings are accumulated into one score
/// per document position, then every positive score that can enter the heap is offered.
/// `scratch.term_rows` holds the query's terms present in the segment (term index, query weight).
fn search_postings(seg: &Segment, post: &Postings, vis: &Visibility<'_>, scratch: &mut Scratch, heap: &mut TopKHeap) {
    let n = seg.n_docs();
    let Scratch { acc, chunk_max, term_rows, stats, .. } = scratch;
    acc.clear();
    acc.resize(n, 0.0);
    for &(i, qv) in term_rows.iter() {
        let (pos, vals) = post.term(i);
        for (&p, &v) in pos.iter().zip(vals) {
            acc[p as usize] += qv * v;
        }
    }
    // In `explain`'s terms: every block is bounded and visited at once; the documents scored are those the
    // query's postings reached (the positive scores).
    let nb = seg.n_blocks() as u64;
    stats.blocks_bounded += nb;
    stats.blocks_visited += nb;
    stats.docs_scored += chunk_maxima(acc, chunk_max);
    // Only chunks whose maximum can enter the heap are scanned (the threshold never falls, so a skipped chunk
    // holds nothing the plain scan would have offered).
    let mut theta = heap.threshold();
    for (c, &m) in chunk_max.iter().enumerate() {
        // `>=`: a document tying the k-th score may still enter by a smaller id.
        if m <= 0.0 || m < theta {
            continue;
        }
        let lo = c * CHUNK;
        for (j, &s) in acc[lo..(lo + CHUNK).min(n)].iter().enumerate() {
            if s > 0.0 && s >= theta {
                let gid = seg.doc_ids[lo + j];
                if vis.visible(gid) {
                    heap.push(Hit { score: s, id: vis.ext_ids[gid as usize] });
                    theta = heap.threshold();
                }
            }
        }
    }
}

/// Exact top-k over an explicit list of candidate documents `(segment, position)` (selective filters).
pub fn search_candidates(
    segments: &[Arc<Segment>],
    dim: u64,
    q: &Query<'_>,
    k: usize,
    cands: &[(u32, u32)],
    vis: &Visibility<'_>,
    scratch: &mut Scratch,
) -> Vec<Hit> {
    let mut heap = TopKHeap::new(k);
    let use_dense = load_dense_query(dim, q, scratch);
    let dense = if use_dense { Some(&scratch.dense_query[..]) } else { None };
    for &(si, p) in cands {
        let seg = &segments[si as usize];
        let gid = seg.doc_ids[p as usize];
        if !vis.visible(gid) {
            continue;
        }
        scratch.stats.docs_scored += 1;
        let s = score_exact(&seg.fwd_view(), p as usize, q, dense);
        if s > 0.0 && s >= heap.threshold() {
            heap.push(Hit { score: s, id: vis.ext_ids[gid as usize] });
        }
    }
    if use_dense {
        clear_dense_query(q, scratch);
    }
    heap.into_sorted()
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // maxima and selected values are elements of the input
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bounds_strategy() -> impl Strategy<Value = Vec<f32>> {
        // Few distinct values, so ties between blocks are common; many zeros (blocks without a bound).
        proptest::collection::vec(prop_oneof![Just(0.0f32), (1u8..6).prop_map(|x| f32::from(x) * 0.5)], 0..400)
    }

    /// Non-negative finite f32 weights over the whole range (subnormals and values whose products overflow
    /// included), and weights whose upper halves tie while their lower halves differ.
    fn weight() -> impl Strategy<Value = f32> {
        prop_oneof![
            (0u32..0x7F80_0000).prop_map(f32::from_bits),
            (1u32..7, 0u32..1 << 16).prop_map(|(m, lo)| f32::from_bits((m as f32 * 0.5).to_bits() | lo)),
            Just(0.0f32),
        ]
    }

    /// A score whose exact sum overflows to infinity while its truncated sum stays finite still reaches an
    /// infinite threshold (a tie at infinity is decided by the id).
    #[test]
    fn exact_bound_lets_overflowing_scores_through() {
        let half_max = f32::from_bits(0x7EFF_FFFF);
        let (terms, hi, lo) = ([0u16, 1], [0x7EFFu16; 2], [0xFFFFu16; 2]);
        let mut d = vec![0f32; 1 << 16];
        d[..2].fill(1.001);
        let approx = kernels::gather_dot(&d, &terms, &hi, None);
        let exact = kernels::gather_dot(&d, &terms, &hi, Some(&lo));
        assert!(approx.is_finite() && exact == f32::INFINITY && 1.001 * half_max < f32::MAX);
        let (qt, qv) = ([0u32, 1], [1.001f32; 2]);
        let mut b = ExactBound::new(&Query { terms: &qt, vals: &qv });
        b.set_theta(f32::INFINITY);
        assert!(b.may_reach(approx, 2));
        assert!(b.may_reach_theta(approx, SHORT_DOC + 1, f32::INFINITY));
    }

    proptest! {
        /// The truncated score never exceeds the exact one, and the bound never falls below it (whatever the
        /// threshold's history), for short documents (the precomputed cut) and long ones.
        #[test]
        fn exact_bound_holds(
            entries in proptest::collection::vec((0u16..64, weight()), 0..300),
            qv in proptest::collection::vec(prop_oneof![(0u32..0x7F80_0000).prop_map(f32::from_bits), 0.0f32..4.0], 64),
            long: bool,
            theta0 in prop_oneof![Just(f32::NEG_INFINITY), 0.0f32..1e3, Just(f32::INFINITY)],
        ) {
            let mut entries = entries;
            entries.sort_by_key(|e| e.0);
            entries.dedup_by_key(|e| e.0);
            let terms: Vec<u16> = entries.iter().map(|e| e.0).collect();
            let w: Vec<f32> = entries.iter().map(|e| e.1).collect();
            let hi: Vec<u16> = w.iter().map(|x| (x.to_bits() >> 16) as u16).collect();
            let lo: Vec<u16> = w.iter().map(|x| x.to_bits() as u16).collect();
            let mut d = vec![0f32; 1 << 16];
            d[..64].copy_from_slice(&qv);
            let qt: Vec<u32> = (0..64).collect();
            let q = Query { terms: &qt, vals: &qv };
            // The path u16 ids take (AVX-512 where the CPU has it), the generic loops for wider ids, and the
            // generic loops' fallback for a query array too short for every u16 id.
            let wide: Vec<u32> = terms.iter().map(|&t| u32::from(t)).collect();
            let pairs = [
                (dot_u16(&d, &terms, &hi, None), dot_u16(&d, &terms, &hi, Some(&lo))),
                (kernels::gather_dot(&d, &wide, &hi, None), kernels::gather_dot(&d, &wide, &hi, Some(&lo))),
                (dot_u16(&d[..64], &terms, &hi, None), dot_u16(&d[..64], &terms, &hi, Some(&lo))),
            ];
            // A long document takes the general path; the bound must not depend on it.
            let n = if long { SHORT_DOC + 1 + terms.len() } else { terms.len() };
            for (approx, exact) in pairs {
                prop_assert!(approx <= exact, "approx {} exact {}", approx, exact);
                let mut b = ExactBound::new(&q);
                b.set_theta(theta0);
                b.set_theta(exact);
                prop_assert!(b.may_reach(approx, n), "approx {} exact {} n {}", approx, exact, n);
                prop_assert!(b.may_reach_theta(approx, n, exact));
            }
        }

        #[test]
        fn chunk_scans_match_plain_loops(bounds in bounds_strategy(), k in 1usize..20) {
            let mut cm = Vec::new();
            let n_pos = chunk_maxima(&bounds, &mut cm);
            prop_assert_eq!(n_pos, bounds.iter().filter(|&&u| u > 0.0).count() as u64);
            let want: Vec<f32> = bounds.chunks(CHUNK).map(|c| c.iter().fold(0f32, |a, &b| a.max(b))).collect();
            prop_assert_eq!(&cm, &want);
            let mut pos: Vec<f32> = cm.iter().copied().filter(|&x| x > 0.0).collect();
            pos.sort_by(|a, b| b.total_cmp(a));
            let kth = kth_largest(&cm, k, &mut Vec::new());
            prop_assert_eq!(kth, if pos.len() <= k { 0.0 } else { pos[k - 1] });
            // The best blocks from the chunks reaching the floor are the best blocks overall, ties by block id.
            let mut all: Vec<(f32, u32)> =
                bounds.iter().enumerate().filter(|(_, &u)| u > 0.0).map(|(b, &u)| (u, b as u32)).collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            all.truncate(k);
            let mut top = vec![(0f32, 0u32); k];
            let n = best_blocks(&bounds, &cm, kth, &mut top);
            prop_assert_eq!(&top[..n], &all[..]);
        }
    }
}
