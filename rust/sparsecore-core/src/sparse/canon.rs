//! Canonical form: indices strictly increasing within every row, duplicates merged.

use rayon::prelude::*;

use super::{map_rows, Csr, CsrView};
use crate::SparseError;

/// How repeated indices within a row are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicates {
    /// Add them up (scipy's meaning of repeated COO entries), in their input order.
    Sum,
    /// Keep the largest.
    Max,
}

impl std::str::FromStr for Duplicates {
    type Err = SparseError;
    fn from_str(s: &str) -> Result<Self, SparseError> {
        match s {
            "sum" => Ok(Self::Sum),
            "max" => Ok(Self::Max),
            other => Err(SparseError::invalid("duplicates", format!("must be \"sum\" or \"max\", got {other:?}"))),
        }
    }
}

/// Whether every row's indices are strictly increasing.
pub fn is_canonical(a: &CsrView<'_>) -> bool {
    (0..a.n_rows()).into_par_iter().all(|r| a.row(r).0.windows(2).all(|w| w[0] < w[1]))
}

/// Sort every row by index and merge repeated indices; with `drop_zeros` also remove stored zeros (after
/// merging, so `+1` and `-1` at one index vanish together).
pub fn canonicalize(a: &CsrView<'_>, duplicates: Duplicates, drop_zeros: bool) -> Csr {
    map_rows(a, |idx, val, oi, ov| {
        let start = oi.len();
        if idx.windows(2).all(|w| w[0] < w[1]) {
            oi.extend_from_slice(idx);
            ov.extend_from_slice(val);
        } else {
            let mut pairs: Vec<(u32, f32)> = idx.iter().copied().zip(val.iter().copied()).collect();
            pairs.sort_by_key(|p| p.0); // stable: duplicates are summed in input order
            for (c, v) in pairs {
                if oi.len() > start && oi[oi.len() - 1] == c {
                    let last = ov.len() - 1;
                    ov[last] = match duplicates {
                        Duplicates::Sum => ov[last] + v,
                        Duplicates::Max => ov[last].max(v),
                    };
                } else {
                    oi.push(c);
                    ov.push(v);
                }
            }
        }
        if drop_zeros {
            let mut w = start;
            for r in start..oi.len() {
                if ov[r] != 0.0 {
                    oi[w] = oi[r];
                    ov[w] = ov[r];
                    w += 1;
                }
            }
            oi.truncate(w);
            ov.truncate(w);
        }
    })
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // the test data make every compared value exact
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn canonicalize_matches_naive(
            rows in proptest::collection::vec(proptest::collection::vec((0u32..10, -3i32..=3), 0..12), 0..10),
            max: bool, drop_zeros: bool,
        ) {
            let mut ip = vec![0i64];
            let (mut idx, mut val) = (vec![], vec![]);
            for r in &rows {
                for &(c, v) in r { idx.push(c); val.push(v as f32); }
                ip.push(idx.len() as i64);
            }
            let v = CsrView::new(&ip, &idx, &val, 10).unwrap();
            let dup = if max { Duplicates::Max } else { Duplicates::Sum };
            let got = canonicalize(&v, dup, drop_zeros);
            let gv = got.view(10).unwrap();
            prop_assert!(gv.check(true).is_ok());
            for (r, row) in rows.iter().enumerate() {
                let mut want: BTreeMap<u32, f32> = BTreeMap::new();
                for &(c, x) in row {
                    let x = x as f32;
                    want.entry(c).and_modify(|e| *e = if max { e.max(x) } else { *e + x }).or_insert(x);
                }
                let want: Vec<(u32, f32)> = want.into_iter().filter(|&(_, x)| !drop_zeros || x != 0.0).collect();
                let (gi, gd) = gv.row(r);
                let got_row: Vec<(u32, f32)> = gi.iter().copied().zip(gd.iter().copied()).collect();
                prop_assert_eq!(got_row, want);
            }
            prop_assert!(is_canonical(&gv));
        }
    }

    #[test]
    fn parses_duplicates() {
        assert_eq!("sum".parse::<Duplicates>().unwrap(), Duplicates::Sum);
        assert!("mean".parse::<Duplicates>().is_err());
    }
}
