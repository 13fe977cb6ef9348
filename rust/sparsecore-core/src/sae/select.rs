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

    /// Start the row with every value below `floor` ruled out (it must be a lower bound of the row's k-th
    /// largest value, else the result is wrong): values `>= floor` (and > 0) still enter.
    pub(super) fn seed(&mut self, floor: f32) {
        if floor > 0.0 {
            self.thr = floor.next_down();
        }
    }

    /// Offer the pre-activations `acc[j] + bias[j]` of latents `first + j`.
    #[inline]
    pub(super) fn absorb(&mut self, k: usize, first: u32, acc: &[f32], bias: &[f32]) {
        let n = acc.len().min(bias.len());
        let (acc, bias) = (&acc[..n], &bias[..n]);
        let (ac, bc) = (acc.chunks_exact(SCAN_LANES), bias.chunks_exact(SCAN_LANES));
        let (ar, br) = (ac.remainder(), bc.remainder());
        let mut base = first;
        for (a, b) in ac.zip(bc) {
            // Fixed-length chunks and a branch-free or over them (vectorised), not `any` (which stops early and
            // stays scalar).
            let thr = self.thr;
            let mut hit = 0u32;
            for l in 0..SCAN_LANES {
                hit |= u32::from(a[l] + b[l] > thr);
            }
            if hit != 0 {
                self.offer(k, base, a, b);
            }
            base += SCAN_LANES as u32;
        }
        self.offer(k, base, ar, br);
    }

    /// Push the values of `a + b` above the threshold (latents `base + j`), pruning when the buffer is full.
    #[inline]
    fn offer(&mut self, k: usize, base: u32, a: &[f32], b: &[f32]) {
        for (j, (&p, &q)) in a.iter().zip(b).enumerate() {
            let v = p + q;
            if v > self.thr {
                self.cand.push((v, base + j as u32));
                if self.cand.len() >= 2 * k {
                    self.prune(k);
                }
            }
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
