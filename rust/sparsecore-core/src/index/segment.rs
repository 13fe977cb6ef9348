//! An immutable index segment: a forward index of its documents laid out in blocks of consecutive positions,
//! and, per term, the blocks in which it occurs with a quantized upper bound of its weight there.
//!
//! Block-max pruning (after Mallia, Suel & Tonellotto, SIGIR 2024): a query's upper bound on any document of
//! block `b` is `sum_t q_t * max_{d in b} w_{d,t}`; blocks are visited best bound first and the search stops
//! once the bound cannot beat the current k-th score. Codes are rounded up, so the bound is safe.

use rayon::prelude::*;

use super::storage::Buf;
use crate::kernels;
use crate::sparse::{take_rows, CsrView};
use crate::SparseError;

/// Largest block-max code (u8 quantization of per-term block maxima).
const CODE_MAX: f64 = 255.0;

/// One immutable segment.
#[derive(Debug, Clone, Default)]
pub struct Segment {
    /// Documents per block.
    pub block_size: usize,
    /// Position in this segment's layout -> global internal document id.
    pub doc_ids: Buf<u32>,
    /// Forward index: offsets (`n_docs + 1`), term ids and weights of every document, in layout order.
    pub fwd_ptr: Buf<u64>,
    /// Term ids of the forward index when `dim > 65536` (else empty).
    pub fwd_terms: Buf<u32>,
    /// Term ids of the forward index as u16 when `dim <= 65536` (else empty): 6 instead of 8 bytes per entry,
    /// which matters because scoring streams the forward index from memory.
    pub fwd_terms16: Buf<u16>,
    /// Upper 16 bits of each forward-index weight's f32 (a bfloat16, truncated: never above the weight). Scoring
    /// reads these; see [`join_weight`].
    pub fwd_hi: Buf<u16>,
    /// Lower 16 bits of each weight's f32, read only to score exactly the documents whose truncated score can
    /// reach the top k. Same 4 bytes per weight as an f32 array, but a scored document streams 4 instead of 6
    /// bytes per entry from memory.
    pub fwd_lo: Buf<u16>,
    /// Distinct terms of the segment, sorted.
    pub terms: Buf<u32>,
    /// Offsets into `bm_blocks` / `bm_codes` per entry of `terms` (`terms.len() + 1`).
    pub term_ptr: Buf<u64>,
    /// Per term: the weight of one code step (`max weight of the term / 255`, rounded up).
    pub term_scale: Buf<f32>,
    /// Blocks in which each term occurs, increasing within a term, when the segment has more than 65,536
    /// blocks (else empty).
    pub bm_blocks: Buf<u32>,
    /// The same as u16 when the segment has at most 65,536 blocks (else empty): 3 instead of 5 bytes per listed
    /// block with its code.
    pub bm_blocks16: Buf<u16>,
    /// Quantized (rounded up) maximum weight of the term in that block, 1..=255.
    pub bm_codes: Buf<u8>,
    /// Per term: its row in `dense_codes` if the term is stored densely, else `u32::MAX`.
    pub term_dense: Buf<u32>,
    /// Dense codes (0 = absent) of frequent terms, one row of `n_blocks` bytes per such term.
    pub dense_codes: Buf<u8>,
    /// Term-major postings of small segments (see [`POSTINGS_MAX_DOCS`]); in memory only, rebuilt on load.
    pub postings: Option<Postings>,
    /// Term id -> index in `terms` (`u32::MAX` where absent), when the largest term id is below
    /// [`LOOKUP_MAX_TERM`] (else empty: binary search); in memory only, rebuilt on load.
    pub term_lookup: Vec<u32>,
}

/// Segments whose term ids are all below this keep a direct term lookup table (at most 4 MiB): a query looks up
/// each of its terms, and a binary search over ~30k terms waited on memory at its first steps.
pub const LOOKUP_MAX_TERM: u32 = 1 << 20;

/// Segments with at most this many documents also keep term-major postings, for exact search term at a time:
/// on small collections block bounds are too coarse to prune (measured on 11.6k real SPLADE passages: exact
/// block-max search 0.28 ms/query, slower than scipy's 0.44 ms brute force only by a factor of 1.6), while
/// accumulating the query terms' postings into a per-document array touches ~50k postings (~0.06 ms). Positions
/// then fit in a u16, so postings cost 6 bytes per stored weight.
pub const POSTINGS_MAX_DOCS: usize = 1 << 16;

