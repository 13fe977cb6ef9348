//! One sample's update: its outer product into the active rows of `A` and into `B`, then the weights of the
//! active block re-solved with the rest fixed (block Gauss–Seidel), or the exact rule's dense-inverse update.

use rayon::prelude::*;

use super::cholesky::{cholesky, solve_cholesky};
use super::inverse::dense_inverse_max_rows;
use super::row::{Block, Row, SweepMany, SweepOne, NOT_IN_BLOCK};
use super::{OnlineRidge, Scratch, UpdateRule, EXACT_TOL};
use crate::SparseError;

/// Active sets at least this large update their rows on the rayon pool (when it has more than one thread): a
/// row's update is one merge-walk over the row, microseconds against a ~10 µs fork-join.
const PAR_BLOCK: usize = 32;

/// ... and only when their rows hold at least this many entries in all: short rows mean an update dominated by
/// inserting new pairs, whose allocations contend between threads (measured at dim 10^6: 2 threads slower).
const PAR_SWEEP: usize = 100_000;

/// Rows per task when a sample's rows are updated on the pool (each task prefetches its next row).
const PAR_CHUNK: usize = 8;

impl OnlineRidge {
    pub(super) fn update_one(&mut self, idx: &[u32], val: &[f32], y: &[f64]) -> Result<(), SparseError> {
        let dense = self.dense_inverse_ready()?;
        let mut sc = std::mem::take(&mut self.scratch);
        sc.act.clear();
        sc.val.clear();
        for (&f, &v) in idx.iter().zip(val) {
            if v != 0.0 {
                let r = self.row_id(f, idx.len());
                sc.act.push(r);
                sc.val.push(f64::from(v));
            }
        }
        let s = sc.act.len();
        let no = self.n_out;
        self.n_seen += 1;
        if s == 0 {
            self.scratch = sc;
            return Ok(());
        }
        // A_SS += φφᵀ (read back into the dense block), B_S += φ yᵀ.
        let n_rows = self.features.len();
        sc.sort_active();
        // Every entry of both is written below.
        sc.m.resize(s * s, 0.0);
        sc.rhs.resize(s * no, 0.0);
        for a in 0..s {
            let ra = sc.act[a] as usize;
            for (bo, yo) in self.b[ra * no..(ra + 1) * no].iter_mut().zip(y) {
                *bo += sc.val[a] * yo;
            }
        }
        self.update_rows(&mut sc, n_rows);
        if dense && n_rows <= dense_inverse_max_rows() {
            // A and B are updated; W is the solution before the sample, moved to the one after it.
            for (&r, old) in sc.act.iter().zip(sc.w_old.chunks_exact(no)) {
                self.w[r as usize * no..(r as usize + 1) * no].copy_from_slice(old);
            }
            if self.update_inverse(&sc.act, &sc.val, y) {
                self.scratch = sc;
                return Ok(());
            }
        }
        // Too many features for the dense inverse from now on (or it lost definiteness to rounding): the block
        // step and conjugate gradients below.
        self.inverse = None;
        for a in 0..s {
            sc.m[a * s + a] += self.ridge;
        }
        if let Err(e) = cholesky(&mut sc.m, s) {
            for (&r, old) in sc.act.iter().zip(sc.w_old.chunks_exact(no)) {
                self.w[r as usize * no..(r as usize + 1) * no].copy_from_slice(old);
            }
            self.take_back(&sc, y);
            self.scratch = sc;
            return Err(e);
        }
        for o in 0..no {
            solve_cholesky(&sc.m, s, &mut sc.rhs, o, no, &mut sc.y);
        }
        for a in 0..s {
            let ra = sc.act[a] as usize;
            self.w[ra * no..(ra + 1) * no].copy_from_slice(&sc.rhs[a * no..(a + 1) * no]);
        }
        self.scratch = sc;
        if self.rule == UpdateRule::Exact {
            let rep = self.solve_exact(EXACT_TOL, 10 * self.features.len().max(10))?;
            if rep.rel_residual > EXACT_TOL {
                self.n_unconverged += 1;
            }
        }
        Ok(())
    }

