//! Hierarchies of coding fields with receptive fields, and sequences through horizontal weights.
//!
//! Level 0 reads the input bits (e.g. a binarised image); each field of a level sees its *receptive field*, a
//! sorted list of bits of the level below (the input for level 0, else the concatenated codes of the level
//! below: field `f` of a level with `Q` modules of `K` cells owns bits `f·Q·K .. (f+1)·Q·K`, its winners set
//! `f·Q·K + m·K + w`). Learning runs the CSA level by level, the fields of a level in parallel (each with its own
//! random stream, so the result does not depend on the thread count); recognition is parallel over inputs.
//!
//! Sequence mode: every field keeps horizontal weights from its own previous code, learning a sequence stores
//! them, and recall replays the stored codes from the first element (bottom-up input only at the first step).

use rayon::prelude::*;

use super::field::{CodingField, FieldParams, Step};
use super::utils::SdrView;
use super::{Reader, Writer};
use crate::parallel::Progress;
use crate::SparseError;

/// One level: its fields and their receptive fields over the level below.
#[derive(Debug, Clone, PartialEq)]
struct Level {
    fields: Vec<CodingField>,
    rf: Vec<Vec<u32>>,
    in_dim: usize,
}

impl Level {
    fn cells(&self) -> usize {
        self.fields.first().map_or(0, |f| f.params().n_cells())
    }
    fn out_dim(&self) -> usize {
        self.fields.len() * self.cells()
    }
    fn q(&self) -> usize {
        self.fields.first().map_or(0, |f| f.params().n_modules)
    }
}

/// A hierarchy of coding fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    input_dim: usize,
    levels: Vec<Level>,
}

/// Codes of one input at every level: `codes[l]` holds `n_fields(l) · Q(l)` winners (-1 for silent modules).
pub type LevelCodes = Vec<Vec<i32>>;

fn local_input(rf: &[u32], active: &[bool]) -> Vec<u32> {
    rf.iter().enumerate().filter(|(_, &b)| active[b as usize]).map(|(j, _)| j as u32).collect()
}

impl Network {
    /// Build a network over `input_dim` input bits; `levels[l] = (params, receptive fields)` with the receptive
    /// fields of level `l` indexing the bits of level `l - 1` (the input for level 0). Field `f` of level `l`
    /// draws from the stream `(seed, l · 2³² + f, item, module)`.
    ///
    /// Errors: no level, a level without fields, a receptive field empty, unsorted or out of range.
    pub fn new(input_dim: usize, levels: Vec<(FieldParams, Vec<Vec<u32>>)>, seed: u64) -> Result<Self, SparseError> {
        if levels.is_empty() {
            return Err(SparseError::invalid("levels", "need at least one level"));
        }
        let mut in_dim = input_dim;
        let mut out = Vec::with_capacity(levels.len());
        for (l, (params, rf)) in levels.into_iter().enumerate() {
            if rf.is_empty() {
                return Err(SparseError::invalid("levels", format!("level {l} has no fields")));
            }
            for (f, r) in rf.iter().enumerate() {
                if r.is_empty() || r.windows(2).any(|w| w[1] <= w[0]) || r.last().is_some_and(|&b| b as usize >= in_dim)
                {
                    return Err(SparseError::invalid(
                        "levels",
                        format!(
                            "level {l}, field {f}: a receptive field must be non-empty, strictly increasing and \
                             below {in_dim} (the bits of the level below)"
                        ),
                    ));
                }
            }
            let fields = rf
                .iter()
                .enumerate()
                .map(|(f, r)| CodingField::new(r.len(), params.clone(), seed, ((l as u64) << 32) | f as u64))
                .collect::<Result<Vec<_>, _>>()?;
            let level = Level { fields, rf, in_dim };
            in_dim = level.out_dim();
            out.push(level);
        }
        Ok(Self { input_dim, levels: out })
    }