/// Term-major postings of a segment, aligned with [`Segment::terms`]: positions (increasing) and weights.
#[derive(Debug, Clone, Default)]
pub struct Postings {
    /// Offsets per entry of `terms` (`terms.len() + 1`).
    pub ptr: Vec<u64>,
    /// Layout positions of the documents holding the term.
    pub pos: Vec<u16>,
    /// The term's weight in each of them.
    pub vals: Vec<f32>,
}

impl Postings {
    /// Positions and weights of the `i`-th term of the segment.
    #[inline]
    pub fn term(&self, i: usize) -> (&[u16], &[f32]) {
        let rg = self.ptr[i] as usize..self.ptr[i + 1] as usize;
        (&self.pos[rg.clone()], &self.vals[rg])
    }

    fn nbytes(&self) -> usize {
        self.ptr.len() * 8 + self.pos.len() * 2 + self.vals.len() * 4
    }
}

/// A term occurring in at least `1 / DENSE_DIVISOR` of the blocks is stored as one byte per block (cheaper
/// than 5 bytes per listed block from a fifth of the blocks on, and its bound pass vectorizes).
const DENSE_DIVISOR: u64 = 5;

/// The forward index as plain slices, taken once per search so hot loops skip the storage indirection.
#[derive(Clone, Copy)]
pub struct FwdView<'a> {
    /// Position -> global internal id.
    pub doc_ids: &'a [u32],
    /// Offsets.
    pub ptr: &'a [u64],
    /// u16 term ids (empty unless `dim <= 65536`).
    pub terms16: &'a [u16],
    /// u32 term ids (empty when `terms16` is used).
    pub terms32: &'a [u32],
    /// Upper halves of the weights.
    pub hi: &'a [u16],
    /// Lower halves of the weights.
    pub lo: &'a [u16],
}

/// The f32 whose upper and lower 16 bits are `hi` and `lo`.
#[inline]
pub fn join_weight(hi: u16, lo: u16) -> f32 {
    f32::from_bits((u32::from(hi) << 16) | u32::from(lo))
}

/// Upper and lower 16 bits of the f32 bits of each weight.
fn split_weights(w: &[f32]) -> (Vec<u16>, Vec<u16>) {
    w.iter().map(|x| ((x.to_bits() >> 16) as u16, x.to_bits() as u16)).unzip()
}

impl<'a> FwdView<'a> {
    /// Term ids and the upper and lower halves of the weights of the document at position `p`.
    #[inline]
    pub fn doc(&self, p: usize) -> (DocTerms<'a>, &'a [u16], &'a [u16]) {
        let rg = self.ptr[p] as usize..self.ptr[p + 1] as usize;
        let terms = if self.terms16.is_empty() {
            DocTerms::U32(&self.terms32[rg.clone()])
        } else {
            DocTerms::U16(&self.terms16[rg.clone()])
        };
        (terms, &self.hi[rg.clone()], &self.lo[rg])
    }

    /// Ask the caches for the forward-index entries (term ids and upper weight halves, what scoring reads) of the
    /// document at position `p`
    /// (nothing when out of range). Searches call it, document by document, for the block they visit next: the
    /// hardware prefetchers stop at 4 KiB pages, so each page of a new block would otherwise start with a wait
    /// on memory (scoring from memory: ~0.9 against ~1.05 ns per entry in a scratch benchmark).
    #[inline]
    pub fn prefetch_doc(&self, p: usize) {
        let (Some(&a), Some(&b)) = (self.ptr.get(p), p.checked_add(1).and_then(|q| self.ptr.get(q))) else {
            return;
        };
        let (a, b) = (a as usize, b as usize);
        kernels::prefetch_range(self.hi, a, b);
        if self.terms16.is_empty() {
            kernels::prefetch_range(self.terms32, a, b);
        } else {
            kernels::prefetch_range(self.terms16, a, b);
        }
    }
}

/// A document's term ids in the forward index's width.
pub enum DocTerms<'a> {
    /// `dim <= 65536`.
    U16(&'a [u16]),
    /// Wider dims.
    U32(&'a [u32]),
}

/// Where a term's block bounds live.
pub enum TermBlocks<'a> {
    /// Listed blocks (u16 ids) and their codes.
    Sparse16(&'a [u16], &'a [u8]),
    /// Listed blocks (u32 ids) and their codes.
    Sparse32(&'a [u32], &'a [u8]),
    /// One code per block (0 where absent).
    Dense(&'a [u8]),
}

impl TermBlocks<'_> {
    /// Ask the caches for a listed term's block ids and codes (dense rows are streamed, so nothing for them).
    #[inline]
    pub fn prefetch(&self) {
        fn listed<B>(bl: &[B], codes: &[u8]) {
            kernels::prefetch_range(bl, 0, bl.len());
            kernels::prefetch_range(codes, 0, codes.len());
        }
        match self {
            TermBlocks::Sparse16(bl, codes) => listed(bl, codes),
            TermBlocks::Sparse32(bl, codes) => listed(bl, codes),
            TermBlocks::Dense(_) => {}
        }
    }
}

