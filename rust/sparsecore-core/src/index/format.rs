//! The index file format: a [`crate::container`] of kind `index`, whose arrays are 64-byte aligned and load
//! without copying (memory map).
//!
//! Kind version 4 holds `params` (u64: dim, block size, reorder flag, segment count), `ext_ids` (i64),
//! `deleted` (u64 bitset), and per segment `i` the arrays `s{i}.{field}` listed in [`FIELDS`] (of each pair
//! `fwd_terms`/`fwd_terms16` and `bm_blocks`/`bm_blocks16` one is empty; `fwd_hi`/`fwd_lo` are the upper and
//! lower 16 bits of each f32 weight). The metadata repeats the parameters as JSON for people and other tools.
//!
//! Files of the format before the container (magic `SPCOREIX`, version 3) still load; versions 1 and 2 of it
//! are refused with a message asking to build the index again. Loading checks what the container checks
//! (magic, versions, byte order, length, every checksum) and then every structural invariant the search relies
//! on, so a truncated, corrupted or foreign file is an error, never a crash.

use std::path::Path;
use std::sync::Arc;

use bytemuck::Pod;
use rayon::prelude::*;

use super::segment::Segment;
use super::storage::{Backing, Buf};
use super::{BuildParams, Index};
use crate::container::{self, fmt_err, u32_at, u64_at, Dtype, Section};
use crate::SparseError;

pub use crate::container::{clean_stale_temporaries, temporary_name};

/// Container kind of an index file.
pub const KIND: &str = "index";
/// Current kind version (3 was the last version of the pre-container format).
pub const VERSION: u32 = 4;
/// Magic of the pre-container format (version 3 still loads).
pub const LEGACY_MAGIC: &[u8; 8] = b"SPCOREIX";
const LEGACY_VERSION: u32 = 3;
const LEGACY_HEADER_LEN: usize = 64;
const LEGACY_ENTRY_LEN: usize = 32;
const BOM: u32 = 0x0102_0304;
const GLOBAL: u32 = 0xFFFF;

/// The arrays of one segment, in file order, with their element types.
pub const FIELDS: [(&str, Dtype); 14] = [
    ("doc_ids", Dtype::U32),
    ("fwd_ptr", Dtype::U64),
    ("fwd_terms", Dtype::U32),
    ("fwd_hi", Dtype::U16),
    ("terms", Dtype::U32),
    ("term_ptr", Dtype::U64),
    ("term_scale", Dtype::F32),
    ("bm_blocks", Dtype::U32),
    ("bm_codes", Dtype::U8),
    ("term_dense", Dtype::U32),
    ("dense_codes", Dtype::U8),
    ("fwd_terms16", Dtype::U16),
    ("bm_blocks16", Dtype::U16),
    ("fwd_lo", Dtype::U16),
];

fn segment_sections(si: usize, s: &Segment) -> [Section<'_>; FIELDS.len()] {
    let n = |f: usize| format!("s{si}.{}", FIELDS[f].0);
    [
        Section::of(n(0), &s.doc_ids),
        Section::of(n(1), &s.fwd_ptr),
        Section::of(n(2), &s.fwd_terms),
        Section::of(n(3), &s.fwd_hi),
        Section::of(n(4), &s.terms),
        Section::of(n(5), &s.term_ptr),
        Section::of(n(6), &s.term_scale),
        Section::of(n(7), &s.bm_blocks),
        Section::of(n(8), &s.bm_codes),
        Section::of(n(9), &s.term_dense),
        Section::of(n(10), &s.dense_codes),
        Section::of(n(11), &s.fwd_terms16),
        Section::of(n(12), &s.bm_blocks16),
        Section::of(n(13), &s.fwd_lo),
    ]
}