    /// Input bits.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }
    /// Number of levels.
    pub fn n_levels(&self) -> usize {
        self.levels.len()
    }
    /// Winners per input at level `l` (`n_fields · Q`).
    pub fn code_len(&self, l: usize) -> usize {
        self.levels.get(l).map_or(0, |lv| lv.fields.len() * lv.q())
    }
    /// Fields of every level.
    pub fn fields(&self) -> impl Iterator<Item = &CodingField> {
        self.levels.iter().flat_map(|l| l.fields.iter())
    }
    /// Freeze or unfreeze every field.
    pub fn set_frozen(&mut self, frozen: bool) {
        for l in &mut self.levels {
            for f in &mut l.fields {
                f.set_frozen(frozen);
            }
        }
    }

    fn check_input(&self, x: &[u32]) -> Result<(), SparseError> {
        if x.windows(2).any(|w| w[1] <= w[0]) || x.last().is_some_and(|&b| b as usize >= self.input_dim) {
            return Err(SparseError::invalid(
                "x",
                format!("active bits must be strictly increasing and below input_dim = {}", self.input_dim),
            ));
        }
        Ok(())
    }

    fn next_active(level: &Level, codes: &[i32]) -> Vec<bool> {
        let (q, cells) = (level.q(), level.cells());
        let k = cells / q.max(1);
        let mut next = vec![false; level.out_dim()];
        for (i, &w) in codes.iter().enumerate() {
            if w >= 0 {
                let (f, m) = (i / q, i % q);
                next[f * cells + m * k + w as usize] = true;
            }
        }
        next
    }

    /// Run one input up the hierarchy, learning (`learn`) or recognising; `prev` is the previous step's codes in
    /// sequence mode.
    fn forward(&mut self, x: &[u32], learn: bool, prev: Option<&LevelCodes>) -> Result<LevelCodes, SparseError> {
        let mut active = vec![false; self.input_dim];
        for &b in x {
            active[b as usize] = true;
        }
        let mut out = Vec::with_capacity(self.levels.len());
        for (l, level) in self.levels.iter_mut().enumerate() {
            let q = level.q();
            let prev_l = prev.map(|p| &p[l]);
            let act = &active;
            let one = |(f, (field, rf)): (usize, (&mut CodingField, &Vec<u32>))| {
                let local = local_input(rf, act);
                let step = Step { input: Some(&local), prev: prev_l.map(|p| &p[f * q..(f + 1) * q]) };
                if learn {
                    field.learn(&step)
                } else {
                    field.recognize(&step)
                }
            };
            let codes: Vec<Vec<i32>> =
                level.fields.par_iter_mut().zip(level.rf.par_iter()).enumerate().map(one).collect::<Result<_, _>>()?;
            let codes = codes.concat();
            active = Self::next_active(level, &codes);
            out.push(codes);
        }
        Ok(out)
    }

    /// Recognition only (no state change), sequential over fields.
    fn recognize_one(&self, x: &[u32], prev: Option<&LevelCodes>) -> Result<LevelCodes, SparseError> {
        Ok(self.recognize_one_g(x, prev)?.0)
    }

    /// Recognition plus the mean familiarity of the responding fields of each level (0 when none responds).
    fn recognize_one_g(&self, x: &[u32], prev: Option<&LevelCodes>) -> Result<(LevelCodes, Vec<f64>), SparseError> {
        let mut active = vec![false; self.input_dim];
        for &b in x {
            active[b as usize] = true;
        }
        let mut out = Vec::with_capacity(self.levels.len());
        let mut fam = Vec::with_capacity(self.levels.len());
        for (l, level) in self.levels.iter().enumerate() {
            let q = level.q();
            let mut codes = Vec::with_capacity(level.fields.len() * q);
            let (mut g_sum, mut g_n) = (0.0, 0usize);
            for (f, (field, rf)) in level.fields.iter().zip(&level.rf).enumerate() {
                let local = local_input(rf, &active);
                let p = prev.map(|p| &p[l][f * q..(f + 1) * q]);
                let (code, g) = field.recognize_familiarity(&Step { input: Some(&local), prev: p })?;
                if let Some(g) = g {
                    g_sum += g;
                    g_n += 1;
                }
                codes.extend(code);
            }
            active = Self::next_active(level, &codes);
            out.push(codes);
            fam.push(if g_n == 0 { 0.0 } else { g_sum / g_n as f64 });
        }
        Ok((out, fam))
    }