impl Segment {
    /// Number of documents.
    pub fn n_docs(&self) -> usize {
        self.doc_ids.len()
    }

    /// Number of blocks.
    pub fn n_blocks(&self) -> usize {
        self.n_docs().div_ceil(self.block_size.max(1))
    }

    /// Bytes held by each component.
    pub fn memory_usage(&self) -> [(&'static str, usize); 4] {
        [
            (
                "forward_index",
                self.fwd_ptr.nbytes()
                    + self.fwd_terms.nbytes()
                    + self.fwd_terms16.nbytes()
                    + self.fwd_hi.nbytes()
                    + self.fwd_lo.nbytes(),
            ),
            (
                "block_max",
                self.terms.nbytes()
                    + self.term_ptr.nbytes()
                    + self.term_scale.nbytes()
                    + self.bm_blocks.nbytes()
                    + self.bm_blocks16.nbytes()
                    + self.bm_codes.nbytes()
                    + self.term_dense.nbytes()
                    + self.dense_codes.nbytes()
                    + self.term_lookup.len() * 4,
            ),
            ("doc_ids", self.doc_ids.nbytes()),
            ("postings", self.postings.as_ref().map_or(0, Postings::nbytes)),
        ]
    }

    /// Build the term-major postings when the segment is small enough (else drop them). Call after the
    /// forward index and `terms` are final (and, for loaded segments, validated), and after
    /// [`Segment::build_lookup`], whose table it uses.
    pub fn build_postings(&mut self) {
        let n = self.n_docs();
        if n == 0 || n > POSTINGS_MAX_DOCS {
            self.postings = None;
            return;
        }
        let this = &*self;
        let fwd = this.fwd_view();
        let index_of = |t: u32| this.term_index(t);
        let n_terms = this.terms.len();
        let mut ptr = vec![0u64; n_terms + 1];
        let visit = |f: &mut dyn FnMut(usize, usize, f32)| {
            for p in 0..n {
                let (dt, hi, lo) = fwd.doc(p);
                let weights = hi.iter().zip(lo).map(|(&h, &l)| join_weight(h, l));
                match dt {
                    DocTerms::U16(ts) => {
                        for (&t, w) in ts.iter().zip(weights) {
                            if let Some(i) = index_of(u32::from(t)).filter(|_| w > 0.0) {
                                f(i, p, w);
                            }
                        }
                    }
                    DocTerms::U32(ts) => {
                        for (&t, w) in ts.iter().zip(weights) {
                            if let Some(i) = index_of(t).filter(|_| w > 0.0) {
                                f(i, p, w);
                            }
                        }
                    }
                }
            }
        };
        visit(&mut |i, _, _| ptr[i + 1] += 1);
        for i in 0..n_terms {
            ptr[i + 1] += ptr[i];
        }
        let total = ptr[n_terms] as usize;
        let (mut pos, mut vals) = (vec![0u16; total], vec![0f32; total]);
        let mut next: Vec<u64> = ptr[..n_terms].to_vec();
        visit(&mut |i, p, w| {
            let at = next[i] as usize;
            pos[at] = p as u16;
            vals[at] = w;
            next[i] += 1;
        });
        self.postings = Some(Postings { ptr, pos, vals });
    }

    /// Check the invariants searching relies on (for loaded files): consistent lengths, monotone offsets,
    /// sorted in-range term ids, finite non-negative weights, in-range blocks and document ids. Without
    /// `deep` only the lengths and offsets (work proportional to documents and terms, not to non-zeros).
    pub fn validate(&self, dim: u64, n_ext: usize, deep: bool) -> Result<(), String> {
        let n = self.doc_ids.len();
        let nnz = self.fwd_hi.len();
        if self.fwd_terms.len() + self.fwd_terms16.len() != nnz
            || (!self.fwd_terms.is_empty() && !self.fwd_terms16.is_empty())
            || (!self.fwd_terms16.is_empty() && dim > 1 << 16)
        {
            return Err("forward index term arrays disagree".into());
        }
        if self.fwd_ptr.len() != n + 1 || self.fwd_lo.len() != nnz || self.fwd_ptr.first() != Some(&0) {
            return Err("forward index lengths disagree".into());
        }
        if self.fwd_ptr.last() != Some(&(nnz as u64)) || self.fwd_ptr.windows(2).any(|w| w[1] < w[0]) {
            return Err("forward index offsets are not monotone".into());
        }
        let fwd = self.fwd_view();
        let docs_ok = !deep
            || (0..n).into_par_iter().all(|p| {
                let (terms, hi, lo) = fwd.doc(p);
                let terms_ok = match terms {
                    DocTerms::U16(t) => sorted_below(t, dim),
                    DocTerms::U32(t) => sorted_below(t, dim),
                };
                terms_ok
                    && hi.iter().zip(lo).all(|(&h, &l)| {
                        let x = join_weight(h, l);
                        x.is_finite() && x >= 0.0
                    })
            });
        if !docs_ok {
            return Err("a document has unsorted or out-of-range terms or invalid weights".into());
        }
        if deep && self.doc_ids.par_iter().any(|&g| g as usize >= n_ext) {
            return Err("a document id is out of range".into());
        }
        let nt = self.terms.len();
        let nbm = self.bm_blocks.len() + self.bm_blocks16.len();
        if (!self.bm_blocks.is_empty() && !self.bm_blocks16.is_empty())
            || self.term_ptr.len() != nt + 1
            || self.term_scale.len() != nt
            || self.bm_codes.len() != nbm
            || self.term_ptr.first() != Some(&0)
            || self.term_ptr.last() != Some(&(nbm as u64))
            || self.term_ptr.windows(2).any(|w| w[1] < w[0])
        {
            return Err("block-max lengths or offsets disagree".into());
        }
        if self.terms.windows(2).any(|w| w[0] >= w[1]) || self.terms.last().is_some_and(|&t| u64::from(t) >= dim) {
            return Err("block-max terms are unsorted or out of range".into());
        }
        if self.term_scale.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err("invalid term scale".into());
        }
        let nb = self.n_blocks() as u32;
        if deep
            && (self.bm_blocks.par_iter().any(|&b| b >= nb) || self.bm_blocks16.par_iter().any(|&b| u32::from(b) >= nb))
        {
            return Err("a block id is out of range".into());
        }
        let n_dense = self.term_dense.iter().filter(|&&d| d != u32::MAX).count();
        if self.term_dense.len() != nt || self.dense_codes.len() != n_dense * self.n_blocks() {
            return Err("dense block-max lengths disagree".into());
        }
        let mut seen = vec![false; n_dense];
        for &d in self.term_dense.iter().filter(|&&d| d != u32::MAX) {
            match seen.get_mut(d as usize) {
                Some(slot) if !*slot => *slot = true,
                _ => return Err("dense block-max rows are out of range or shared".into()),
            }
        }
        Ok(())
    }

