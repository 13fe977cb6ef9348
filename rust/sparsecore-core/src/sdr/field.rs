//! A coding field and its Code Selection Algorithm (CSA), after Rinkus (2010, 2014, 2017).
//!
//! A field has `Q` modules of `K` binary cells and binary weights from every input bit to every cell (bottom-up)
//! and, in sequence mode, from every cell to every cell (horizontal: the previous code's cells to the next
//! code's cells). For one input the CSA does:
//!
//! 1. Input sums per source: `u_i` = number of active input bits with a weight of 1 onto cell `i`; the
//!    normalised sum is `u_i / |x|` (the number of active bits of *this* input, so a stored input gives its cells
//!    exactly 1). For the horizontal source, `h_i / n` over the `n` active cells of the previous code.
//!    `V_i` is the product over the sources present (a source is absent when it has no active bits, or fewer
//!    than `min_active` bottom-up bits); with no source present the field stays silent (code of -1s).
//! 2. Familiarity `G` = mean over modules of `max_i V_i`.
//! 3. Expansivity `η = 1 + max(0, (G − G⁻)/(1 − G⁻))^γ · χ · K`.
//! 4. Win weights `μ_i = 1 + (η − 1) / (1 + exp(−λ (V_i − σ)))`, in `[1, η]`.
//! 5. One winner per module, drawn with probability `μ_i / Σ_module μ`. A novel input (`G` ≤ `G⁻`) gets a
//!    uniformly random code; a familiar one (`G` → 1) gets, with high probability, the cells that were its code.
//! 6. Learning (single trial): every weight from an active input bit (and previous-code cell) to a winner is set
//!    to 1. When the fraction of bottom-up weights set reaches `freeze_at`, the field freezes and `learn` only
//!    recognises.
//!
//! Recognition is deterministic: per module the cell of largest `V` (ties → lowest index), or -1 when no cell
//! of the module has any support. Its cost is `O(Q · K · input_dim / 64)` per input, whatever the number of
//! stored items.

use rayon::prelude::*;

use super::rng::Stream;
use super::utils::SdrView;
use super::{Reader, Writer};
use crate::parallel::Progress;
use crate::SparseError;

/// Parameters of the CSA (see the module documentation for the formulas).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldParams {
    /// `Q`, the number of competitive modules (code size).
    pub n_modules: usize,
    /// `K`, cells per module.
    pub cells_per_module: usize,
    /// `G⁻`: familiarity at or below which codes are uniformly random.
    pub g_min: f64,
    /// `γ`: exponent of the expansivity ramp.
    pub gamma: f64,
    /// `χ`: scale of the expansivity (`η` reaches `1 + χ K` at `G = 1`).
    pub chi: f64,
    /// `λ`: slope of the sigmoid from `V` to `μ`.
    pub sigmoid_slope: f64,
    /// `σ`: centre of that sigmoid.
    pub sigmoid_center: f64,
    /// Fewest active input bits for the bottom-up source to count as present.
    pub min_active: usize,
    /// Fraction of bottom-up weights set at which the field freezes (above 1: never).
    pub freeze_at: f64,
    /// Sequence mode: keep horizontal weights between consecutive codes.
    pub horizontal: bool,
}

impl Default for FieldParams {
    fn default() -> Self {
        Self {
            n_modules: 8,
            cells_per_module: 16,
            g_min: 0.1,
            gamma: 2.0,
            chi: 100.0,
            // soft enough that code overlap rises from 20 % input overlap on (28 stayed flat up to 20 %)
            sigmoid_slope: 12.0,
            sigmoid_center: 0.5,
            min_active: 1,
            freeze_at: 2.0,
            horizontal: false,
        }
    }
}

