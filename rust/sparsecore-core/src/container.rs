//! The one checked file format of sparsecore: a container of named, typed, checksummed arrays plus a JSON
//! metadata block, written atomically and readable without copying (memory map).
//!
//! ```text
//! header (64 B): magic "SPCOREFF" | container version u32 | byte-order mark u32 (0x01020304) | file length u64
//!                | kind [16 B, ASCII, zero padded] | kind version u32 | n_sections u32 | meta length u64
//!                | crc32 of table and meta u32 | crc32 of the 60 bytes before u32
//! table:         n_sections x 96 B: name [32 B, UTF-8, zero padded] | dtype u32 | ndim u32 | offset u64
//!                | count (elements) u64 | crc32 u32 | 0 u32 | dims [4 x u64] (unused dims 0)
//! meta:          UTF-8 JSON object (what it holds is the kind's business)
//! data:          each array at a 64-byte-aligned offset after the meta, little-endian, zero padding between
//!                arrays and to the end (checked: with the checksums, every byte of a file is verified)
//! ```
//! Every saver of the package writes this format with its own *kind* (`index`, `bm25`, `lsse.ridge`,
//! `sdr.field`, `sdr.network`, `vectors`, ...) and *kind version*; a reader names the kind it expects, so a file
//! of another kind is refused with a message naming both. Opening checks magic, container version, byte order,
//! declared length against the file, both checksums, every table entry (known dtype, at most 4 dims, count equal
//! to the product of the dims, aligned, inside the file, no overlap, unique names) and every array's crc32, so a
//! truncated, corrupted or foreign file is an error, never a crash. Saves go to a unique temporary name in the
//! target's folder, are fsynced and renamed over the target (atomic on POSIX), and then the folder is fsynced.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use crate::index::storage::{advise_huge, Backing, FileWatch};
use crate::SparseError;

/// Container magic.
pub const MAGIC: &[u8; 8] = b"SPCOREFF";
/// Container layout version this build writes and reads.
pub const VERSION: u32 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 64;
/// Table entry length in bytes.
const ENTRY_LEN: usize = 96;
/// Alignment of every array.
pub const ALIGN: usize = 64;
const BOM: u32 = 0x0102_0304;
const KIND_LEN: usize = 16;
const NAME_LEN: usize = 32;
/// Most dimensions an array may have.
pub const MAX_DIMS: usize = 4;
/// Bounds that keep a hostile header from making the reader allocate or loop without end.
const MAX_SECTIONS: usize = 1 << 20;
const MAX_META: usize = 512 << 20;

/// Element type of a stored array (the code is what the file holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `u8`
    U8 = 1,
    /// `i8`
    I8 = 2,
    /// `u16`
    U16 = 3,
    /// `i16`
    I16 = 4,
    /// `u32`
    U32 = 5,
    /// `i32`
    I32 = 6,
    /// `u64`
    U64 = 7,
    /// `i64`
    I64 = 8,
    /// IEEE half precision.
    F16 = 9,
    /// `f32`
    F32 = 10,
    /// `f64`
    F64 = 11,
    /// One byte, 0 or 1.
    Bool = 12,
    /// bfloat16 (the upper half of an f32).
    BF16 = 13,
}

impl Dtype {
    /// The dtype of a code, if known.
    pub fn from_code(code: u32) -> Option<Self> {
        use Dtype::{Bool, BF16, F16, F32, F64, I16, I32, I64, I8, U16, U32, U64, U8};
        Some(match code {
            1 => U8,
            2 => I8,
            3 => U16,
            4 => I16,
            5 => U32,
            6 => I32,
            7 => U64,
            8 => I64,
            9 => F16,
            10 => F32,
            11 => F64,
            12 => Bool,
            13 => BF16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        use Dtype::{Bool, BF16, F16, F32, F64, I16, I32, I64, I8, U16, U32, U64, U8};
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 | F16 | BF16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 => 8,
        }
    }
}

/// Rust element types that map to one [`Dtype`].
pub trait Element: bytemuck::Pod {
    /// The stored dtype.
    const DTYPE: Dtype;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => { $(impl Element for $t { const DTYPE: Dtype = Dtype::$d; })* };
}
element!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, u64 => U64, i64 => I64,
    f32 => F32, f64 => F64);