    /// Index of term `t` in [`Segment::terms`], if the segment has it.
    #[inline]
    pub fn term_index(&self, t: u32) -> Option<usize> {
        if self.term_lookup.is_empty() {
            self.terms.binary_search(&t).ok()
        } else {
            self.term_lookup.get(t as usize).filter(|&&i| i != u32::MAX).map(|&i| i as usize)
        }
    }

    /// Build the direct term lookup table when the term ids allow one (else drop it). Call after `terms` is
    /// final (and, for loaded segments, validated).
    pub fn build_lookup(&mut self) {
        self.term_lookup = match self.terms.last() {
            Some(&last) if last < LOOKUP_MAX_TERM => {
                let mut table = vec![u32::MAX; last as usize + 1];
                for (i, &t) in self.terms.iter().enumerate() {
                    table[t as usize] = i as u32;
                }
                table
            }
            _ => Vec::new(),
        };
    }

    /// The block bounds of term `t` and its quantization step, if the segment has the term.
    #[inline]
    pub fn term_blocks(&self, t: u32) -> Option<(f32, TermBlocks<'_>)> {
        let i = self.term_index(t)?;
        let d = self.term_dense[i];
        let blocks = if d == u32::MAX {
            let rg = self.term_ptr[i] as usize..self.term_ptr[i + 1] as usize;
            if self.bm_blocks16.is_empty() {
                TermBlocks::Sparse32(&self.bm_blocks[rg.clone()], &self.bm_codes[rg])
            } else {
                TermBlocks::Sparse16(&self.bm_blocks16[rg.clone()], &self.bm_codes[rg])
            }
        } else {
            let nb = self.n_blocks();
            TermBlocks::Dense(&self.dense_codes[d as usize * nb..(d as usize + 1) * nb])
        };
        Some((self.term_scale[i], blocks))
    }