    /// Mean familiarity `G` of the responding fields, per input and level: `(n, n_levels)` row-major, parallel
    /// over inputs.
    pub fn familiarity_batch(&self, x: &SdrView<'_>) -> Result<Vec<f64>, SparseError> {
        self.check_dim(x)?;
        let rows = (0..x.n_rows())
            .into_par_iter()
            .map(|r| self.recognize_one_g(x.row(r), None).map(|(_, g)| g))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows.concat())
    }

    fn check_dim(&self, x: &SdrView<'_>) -> Result<(), SparseError> {
        if x.dim() != self.input_dim {
            return Err(SparseError::ShapeMismatch(format!(
                "x has dim {} but the network has input_dim {}",
                x.dim(),
                self.input_dim
            )));
        }
        Ok(())
    }

    fn stack(&self, per_item: Vec<LevelCodes>) -> LevelCodes {
        (0..self.levels.len()).map(|l| per_item.iter().flat_map(|c| c[l].iter().copied()).collect()).collect()
    }

    /// Learn every row of `x` once, in order; returns the codes of every level, `(n, code_len(l))` row-major.
    pub fn learn_batch(&mut self, x: &SdrView<'_>, progress: Option<&Progress>) -> Result<LevelCodes, SparseError> {
        self.check_dim(x)?;
        if let Some(p) = progress {
            p.set_total(x.n_rows() as u64);
        }
        let mut items = Vec::with_capacity(x.n_rows());
        for r in 0..x.n_rows() {
            items.push(self.forward(x.row(r), true, None)?);
            if let Some(p) = progress {
                p.add(1);
            }
        }
        Ok(self.stack(items))
    }

    /// Recognise every row of `x`, in parallel over rows.
    pub fn recognize_batch(&self, x: &SdrView<'_>, progress: Option<&Progress>) -> Result<LevelCodes, SparseError> {
        self.check_dim(x)?;
        if let Some(p) = progress {
            p.set_total(x.n_rows() as u64);
        }
        let items = (0..x.n_rows())
            .into_par_iter()
            .map(|r| {
                let c = self.recognize_one(x.row(r), None);
                if let Some(p) = progress {
                    p.add(1);
                }
                c
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.stack(items))
    }

    fn require_sequence(&self) -> Result<(), SparseError> {
        if self.fields().all(|f| f.params().horizontal) {
            Ok(())
        } else {
            Err(SparseError::invalid("sequence", "the network was not created with sequence=True"))
        }
    }

    /// Learn the rows of `x` as one sequence (each step's codes get horizontal weights from the previous step's).
    pub fn learn_sequence(&mut self, x: &SdrView<'_>) -> Result<LevelCodes, SparseError> {
        self.check_dim(x)?;
        self.require_sequence()?;
        let mut items: Vec<LevelCodes> = Vec::with_capacity(x.n_rows());
        for r in 0..x.n_rows() {
            let c = self.forward(x.row(r), true, items.last())?;
            items.push(c);
        }
        Ok(self.stack(items))
    }

    /// Replay: recognise `first`, then `n_steps - 1` steps with no bottom-up input, each biased by the previous
    /// step's codes through the horizontal weights.
    pub fn recall_sequence(&self, first: &[u32], n_steps: usize) -> Result<LevelCodes, SparseError> {
        self.require_sequence()?;
        self.check_input(first)?;
        let mut items: Vec<LevelCodes> = Vec::with_capacity(n_steps);
        for t in 0..n_steps {
            let c = if t == 0 { self.recognize_one(first, None)? } else { self.recognize_one(&[], items.last())? };
            items.push(c);
        }
        Ok(self.stack(items))
    }

    /// Serialise (magic, version, CRC-32).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.input_dim as u64);
        w.u64(self.levels.len() as u64);
        for l in &self.levels {
            w.u64(l.fields.len() as u64);
            for (f, rf) in l.fields.iter().zip(&l.rf) {
                w.u32s(rf);
                f.write(&mut w);
            }
        }
        super::seal(MAGIC, VERSION, &w.0)
    }

    /// Deserialise bytes made by [`Network::to_bytes`]. Errors: [`SparseError::Format`] for anything else.
    pub fn from_bytes(buf: &[u8]) -> Result<Self, SparseError> {
        let mut r = Reader::new(super::unseal(MAGIC, VERSION, "SDR network", buf)?);
        let input_dim = r.usize()?;
        let n_levels = r.usize()?;
        let mut levels = Vec::new();
        let mut in_dim = input_dim;
        for _ in 0..n_levels {
            let n = r.usize()?;
            let mut fields = Vec::new();
            let mut rfs = Vec::new();
            for _ in 0..n {
                let rf = r.u32s()?;
                let f = CodingField::read(&mut r)?;
                if rf.len() != f.input_dim() || rf.iter().any(|&b| b as usize >= in_dim) {
                    return Err(SparseError::Format("SDR network file: receptive field does not fit".into()));
                }
                rfs.push(rf);
                fields.push(f);
            }
            if fields.is_empty() || fields.iter().any(|f| f.params() != fields[0].params()) {
                return Err(SparseError::Format("SDR network file: a level is empty or mixes field shapes".into()));
            }
            let level = Level { fields, rf: rfs, in_dim };
            in_dim = level.out_dim();
            levels.push(level);
        }
        if !r.done() || levels.is_empty() {
            return Err(SparseError::Format("SDR network file has trailing bytes or no level".into()));
        }
        Ok(Self { input_dim, levels })
    }
}