/// One array to write.
#[derive(Debug, Clone)]
pub struct Section<'a> {
    /// Unique name (1 to 32 bytes of UTF-8, no NUL).
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (at most [`MAX_DIMS`] dims; `[]` is a scalar); its product is the element count.
    pub shape: Vec<u64>,
    /// Little-endian bytes, `product(shape) * dtype.size()` of them.
    pub bytes: &'a [u8],
}

impl<'a> Section<'a> {
    /// A 1-D section over a typed slice.
    pub fn of<T: Element>(name: impl Into<String>, v: &'a [T]) -> Self {
        Section { name: name.into(), dtype: T::DTYPE, shape: vec![v.len() as u64], bytes: bytemuck::cast_slice(v) }
    }
}

/// A table entry of an opened container.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Array name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<u64>,
    /// Byte offset in the file.
    pub offset: usize,
    /// Number of elements.
    pub count: usize,
    crc: u32,
}

impl Entry {
    /// Length in bytes.
    pub fn nbytes(&self) -> usize {
        self.count * self.dtype.size()
    }
}

/// An opened, fully checked container.
pub struct Container {
    /// The file's bytes (memory-mapped or read into memory).
    pub backing: Arc<Backing>,
    /// Kind version the saver wrote.
    pub kind_version: u32,
    /// The JSON metadata (checked to be UTF-8; parsing it is the caller's business).
    pub meta: String,
    /// Arrays in file order.
    pub entries: Vec<Entry>,
    path: std::path::PathBuf,
}

impl Container {
    /// The entry called `name`.
    pub fn entry(&self, name: &str) -> Result<&Entry, SparseError> {
        self.entries.iter().find(|e| e.name == name).ok_or_else(|| fmt_err(&self.path, format!("no array {name:?}")))
    }

    /// The bytes of `e`.
    pub fn bytes(&self, e: &Entry) -> &[u8] {
        &self.backing.bytes()[e.offset..e.offset + e.nbytes()]
    }

    /// The `(offset, count)` of the 1-D array `name` of element type `T` (for file-backed buffers).
    pub fn span<T: Element>(&self, name: &str) -> Result<(usize, usize), SparseError> {
        let e = self.entry(name)?;
        if e.dtype != T::DTYPE || e.shape.len() != 1 {
            return Err(fmt_err(
                &self.path,
                format!("array {name:?} is {:?} of shape {:?}, expected a 1-D {:?} array", e.dtype, e.shape, T::DTYPE),
            ));
        }
        Ok((e.offset, e.count))
    }

    /// A format error about this file.
    pub fn error(&self, msg: impl std::fmt::Display) -> SparseError {
        fmt_err(&self.path, msg)
    }
}

/// A format error naming `path`.
pub fn fmt_err(path: &Path, msg: impl std::fmt::Display) -> SparseError {
    SparseError::Format(format!("{}: {msg}", path.display()))
}

/// An I/O error naming `path`.
pub fn io_err(path: &Path, e: &std::io::Error) -> SparseError {
    SparseError::Io { not_found: e.kind() == std::io::ErrorKind::NotFound, msg: format!("{}: {e}", path.display()) }
}