    /// The forward index as plain slices.
    pub fn fwd_view(&self) -> FwdView<'_> {
        FwdView {
            doc_ids: &self.doc_ids,
            ptr: &self.fwd_ptr,
            terms16: &self.fwd_terms16,
            terms32: &self.fwd_terms,
            hi: &self.fwd_hi,
            lo: &self.fwd_lo,
        }
    }

    /// Term ids (as u32) and weights of the document at layout position `p`, appended to `terms` / `vals`.
    pub fn extend_doc(&self, p: usize, terms: &mut Vec<u32>, vals: &mut Vec<f32>) {
        let (t, hi, lo) = self.fwd_view().doc(p);
        match t {
            DocTerms::U16(t) => terms.extend(t.iter().map(|&x| u32::from(x))),
            DocTerms::U32(t) => terms.extend_from_slice(t),
        }
        vals.extend(hi.iter().zip(lo).map(|(&h, &l)| join_weight(h, l)));
    }

    /// Build a segment from `docs` laid out in `order` (`order[position] = row of docs`); row `r` gets global
    /// id `first_id + r`. `docs` must be canonical with finite, non-negative weights (checked by the caller).
    pub fn build(docs: &CsrView<'_>, order: &[u32], first_id: u32, block_size: usize) -> Result<Self, SparseError> {
        if block_size == 0 {
            return Err(SparseError::invalid("block_size", "must be >= 1"));
        }
        let rows: Vec<u64> = order.iter().map(|&r| u64::from(r)).collect();
        let fwd = take_rows(docs, &rows)?;
        let doc_ids: Vec<u32> = order.iter().map(|&r| first_id + r).collect();
        let n = doc_ids.len();
        let n_blocks = n.div_ceil(block_size);
        let view = fwd.view(docs.dim())?;

        let mut per_block = block_maxima(&view, n, block_size);

        // Transpose to term-major. Terms are collected sorted and distinct; every block entry's term is then
        // replaced in place (in parallel) by the term's index, which both passes below use. In place: the block
        // entries are the largest temporary of a build (about 5 bytes per non-zero at 32 documents per block).
        let mut terms: Vec<u32> = per_block.iter().flat_map(|bl| bl.iter().map(|x| x.0)).collect();
        terms.par_sort_unstable();
        terms.dedup();
        per_block.par_iter_mut().for_each(|bl| {
            for e in bl.iter_mut() {
                e.0 = terms.partition_point(|&x| x < e.0) as u32;
            }
        });
        let mut counts = vec![0u64; terms.len() + 1];
        let mut term_max = vec![0f32; terms.len()];
        for bl in &per_block {
            for &(i, v) in bl {
                let i = i as usize;
                counts[i + 1] += 1;
                term_max[i] = term_max[i].max(v);
            }
        }
        let nb64 = n_blocks as u64;
        let mut term_dense = vec![u32::MAX; terms.len()];
        let mut n_dense = 0u32;
        for i in 0..terms.len() {
            if counts[i + 1] * DENSE_DIVISOR >= nb64 && nb64 >= 16 {
                term_dense[i] = n_dense;
                n_dense += 1;
                counts[i + 1] = 0;
            }
        }
        for i in 0..terms.len() {
            counts[i + 1] += counts[i];
        }
        let term_ptr = counts;
        let term_scale: Vec<f32> = term_max.iter().map(|&m| code_scale(m)).collect();
        let total = term_ptr[terms.len()] as usize;
        let mut bm_blocks = vec![0u32; total];
        let mut bm_codes = vec![0u8; total];
        let mut dense_codes = vec![0u8; n_dense as usize * n_blocks];
        let mut fill: Vec<u64> = term_ptr[..terms.len()].to_vec();
        for (b, bl) in per_block.iter().enumerate() {
            for &(i, v) in bl {
                let i = i as usize;
                let code = code_of(v, term_scale[i]);
                if term_dense[i] == u32::MAX {
                    let p = fill[i] as usize;
                    bm_blocks[p] = b as u32;
                    bm_codes[p] = code;
                    fill[i] += 1;
                } else {
                    dense_codes[term_dense[i] as usize * n_blocks + b] = code;
                }
            }
        }
        drop(per_block);
        let narrow = docs.dim() <= 1 << 16;
        let crate::sparse::Csr { indptr, indices, data, .. } = fwd;
        let (fwd_hi, fwd_lo) = split_weights(&data);
        drop(data);
        let fwd_ptr = Buf::huge(indptr.iter().map(|&x| x as u64).collect());
        drop(indptr);
        let (fwd_terms16, fwd_terms) = if narrow {
            (Buf::huge(indices.iter().map(|&t| t as u16).collect()), Buf::default())
        } else {
            (Buf::default(), Buf::huge(indices))
        };
        let (bm_blocks, bm_blocks16) = block_id_width(bm_blocks, n_blocks);
        let mut seg = Self {
            block_size,
            doc_ids: Buf::huge(doc_ids),
            fwd_ptr,
            fwd_terms16,
            fwd_terms,
            fwd_hi: Buf::huge(fwd_hi),
            fwd_lo: Buf::huge(fwd_lo),
            terms: terms.into(),
            term_ptr: term_ptr.into(),
            term_scale: term_scale.into(),
            bm_blocks,
            bm_blocks16,
            bm_codes: Buf::huge(bm_codes),
            term_dense: term_dense.into(),
            dense_codes: Buf::huge(dense_codes),
            postings: None,
            term_lookup: Vec::new(),
        };
        seg.build_lookup();
        seg.build_postings();
        Ok(seg)
    }
}