const MAGIC: &[u8; 8] = b"SCSDRNET";
const VERSION: u64 = 1;

#[cfg(test)]
mod tests {
    use super::super::utils::Sdrs;
    use super::*;

    fn net(horizontal: bool) -> Network {
        let p = FieldParams { n_modules: 4, cells_per_module: 8, horizontal, ..FieldParams::default() };
        // 16 input bits, 4 fields of 4 bits, then one field over all level-0 codes
        let rf0: Vec<Vec<u32>> = (0..4u32).map(|f| (f * 4..f * 4 + 4).collect()).collect();
        let rf1 = vec![(0..4 * 32).collect()];
        Network::new(16, vec![(p.clone(), rf0), (p, rf1)], 5).unwrap()
    }

    #[test]
    fn learned_inputs_are_recognised_and_thread_count_free() {
        let rows: Vec<Vec<u32>> = vec![vec![0, 1, 5, 9, 14], vec![2, 3, 7, 8, 12, 15], vec![1, 4, 6, 10, 11, 13]];
        let s = Sdrs::from_rows(rows, 16);
        let v = SdrView::new("x", &s.indptr, &s.indices, 16).unwrap();
        let mut a = net(false);
        let ca = crate::parallel::install(Some(1), || a.learn_batch(&v, None)).unwrap().unwrap();
        let mut b = net(false);
        let cb = crate::parallel::install(Some(3), || b.learn_batch(&v, None)).unwrap().unwrap();
        assert_eq!(ca, cb);
        assert_eq!(a, b);
        // the last item is recognised exactly; earlier ones at least at level 0
        let r = a.recognize_batch(&v, None).unwrap();
        assert_eq!(&r[1][2 * 4..], &ca[1][2 * 4..]);
        assert_eq!(Network::from_bytes(&a.to_bytes()).unwrap(), a);
    }

    #[test]
    fn sequence_replays_through_levels() {
        let rows: Vec<Vec<u32>> = (0..5u32)
            .map(|t| vec![t, t + 5, (t * 3 + 1) % 16])
            .map(|mut r| {
                r.sort_unstable();
                r.dedup();
                r
            })
            .collect();
        let s = Sdrs::from_rows(rows.clone(), 16);
        let v = SdrView::new("x", &s.indptr, &s.indices, 16).unwrap();
        let mut n = net(true);
        let learned = n.learn_sequence(&v).unwrap();
        let replay = n.recall_sequence(&rows[0], 5).unwrap();
        assert_eq!(replay[1], learned[1]);
    }
}