/// Write `index` to `path` atomically (temporary file in the same directory, fsync, rename, fsync directory).
/// Temporaries that killed saves left next to `path` are removed first ([`clean_stale_temporaries`]).
pub fn save(index: &Index, path: &Path) -> Result<(), SparseError> {
    let reorder = u64::from(index.params.reorder);
    let params = [index.dim, index.params.block_size as u64, reorder, index.segments.len() as u64];
    let mut sections = vec![
        Section::of("params", &params[..]),
        Section::of("ext_ids", &index.ext_ids),
        Section::of("deleted", &index.deleted),
    ];
    for (si, s) in index.segments.iter().enumerate() {
        sections.extend(segment_sections(si, s));
    }
    let meta = format!(
        r#"{{"dim": {}, "block_size": {}, "reorder": {}, "n_segments": {}}}"#,
        index.dim,
        index.params.block_size,
        index.params.reorder,
        index.segments.len()
    );
    container::write(path, KIND, VERSION, &meta, &sections)
}

/// A file-backed array.
fn buf<T: Pod>(backing: &Arc<Backing>, (offset, len): (usize, usize)) -> Buf<T> {
    Buf::File { backing: Arc::clone(backing), offset, len }
}

/// Where to find array `field` (an index into [`FIELDS`], or `None` for the global `ext_ids` / `deleted`
/// given by `global`) of segment `si`: `(offset, length in elements)`.
type Take<'a> = dyn FnMut(u32, usize) -> Result<(usize, usize), SparseError> + 'a;

/// The arrays of segment `si`, taken from `take` (segment, field -> offset, length).
fn load_segment(
    backing: &Arc<Backing>,
    take: &mut Take<'_>,
    si: u32,
    block_size: usize,
) -> Result<Segment, SparseError> {
    let mut t = |f: usize| take(si, f);
    Ok(Segment {
        block_size,
        doc_ids: buf(backing, t(0)?),
        fwd_ptr: buf(backing, t(1)?),
        fwd_terms: buf(backing, t(2)?),
        fwd_hi: buf(backing, t(3)?),
        terms: buf(backing, t(4)?),
        term_ptr: buf(backing, t(5)?),
        term_scale: buf(backing, t(6)?),
        bm_blocks: buf(backing, t(7)?),
        bm_codes: buf(backing, t(8)?),
        term_dense: buf(backing, t(9)?),
        dense_codes: buf(backing, t(10)?),
        fwd_terms16: buf(backing, t(11)?),
        bm_blocks16: buf(backing, t(12)?),
        fwd_lo: buf(backing, t(13)?),
        postings: None,
        term_lookup: Vec::new(),
    })
}

/// Assemble and check an index from its parts; a mapped backing is kept for the file watch.
#[allow(clippy::too_many_arguments)]
fn assemble(
    path: &Path,
    backing: &Arc<Backing>,
    (dim, block_size, reorder, n_segments): (u64, usize, bool, usize),
    ext_ids: (usize, usize),
    deleted: (usize, usize),
    take: &mut Take<'_>,
    verify: bool,
) -> Result<Index, SparseError> {
    if dim == 0 || dim > u64::from(u32::MAX) || block_size == 0 || block_size > 1 << 16 {
        return Err(fmt_err(path, "invalid dim or block size"));
    }
    if n_segments >= GLOBAL as usize {
        return Err(fmt_err(path, "inconsistent array count"));
    }
    let ext_ids: Buf<i64> = buf(backing, ext_ids);
    let deleted: Buf<u64> = buf(backing, deleted);
    let mut segments = Vec::with_capacity(n_segments);
    for si in 0..n_segments as u32 {
        segments.push(load_segment(backing, take, si, block_size)?);
    }
    let ext_ids = ext_ids.to_vec();
    let deleted = deleted.to_vec();
    let mut index = Index::from_parts(dim, BuildParams { block_size, reorder }, segments, ext_ids, deleted, verify)
        .map_err(|e| fmt_err(path, format!("invalid contents: {e}")))?;
    if matches!(**backing, Backing::Mapped(..)) {
        index.set_file(Arc::clone(backing));
    }
    Ok(index)
}

/// Load an index written by [`save`] (or a version-3 file of the format before the container).
///
/// Errors: `SparseError::Io` when the file cannot be read; `SparseError::Format` when it is not a sparsecore
/// index, has another version, is truncated, fails a checksum, or breaks a structural invariant.
pub fn load(path: &Path, mmap: bool) -> Result<Index, SparseError> {
    load_with(path, mmap, true)
}