    /// The row part of [`Self::update_one`] for the active set in `sc`: `A_SS += φφᵀ`, read back into `sc.m`
    /// (dense, `s × s`), and `sc.rhs = B_S − A_{S,S̄} W_S̄`, with the block's weights left at 0 (their old values
    /// in `sc.w_old`).
    fn update_rows(&mut self, sc: &mut Scratch, n_rows: usize) {
        let (s, no) = (sc.act.len(), self.n_out);
        // Each active row is independent: take the rows out, update and sweep them (in parallel when the pool
        // has threads and the block is large), put them back. Every row's arithmetic is sequential, so the
        // result does not depend on the thread count.
        let mut taken: Vec<Row> = sc.act.iter().map(|&r| std::mem::take(&mut self.rows[r as usize])).collect();
        if sc.pos.len() < n_rows {
            sc.pos.resize(n_rows, NOT_IN_BLOCK);
            sc.member.resize(n_rows.div_ceil(64), 0);
        }
        for (a, &r) in sc.act.iter().enumerate() {
            sc.pos[r as usize] = a as u32;
            sc.member[r as usize / 64] |= 1 << (r % 64);
        }
        // The block's weights read as 0 while the rows are swept (they are re-solved below; kept in `w_old` in
        // case the block fails to factor).
        sc.w_old.clear();
        for &r in &sc.act {
            let wr = &mut self.w[r as usize * no..(r as usize + 1) * no];
            sc.w_old.extend_from_slice(wr);
            wr.fill(0.0);
        }
        let (act, order, val, pos, member) = (&sc.act, &sc.order, &sc.val, &sc.pos, &sc.member);
        let (w, b) = (&self.w, &self.b);
        let one_row =
            |a: usize, row: &mut Row, next: Option<&Row>, m_row: &mut [f64], out: &mut [f64], hits: &mut Vec<u32>| {
                let ra = act[a] as usize;
                let va = val[a];
                // A_SS += φφᵀ (read back into the dense block) and, in the same pass over the row,
                // rhs = B_S − A_{S,S̄} W_S̄ (every entry outside the block; the ridge goes on the diagonal later).
                out.copy_from_slice(&b[ra * no..(ra + 1) * no]);
                let blk = Block { order, keys: act, x: val, pos, member, n_rows };
                if no == 1 {
                    let mut sw = SweepOne { w, acc: 0.0 };
                    row.update(&blk, va, m_row, &mut sw, hits, next);
                    out[0] -= sw.acc;
                } else {
                    let mut acc = vec![0.0; no];
                    row.update(&blk, va, m_row, &mut SweepMany { w, acc: &mut acc }, hits, next);
                    for (o, a) in out.iter_mut().zip(&acc) {
                        *o -= a;
                    }
                }
            };
        // Rows `first..` in order, each one prefetching the next.
        let run = |first: usize, rows: &mut [Row], m: &mut [f64], rhs: &mut [f64], hits: &mut Vec<u32>| {
            for j in 0..rows.len() {
                let (head, tail) = rows.split_at_mut(j + 1);
                let (m_row, out) = (&mut m[j * s..(j + 1) * s], &mut rhs[j * no..(j + 1) * no]);
                one_row(first + j, &mut head[j], tail.first(), m_row, out, hits);
            }
        };
        let sweep: usize = taken.iter().map(Row::len).sum();
        if s >= PAR_BLOCK && sweep >= PAR_SWEEP && rayon::current_num_threads() > 1 {
            taken
                .par_chunks_mut(PAR_CHUNK)
                .zip(sc.m.par_chunks_mut(PAR_CHUNK * s))
                .zip(sc.rhs.par_chunks_mut(PAR_CHUNK * no))
                .enumerate()
                .for_each_init(Vec::new, |hits, (ci, ((rows, m), rhs))| run(ci * PAR_CHUNK, rows, m, rhs, hits));
        } else {
            run(0, &mut taken, &mut sc.m, &mut sc.rhs, &mut sc.hits);
        }
        for (&r, row) in sc.act.iter().zip(taken) {
            self.rows[r as usize] = row;
            sc.pos[r as usize] = NOT_IN_BLOCK;
            sc.member[r as usize / 64] &= !(1 << (r % 64));
        }
    }

    /// Subtract a sample's contribution again (to rounding) after its block failed to factor, so that the model
    /// stays the one of the samples before it.
    fn take_back(&mut self, sc: &Scratch, y: &[f64]) {
        let (n_rows, no) = (self.features.len(), self.n_out);
        for (&ra, &va) in sc.act.iter().zip(&sc.val) {
            let ra = ra as usize;
            for (&rc, &vc) in sc.act.iter().zip(&sc.val) {
                self.rows[ra].add(rc, -(va * vc), n_rows);
            }
            for (bo, yo) in self.b[ra * no..(ra + 1) * no].iter_mut().zip(y) {
                *bo -= va * yo;
            }
        }
        self.n_seen -= 1;
    }
}
