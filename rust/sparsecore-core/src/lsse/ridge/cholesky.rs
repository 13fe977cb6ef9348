//! Dense Cholesky factorisation and solves of a sample's `|S| × |S|` active block (and of the whole system when
//! the dense inverse is built).

use super::dot;
use crate::kernels;
use crate::SparseError;

/// Rows per panel of [`cholesky`]: the trailing rows take a panel's updates in one pass (four at a time), so the
/// trailing matrix is read and written once per panel instead of once per row.
const CHOL_PANEL: usize = 8;

/// In-place upper Cholesky factor `U` (`UᵀU = m`) of the `s × s` row-major SPD matrix `m`, right-looking by
/// panels of [`CHOL_PANEL`] rows: a panel is factored row by row, then every later row subtracts the panel's
/// contributions in one pass (the AVX2+FMA kernels where the CPU has them). Each entry receives the same updates
/// in the same order as in the row-by-row algorithm. Only the upper triangle is read and written.
pub(super) fn cholesky(m: &mut [f64], s: usize) -> Result<(), SparseError> {
    let mut k0 = 0;
    while k0 < s {
        let k1 = (k0 + CHOL_PANEL).min(s);
        let (head, tail) = m.split_at_mut(k1 * s);
        let panel = &mut head[k0 * s..];
        for k in k0..k1 {
            let (done, rest) = panel.split_at_mut((k + 1 - k0) * s);
            let rowk = &mut done[(k - k0) * s..];
            let d = rowk[k];
            if !(d > 0.0 && d.is_finite()) {
                return Err(SparseError::invalid(
                    "ridge",
                    format!("the active block is not positive definite (pivot {d:e}); increase ridge"),
                ));
            }
            let u = d.sqrt();
            rowk[k] = u;
            let inv = 1.0 / u;
            for v in &mut rowk[k + 1..] {
                *v *= inv;
            }
            for (i, rowi) in (k + 1..k1).zip(rest.chunks_exact_mut(s)) {
                let a = rowk[i];
                if a != 0.0 {
                    kernels::axpy_neg_f64(&mut rowi[i..], a, &rowk[i..]);
                }
            }
        }
        let panel = &head[k0 * s..];
        for (i, rowi) in (k1..s).zip(tail.chunks_exact_mut(s)) {
            let y = &mut rowi[i..];
            let mut k = k0;
            while k + 4 <= k1 {
                let r = |j: usize| &panel[(k + j - k0) * s + i..(k + j - k0 + 1) * s];
                let a = [r(0)[0], r(1)[0], r(2)[0], r(3)[0]];
                kernels::axpy4_neg_f64(y, a, [r(0), r(1), r(2), r(3)]);
                k += 4;
            }
            for k in k..k1 {
                let rowk = &panel[(k - k0) * s + i..(k - k0 + 1) * s];
                kernels::axpy_neg_f64(y, rowk[0], rowk);
            }
        }
        k0 = k1;
    }
    Ok(())
}

/// Solve `UᵀU x = rhs[:, o]` in place for column `o` of the `s × no` row-major `rhs` (`y` is scratch).
pub(super) fn solve_cholesky(u: &[f64], s: usize, rhs: &mut [f64], o: usize, no: usize, y: &mut Vec<f64>) {
    y.clear();
    y.extend((0..s).map(|i| rhs[i * no + o]));
    for k in 0..s {
        let row = &u[k * s..(k + 1) * s];
        y[k] /= row[k];
        let yk = y[k];
        kernels::axpy_neg_f64(&mut y[k + 1..], yk, &row[k + 1..]);
    }
    for i in (0..s).rev() {
        let row = &u[i * s..(i + 1) * s];
        y[i] = (y[i] - dot(&row[i + 1..], &y[i + 1..])) / row[i];
    }
    for (i, &v) in y.iter().enumerate() {
        rhs[i * no + o] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_cholesky_equals_the_textbook_one() {
        // Sizes around the panel width and the four-row passes; a few zero entries (sparse blocks).
        let mut st = 7u64;
        let mut rnd = || {
            st = st.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((st >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        for s in [1usize, 2, 3, 4, 5, 7, 8, 9, 12, 13, 16, 17, 31, 33] {
            let b: Vec<f64> = (0..s * (s + 2)).map(|i| if i % 5 == 0 { 0.0 } else { rnd() }).collect();
            let mut m = vec![0.0; s * s];
            for i in 0..s {
                for j in 0..s {
                    m[i * s + j] = (0..s + 2).map(|t| b[i * (s + 2) + t] * b[j * (s + 2) + t]).sum::<f64>();
                }
                m[i * s + i] += 0.1;
            }
            // Textbook (Cholesky–Banachiewicz) upper factor, row by row.
            let mut want = vec![0.0; s * s];
            for i in 0..s {
                for j in i..s {
                    let dot: f64 = (0..i).map(|t| want[t * s + i] * want[t * s + j]).sum();
                    want[i * s + j] =
                        if i == j { (m[i * s + i] - dot).sqrt() } else { (m[i * s + j] - dot) / want[i * s + i] };
                }
            }
            let mut got = m.clone();
            cholesky(&mut got, s).expect("positive definite");
            for i in 0..s {
                for j in i..s {
                    let (g, w) = (got[i * s + j], want[i * s + j]);
                    assert!((g - w).abs() <= 1e-10 * (1.0 + w.abs()), "s={s} ({i},{j}): {g} vs {w}");
                }
            }
        }
        let mut bad = vec![1.0, 2.0, 2.0, 1.0]; // eigenvalues 3 and -1
        assert!(matches!(cholesky(&mut bad, 2), Err(SparseError::InvalidArgument { arg: "ridge", .. })));
    }
}
