//! The index file format: versioned, checksummed, 64-byte-aligned arrays that load without copying.
//!
//! ```text
//! header (64 B):  magic "SPCOREIX" | version u32 | byte-order mark u32 (0x01020304) | file length u64
//!                 | dim u64 | block_size u32 | flags u32 (bit 0: reorder) | n_segments u64 | n_arrays u64
//!                 | table crc32 u32 | header crc32 u32
//! table:          n_arrays x 32 B: tag u32 | element size u32 | offset u64 | length (elements) u64 | crc32 u32 | 0 u32
//! data:           each array at a 64-byte-aligned offset, little-endian, zero padding between arrays
//! ```
//! Arrays, in order: `ext_ids` (i64), `deleted` (u64 bitset), then per segment `doc_ids` u32, `fwd_ptr` u64,
//! `fwd_terms` u32, `fwd_hi` u16, `terms` u32, `term_ptr` u64, `term_scale` f32, `bm_blocks` u32,
//! `bm_codes` u8, `term_dense` u32, `dense_codes` u8, `fwd_terms16` u16, `bm_blocks16` u16, `fwd_lo` u16 (of
//! each pair `fwd_terms`/`fwd_terms16` and `bm_blocks`/`bm_blocks16` one is empty; `fwd_hi`/`fwd_lo` are the
//! upper and lower 16 bits of each f32 weight). Tags are `segment * 16 + field` (global arrays use segment
//! `0xFFFF`). Version history: 1 had only u32 block ids; 2 added `fwd_terms16` and `bm_blocks16`; 3 split the
//! f32 weights `fwd_vals` (field 3) into `fwd_hi` (field 3) and `fwd_lo` (field 13). Loading checks magic,
//! version, byte order, length, every checksum, and every structural invariant the search relies on, so a
//! truncated, corrupted or foreign file is an error, never a crash. Files are written to a temporary name,
//! fsynced, and renamed over the target (atomic on POSIX).

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytemuck::Pod;
use rayon::prelude::*;

use super::segment::Segment;
use super::storage::{advise_huge, Backing, Buf, FileWatch};
use super::{BuildParams, Index};
use crate::SparseError;

/// File magic.
pub const MAGIC: &[u8; 8] = b"SPCOREIX";
/// Current format version.
pub const VERSION: u32 = 3;
const BOM: u32 = 0x0102_0304;
const HEADER_LEN: usize = 64;
const ENTRY_LEN: usize = 32;
const ALIGN: usize = 64;
const GLOBAL: u32 = 0xFFFF;
const SEGMENT_FIELDS: u32 = 14;

fn fmt_err(path: &Path, msg: impl std::fmt::Display) -> SparseError {
    SparseError::Format(format!("{}: {msg}", path.display()))
}

fn io_err(path: &Path, e: &std::io::Error) -> SparseError {
    SparseError::Io { not_found: e.kind() == std::io::ErrorKind::NotFound, msg: format!("{}: {e}", path.display()) }
}

/// One array to write: tag, element size and bytes.
struct Out<'a> {
    tag: u32,
    elem: u32,
    bytes: &'a [u8],
}

fn arr<T: Pod>(tag: u32, v: &[T]) -> Out<'_> {
    Out { tag, elem: std::mem::size_of::<T>() as u32, bytes: bytemuck::cast_slice(v) }
}

fn segment_arrays(si: u32, s: &Segment) -> [Out<'_>; SEGMENT_FIELDS as usize] {
    let t = |f: u32| si * 16 + f;
    [
        arr(t(0), &s.doc_ids),
        arr(t(1), &s.fwd_ptr),
        arr(t(2), &s.fwd_terms),
        arr(t(3), &s.fwd_hi),
        arr(t(4), &s.terms),
        arr(t(5), &s.term_ptr),
        arr(t(6), &s.term_scale),
        arr(t(7), &s.bm_blocks),
        arr(t(8), &s.bm_codes),
        arr(t(9), &s.term_dense),
        arr(t(10), &s.dense_codes),
        arr(t(11), &s.fwd_terms16),
        arr(t(12), &s.bm_blocks16),
        arr(t(13), &s.fwd_lo),
    ]
}