fn pad(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// The little-endian `u32` at byte `at` of `b`.
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// The little-endian `u64` at byte `at` of `b`.
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// A temporary name for a file being written as `.{name}`: `.{name}.tmp-{pid}-{thread}-{random}`. Unique per
/// process, thread and call, so concurrent saves to one path never share a temporary (the last rename wins and
/// the file is always whole); the pid lets a later save remove what a killed process left behind.
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

/// Write `path` atomically: `body` writes into a buffered temporary file in the same folder, which is then
/// fsynced and renamed over `path`, and the folder fsynced. Temporaries that killed saves left next to `path`
/// are removed first.
pub fn atomic_write(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), SparseError> {
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
        body(&mut w)?;
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

fn check_kind(kind: &str) -> Result<(), SparseError> {
    if kind.is_empty() || kind.len() > KIND_LEN || !kind.bytes().all(|c| c.is_ascii_graphic()) {
        let msg = format!("must be 1 to {KIND_LEN} printable ASCII bytes, got {kind:?}");
        return Err(SparseError::InvalidArgument { arg: "kind", msg });
    }
    Ok(())
}

/// Write a container of `kind` (version `kind_version`) holding `meta` (JSON) and `sections` to `path`,
/// atomically.
///
/// Errors: `InvalidArgument` for a bad kind, name, shape or byte length; `Io` when writing fails.
pub fn write(
    path: &Path,
    kind: &str,
    kind_version: u32,
    meta: &str,
    sections: &[Section<'_>],
) -> Result<(), SparseError> {
    if cfg!(target_endian = "big") {
        return Err(SparseError::Io { not_found: false, msg: "saving needs a little-endian machine".into() });
    }
    check_kind(kind)?;
    let bad = |msg: String| Err(SparseError::InvalidArgument { arg: "sections", msg });
    if sections.len() > MAX_SECTIONS || meta.len() > MAX_META {
        return bad(format!("at most {MAX_SECTIONS} arrays and {MAX_META} bytes of metadata fit in a file"));
    }
    let mut names = std::collections::HashSet::new();
    for s in sections {
        if s.name.is_empty() || s.name.len() > NAME_LEN || s.name.contains('\0') || !names.insert(s.name.as_str()) {
            return bad(format!("section name {:?}: must be unique, 1 to {NAME_LEN} bytes, without NUL", s.name));
        }
        if s.shape.len() > MAX_DIMS {
            return bad(format!("section {:?}: at most {MAX_DIMS} dimensions, got {}", s.name, s.shape.len()));
        }
        let count = s.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        if count.and_then(|c| c.checked_mul(s.dtype.size() as u64)) != Some(s.bytes.len() as u64) {
            return bad(format!(
                "section {:?}: {} bytes do not hold shape {:?} of {:?}",
                s.name,
                s.bytes.len(),
                s.shape,
                s.dtype
            ));
        }
    }
    let crcs: Vec<u32> = sections.par_iter().map(|s| crc32fast::hash(s.bytes)).collect();
    let table_len = sections.len() * ENTRY_LEN;
    let mut offset = pad(HEADER_LEN + table_len + meta.len());
    let mut table = Vec::with_capacity(table_len + meta.len());
    for (s, crc) in sections.iter().zip(&crcs) {
        let mut name = [0u8; NAME_LEN];
        name[..s.name.len()].copy_from_slice(s.name.as_bytes());
        table.extend_from_slice(&name);
        table.extend_from_slice(&(s.dtype as u32).to_le_bytes());
        table.extend_from_slice(&(s.shape.len() as u32).to_le_bytes());
        table.extend_from_slice(&(offset as u64).to_le_bytes());
        table.extend_from_slice(&((s.bytes.len() / s.dtype.size()) as u64).to_le_bytes());
        table.extend_from_slice(&crc.to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
        for i in 0..MAX_DIMS {
            table.extend_from_slice(&s.shape.get(i).copied().unwrap_or(0).to_le_bytes());
        }
        offset = pad(offset + s.bytes.len());
    }
    table.extend_from_slice(meta.as_bytes());
    let file_len = offset;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&BOM.to_le_bytes());
    header.extend_from_slice(&(file_len as u64).to_le_bytes());
    let mut kind_bytes = [0u8; KIND_LEN];
    kind_bytes[..kind.len()].copy_from_slice(kind.as_bytes());
    header.extend_from_slice(&kind_bytes);
    header.extend_from_slice(&kind_version.to_le_bytes());
    header.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    header.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(&table).to_le_bytes());
    let hcrc = crc32fast::hash(&header);
    header.extend_from_slice(&hcrc.to_le_bytes());
    debug_assert_eq!(header.len(), HEADER_LEN);
    atomic_write(path, |w| {
        w.write_all(&header)?;
        w.write_all(&table)?;
        let mut at = HEADER_LEN + table.len();
        for s in sections {
            let start = pad(at);
            w.write_all(&vec![0u8; start - at])?;
            w.write_all(s.bytes)?;
            at = start + s.bytes.len();
        }
        w.write_all(&vec![0u8; file_len - at])
    })
}

/// Open `path` as a backing (memory-mapped, or read into anonymous memory advised for huge pages when large) and
/// return it with its length and 8-byte magic. Only regular files whose magic is one of `magics` are read, and
/// no more bytes than the header declares at offset 16 (so a device such as `/dev/zero`, a pipe or a file that
/// keeps growing is an error, never an endless read). `what` names the expected content in errors.
pub fn open_backing(
    path: &Path,
    mmap: bool,
    magics: &[&[u8; 8]],
    what: &str,
) -> Result<(Backing, usize, [u8; 8]), SparseError> {
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
    let mut magic = [0u8; 8];
    if len >= HEADER_LEN && f.read_exact(&mut header).is_ok() {
        magic.copy_from_slice(&header[..8]);
    }
    if len < HEADER_LEN || !magics.iter().any(|m| **m == magic) {
        return Err(fmt_err(path, format!("not a sparsecore {what} file (bad magic)")));
    }
    let declared = u64_at(&header, 16);
    if declared != len as u64 {
        return Err(fmt_err(path, format!("truncated or extended: header says {declared} bytes, file has {len}")));
    }
    if mmap {
        // SAFETY: the map is read-only and private. sparsecore never writes an existing file in place (saves go to
        // a new file renamed over the old one, leaving mapped inodes intact); a change by another program is
        // caught before each use by the file watch (see `FileWatch`).
        #[allow(unsafe_code)]
        let m = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| io_err(path, &e))?;
        if m.len() != len {
            return Err(fmt_err(path, "the file changed size while being mapped"));
        }
        Ok((Backing::Mapped(m, FileWatch::new(f, path, &meta)), len, magic))
    } else {
        let mut anon = memmap2::MmapMut::map_anon(len).map_err(|e| io_err(path, &e))?;
        advise_huge(&anon);
        anon[..HEADER_LEN].copy_from_slice(&header);
        f.read_exact(&mut anon[HEADER_LEN..len]).map_err(|e| io_err(path, &e))?;
        let mut one = [0u8; 1];
        if f.read(&mut one).map_err(|e| io_err(path, &e))? != 0 {
            return Err(fmt_err(path, "file grew while being read"));
        }
        Ok((Backing::Anon(anon.make_read_only().map_err(|e| io_err(path, &e))?), len, magic))
    }
}

/// Read the 8-byte magic of `path` (to tell a container from a file of an older format); `None` when the file
/// is shorter. Only regular files are opened.
pub fn sniff(path: &Path) -> Result<Option<[u8; 8]>, SparseError> {
    let m = fs::metadata(path).map_err(|e| io_err(path, &e))?;
    if !m.is_file() {
        return Err(fmt_err(path, "not a regular file (a directory, device, pipe or socket)"));
    }
    let mut f = File::open(path).map_err(|e| io_err(path, &e))?;
    let mut magic = [0u8; 8];
    Ok(f.read_exact(&mut magic).ok().map(|()| magic))
}

/// The kind stored in a header, for messages.
fn kind_of(header: &[u8]) -> String {
    let k = &header[24..24 + KIND_LEN];
    let end = k.iter().position(|&c| c == 0).unwrap_or(KIND_LEN);
    String::from_utf8_lossy(&k[..end]).into_owned()
}

/// Open and check a container of `kind` at `path` (see the module docs for what is checked). `mmap` maps the
/// file instead of reading it.
///
/// Errors: `Io` when the file cannot be read; `Format` for anything else, with a message naming the file.
pub fn open(path: &Path, kind: &str, mmap: bool) -> Result<Container, SparseError> {
    open_checked(path, kind, mmap, true)
}

/// [`open`], with the arrays' checksums checked only when `verify_arrays` is set.
///
/// Without it the header, the table, the metadata and the layout are still checked (every array lies inside
/// the file, aligned, without overlap), but the arrays' bytes are not read: opening a large file by memory map
/// then costs no pass over it. For files the caller trusts (written by this library and not changed since).
pub fn open_checked(path: &Path, kind: &str, mmap: bool, verify_arrays: bool) -> Result<Container, SparseError> {
    let (backing, len, _) = open_backing(path, mmap, &[MAGIC], kind)?;
    let backing = Arc::new(backing);
    let b = &backing.bytes()[..len];
    let version = u32_at(b, 8);
    if version != VERSION {
        return Err(fmt_err(
            path,
            format!(
                "container version {version} is not supported (this sparsecore reads {VERSION}); upgrade sparsecore"
            ),
        ));
    }
    if u32_at(b, 12) != BOM {
        return Err(fmt_err(path, "written with another byte order"));
    }
    if crc32fast::hash(&b[..60]) != u32_at(b, 60) {
        return Err(fmt_err(path, "header checksum mismatch"));
    }
    let found = kind_of(b);
    if found != kind {
        return Err(fmt_err(path, format!("is a sparsecore {found:?} file, not a {kind:?} file")));
    }
    let kind_version = u32_at(b, 40);
    let n = u32_at(b, 44) as usize;
    let meta_len = u64_at(b, 48);
    if n > MAX_SECTIONS || meta_len > MAX_META as u64 {
        return Err(fmt_err(path, "implausible array count or metadata length"));
    }
    let table_end = HEADER_LEN + n * ENTRY_LEN;
    let meta_end = table_end + meta_len as usize;
    if meta_end > len {
        return Err(fmt_err(path, "truncated table"));
    }
    if crc32fast::hash(&b[HEADER_LEN..meta_end]) != u32_at(b, 56) {
        return Err(fmt_err(path, "table checksum mismatch"));
    }
    let meta =
        std::str::from_utf8(&b[table_end..meta_end]).map_err(|_| fmt_err(path, "metadata is not UTF-8"))?.to_owned();
    let mut entries = Vec::with_capacity(n);
    let mut crcs = Vec::with_capacity(n);
    let mut next_free = meta_end;
    let mut names = std::collections::HashSet::new();
    for i in 0..n {
        let e = &b[HEADER_LEN + i * ENTRY_LEN..HEADER_LEN + (i + 1) * ENTRY_LEN];
        let raw = &e[..NAME_LEN];
        let name_end = raw.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        let name = std::str::from_utf8(&raw[..name_end])
            .ok()
            .filter(|s| !s.is_empty() && raw[name_end..].iter().all(|&c| c == 0) && names.insert(s.to_string()))
            .ok_or_else(|| fmt_err(path, format!("array {i} has an invalid or repeated name")))?
            .to_owned();
        let dtype = Dtype::from_code(u32_at(e, 32))
            .ok_or_else(|| fmt_err(path, format!("array {name:?} has unknown dtype code {}", u32_at(e, 32))))?;
        let ndim = u32_at(e, 36) as usize;
        if ndim > MAX_DIMS {
            return Err(fmt_err(path, format!("array {name:?} has {ndim} dimensions")));
        }
        let shape: Vec<u64> = (0..ndim).map(|d| u64_at(e, 64 + 8 * d)).collect();
        let offset = usize::try_from(u64_at(e, 40)).unwrap_or(usize::MAX);
        let count = usize::try_from(u64_at(e, 48)).unwrap_or(usize::MAX);
        let product = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        if product != Some(count as u64) {
            return Err(fmt_err(path, format!("array {name:?}: count {count} is not the product of shape {shape:?}")));
        }
        let end = count.checked_mul(dtype.size()).and_then(|nb| nb.checked_add(offset));
        if end.is_none_or(|end| end > len) || offset % ALIGN != 0 || offset < next_free {
            return Err(fmt_err(path, format!("array {name:?} lies outside the file or overlaps another")));
        }
        next_free = end.unwrap_or(len);
        crcs.push(u32_at(e, 56));
        entries.push(Entry { name, dtype, shape, offset, count, crc: 0 });
    }
    for (e, c) in entries.iter_mut().zip(crcs) {
        e.crc = c;
    }
    // The padding is zero: with the checksums, every byte of the file is checked.
    let mut at = meta_end;
    for (start, end) in entries.iter().map(|e| (e.offset, e.offset + e.nbytes())).chain([(len, len)]) {
        if b[at..start].iter().any(|&x| x != 0) {
            return Err(fmt_err(path, format!("padding at bytes {at}..{start} is not zero, the file is corrupted")));
        }
        at = end;
    }
    if verify_arrays {
        if let Some(e) =
            entries.par_iter().find_first(|e| crc32fast::hash(&b[e.offset..e.offset + e.nbytes()]) != e.crc)
        {
            return Err(fmt_err(path, format!("checksum mismatch in array {:?}", e.name)));
        }
    }
    Ok(Container { backing, kind_version, meta, entries, path: path.to_path_buf() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sparsecore-container-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample(path: &Path) {
        let a: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        let b: Vec<i64> = vec![-3, 7];
        let mut s = vec![Section::of("weights", &a), Section::of("ids", &b)];
        s[0].shape = vec![2, 3];
        write(path, "test.kind", 7, r#"{"a": 1}"#, &s).unwrap();
    }

    #[test]
    fn round_trip_keeps_names_shapes_and_bytes() {
        let d = scratch("rt");
        let p = d.join("c.bin");
        sample(&p);
        for mmap in [false, true] {
            let c = open(&p, "test.kind", mmap).unwrap();
            assert_eq!((c.kind_version, c.meta.as_str()), (7, r#"{"a": 1}"#));
            let w = c.entry("weights").unwrap();
            assert_eq!((w.dtype, w.shape.clone(), w.count), (Dtype::F32, vec![2, 3], 6));
            let got: &[f32] = bytemuck::cast_slice(c.bytes(w));
            assert_eq!(got[5].to_bits(), 2.5f32.to_bits());
            assert_eq!(c.span::<i64>("ids").unwrap().1, 2);
            assert!(c.span::<i32>("ids").is_err());
            assert!(c.entry("missing").is_err());
        }
        let e = open(&p, "other", false).err().unwrap().to_string();
        assert!(e.contains("\"test.kind\"") && e.contains("\"other\""), "{e}");
        let _ = fs::remove_dir_all(&d);
    }

    /// Every single-byte flip and every truncation of a small container is refused with an error.
    #[test]
    fn every_flip_and_truncation_is_refused() {
        let d = scratch("flip");
        let p = d.join("c.bin");
        sample(&p);
        let good = fs::read(&p).unwrap();
        let q = d.join("bad.bin");
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x5A;
            fs::write(&q, &b).unwrap();
            assert!(open(&q, "test.kind", false).is_err(), "flip at {i} accepted");
        }
        for n in 0..good.len() {
            fs::write(&q, &good[..n]).unwrap();
            assert!(open(&q, "test.kind", false).is_err(), "truncation to {n} accepted");
        }
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_sections_are_refused_on_write() {
        let d = scratch("badw");
        let p = d.join("c.bin");
        let a = [1u32, 2, 3];
        let mut s = Section::of("x", &a[..]);
        s.shape = vec![2, 2];
        assert!(matches!(write(&p, "k", 1, "{}", &[s]), Err(SparseError::InvalidArgument { .. })));
        let dup = [Section::of("x", &a[..]), Section::of("x", &a[..])];
        assert!(write(&p, "k", 1, "{}", &dup).is_err());
        assert!(write(&p, "", 1, "{}", &[]).is_err());
        assert!(write(&p, "a-kind-that-is-too-long", 1, "{}", &[]).is_err());
        assert!(!p.exists());
        let _ = fs::remove_dir_all(&d);
    }
}
