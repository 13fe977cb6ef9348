//! Arrays that are either owned (a `Vec`, or an anonymous map advised for transparent huge pages) or borrowed from a
//! loaded index file (memory-mapped or read into memory).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytemuck::Pod;

use crate::SparseError;

/// The bytes of a loaded index file.
pub enum Backing {
    /// A read-only memory map of the file, and what the file looked like when it was mapped.
    Mapped(memmap2::Mmap, FileWatch),
    /// The file read into anonymous memory (page-aligned; advised for huge pages when large).
    Anon(memmap2::Mmap),
}

impl Backing {
    /// All bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Mapped(m, _) | Self::Anon(m) => m,
        }
    }

    /// Check that a mapped file still has the size and modification time it had when mapped (an anonymous copy
    /// cannot change).
    ///
    /// Errors: `SparseError::Format` naming the file and what changed.
    pub fn check_unchanged(&self) -> Result<(), SparseError> {
        match self {
            Self::Mapped(_, w) => w.check(),
            Self::Anon(_) => Ok(()),
        }
    }

    /// Let go of this process's resident pages of a mapped file: loading reads every byte once (the checksums),
    /// which would otherwise leave the whole file counted in the process's memory whatever the searches touch.
    /// The pages stay in the page cache, so a later read is a minor fault. A no-op for an anonymous copy and off
    /// Linux.
    pub fn release_resident(&self) {
        #[cfg(target_os = "linux")]
        if let Self::Mapped(m, _) = self {
            // SAFETY: `m` is a read-only shared mapping of a file (memmap2's `Mmap::map`: PROT_READ, MAP_SHARED)
            // that nothing writes through. MADV_DONTNEED only drops page-table entries; the next access maps the
            // same file bytes again from the page cache (it zero-fills only private or anonymous memory). A refusal
            // changes nothing.
            #[allow(unsafe_code)]
            let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
        #[cfg(not(target_os = "linux"))]
        let _ = self;
    }
}

impl fmt::Debug for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mapped(m, w) => write!(f, "Backing::Mapped({} bytes of {})", m.len(), w.path.display()),
            Self::Anon(m) => write!(f, "Backing::Anon({} bytes)", m.len()),
        }
    }
}

/// The open file behind a memory map, with its size and modification time at the time it was mapped.
///
/// A file that another program truncates while it is mapped makes the next read of a lost page kill the process
/// (SIGBUS), and one rewritten in place feeds unchecked values to the search. sparsecore never does either (saves
/// write a new file and rename it over the old one, which leaves the mapped inode alone); to turn a foreign change
/// into an error, every search first compares the file's size and modification time (one `fstat`, well under a
/// microsecond) with these. A change that lands while a search is running is not caught by this check.
pub struct FileWatch {
    file: std::fs::File,
    path: std::path::PathBuf,
    len: u64,
    /// Modification time, where the platform gives it. (Not the change time: replacing the file by a rename, as
    /// `save` does, unlinks the mapped inode, which changes its change time but not its contents.)
    modified: Option<std::time::SystemTime>,
}

impl FileWatch {
    /// Watch `file` (opened from `path`), whose metadata is `meta`.
    pub fn new(file: std::fs::File, path: &std::path::Path, meta: &std::fs::Metadata) -> Self {
        Self { file, path: path.to_path_buf(), len: meta.len(), modified: meta.modified().ok() }
    }

    /// Errors: `SparseError::Format` when the file's size or modification time differ from those at mapping time.
    pub fn check(&self) -> Result<(), SparseError> {
        let changed = |what: String| {
            SparseError::Format(format!(
                "{}: {what} since it was memory-mapped; an index file must not be modified while loaded \
                 (save() replaces files safely); load it again",
                self.path.display()
            ))
        };
        let meta = self.file.metadata().map_err(|e| changed(format!("cannot be checked ({e})")))?;
        if meta.len() != self.len {
            return Err(changed(format!("the file changed size ({} -> {} bytes)", self.len, meta.len())));
        }
        if meta.modified().ok() != self.modified {
            return Err(changed("the file was written".to_string()));
        }
        Ok(())
    }
}

/// Arrays of at least this many bytes are kept in memory advised for transparent huge pages (see [`Buf::huge`]
/// and the index loader).
pub const HUGE_MIN_BYTES: usize = 4 << 20;

