//! SDR memory: sparse distributed representations, coding fields that learn in a single trial, hierarchies of
//! fields, sequences and an overlap readout.
//!
//! A *coding field* is `Q` competitive modules of `K` binary cells; a *code* is one winner per module. The Code
//! Selection Algorithm (CSA) of Rinkus picks codes so that similar inputs get overlapping codes and a familiar
//! input gets its old code back, and learns with one binary Hebbian update per input:
//!
//! - G. Rinkus (2010), "A cortical sparse distributed coding model linking mini- and macrocolumn-scale
//!   functionality", Frontiers in Neuroanatomy 4:17.
//! - G. Rinkus (2014), "Sparsey™: event recognition via deep hierarchical sparse distributed codes", Frontiers in
//!   Computational Neuroscience 8:160.
//! - G. Rinkus (2017), "Superposed episodic and semantic memory via sparse distributed representation",
//!   arXiv:1710.07829.
//!
//! Written from the formulas of those papers (DESIGN.md §3.6); no code of any implementation was consulted.
//! Randomness comes from a counter-based generator ([`rng`]) keyed by (seed, field, item, module), so every result
//! is the same for any thread count.
//!
//! Modules: [`utils`] (batched SDR set operations and encoders), [`field`] (the CSA), [`network`] (hierarchies
//! with receptive fields and sequences), [`classifier`] (kNN over stored codes by overlap).

pub mod classifier;
pub mod field;
pub mod network;
pub mod rng;
pub mod utils;

use crate::SparseError;

/// Growable little-endian byte buffer for the save format of fields and networks.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn words(&mut self, v: &[u64]) {
        self.u64(v.len() as u64);
        for w in v {
            self.u64(*w);
        }
    }
    pub(crate) fn u32s(&mut self, v: &[u32]) {
        self.u64(v.len() as u64);
        for w in v {
            self.0.extend_from_slice(&w.to_le_bytes());
        }
    }
}

/// Reader over bytes written by [`Writer`]; every shortfall is a [`SparseError::Format`].
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn truncated() -> SparseError {
    SparseError::Format("SDR file is truncated".into())
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], SparseError> {
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let s = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn u64(&mut self) -> Result<u64, SparseError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub(crate) fn usize(&mut self) -> Result<usize, SparseError> {
        usize::try_from(self.u64()?).map_err(|_| SparseError::Format("SDR file: size out of range".into()))
    }
    pub(crate) fn f64(&mut self) -> Result<f64, SparseError> {
        Ok(f64::from_bits(self.u64()?))
    }
    pub(crate) fn words(&mut self) -> Result<Vec<u64>, SparseError> {
        let n = self.usize()?;
        let b = self.take(n.checked_mul(8).ok_or_else(truncated)?)?;
        Ok(b.chunks_exact(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
    }
    pub(crate) fn u32s(&mut self) -> Result<Vec<u32>, SparseError> {
        let n = self.usize()?;
        let b = self.take(n.checked_mul(4).ok_or_else(truncated)?)?;
        Ok(b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
    pub(crate) fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

/// Wrap a payload as `magic | version | payload | crc32(magic..payload)`.
pub(crate) fn seal(magic: &[u8], version: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 20);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Check magic, version and checksum of bytes made by [`seal`]; returns the payload.
pub(crate) fn unseal<'a>(magic: &[u8], version: u64, what: &str, buf: &'a [u8]) -> Result<&'a [u8], SparseError> {
    if buf.len() < 20 || &buf[..8] != magic {
        return Err(SparseError::Format(format!("not a sparsecore {what} file (bad magic)")));
    }
    let (body, tail) = buf.split_at(buf.len() - 4);
    let crc = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let mut v = [0u8; 8];
    v.copy_from_slice(&body[8..16]);
    let found = u64::from_le_bytes(v);
    if found != version {
        return Err(SparseError::Format(format!(
            "{what} file version {found} is not supported (this sparsecore reads version {version})"
        )));
    }
    if crc32fast::hash(body) != crc {
        return Err(SparseError::Format(format!("{what} file: checksum mismatch, the file is corrupted")));
    }
    Ok(&body[16..])
}