fn pad(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// A temporary name for a file being written as `.{name}`: `.{name}.tmp-{pid}-{thread}-{random}`. Unique per
/// process, thread and call, so concurrent saves to one path never share a temporary (the last rename wins and
/// the file is always whole); the pid lets a later save remove what a killed process left behind. The Python
/// savers (`sparsecore._io`) use the same scheme.
pub fn temporary_name(name: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    format!(".{name}.tmp-{}-{thread}-{:016x}", std::process::id(), h.finish())
}

/// Whether process `pid` is certainly gone (Linux: no `/proc/{pid}`; elsewhere never certain).
fn process_is_gone(pid: u32) -> bool {
    cfg!(target_os = "linux") && Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove temporaries of saves to `dir/name` left by processes that died mid-save (`.{name}.tmp-{pid}` or
/// `.{name}.tmp-{pid}-...` whose pid is not running); returns how many were removed. Best effort: errors are
/// ignored, and only regular files are removed.
pub fn clean_stale_temporaries(dir: &Path, name: &str) -> usize {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        let Ok(pid) = rest.split('-').next().unwrap_or("").parse::<u32>() else { continue };
        let regular = e.file_type().is_ok_and(|t| t.is_file());
        if regular && pid != std::process::id() && process_is_gone(pid) && fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Write `index` to `path` atomically (temporary file in the same directory, fsync, rename, fsync directory).
/// Temporaries that killed saves left next to `path` are removed first ([`clean_stale_temporaries`]).
pub fn save(index: &Index, path: &Path) -> Result<(), SparseError> {
    if cfg!(target_endian = "big") {
        return Err(SparseError::Io { not_found: false, msg: "saving needs a little-endian machine".into() });
    }
    let mut outs = vec![arr(GLOBAL * 16, &index.ext_ids), arr(GLOBAL * 16 + 1, &index.deleted)];
    for (si, s) in index.segments.iter().enumerate() {
        outs.extend(segment_arrays(si as u32, s));
    }
    let crcs: Vec<u32> = outs.par_iter().map(|o| crc32fast::hash(o.bytes)).collect();
    let table_len = outs.len() * ENTRY_LEN;
    let mut offset = pad(HEADER_LEN + table_len);
    let mut table = Vec::with_capacity(table_len);
    for (o, crc) in outs.iter().zip(&crcs) {
        table.extend_from_slice(&o.tag.to_le_bytes());
        table.extend_from_slice(&o.elem.to_le_bytes());
        table.extend_from_slice(&(offset as u64).to_le_bytes());
        table.extend_from_slice(&((o.bytes.len() / o.elem as usize) as u64).to_le_bytes());
        table.extend_from_slice(&crc.to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
        offset = pad(offset + o.bytes.len());
    }
    let file_len = offset;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&BOM.to_le_bytes());
    header.extend_from_slice(&(file_len as u64).to_le_bytes());
    header.extend_from_slice(&index.dim.to_le_bytes());
    header.extend_from_slice(&(index.params.block_size as u32).to_le_bytes());
    header.extend_from_slice(&u32::from(index.params.reorder).to_le_bytes());
    header.extend_from_slice(&(index.segments.len() as u64).to_le_bytes());
    header.extend_from_slice(&(outs.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(&table).to_le_bytes());
    let hcrc = crc32fast::hash(&header);
    header.extend_from_slice(&hcrc.to_le_bytes());
    debug_assert_eq!(header.len(), HEADER_LEN);

    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| SparseError::Io { not_found: false, msg: format!("{}: not a file path", path.display()) })?;
    let name = name.to_string_lossy();
    clean_stale_temporaries(dir, &name);
    let tmp = dir.join(temporary_name(&name));
    let write = || -> std::io::Result<()> {
        let f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(&header)?;
        w.write_all(&table)?;
        let mut at = HEADER_LEN + table_len;
        for o in &outs {
            let start = pad(at);
            w.write_all(&vec![0u8; start - at])?;
            w.write_all(o.bytes)?;
            at = start + o.bytes.len();
        }
        w.write_all(&vec![0u8; file_len - at])?;
        let f = w.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            d.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(path, &e)
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

struct Entry {
    tag: u32,
    elem: u32,
    offset: usize,
    len: usize,
    crc: u32,
}

/// Open `path` as a backing (memory-mapped, or read into anonymous memory advised for huge pages when large) and
/// its length in bytes. Only regular files are read, and no more bytes than the header declares (so a device such
/// as `/dev/zero`, a pipe or a file that keeps growing is an error, never an endless read).
fn open_backing(path: &Path, mmap: bool) -> Result<(Backing, usize), SparseError> {
    // Checked before opening, which would block on a pipe with no writer; and again on the open file.
    let regular = |m: &fs::Metadata| {
        if m.is_file() {
            Ok(())
        } else {
            Err(fmt_err(path, "not a regular file (a directory, device, pipe or socket)"))
        }
    };
    regular(&fs::metadata(path).map_err(|e| io_err(path, &e))?)?;
    let mut f = File::open(path).map_err(|e| io_err(path, &e))?;
    let meta = f.metadata().map_err(|e| io_err(path, &e))?;
    regular(&meta)?;
    let len = usize::try_from(meta.len()).map_err(|_| fmt_err(path, "file too large for this machine"))?;
    // The header first: a foreign or truncated file is refused before anything else is read or mapped.
    let mut header = [0u8; HEADER_LEN];
    if len < HEADER_LEN || f.read_exact(&mut header).is_err() || &header[..8] != MAGIC {
        return Err(fmt_err(path, "not a sparsecore index file (bad magic)"));
    }
    let declared = u64_at(&header, 16);
    if declared != len as u64 {
        return Err(fmt_err(path, format!("truncated or extended: header says {declared} bytes, file has {len}")));
    }
    if mmap {
        // SAFETY: the map is read-only and private to this index. sparsecore never writes an existing file in
        // place (saves go to a new file renamed over the old one, leaving mapped inodes intact); a change by
        // another program is caught before each search by the file watch (see `FileWatch`).
        #[allow(unsafe_code)]
        let m = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| io_err(path, &e))?;
        if m.len() != len {
            return Err(fmt_err(path, "the file changed size while being mapped"));
        }
        Ok((Backing::Mapped(m, FileWatch::new(f, path, &meta)), len))
    } else {
        let mut anon = memmap2::MmapMut::map_anon(len).map_err(|e| io_err(path, &e))?;
        advise_huge(&anon);
        anon[..HEADER_LEN].copy_from_slice(&header);
        f.read_exact(&mut anon[HEADER_LEN..len]).map_err(|e| io_err(path, &e))?;
        let mut one = [0u8; 1];
        if f.read(&mut one).map_err(|e| io_err(path, &e))? != 0 {
            return Err(fmt_err(path, "file grew while being read"));
        }
        Ok((Backing::Anon(anon.make_read_only().map_err(|e| io_err(path, &e))?), len))
    }
}

/// A file-backed array.
fn buf<T: Pod>(backing: &Arc<Backing>, (offset, len): (usize, usize)) -> Buf<T> {
    Buf::File { backing: Arc::clone(backing), offset, len }
}

/// The arrays of segment `si`, in file order, taken from `take` (tag, element size -> offset, length).
fn load_segment(
    backing: &Arc<Backing>,
    take: &mut impl FnMut(u32, usize) -> Result<(usize, usize), SparseError>,
    si: u32,
    block_size: usize,
) -> Result<Segment, SparseError> {
    let t = |f: u32| si * 16 + f;
    Ok(Segment {
        block_size,
        doc_ids: buf(backing, take(t(0), 4)?),
        fwd_ptr: buf(backing, take(t(1), 8)?),
        fwd_terms: buf(backing, take(t(2), 4)?),
        fwd_hi: buf(backing, take(t(3), 2)?),
        terms: buf(backing, take(t(4), 4)?),
        term_ptr: buf(backing, take(t(5), 8)?),
        term_scale: buf(backing, take(t(6), 4)?),
        bm_blocks: buf(backing, take(t(7), 4)?),
        bm_codes: buf(backing, take(t(8), 1)?),
        term_dense: buf(backing, take(t(9), 4)?),
        dense_codes: buf(backing, take(t(10), 1)?),
        fwd_terms16: buf(backing, take(t(11), 2)?),
        bm_blocks16: buf(backing, take(t(12), 2)?),
        fwd_lo: buf(backing, take(t(13), 2)?),
        postings: None,
        term_lookup: Vec::new(),
    })
}

/// Load an index written by [`save`].
///
/// Errors: `SparseError::Io` when the file cannot be read; `SparseError::Format` when it is not a sparsecore
/// index, has another version, is truncated, fails a checksum, or breaks a structural invariant.
pub fn load(path: &Path, mmap: bool) -> Result<Index, SparseError> {
    let (backing, file_len) = open_backing(path, mmap)?;
    let backing = Arc::new(backing);
    // `open_backing` checked the magic and that the file has the length its header declares.
    let b = &backing.bytes()[..file_len];
    let version = u32_at(b, 8);
    if version != VERSION {
        return Err(fmt_err(
            path,
            format!("format version {version} is not supported (this build reads {VERSION}); build the index again"),
        ));
    }
    if u32_at(b, 12) != BOM {
        return Err(fmt_err(path, "written with another byte order"));
    }
    if crc32fast::hash(&b[..60]) != u32_at(b, 60) {
        return Err(fmt_err(path, "header checksum mismatch"));
    }
    let dim = u64_at(b, 24);
    let block_size = u32_at(b, 32) as usize;
    let reorder = u32_at(b, 36) & 1 == 1;
    let n_segments = u64_at(b, 40) as usize;
    let n_arrays = u64_at(b, 48) as usize;
    if dim == 0 || dim > u64::from(u32::MAX) || block_size == 0 || block_size > 1 << 16 {
        return Err(fmt_err(path, "invalid dim or block size"));
    }
    if n_segments >= GLOBAL as usize || n_arrays != 2 + n_segments * SEGMENT_FIELDS as usize {
        return Err(fmt_err(path, "inconsistent array count"));
    }
    let table_end = n_arrays
        .checked_mul(ENTRY_LEN)
        .and_then(|t| t.checked_add(HEADER_LEN))
        .filter(|&e| e <= b.len())
        .ok_or_else(|| fmt_err(path, "truncated table"))?;
    let table = &b[HEADER_LEN..table_end];
    if crc32fast::hash(table) != u32_at(b, 56) {
        return Err(fmt_err(path, "table checksum mismatch"));
    }
    let entries: Vec<Entry> = (0..n_arrays)
        .map(|i| {
            let e = &table[i * ENTRY_LEN..(i + 1) * ENTRY_LEN];
            Entry {
                tag: u32_at(e, 0),
                elem: u32_at(e, 4),
                offset: u64_at(e, 8) as usize,
                len: u64_at(e, 16) as usize,
                crc: u32_at(e, 24),
            }
        })
        .collect();
    for e in &entries {
        let end = e.len.checked_mul(e.elem as usize).and_then(|n| n.checked_add(e.offset));
        if end.is_none_or(|end| end > b.len()) || e.offset % ALIGN != 0 || e.offset < table_end {
            return Err(fmt_err(path, format!("array {:#x} lies outside the file", e.tag)));
        }
    }
    if let Some(e) =
        entries.par_iter().find_first(|e| crc32fast::hash(&b[e.offset..e.offset + e.len * e.elem as usize]) != e.crc)
    {
        return Err(fmt_err(path, format!("checksum mismatch in array {:#x}", e.tag)));
    }
    let mut next = entries.iter();
    let mut take = |tag: u32, elem: usize| -> Result<(usize, usize), SparseError> {
        match next.next() {
            Some(e) if e.tag == tag && e.elem as usize == elem => Ok((e.offset, e.len)),
            _ => Err(fmt_err(path, format!("expected array {tag:#x} of {elem}-byte elements"))),
        }
    };
    let ext_ids: Buf<i64> = buf(&backing, take(GLOBAL * 16, 8)?);
    let deleted: Buf<u64> = buf(&backing, take(GLOBAL * 16 + 1, 8)?);
    let mut segments = Vec::with_capacity(n_segments);
    for si in 0..n_segments as u32 {
        segments.push(load_segment(&backing, &mut take, si, block_size)?);
    }
    let ext_ids = ext_ids.to_vec();
    let deleted = deleted.to_vec();
    let mut index = Index::from_parts(dim, BuildParams { block_size, reorder }, segments, ext_ids, deleted)
        .map_err(|e| fmt_err(path, format!("invalid contents: {e}")))?;
    if matches!(*backing, Backing::Mapped(..)) {
        index.set_file(Arc::clone(&backing));
    }
    Ok(index)
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // scores of small multiples of 0.5 are exact
mod tests {
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
        b[HEADER_LEN] ^= 0xFF;
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
}