/// Ask Linux to back `map` with transparent huge pages (2 MiB) as it faults in (`MADV_HUGEPAGE`); a hint, so a
/// refusal (no THP support, another OS) changes nothing. Searches read the forward index and the block bounds at
/// random places: with 4 KiB pages nearly every visited block missed the TLB (measured on 1M documents: 0-5 %
/// faster queries with huge pages, where the system setting is `madvise`, the default of many distributions).
/// `SPARSECORE_HUGE_PAGES=0` in the environment (read once per process) turns the advice off, for systems where
/// THP compaction stalls cost more than the TLB misses it saves, and to measure the difference
/// (`benches/probe_hugepages.py`).
/// Maps below [`HUGE_MIN_BYTES`] are left alone.
pub fn advise_huge(map: &memmap2::MmapMut) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if map.len() < HUGE_MIN_BYTES
        || !*ON.get_or_init(|| std::env::var("SPARSECORE_HUGE_PAGES").map_or(true, |v| v.trim() != "0"))
    {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // A hint: if the kernel refuses it, the memory stays in ordinary pages.
        let _ = map.advise(memmap2::Advice::HugePage);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = map;
}

/// Size and alignment of a transparent huge page (x86-64, and the usual arm64 configuration).
const HUGE_PAGE: usize = 2 << 20;

/// A `[f32]` scratch array, all zero when it grows, placed at the start of a 2 MiB-aligned anonymous region advised
/// for huge pages ([`advise_huge`]): an array of up to 2 MiB then sits in one page, one TLB entry, where the
/// kernel grants it. Searches read the dense query array at random (one look-up per scored entry), and its 64
/// pages of 4 KiB did not fit the first-level TLB alongside the forward index. A plain `Vec` when the map fails.
pub enum ZeroedF32 {
    /// The fallback (also the empty start).
    Vec(Vec<f32>),
    /// `len` elements from byte `off` (a 2 MiB boundary) of `map`.
    Map { map: memmap2::MmapMut, off: usize, len: usize },
}

impl Default for ZeroedF32 {
    fn default() -> Self {
        Self::Vec(Vec::new())
    }
}

impl ZeroedF32 {
    /// Grow to at least `len` elements. Growing replaces the array with a fresh zeroed one, so callers keep it
    /// all zero whenever it may grow (the searches clear what they set).
    pub fn ensure_zeroed(&mut self, len: usize) {
        if len <= self.len() {
            return;
        }
        let bytes = len * std::mem::size_of::<f32>();
        // Whole huge pages from a 2 MiB boundary, which lies within the first 2 MiB of the map (at least 4 MiB,
        // so `advise_huge` takes it).
        *self = match memmap2::MmapMut::map_anon(bytes.next_multiple_of(HUGE_PAGE) + HUGE_PAGE) {
            Ok(map) => {
                advise_huge(&map);
                let p = map.as_ptr() as usize;
                Self::Map { off: p.next_multiple_of(HUGE_PAGE) - p, map, len }
            }
            Err(_) => Self::Vec(vec![0.0; len]),
        };
    }
}

impl Deref for ZeroedF32 {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Self::Map { map, off, len } => typed(map, *off, *len),
            Self::Vec(v) => v,
        }
    }
}

impl DerefMut for ZeroedF32 {
    fn deref_mut(&mut self) -> &mut [f32] {
        match self {
            Self::Map { map, off, len } => {
                map.get_mut(*off..*off + *len * 4).and_then(|b| bytemuck::try_cast_slice_mut(b).ok()).unwrap_or(&mut [])
            }
            Self::Vec(v) => v,
        }
    }
}

/// `len` elements of `T` from byte `offset` of `bytes` (empty if out of range or misaligned, which the callers
/// rule out: loaded offsets are validated, maps are page-aligned and sized for their elements).
fn typed<T: Pod>(bytes: &[u8], offset: usize, len: usize) -> &[T] {
    let end = offset + len * std::mem::size_of::<T>();
    bytes.get(offset..end).and_then(|b| bytemuck::try_cast_slice(b).ok()).unwrap_or(&[])
}

