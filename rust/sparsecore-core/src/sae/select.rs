//! Per-row selection of the latents a tile of pre-activations contributes: the running top-k of a TopK SAE and
//! the per-latent threshold of a JumpReLU SAE.
//!
//! Both see a row's latents in increasing order (column tiles left to right, each tile left to right), which is
//! what makes the tie rule cheap: among equal values the lower latent index wins, and a newcomer always has a
//! higher index than everything already kept, so it must be strictly larger than the worst kept value to enter.

use std::cmp::Ordering;

/// Lanes checked together before looking at single values: one compare-and-or per lane, vectorised, so a chunk
/// with nothing above the running threshold (almost all of them once a row has k candidates) costs a few
/// instructions.
const SCAN_LANES: usize = 16;

/// `a` before `b` when `a` is the better latent: larger value, then lower index.
#[inline]
fn best_first(a: (f32, u32), b: (f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// The running top-k of one row: candidates above the current threshold, cut back to the best k whenever the
/// buffer holds 2k (a partial selection, O(k)), which raises the threshold.
#[derive(Debug, Clone)]
pub(super) struct TopKRow {
    cand: Vec<(f32, u32)>,
    /// Values must exceed this to enter: 0 (ReLU) until k candidates were kept, then the k-th best value.
    thr: f32,
}

impl TopKRow {
    pub(super) fn new(k: usize) -> Self {
        Self { cand: Vec::with_capacity(2 * k), thr: 0.0 }
    }

    /// Keep the best `k` candidates; the threshold becomes the worst of them.
    fn prune(&mut self, k: usize) {
        if self.cand.len() > k {
            self.cand.select_nth_unstable_by(k - 1, |a, b| best_first(*a, *b));
            self.cand.truncate(k);
            self.thr = self.cand.iter().map(|c| c.0).fold(f32::INFINITY, f32::min);
        }
    }

    /// Offer the pre-activations `acc[j] + bias[j]` of latents `first + j`.
    #[inline]
    pub(super) fn absorb(&mut self, k: usize, first: u32, acc: &[f32], bias: &[f32]) {
        let cap = 2 * k;
        let mut base = first;
        for (a, b) in acc.chunks(SCAN_LANES).zip(bias.chunks(SCAN_LANES)) {
            let thr = self.thr;
            // A branch-free or over the chunk (vectorised), not `any` (which stops early and stays scalar).
            let hit = a.iter().zip(b).fold(0u32, |h, (&p, &q)| h | u32::from(p + q > thr));
            if hit != 0 {
                for (j, (&p, &q)) in a.iter().zip(b).enumerate() {
                    let v = p + q;
                    if v > self.thr {
                        self.cand.push((v, base + j as u32));
                        if self.cand.len() >= cap {
                            self.prune(k);
                        }
                    }
                }
            }
            base += a.len() as u32;
        }
    }

    /// Write the kept latents by increasing index into `indices` / `data` (at least k slots each) and return
    /// their number; the row is reset for reuse.
    pub(super) fn finish(&mut self, k: usize, indices: &mut [u32], data: &mut [f32]) -> usize {
        self.prune(k);
        self.cand.sort_unstable_by_key(|c| c.1);
        let n = self.cand.len();
        for ((&(v, j), oi), ov) in self.cand.iter().zip(indices).zip(data) {
            *oi = j;
            *ov = v;
        }
        self.cand.clear();
        self.thr = 0.0;
        n
    }
}

/// JumpReLU: append latents `first + j` whose pre-activation `acc[j] + bias[j]` exceeds `floor[j]`
/// (`max(threshold, 0)`: above the threshold and non-zero after the ReLU).
#[inline]
pub(super) fn jump_filter(
    first: u32,
    acc: &[f32],
    bias: &[f32],
    floor: &[f32],
    indices: &mut Vec<u32>,
    data: &mut Vec<f32>,
) {
    let mut base = first;
    for ((a, b), t) in acc.chunks(SCAN_LANES).zip(bias.chunks(SCAN_LANES)).zip(floor.chunks(SCAN_LANES)) {
        let hit = a.iter().zip(b).zip(t).fold(0u32, |h, ((&p, &q), &f)| h | u32::from(p + q > f));
        if hit != 0 {
            for (j, ((&p, &q), &f)) in a.iter().zip(b).zip(t).enumerate() {
                let v = p + q;
                if v > f {
                    indices.push(base + j as u32);
                    data.push(v);
                }
            }
        }
        base += a.len() as u32;
    }
}