/// [`load`], with the per-array checksums and the per-element invariants (sorted in-range terms, valid
/// weights, in-range blocks) checked only when `verify` is set.
///
/// Without `verify`, opening a memory-mapped file reads only its header, table and the per-document arrays
/// (ids, offsets): an index of millions of documents opens in a fraction of a second instead of a pass over
/// every byte. Everything the search reads stays bounds-checked, so a corrupted file gives wrong results or a
/// failed internal check (which the bindings report as a format error), never undefined behaviour.
/// Version-3 files are always verified.
pub fn load_with(path: &Path, mmap: bool, verify: bool) -> Result<Index, SparseError> {
    if container::sniff(path)? == Some(*LEGACY_MAGIC) {
        return load_legacy(path, mmap);
    }
    let c = container::open_checked(path, KIND, mmap, verify)?;
    if c.kind_version != VERSION {
        return Err(c.error(format!(
            "index version {} is not supported (this sparsecore reads {VERSION}); build the index again",
            c.kind_version
        )));
    }
    let params = c.entry("params")?;
    if params.dtype != Dtype::U64 || params.count != 4 {
        return Err(c.error("invalid params array"));
    }
    let p: Vec<u64> = c.bytes(params).chunks_exact(8).map(|b| u64_at(b, 0)).collect();
    let n_segments = usize::try_from(p[3]).unwrap_or(usize::MAX);
    if c.entries.len() != 3 + n_segments.saturating_mul(FIELDS.len()) {
        return Err(c.error("inconsistent array count"));
    }
    let shape = (p[0], usize::try_from(p[1]).unwrap_or(0), p[2] == 1, n_segments);
    let ext_ids = c.span::<i64>("ext_ids")?;
    let deleted = c.span::<u64>("deleted")?;
    let mut take = |si: u32, f: usize| -> Result<(usize, usize), SparseError> {
        let (field, dtype) = FIELDS[f];
        let name = format!("s{si}.{field}");
        let e = c.entry(&name)?;
        if e.dtype != dtype || e.shape.len() != 1 {
            return Err(c.error(format!("array {name:?} must be a 1-D {dtype:?} array")));
        }
        Ok((e.offset, e.count))
    };
    let index = assemble(path, &c.backing, shape, ext_ids, deleted, &mut take, verify)?;
    // The checks and the in-memory structures are built: searches fault back in only the pages they read.
    c.backing.release_resident();
    Ok(index)
}