/// A `[T]` owned as a `Vec` or in an anonymous map, or viewed inside a [`Backing`] (offset and length validated at
/// load time).
pub enum Buf<T: Pod> {
    /// Owned.
    Owned(Vec<T>),
    /// Owned, in an anonymous read-only map advised for huge pages ([`Buf::huge`]) holding `len` elements.
    Huge { map: Arc<memmap2::Mmap>, len: usize },
    /// Borrowed from a file: byte offset (aligned for `T`) and element count.
    File { backing: Arc<Backing>, offset: usize, len: usize },
}

impl<T: Pod> Buf<T> {
    /// Whether the data lives in a loaded file.
    pub fn is_file(&self) -> bool {
        matches!(self, Self::File { .. })
    }

    /// Bytes of the elements.
    pub fn nbytes(&self) -> usize {
        self.len() * std::mem::size_of::<T>()
    }

    /// `v`, moved into an anonymous map advised for huge pages ([`advise_huge`]) when it holds at least
    /// [`HUGE_MIN_BYTES`]; smaller arrays, or any the map fails for, stay an owned `Vec`.
    pub fn huge(v: Vec<T>) -> Self {
        let bytes: &[u8] = bytemuck::cast_slice(&v);
        if bytes.len() < HUGE_MIN_BYTES {
            return Self::Owned(v);
        }
        let Ok(mut map) = memmap2::MmapMut::map_anon(bytes.len()) else {
            return Self::Owned(v);
        };
        advise_huge(&map);
        map.copy_from_slice(bytes);
        match map.make_read_only() {
            Ok(map) => Self::Huge { map: Arc::new(map), len: v.len() },
            Err(_) => Self::Owned(v),
        }
    }
}

impl<T: Pod> Default for Buf<T> {
    fn default() -> Self {
        Self::Owned(Vec::new())
    }
}

impl<T: Pod> From<Vec<T>> for Buf<T> {
    fn from(v: Vec<T>) -> Self {
        Self::Owned(v)
    }
}

impl<T: Pod> Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Self::Owned(v) => v,
            // A page-aligned map of exactly `len` elements, written from a slice of `T`.
            Self::Huge { map, len } => typed(map, 0, *len),
            // Offsets, lengths and alignment were checked when the file was loaded.
            Self::File { backing, offset, len } => typed(backing.bytes(), *offset, *len),
        }
    }
}

impl<T: Pod> Clone for Buf<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Owned(v) => Self::Owned(v.clone()),
            Self::Huge { map, len } => Self::Huge { map: Arc::clone(map), len: *len },
            Self::File { backing, offset, len } => {
                Self::File { backing: Arc::clone(backing), offset: *offset, len: *len }
            }
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Buf<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buf(len={}, file={})", self.len(), self.is_file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_buffers_hold_the_same_elements() {
        let small: Vec<u32> = (0..1000).collect();
        let b = Buf::huge(small.clone());
        assert!(matches!(b, Buf::Owned(_)));
        assert_eq!(&b[..], &small[..]);
        let n = HUGE_MIN_BYTES / 2 + 3;
        let big: Vec<u16> = (0..n).map(|i| (i * 7919 % 65_536) as u16).collect();
        let b = Buf::huge(big.clone());
        assert!(!b.is_file());
        assert!(matches!(b, Buf::Huge { .. }), "an anonymous map of 2 MiB should not fail");
        assert_eq!(b.len(), n);
        assert_eq!(&b[..], &big[..]);
        assert_eq!(&b.clone()[..], &big[..]);
    }

    #[test]
    fn zeroed_scratch_grows_zeroed() {
        let mut z = ZeroedF32::default();
        assert!(z.is_empty());
        z.ensure_zeroed(70_000);
        assert_eq!(z.len(), 70_000);
        assert!(z.iter().all(|&x| x == 0.0));
        z[69_999] = 2.5;
        z[0] = 1.0;
        // Not growing keeps the content; growing starts from zeros again.
        z.ensure_zeroed(100);
        assert_eq!((z.len(), z[0], z[69_999]), (70_000, 1.0, 2.5));
        z.ensure_zeroed(1 << 20);
        assert_eq!(z.len(), 1 << 20);
        assert!(z.iter().all(|&x| x == 0.0));
    }
}