/// Per block of `block_size` consecutive rows of `view` (`n` rows): its (term, max weight) pairs sorted by
/// term; zero maxima carry no bound and are dropped.
fn block_maxima(view: &CsrView<'_>, n: usize, block_size: usize) -> Vec<Vec<(u32, f32)>> {
    (0..n.div_ceil(block_size))
        .into_par_iter()
        .map(|b| {
            let mut pairs: Vec<(u32, f32)> = Vec::new();
            for p in b * block_size..((b + 1) * block_size).min(n) {
                let (t, v) = view.row(p);
                pairs.extend(t.iter().copied().zip(v.iter().copied()));
            }
            pairs.sort_unstable_by_key(|x| x.0);
            let mut out: Vec<(u32, f32)> = Vec::with_capacity(pairs.len());
            for (t, v) in pairs {
                match out.last_mut() {
                    Some(last) if last.0 == t => last.1 = last.1.max(v),
                    _ => out.push((t, v)),
                }
            }
            out.retain(|x| x.1 > 0.0);
            out
        })
        .collect()
}

/// Listed block ids as u32 or, when the segment has at most 65,536 blocks, as u16 (the other one empty). Like
/// the other large arrays of a segment, kept in memory advised for huge pages ([`Buf::huge`]).
fn block_id_width(ids: Vec<u32>, n_blocks: usize) -> (Buf<u32>, Buf<u16>) {
    if n_blocks <= 1 << 16 {
        (Buf::default(), Buf::huge(ids.iter().map(|&b| b as u16).collect()))
    } else {
        (Buf::huge(ids), Buf::default())
    }
}

/// Whether term ids are strictly increasing and below `dim`.
fn sorted_below<T: Copy + Ord + Into<u64>>(t: &[T], dim: u64) -> bool {
    t.windows(2).all(|w| w[0] < w[1]) && t.last().is_none_or(|&x| x.into() < dim)
}

/// Step of the u8 code of a term whose largest weight is `max`: `code * step >= weight` for every weight up
/// to `max` with `code = ceil(weight / step) <= 255`.
fn code_scale(max: f32) -> f32 {
    let mut s = (f64::from(max) / CODE_MAX) as f32;
    while f64::from(s) * CODE_MAX < f64::from(max) {
        s = f32::from_bits(s.to_bits() + 1);
    }
    s
}

/// Smallest code whose value is at least `v` (at least 1 for a positive weight).
fn code_of(v: f32, step: f32) -> u8 {
    if step <= 0.0 {
        return 1;
    }
    let mut c = (f64::from(v) / f64::from(step)).ceil().clamp(1.0, CODE_MAX);
    while c < CODE_MAX && c * f64::from(step) < f64::from(v) {
        c += 1.0;
    }
    c as u8
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn codes_bound_weights_from_above(max in 1e-6f32..1e6, frac in 0.0f32..=1.0) {
            let s = code_scale(max);
            let v = (max * frac).max(f32::MIN_POSITIVE);
            let c = code_of(v, s);
            prop_assert!(f64::from(c) * f64::from(s) >= f64::from(v));
            prop_assert!(c >= 1);
        }
    }
}
