//! Row gathering and concatenation.

use super::{map_row_ids, Csr, CsrView};
use crate::SparseError;

/// The rows `rows[0], rows[1], ...` of `a` (repeats allowed) as a new batch.
///
/// Errors: a row id `>= a.n_rows()`.
pub fn take_rows(a: &CsrView<'_>, rows: &[u64]) -> Result<Csr, SparseError> {
    let n = a.n_rows() as u64;
    if let Some(p) = rows.iter().position(|&r| r >= n) {
        return Err(SparseError::invalid("rows", format!("rows[{p}] = {} is out of range for {n} rows", rows[p])));
    }
    Ok(map_row_ids(rows.len(), |i, oi, ov| {
        let (idx, val) = a.row(rows[i] as usize);
        oi.extend_from_slice(idx);
        ov.extend_from_slice(val);
    }))
}

/// Stack batches of one dimension vertically.
///
/// Errors: dims differ.
pub fn concat(parts: &[CsrView<'_>]) -> Result<Csr, SparseError> {
    if let Some(first) = parts.first() {
        if let Some((i, p)) = parts.iter().enumerate().find(|(_, p)| p.dim() != first.dim()) {
            return Err(SparseError::ShapeMismatch(format!(
                "batches[{i}]: dim {} does not match batches[0]'s dim {}",
                p.dim(),
                first.dim()
            )));
        }
    }
    let nnz: usize = parts.iter().map(CsrView::nnz).sum();
    let n_rows: usize = parts.iter().map(CsrView::n_rows).sum();
    let mut out =
        Csr { indptr: Vec::with_capacity(n_rows + 1), indices: Vec::with_capacity(nnz), data: Vec::with_capacity(nnz) };
    out.indptr.push(0);
    for p in parts {
        let base = out.indices.len() as i64;
        out.indptr.extend(p.indptr()[1..].iter().map(|&o| o + base));
        out.indices.extend_from_slice(p.indices());
        out.data.extend_from_slice(p.data());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sparse::testutil::canonical_csr;

    proptest! {
        #[test]
        fn take_then_concat_rebuilds(a in canonical_csr(15, 20), b in canonical_csr(15, 20)) {
            let (va, vb) = (a.view(20).unwrap(), b.view(20).unwrap());
            let both = concat(&[va, vb]).unwrap();
            let vboth = both.view(20).unwrap();
            let ids: Vec<u64> = (0..va.n_rows() as u64).collect();
            prop_assert_eq!(take_rows(&vboth, &ids).unwrap(), a.clone());
            let ids: Vec<u64> = (va.n_rows() as u64..vboth.n_rows() as u64).collect();
            prop_assert_eq!(take_rows(&vboth, &ids).unwrap(), b);
            prop_assert!(take_rows(&vboth, &[vboth.n_rows() as u64]).is_err());
        }
    }

    #[test]
    fn concat_checks_dims() {
        let z = Csr { indptr: vec![0], ..Csr::default() };
        assert!(concat(&[z.view(3).unwrap(), z.view(4).unwrap()]).is_err());
        assert_eq!(concat(&[]).unwrap().indptr, vec![0]);
    }
}