impl FieldParams {
    /// Check every parameter's domain.
    pub fn validate(&self) -> Result<(), SparseError> {
        if self.n_modules == 0 || self.n_modules > 1 << 16 {
            return Err(SparseError::invalid("n_modules", format!("must be in [1, 65536], got {}", self.n_modules)));
        }
        if self.cells_per_module < 2 || self.cells_per_module > 1 << 16 {
            return Err(SparseError::invalid(
                "cells_per_module",
                format!("must be in [2, 65536], got {}", self.cells_per_module),
            ));
        }
        if !(0.0..1.0).contains(&self.g_min) {
            return Err(SparseError::invalid("g_min", format!("must be in [0, 1), got {}", self.g_min)));
        }
        for (arg, v) in [("gamma", self.gamma), ("chi", self.chi), ("sigmoid_slope", self.sigmoid_slope)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SparseError::invalid(arg, format!("must be finite and >= 0, got {v}")));
            }
        }
        if !self.sigmoid_center.is_finite() {
            return Err(SparseError::invalid("sigmoid_center", "must be finite"));
        }
        if !(self.freeze_at.is_finite() && self.freeze_at > 0.0) {
            return Err(SparseError::invalid("freeze_at", format!("must be > 0, got {}", self.freeze_at)));
        }
        Ok(())
    }

    /// Cells in the field, `Q · K`.
    pub fn n_cells(&self) -> usize {
        self.n_modules * self.cells_per_module
    }

    /// Expansivity `η(G) = 1 + max(0, (G − G⁻)/(1 − G⁻))^γ · χ · K`.
    pub fn eta(&self, g: f64) -> f64 {
        let r = ((g - self.g_min) / (1.0 - self.g_min)).max(0.0);
        1.0 + r.powf(self.gamma) * self.chi * self.cells_per_module as f64
    }

    /// Win weight `μ(V) = 1 + (η − 1) / (1 + exp(−λ (V − σ)))`.
    pub fn mu(&self, v: f64, eta: f64) -> f64 {
        1.0 + (eta - 1.0) / (1.0 + (-self.sigmoid_slope * (v - self.sigmoid_center)).exp())
    }
}

/// One coding field: its parameters, weights and learning counters.
#[derive(Debug, Clone, PartialEq)]
pub struct CodingField {
    params: FieldParams,
    input_dim: usize,
    words_in: usize,
    bu: Vec<u64>,
    words_h: usize,
    h: Vec<u64>,
    seed: u64,
    stream_id: u64,
    n_calls: u64,
    n_learned: u64,
    n_set: u64,
    frozen: bool,
}

/// The inputs of one CSA step: bottom-up active bits and, in sequence mode, the previous code.
#[derive(Debug, Clone, Copy, Default)]
pub struct Step<'a> {
    /// Active input bits (sorted, unique, below `input_dim`), or `None` for no bottom-up input.
    pub input: Option<&'a [u32]>,
    /// The previous code (one winner or -1 per module), or `None`.
    pub prev: Option<&'a [i32]>,
}