/// Load a file of the pre-container format (magic `SPCOREIX`, version 3): 64-byte header, a table of 32-byte
/// entries (tag, element size, offset, length, crc32), 64-byte-aligned arrays; tags are `segment * 16 + field`
/// (global arrays use segment `0xFFFF`).
fn load_legacy(path: &Path, mmap: bool) -> Result<Index, SparseError> {
    let (backing, file_len, _) = container::open_backing(path, mmap, &[LEGACY_MAGIC], "index")?;
    let backing = Arc::new(backing);
    let b = &backing.bytes()[..file_len];
    let version = u32_at(b, 8);
    if version != LEGACY_VERSION {
        return Err(fmt_err(
            path,
            format!("index format version {version} is not supported (this sparsecore reads 3 and 4); build the index again"),
        ));
    }
    if u32_at(b, 12) != BOM {
        return Err(fmt_err(path, "written with another byte order"));
    }
    if crc32fast::hash(&b[..60]) != u32_at(b, 60) {
        return Err(fmt_err(path, "header checksum mismatch"));
    }
    let shape = (u64_at(b, 24), u32_at(b, 32) as usize, u32_at(b, 36) & 1 == 1, u64_at(b, 40) as usize);
    let n_arrays = u64_at(b, 48) as usize;
    if shape.3 >= GLOBAL as usize || n_arrays != 2 + shape.3 * FIELDS.len() {
        return Err(fmt_err(path, "inconsistent array count"));
    }
    let table_end = n_arrays
        .checked_mul(LEGACY_ENTRY_LEN)
        .and_then(|t| t.checked_add(LEGACY_HEADER_LEN))
        .filter(|&e| e <= b.len())
        .ok_or_else(|| fmt_err(path, "truncated table"))?;
    let table = &b[LEGACY_HEADER_LEN..table_end];
    if crc32fast::hash(table) != u32_at(b, 56) {
        return Err(fmt_err(path, "table checksum mismatch"));
    }
    // (tag, element size, offset, length, crc32)
    let entries: Vec<(u32, usize, usize, usize, u32)> = table
        .chunks_exact(LEGACY_ENTRY_LEN)
        .map(|e| (u32_at(e, 0), u32_at(e, 4) as usize, u64_at(e, 8) as usize, u64_at(e, 16) as usize, u32_at(e, 24)))
        .collect();
    for &(tag, elem, offset, len, _) in &entries {
        let end = len.checked_mul(elem).and_then(|n| n.checked_add(offset));
        if end.is_none_or(|end| end > b.len()) || offset % container::ALIGN != 0 || offset < table_end {
            return Err(fmt_err(path, format!("array {tag:#x} lies outside the file")));
        }
    }
    if let Some(e) = entries.par_iter().find_first(|e| crc32fast::hash(&b[e.2..e.2 + e.3 * e.1]) != e.4) {
        return Err(fmt_err(path, format!("checksum mismatch in array {:#x}", e.0)));
    }
    let mut next = entries.iter();
    let mut take_tag = |tag: u32, elem: usize| -> Result<(usize, usize), SparseError> {
        match next.next() {
            Some(&(t, e, offset, len, _)) if t == tag && e == elem => Ok((offset, len)),
            _ => Err(fmt_err(path, format!("expected array {tag:#x} of {elem}-byte elements"))),
        }
    };
    let ext_ids = take_tag(GLOBAL * 16, 8)?;
    let deleted = take_tag(GLOBAL * 16 + 1, 8)?;
    let mut take = |si: u32, f: usize| take_tag(si * 16 + f as u32, FIELDS[f].1.size());
    assemble(path, &backing, shape, ext_ids, deleted, &mut take, true)
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // scores of small multiples of 0.5 are exact
mod tests {
    use std::fs;
    use std::io::Write;

    use super::*;
    use crate::index::SearchParams;
    use crate::sparse::Csr;

    fn small_index(weight: f32) -> Index {
        let d = Csr { indptr: vec![0, 2, 3], indices: vec![1, 4, 4], data: vec![weight, 1.0, 2.0] };
        Index::build(&d.view(8).unwrap(), None, BuildParams::default()).unwrap()
    }

    fn scratch_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sparsecore-format-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    fn top_score(idx: &Index) -> f32 {
        let q = Csr { indptr: vec![0, 1], indices: vec![1], data: vec![1.0] };
        idx.search(&q.view(8).unwrap(), &SearchParams::exact(1), None).unwrap().scores[0]
    }

    /// Threads saving different indexes to one path: every temporary is their own, the file always loads as
    /// one of them, and nothing is left behind.
    #[test]
    fn concurrent_saves_to_one_path_never_tear() {
        let dir = scratch_dir("concurrent");
        let path = dir.join("ix.bin");
        let versions: Vec<Index> = (1..=4).map(|w| small_index(w as f32)).collect();
        std::thread::scope(|s| {
            for v in &versions {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..25 {
                        save(v, path).unwrap();
                    }
                });
            }
        });
        let loaded = load(&path, false).unwrap();
        assert!((1..=4).any(|w| top_score(&loaded) == w as f32));
        assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
        let names: std::collections::HashSet<String> = (0..100).map(|_| temporary_name("x")).collect();
        assert_eq!(names.len(), 100);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A temporary of a process that is gone is removed by the next save; ours and those of live processes stay.
    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let dir = scratch_dir("stale");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = [format!(".ix.bin.tmp-{dead}"), format!(".ix.bin.tmp-{dead}-3-00ff")];
        let kept = [format!(".ix.bin.tmp-{}-1-ab", std::process::id()), ".ix.bin.tmp-1-1-ab".to_string()];
        for n in stale.iter().chain(&kept) {
            fs::write(dir.join(n), b"partial").unwrap();
        }
        fs::write(dir.join(format!(".other.bin.tmp-{dead}")), b"x").unwrap();
        save(&small_index(1.0), &dir.join("ix.bin")).unwrap();
        let mut left = leftovers(&dir);
        left.sort();
        let mut want = vec![kept[0].clone(), kept[1].clone(), format!(".other.bin.tmp-{dead}")];
        want.sort();
        assert_eq!(left, want);
        let _ = fs::remove_dir_all(&dir);
    }

    /// Devices, directories and files whose header declares another length are refused before being read.
    #[test]
    fn non_regular_and_mislabelled_files_are_refused() {
        for mmap in [false, true] {
            for p in ["/dev/zero", "/dev/null", "/"] {
                if Path::new(p).exists() {
                    let e = load(Path::new(p), mmap).unwrap_err();
                    assert!(matches!(e, SparseError::Format(_) | SparseError::Io { .. }), "{p}: {e}");
                }
            }
        }
        let dir = scratch_dir("mislabelled");
        let path = dir.join("ix.bin");
        save(&small_index(1.0), &path).unwrap();
        let mut b = fs::read(&path).unwrap();
        b.extend_from_slice(&[0u8; 64]);
        fs::write(&path, &b).unwrap();
        let e = load(&path, false).unwrap_err().to_string();
        assert!(e.contains("header says"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A memory-mapped file written in place or truncated after loading makes searches fail with a format
    /// error instead of reading changed bytes (or faulting on lost pages).
    #[test]
    fn changes_to_a_mapped_file_are_detected() {
        let dir = scratch_dir("mapped");
        let path = dir.join("ix.bin");
        save(&small_index(1.0), &path).unwrap();
        let idx = load(&path, true).unwrap();
        assert_eq!(top_score(&idx), 1.0);
        assert!(idx.check_file().is_ok());
        // A save replaces the file with a new one: the mapped index stays valid.
        save(&small_index(5.0), &path).unwrap();
        assert!(idx.check_file().is_ok());
        assert_eq!(top_score(&idx), 1.0);
        let idx = load(&path, true).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut b = fs::read(&path).unwrap();
        b[container::HEADER_LEN] ^= 0xFF;
        fs::OpenOptions::new().write(true).open(&path).unwrap().write_all(&b).unwrap();
        let q = Csr { indptr: vec![0, 1], indices: vec![1], data: vec![1.0] };
        let e = idx.search(&q.view(8).unwrap(), &SearchParams::exact(1), None).unwrap_err().to_string();
        assert!(e.contains("was written"), "{e}");
        let idx = load(&path, false);
        assert!(idx.is_err(), "the corrupted file must not load");
        save(&small_index(2.0), &path).unwrap();
        let idx = load(&path, true).unwrap();
        fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(100).unwrap();
        let e = idx.search_one(&[1], &[1.0], &SearchParams::exact(1), None).unwrap_err().to_string();
        assert!(e.contains("changed size"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A file of the pre-container format (version 3, written by sparsecore 0.1.0) still loads and searches
    /// like the same index saved now.
    #[test]
    fn legacy_version_3_file_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/legacy/index_v3.bin");
        let old = load(&p, false).unwrap();
        let dir = scratch_dir("legacy");
        let path = dir.join("ix.bin");
        save(&old, &path).unwrap();
        assert_eq!(container::sniff(&path).unwrap(), Some(*container::MAGIC));
        for mmap in [false, true] {
            let new = load(&path, mmap).unwrap();
            let q = Csr { indptr: vec![0, 2], indices: vec![3, 7], data: vec![1.0, 0.5] };
            let a = old.search(&q.view(30).unwrap(), &SearchParams::exact(10), None).unwrap();
            let b = new.search(&q.view(30).unwrap(), &SearchParams::exact(10), None).unwrap();
            assert_eq!((a.ids, a.scores), (b.ids, b.scores));
        }
        let mut bytes = fs::read(&p).unwrap();
        bytes[8] = 2;
        fs::write(&path, &bytes).unwrap();
        let e = load(&path, false).unwrap_err().to_string();
        assert!(e.contains("version 2") && e.contains("build the index again"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
