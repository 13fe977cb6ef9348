//! Arrays that are either owned or borrowed from a loaded index file (memory-mapped or read into memory).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use bytemuck::Pod;

/// The bytes of a loaded index file.
pub enum Backing {
    /// A read-only memory map of the file.
    Mapped(memmap2::Mmap),
    /// The file read into 8-byte-aligned memory.
    Heap(Vec<u64>),
}

impl Backing {
    /// All bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Heap(v) => bytemuck::cast_slice(v),
        }
    }
}

/// A `[T]` owned as a `Vec` or viewed inside a [`Backing`] (offset and length validated at load time).
pub enum Buf<T: Pod> {
    /// Owned.
    Owned(Vec<T>),
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
            Self::File { backing, offset, len } => {
                let end = offset + len * std::mem::size_of::<T>();
                // Offsets, lengths and alignment were checked when the file was loaded.
                backing.bytes().get(*offset..end).and_then(|b| bytemuck::try_cast_slice(b).ok()).unwrap_or(&[])
            }
        }
    }
}

impl<T: Pod> Clone for Buf<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Owned(v) => Self::Owned(v.clone()),
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