impl CodingField {
    /// A field with all weights 0. `stream_id` separates the random streams of fields sharing a seed.
    ///
    /// Errors: a parameter out of its domain, `input_dim` 0 or above 2³² − 1, or weights too large to allocate.
    pub fn new(input_dim: usize, params: FieldParams, seed: u64, stream_id: u64) -> Result<Self, SparseError> {
        params.validate()?;
        if input_dim == 0 || input_dim > u32::MAX as usize {
            return Err(SparseError::invalid("input_dim", format!("must be between 1 and 2**32 - 1, got {input_dim}")));
        }
        let n_cells = params.n_cells();
        let words_in = input_dim.div_ceil(64);
        let bu =
            SparseError::try_zeroed("bottom-up weights", SparseError::checked_area("weights", n_cells, words_in)?)?;
        let (words_h, h) = if params.horizontal {
            let w = n_cells.div_ceil(64);
            (w, SparseError::try_zeroed("horizontal weights", SparseError::checked_area("weights", n_cells, w)?)?)
        } else {
            (0, Vec::new())
        };
        Ok(Self {
            params,
            input_dim,
            words_in,
            bu,
            words_h,
            h,
            seed,
            stream_id,
            n_calls: 0,
            n_learned: 0,
            n_set: 0,
            frozen: false,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &FieldParams {
        &self.params
    }
    /// Input bits.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }
    /// Inputs learned (codes stored) so far.
    pub fn n_learned(&self) -> u64 {
        self.n_learned
    }
    /// Whether learning is switched off.
    pub fn frozen(&self) -> bool {
        self.frozen
    }
    /// Freeze or unfreeze learning.
    pub fn set_frozen(&mut self, frozen: bool) {
        self.frozen = frozen;
    }
    /// Fraction of bottom-up weights set to 1 (a capacity measure).
    pub fn weight_fill(&self) -> f64 {
        self.n_set as f64 / (self.params.n_cells() as f64 * self.input_dim as f64)
    }

    fn check_step(&self, step: &Step<'_>) -> Result<(), SparseError> {
        if let Some(x) = step.input {
            if x.windows(2).any(|w| w[1] <= w[0]) || x.last().is_some_and(|&b| b as usize >= self.input_dim) {
                return Err(SparseError::invalid(
                    "x",
                    format!("active bits must be strictly increasing and below input_dim = {}", self.input_dim),
                ));
            }
        }
        if let Some(p) = step.prev {
            let k = self.params.cells_per_module as i32;
            if p.len() != self.params.n_modules || p.iter().any(|&w| w < -1 || w >= k) {
                return Err(SparseError::invalid(
                    "prev",
                    format!("must hold {} winners in [-1, {k})", self.params.n_modules),
                ));
            }
        }
        Ok(())
    }

    /// Normalised input sums `V` of every cell, or `None` when no source is present (the field stays silent).
    pub fn support(&self, step: &Step<'_>) -> Option<Vec<f64>> {
        let n_cells = self.params.n_cells();
        let bu = step.input.filter(|x| !x.is_empty() && x.len() >= self.params.min_active);
        let k = self.params.cells_per_module;
        let prev_cells: Vec<usize> = match step.prev {
            Some(p) if self.params.horizontal => {
                p.iter().enumerate().filter(|(_, &w)| w >= 0).map(|(m, &w)| m * k + w as usize).collect()
            }
            _ => Vec::new(),
        };
        if bu.is_none() && prev_cells.is_empty() {
            return None;
        }
        let mut v = vec![1.0f64; n_cells];
        if let Some(x) = bu {
            let mut xb = vec![0u64; self.words_in];
            for &b in x {
                xb[b as usize / 64] |= 1 << (b % 64);
            }
            let inv = 1.0 / x.len() as f64;
            for (vi, w) in v.iter_mut().zip(self.bu.chunks_exact(self.words_in)) {
                let u: u32 = w.iter().zip(&xb).map(|(a, b)| (a & b).count_ones()).sum();
                *vi *= f64::from(u) * inv;
            }
        }
        if !prev_cells.is_empty() {
            let inv = 1.0 / prev_cells.len() as f64;
            for (vi, w) in v.iter_mut().zip(self.h.chunks_exact(self.words_h)) {
                let u = prev_cells.iter().filter(|&&c| w[c / 64] >> (c % 64) & 1 == 1).count();
                *vi *= u as f64 * inv;
            }
        }
        Some(v)
    }

    /// Familiarity `G` = mean over modules of the largest `V` (0 when the field is silent).
    pub fn familiarity_of(&self, v: Option<&[f64]>) -> f64 {
        let Some(v) = v else { return 0.0 };
        let k = self.params.cells_per_module;
        let s: f64 = v.chunks_exact(k).map(|m| m.iter().copied().fold(0.0, f64::max)).sum();
        s / self.params.n_modules as f64
    }

    /// Deterministic code from sums: per module the cell of largest `V`; ties go to the cell with the fewest
    /// bottom-up weights set (the most specific, i.e. the stored code that matches the input most tightly), then
    /// to the lowest index. -1 when all are 0 or the field is silent.
    // V values are u / |x| with the same |x| for every cell, so equal supports are bit-identical: exact ties.
    #[allow(clippy::float_cmp)]
    fn argmax_code(&self, v: Option<&[f64]>) -> Vec<i32> {
        let (q, k) = (self.params.n_modules, self.params.cells_per_module);
        let Some(v) = v else { return vec![-1; q] };
        let fill = |cell: usize| -> u32 {
            self.bu[cell * self.words_in..(cell + 1) * self.words_in].iter().map(|w| w.count_ones()).sum()
        };
        v.chunks_exact(k)
            .enumerate()
            .map(|(m, vm)| {
                let mut best = -1i32;
                let mut bv = 0.0;
                let mut bfill = u32::MAX;
                for (i, &x) in vm.iter().enumerate() {
                    if x > bv {
                        bv = x;
                        best = i as i32;
                        bfill = u32::MAX;
                    } else if x == bv && best >= 0 {
                        if bfill == u32::MAX {
                            bfill = fill(m * k + best as usize);
                        }
                        let f = fill(m * k + i);
                        if f < bfill {
                            best = i as i32;
                            bfill = f;
                        }
                    }
                }
                best
            })
            .collect()
    }

    /// Familiarity `G` of one input.
    pub fn familiarity(&self, step: &Step<'_>) -> Result<f64, SparseError> {
        self.check_step(step)?;
        Ok(self.familiarity_of(self.support(step).as_deref()))
    }

    /// Recognise one input: argmax `V` per module (ties → lowest index; -1 where no cell has support).
    pub fn recognize(&self, step: &Step<'_>) -> Result<Vec<i32>, SparseError> {
        self.check_step(step)?;
        Ok(self.argmax_code(self.support(step).as_deref()))
    }

    /// Recognise one input and report its familiarity (`None` when the field is silent).
    pub fn recognize_familiarity(&self, step: &Step<'_>) -> Result<(Vec<i32>, Option<f64>), SparseError> {
        self.check_step(step)?;
        let v = self.support(step);
        let g = v.as_deref().map(|v| self.familiarity_of(Some(v)));
        Ok((self.argmax_code(v.as_deref()), g))
    }

    /// Draw a code with the CSA (without learning). Uses the stream `(seed, stream_id, item, module)`.
    pub fn sample_code(&self, v: &[f64], item: u64) -> Vec<i32> {
        let p = &self.params;
        let eta = p.eta(self.familiarity_of(Some(v)));
        let mut mu = vec![0.0; p.cells_per_module];
        v.chunks_exact(p.cells_per_module)
            .enumerate()
            .map(|(m, vm)| {
                let mut total = 0.0;
                for (o, &x) in mu.iter_mut().zip(vm) {
                    *o = p.mu(x, eta);
                    total += *o;
                }
                let mut s = Stream::new(self.seed, &[self.stream_id, item, m as u64]);
                let mut r = s.next_f64() * total;
                let mut win = p.cells_per_module - 1;
                for (i, &x) in mu.iter().enumerate() {
                    if r < x {
                        win = i;
                        break;
                    }
                    r -= x;
                }
                win as i32
            })
            .collect()
    }

    /// One CSA step with single-trial learning; returns the code (-1s when the field is silent). A frozen field
    /// returns the recognised code and changes nothing but its item counter.
    pub fn learn(&mut self, step: &Step<'_>) -> Result<Vec<i32>, SparseError> {
        self.check_step(step)?;
        let item = self.n_calls;
        self.n_calls += 1;
        let v = self.support(step);
        let Some(v) = v else { return Ok(vec![-1; self.params.n_modules]) };
        if self.frozen {
            return Ok(self.argmax_code(Some(&v)));
        }
        let code = self.sample_code(&v, item);
        self.store(step, &code);
        Ok(code)
    }

    /// Set the weights from the step's active inputs (and previous code) to the cells of `code`.
    fn store(&mut self, step: &Step<'_>, code: &[i32]) {
        let k = self.params.cells_per_module;
        let bu = step.input.filter(|x| !x.is_empty() && x.len() >= self.params.min_active);
        for (m, &w) in code.iter().enumerate() {
            if w < 0 {
                continue;
            }
            let cell = m * k + w as usize;
            if let Some(x) = bu {
                let row = &mut self.bu[cell * self.words_in..(cell + 1) * self.words_in];
                for &b in x {
                    let (word, bit) = (b as usize / 64, b % 64);
                    if row[word] >> bit & 1 == 0 {
                        row[word] |= 1 << bit;
                        self.n_set += 1;
                    }
                }
            }
            if self.params.horizontal {
                if let Some(p) = step.prev {
                    let row = &mut self.h[cell * self.words_h..(cell + 1) * self.words_h];
                    for (pm, &pw) in p.iter().enumerate() {
                        if pw >= 0 {
                            let c = pm * k + pw as usize;
                            row[c / 64] |= 1 << (c % 64);
                        }
                    }
                }
            }
        }
        self.n_learned += 1;
        if self.weight_fill() >= self.params.freeze_at {
            self.frozen = true;
        }
    }

    /// Learn the rows of `x` in order (single trial each); returns the codes, `(n, Q)` row-major.
    pub fn learn_batch(&mut self, x: &SdrView<'_>, progress: Option<&Progress>) -> Result<Vec<i32>, SparseError> {
        self.check_dim(x)?;
        if let Some(p) = progress {
            p.set_total(x.n_rows() as u64);
        }
        let mut out = Vec::with_capacity(x.n_rows() * self.params.n_modules);
        for r in 0..x.n_rows() {
            out.extend(self.learn(&Step { input: Some(x.row(r)), prev: None })?);
            if let Some(p) = progress {
                p.add(1);
            }
        }
        Ok(out)
    }

    fn check_dim(&self, x: &SdrView<'_>) -> Result<(), SparseError> {
        if x.dim() != self.input_dim {
            return Err(SparseError::ShapeMismatch(format!(
                "x has dim {} but the field has input_dim {}",
                x.dim(),
                self.input_dim
            )));
        }
        Ok(())
    }

    /// Recognise every row of `x` in parallel; `(n, Q)` row-major codes.
    pub fn recognize_batch(&self, x: &SdrView<'_>) -> Result<Vec<i32>, SparseError> {
        self.check_dim(x)?;
        let codes: Vec<Vec<i32>> = (0..x.n_rows())
            .into_par_iter()
            .map(|r| self.argmax_code(self.support(&Step { input: Some(x.row(r)), prev: None }).as_deref()))
            .collect();
        Ok(codes.concat())
    }

    /// Familiarity of every row of `x`, in parallel.
    pub fn familiarity_batch(&self, x: &SdrView<'_>) -> Result<Vec<f64>, SparseError> {
        self.check_dim(x)?;
        Ok((0..x.n_rows())
            .into_par_iter()
            .map(|r| self.familiarity_of(self.support(&Step { input: Some(x.row(r)), prev: None }).as_deref()))
            .collect())
    }

    /// Learn the rows of `x` as one sequence: each step's code also gets horizontal weights from the previous
    /// code. Errors: the field is not in sequence mode.
    pub fn learn_sequence(&mut self, x: &SdrView<'_>) -> Result<Vec<i32>, SparseError> {
        self.check_dim(x)?;
        if !self.params.horizontal {
            return Err(SparseError::invalid("sequence", "the field was not created with sequence=True"));
        }
        let mut out: Vec<i32> = Vec::with_capacity(x.n_rows() * self.params.n_modules);
        let mut prev: Option<Vec<i32>> = None;
        for r in 0..x.n_rows() {
            let code = self.learn(&Step { input: Some(x.row(r)), prev: prev.as_deref() })?;
            out.extend_from_slice(&code);
            prev = Some(code);
        }
        Ok(out)
    }

    /// Replay a stored sequence: recognise `first` bottom-up, then `n_steps - 1` more codes from the horizontal
    /// weights alone. Errors: the field is not in sequence mode.
    pub fn recall_sequence(&self, first: &[u32], n_steps: usize) -> Result<Vec<i32>, SparseError> {
        if !self.params.horizontal {
            return Err(SparseError::invalid("sequence", "the field was not created with sequence=True"));
        }
        let mut code = self.recognize(&Step { input: Some(first), prev: None })?;
        let mut out = Vec::with_capacity(n_steps * self.params.n_modules);
        for t in 0..n_steps {
            if t > 0 {
                code = self.argmax_code(self.support(&Step { input: None, prev: Some(&code) }).as_deref());
            }
            out.extend_from_slice(&code);
        }
        Ok(out)
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        let p = &self.params;
        for v in [p.n_modules, p.cells_per_module, p.min_active, usize::from(p.horizontal), self.input_dim] {
            w.u64(v as u64);
        }
        for v in [p.g_min, p.gamma, p.chi, p.sigmoid_slope, p.sigmoid_center, p.freeze_at] {
            w.f64(v);
        }
        for v in [self.seed, self.stream_id, self.n_calls, self.n_learned, self.n_set, u64::from(self.frozen)] {
            w.u64(v);
        }
        w.words(&self.bu);
        w.words(&self.h);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, SparseError> {
        let (n_modules, cells_per_module, min_active, horizontal, input_dim) =
            (r.usize()?, r.usize()?, r.usize()?, r.u64()? != 0, r.usize()?);
        let params = FieldParams {
            n_modules,
            cells_per_module,
            min_active,
            horizontal,
            g_min: r.f64()?,
            gamma: r.f64()?,
            chi: r.f64()?,
            sigmoid_slope: r.f64()?,
            sigmoid_center: r.f64()?,
            freeze_at: r.f64()?,
        };
        let bad = |e: SparseError| SparseError::Format(format!("SDR file holds invalid field parameters: {e}"));
        let mut f = Self::new(input_dim, params, r.u64()?, r.u64()?).map_err(bad)?;
        f.n_calls = r.u64()?;
        f.n_learned = r.u64()?;
        f.n_set = r.u64()?;
        f.frozen = r.u64()? != 0;
        let bu = r.words()?;
        let h = r.words()?;
        if bu.len() != f.bu.len() || h.len() != f.h.len() {
            return Err(SparseError::Format("SDR file: weight arrays do not match the field's shape".into()));
        }
        f.bu = bu;
        f.h = h;
        Ok(f)
    }

    /// Serialise (magic, version, CRC-32 checked by [`CodingField::from_bytes`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write(&mut w);
        super::seal(MAGIC, VERSION, &w.0)
    }

    /// Deserialise bytes made by [`CodingField::to_bytes`]. Errors: [`SparseError::Format`] for anything else.
    pub fn from_bytes(buf: &[u8]) -> Result<Self, SparseError> {
        let mut r = Reader::new(super::unseal(MAGIC, VERSION, "coding field", buf)?);
        let f = Self::read(&mut r)?;
        if !r.done() {
            return Err(SparseError::Format("coding field file has trailing bytes".into()));
        }
        Ok(f)
    }
}

const MAGIC: &[u8; 8] = b"SCSDRFLD";
const VERSION: u64 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn field(q: usize, k: usize, dim: usize, horizontal: bool) -> CodingField {
        let p = FieldParams { n_modules: q, cells_per_module: k, horizontal, ..FieldParams::default() };
        CodingField::new(dim, p, 42, 0).unwrap()
    }

    #[test]
    fn learned_input_is_recognised_with_g_one() {
        let mut f = field(6, 10, 100, false);
        let x: Vec<u32> = vec![3, 17, 40, 41, 99];
        let code = f.learn(&Step { input: Some(&x), prev: None }).unwrap();
        assert_eq!(f.recognize(&Step { input: Some(&x), prev: None }).unwrap(), code);
        assert!((f.familiarity(&Step { input: Some(&x), prev: None }).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn eta_and_mu_boundaries() {
        let p = FieldParams::default();
        assert!((p.eta(p.g_min) - 1.0).abs() < 1e-12);
        assert!((p.eta(0.0) - 1.0).abs() < 1e-12);
        assert!((p.eta(1.0) - (1.0 + p.chi * p.cells_per_module as f64)).abs() < 1e-9);
        let eta = 50.0;
        assert!((p.mu(p.sigmoid_center, eta) - (1.0 + (eta - 1.0) / 2.0)).abs() < 1e-12);
    }

    #[test]
    fn roundtrip_bytes_and_corruption() {
        let mut f = field(4, 8, 70, true);
        let x: Vec<u32> = vec![1, 2, 65];
        f.learn(&Step { input: Some(&x), prev: None }).unwrap();
        let b = f.to_bytes();
        assert_eq!(CodingField::from_bytes(&b).unwrap(), f);
        let mut bad = b.clone();
        bad[30] ^= 1;
        assert!(matches!(CodingField::from_bytes(&bad), Err(SparseError::Format(_))));
        assert!(matches!(CodingField::from_bytes(&b[..b.len() - 3]), Err(SparseError::Format(_))));
    }

    #[test]
    fn sequence_replays() {
        let mut f = field(8, 16, 64, true);
        let rows: Vec<Vec<u32>> = (0..6u32).map(|t| (0..8).map(|j| (t * 7 + j * 3) % 64).collect()).collect();
        let rows: Vec<Vec<u32>> = rows
            .into_iter()
            .map(|mut r| {
                r.sort_unstable();
                r.dedup();
                r
            })
            .collect();
        let s = super::super::utils::Sdrs::from_rows(rows.clone(), 64);
        let v = SdrView::new("x", &s.indptr, &s.indices, 64).unwrap();
        let codes = f.learn_sequence(&v).unwrap();
        assert_eq!(f.recall_sequence(&rows[0], 6).unwrap(), codes);
    }
}
