//! Readout from codes to labels: k nearest stored codes by overlap, through an inverted index.
//!
//! A code is a row of winners (one per module slot, -1 for silent); the overlap of two codes is the number of
//! slots where both have the same winner. Training stores every code in postings lists keyed by
//! (slot, winner), so a query touches only the stored codes it shares a winner with; the `k` stored codes of
//! largest overlap (optionally divided by `sqrt(active_query · active_stored)`, a cosine) vote for their labels
//! with weight `overlap^power`.

use rayon::prelude::*;

use crate::SparseError;

/// Stored codes and labels, indexed by (slot, winner).
#[derive(Debug, Clone, PartialEq)]
pub struct OverlapKnn {
    n_slots: usize,
    n_classes: usize,
    labels: Vec<u32>,
    n_active: Vec<u32>,
    slot_base: Vec<usize>,
    post_ptr: Vec<usize>,
    post: Vec<u32>,
}

/// How a query is scored against stored codes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnnParams {
    /// Neighbours that vote.
    pub k: usize,
    /// Divide overlaps by `sqrt(active_query · active_stored)`.
    pub cosine: bool,
    /// Votes are `score^power`.
    pub power: f64,
}

impl OverlapKnn {
    /// Store `codes` (`(n, n_slots)` row-major winners) with labels in `[0, n_classes)`.
    ///
    /// Errors: length mismatch, a winner below -1, a label out of range, no codes.
    pub fn fit(codes: &[i32], n_slots: usize, labels: &[u32], n_classes: usize) -> Result<Self, SparseError> {
        if n_slots == 0 || codes.len() != labels.len() * n_slots {
            return Err(SparseError::ShapeMismatch(format!(
                "codes has {} entries, expected len(labels) * n_slots = {} * {n_slots}",
                codes.len(),
                labels.len()
            )));
        }
        if labels.is_empty() {
            return Err(SparseError::invalid("codes", "need at least one stored code"));
        }
        if labels.len() > u32::MAX as usize {
            return Err(SparseError::invalid("codes", "at most 2**32 - 1 stored codes"));
        }
        if let Some(i) = labels.iter().position(|&c| c as usize >= n_classes) {
            return Err(SparseError::invalid("y", format!("label {} at {i} is not below {n_classes}", labels[i])));
        }
        if let Some(i) = codes.iter().position(|&w| w < -1) {
            return Err(SparseError::invalid("codes", format!("entry {i} is {}; winners are >= -1", codes[i])));
        }
        let n = labels.len();
        let mut width = vec![0usize; n_slots];
        for row in codes.chunks_exact(n_slots) {
            for (s, &w) in row.iter().enumerate() {
                if w >= 0 {
                    width[s] = width[s].max(w as usize + 1);
                }
            }
        }
        let mut slot_base = Vec::with_capacity(n_slots + 1);
        let mut acc = 0usize;
        for &w in &width {
            slot_base.push(acc);
            acc += w;
        }
        slot_base.push(acc);
        let mut counts = vec![0usize; acc + 1];
        for row in codes.chunks_exact(n_slots) {
            for (s, &w) in row.iter().enumerate() {
                if w >= 0 {
                    counts[slot_base[s] + w as usize + 1] += 1;
                }
            }
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let post_ptr = counts.clone();
        let mut fill = counts;
        let mut post = vec![0u32; *post_ptr.last().unwrap_or(&0)];
        let mut n_active = vec![0u32; n];
        for (j, row) in codes.chunks_exact(n_slots).enumerate() {
            for (s, &w) in row.iter().enumerate() {
                if w >= 0 {
                    let key = slot_base[s] + w as usize;
                    post[fill[key]] = j as u32;
                    fill[key] += 1;
                    n_active[j] += 1;
                }
            }
        }
        Ok(Self { n_slots, n_classes, labels: labels.to_vec(), n_active, slot_base, post_ptr, post })
    }

    /// Number of stored codes.
    pub fn n_stored(&self) -> usize {
        self.labels.len()
    }

    /// Class scores `(n, n_classes)` row-major (votes normalised to sum 1; all 0 when no stored code overlaps),
    /// parallel over queries.
    pub fn predict_scores(&self, codes: &[i32], p: &KnnParams) -> Result<Vec<f64>, SparseError> {
        if !codes.len().is_multiple_of(self.n_slots) {
            return Err(SparseError::ShapeMismatch(format!(
                "codes has {} entries, not a multiple of n_slots = {}",
                codes.len(),
                self.n_slots
            )));
        }
        if p.k == 0 {
            return Err(SparseError::invalid("n_neighbors", "must be >= 1"));
        }
        if !(p.power.is_finite() && p.power >= 0.0) {
            return Err(SparseError::invalid("power", format!("must be finite and >= 0, got {}", p.power)));
        }
        let n = self.labels.len();
        let rows: Vec<Vec<f64>> = codes
            .par_chunks_exact(self.n_slots)
            .map_init(
                || (vec![0u32; n], Vec::<u32>::new()),
                |(counts, touched), row| {
                    touched.clear();
                    let mut active = 0u32;
                    for (s, &w) in row.iter().enumerate() {
                        if w < 0 {
                            continue;
                        }
                        active += 1;
                        let key = self.slot_base[s] + w as usize;
                        if key >= self.slot_base[s + 1] {
                            continue;
                        }
                        for &j in &self.post[self.post_ptr[key]..self.post_ptr[key + 1]] {
                            if counts[j as usize] == 0 {
                                touched.push(j);
                            }
                            counts[j as usize] += 1;
                        }
                    }
                    let mut cand: Vec<(f64, u32)> = touched
                        .iter()
                        .map(|&j| {
                            let c = f64::from(counts[j as usize]);
                            let s = if p.cosine {
                                c / (f64::from(active) * f64::from(self.n_active[j as usize])).sqrt()
                            } else {
                                c
                            };
                            (s, j)
                        })
                        .collect();
                    for &j in touched.iter() {
                        counts[j as usize] = 0;
                    }
                    let by = |a: &(f64, u32), b: &(f64, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
                    if cand.len() > p.k {
                        cand.select_nth_unstable_by(p.k - 1, by);
                        cand.truncate(p.k);
                    }
                    let mut votes = vec![0.0f64; self.n_classes];
                    for (s, j) in cand {
                        votes[self.labels[j as usize] as usize] += s.powf(p.power);
                    }
                    let total: f64 = votes.iter().sum();
                    if total > 0.0 {
                        for v in &mut votes {
                            *v /= total;
                        }
                    }
                    votes
                },
            )
            .collect();
        Ok(rows.concat())
    }

    /// Serialise the stored codes' index (for pickling from Python).
    pub fn n_slots(&self) -> usize {
        self.n_slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_by_overlap_matches_naive() {
        let codes = vec![0, 1, 2, 3, /**/ 0, 1, 5, 5, /**/ 4, 4, 4, 4, /**/ -1, 1, 2, 3];
        let labels = vec![0, 1, 2, 1];
        let knn = OverlapKnn::fit(&codes, 4, &labels, 3).unwrap();
        let q = vec![0, 1, 2, 9];
        let s = knn.predict_scores(&q, &KnnParams { k: 1, cosine: false, power: 1.0 }).unwrap();
        assert_eq!(s, vec![1.0, 0.0, 0.0]); // overlap 3 with item 0 (label 0)
        let s = knn.predict_scores(&[7, 7, 7, 7], &KnnParams { k: 3, cosine: true, power: 1.0 }).unwrap();
        assert_eq!(s, vec![0.0, 0.0, 0.0]);
    }
}
